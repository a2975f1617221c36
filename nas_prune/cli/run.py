"""``nas-prune run`` and ``nas-prune validate``: recipes (see :mod:`nas_prune.recipe`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import console, say, user_errors
from nas_prune.shipped import shipped_names

_RECIPE_HELP = f"A YAML file, or the name of a shipped recipe ({', '.join(shipped_names('recipes'))})."

_SET_HELP = ("Override a recipe value: STAGE.KEY=VALUE (distill.epochs=5, prune.target_macs=2.6G, "
             "prune.study.trials=20) or a top-level KEY=VALUE (teacher=G.pth, data=DIR, run_dir=DIR); "
             "VALUE is YAML; STAGE=null drops a stage. Repeatable.")


@app.command("run", short_help="Run a recipe (a shipped name or a YAML file); resumable.")
def run_cli(
    recipe: Path = typer.Argument(..., metavar="RECIPE", show_default=False, help=_RECIPE_HELP),
    overrides: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=_SET_HELP),
    threads: Optional[str] = typer.Option(None, "--threads", metavar="N|auto", help="CPU threads for torch in every stage: N or auto "
                                          "(= --set threads=...; default: the recipe's threads key, else auto)."),
) -> None:
    """Run a recipe's stages in order; finished stages are skipped and interrupted ones resume."""
    with user_errors():
        from nas_prune.recipe_run import run_recipe

        if threads is not None:
            overrides = [*overrides, f"threads={threads}"]
        # say finds sys.stderr at each call, so lines go above a live progress bar; a reader of
        # the pipe that went away mutes them, never the run (nas_prune.pipes)
        result = run_recipe(recipe, overrides=overrides, log=say)
    from nas_prune.tables import new_table, num_column, text_column

    table = new_table(title=f"{result.run_dir}")
    text_column(table, "stage")
    text_column(table, "action")
    num_column(table, "seconds")
    for o in result.stages:
        table.add_row(o.stage, o.action, f"{o.seconds:.1f}")
    console().print(table)
    report = result.run_dir / "report" / "report.md"
    if report.is_file():
        console().print(f"report: {report}")


@app.command("validate", short_help="Check a recipe and everything its run will need.")
def validate_cli(
    recipe: Path = typer.Argument(..., metavar="RECIPE", show_default=False, help=_RECIPE_HELP),
    overrides: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=_SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved recipe as JSON."),
) -> None:
    """Check a recipe strictly: unknown stages and options, placeholders, missing files, data in the wrong layout,
    options that need another one; everything that would stop `run` later."""
    with user_errors():
        from nas_prune.recipe import load_recipe
        from nas_prune.recipe_check import check_recipe

        r = load_recipe(recipe, overrides=overrides)
        checked = check_recipe(r)
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2, default=str))
        return
    import textwrap

    out = console()

    def line(text: str, indent: str = "", wrap: bool = False) -> None:
        if wrap and out.is_terminal:  # a stage's options wrap under their own indent (in a pipe: one line)
            text = textwrap.fill(text, width=max(40, out.width - 1), initial_indent=indent,
                                 subsequent_indent=indent + "    ", break_on_hyphens=False, break_long_words=False)
        else:
            text = indent + text
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    line(f"{recipe}: valid recipe {r.name} -> {r.run_dir}")
    if r.path is not None and str(r.path) != str(recipe):
        line(f"file: {r.path}", "  ")
    for stage, opts in r.stages.items():
        shown = ", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"
        line(f"{stage}: {shown}", "  ", wrap=True)
    for item in checked:
        line(f"checked {item}", "  ")
