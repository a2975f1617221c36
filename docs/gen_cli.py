"""Render docs/cli.md from the Typer app: every command with its arguments and options.

Regenerate with:  python docs/gen_cli.py > docs/cli.md
"""

from __future__ import annotations

import typer.main  # noqa: E402

try:
    import click
except ImportError:  # typer >= 0.24 vendors click
    from typer import _click as click

from nas_prune.cli import app


def _default(p: click.Parameter) -> str:
    if p.required:
        return "required"
    d = p.default
    if callable(d) or d is None or d == () or d == []:
        return ""
    if getattr(p, "is_flag", False) and p.secondary_opts:
        return (p.opts if d else p.secondary_opts)[0]
    return f"`{d}`"


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def main() -> None:
    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="nas-prune")
    print("# Command-line reference")
    print()
    print("Generated from the Typer app by `python docs/gen_cli.py > docs/cli.md`; do not edit by hand.")
    print("Every command prints `error: <message>` and exits with code 2 on a user error.")
    print()
    names = group.list_commands(ctx)
    for name in names:
        print(f"- [`nas-prune {name}`](#nas-prune-{name})")
    print()
    for name in names:
        cmd = group.get_command(ctx, name)
        pieces = ["[OPTIONS]" if any(p.param_type_name == "option" for p in cmd.params) else ""]
        pieces += [p.name.upper() + ("..." if p.nargs == -1 else "") for p in cmd.params if p.param_type_name == "argument"]
        usage = " ".join(x for x in pieces if x)
        print(f"## nas-prune {name}")
        print()
        print(_cell(cmd.help or ""))
        print()
        print("```")
        print(f"nas-prune {name} {usage}")
        print("```")
        print()
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        opts = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]
        if args or opts:
            print("| argument / option | default | description |")
            print("|---|---|---|")
            for p in args:
                print(f"| `{p.name.upper()}` | {_default(p)} | {_cell(getattr(p, 'help', '') or '')} |")
            for p in opts:
                flags = " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                print(f"| {flags} | {_default(p)} | {_cell(p.help or '')} |")
            print()


if __name__ == "__main__":
    main()
