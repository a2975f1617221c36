"""``nas-prune profile``: params and MACs of a checkpoint, a search space or an arch.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import CHANGED_SOURCE_HELP, MODEL_ARGS_HELP, MODEL_HELP, MODEL_PANEL, user_model, console, user_errors


@app.command("profile", short_help="Params and MACs per stage, in both conventions.")
def profile_cli(
    model: Path = typer.Argument(..., metavar="MODEL", help="Checkpoint (.pth/.pt/.safetensors), search-space .yaml or shipped space name (cat_inception), or arch.json / student folder."),
    input_size: str = typer.Option("256", "--input-size", help="Input size: N or HxW, divisible by 4 (SPADE: by 2^n, e.g. 64)."),
    convention: str = typer.Option("fvcore", "--convention", help="MACs convention of the per-stage rows: fvcore or paper."),
    per_layer: bool = typer.Option(False, "--per-layer", help="One row per layer."),
    measure: bool = typer.Option(False, "--measure", help="Also count on a real forward pass (fvcore, torchprofile, thop)."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space to check a checkpoint against: a YAML file or a shipped name (cat_inception)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    latency: bool = typer.Option(False, "--latency", help="Also time one forward pass end to end (median of --repeats after 3 warm-up passes).", rich_help_panel="Latency"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Where to time it: torch-cpu (default), onnxruntime (the onnx extra), cuda, or as exported: openvino, ncnn, executorch (XNNPACK), onnxruntime-int8, executorch-int8 (their extras); implies --latency.", rich_help_panel="Latency"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of the runtime (default torch's current setting).", rich_help_panel="Latency"),
    batch: int = typer.Option(1, "--batch", help="Images per timed pass.", rich_help_panel="Latency"),
    repeats: int = typer.Option(20, "--repeats", help="Timed passes.", rich_help_panel="Latency"),
    code: Optional[str] = typer.Option(None, "--model", metavar="SPEC", help=MODEL_HELP, rich_help_panel=MODEL_PANEL),
    model_args: Optional[str] = typer.Option(None, "--model-args", metavar="JSON", help=MODEL_ARGS_HELP, rich_help_panel=MODEL_PANEL),
    allow_changed_source: bool = typer.Option(False, "--allow-changed-source", help=CHANGED_SOURCE_HELP, rich_help_panel=MODEL_PANEL),
) -> None:
    """Show params and MACs per stage and block, with totals in both conventions (and measured latency)."""
    with user_errors():
        from nas_prune.profile import profile

        report = profile(model, input_size=input_size, convention=convention, per_layer=per_layer,
                         measure=measure, space_path=space, latency=latency, runtime=runtime, threads=threads,
                         batch=batch, repeats=repeats,
                         model=user_model(code, model_args, allow_changed_source, input_size))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _render(report)


def _render(report: dict) -> None:
    from nas_prune.macs import format_macs
    from nas_prune.tables import new_table, num_column, text_column

    out = console()
    h, w = report["input_size"]
    conv = report["stage_convention"]
    out.print(f"{report['model']} ({report['kind']}): {report['arch']}, input {h}x{w}", highlight=False, markup=False)
    rows = report.get("layers") or report["stages"]
    table = new_table(footer=True)
    text_column(table, "layer" if "layers" in report else "stage", footer="total")
    if "layers" in report:
        text_column(table, "kind")
    num_column(table, f"MACs ({conv})", footer=format_macs(report["macs"][conv]))
    num_column(table, "params", footer=f"{report['params']:,}")
    for row in rows:
        cells = [row.get("name", row["stage"])]
        if "layers" in report:
            cells.append(row["kind"])
        cells += [format_macs(row["macs"]), f"{row['params']:,}"]
        table.add_row(*cells)
    out.print(table)
    for c, total in report["macs"].items():
        out.print(f"total: {format_macs(total, c)} = {total:,}")
    if "latency" in report:
        lat = report["latency"]
        n, _, lh, lw = lat["input_shape"]
        out.print(f"latency: {lat['median_ms']:.2f} ms measured on {lat['runtime']}, {lat['device']} "
                  f"(batch {n}, {lh}x{lw}; median of {lat['runs']}, min {lat['min_ms']:.2f}, max {lat['max_ms']:.2f}) "
                  f"for {format_macs(report['macs']['fvcore'], 'fvcore')}")
    out.print(f"params: {report['params']:,}")
    for note in report.get("notes", []):
        out.print(f"note: {note}", highlight=False)
    if "measured" in report:
        for name, value in report["measured"].items():
            out.print(f"measured {name}: {format_macs(value) if name != 'params' else f'{value:,}'} = {value:,}")
