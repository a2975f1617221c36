"""The console report of a one-step search: widths per layer, targets, MACs, checks, time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nas_prune.macs import CONVENTIONS, format_macs

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.search import SearchResult


def render_result(result: "SearchResult", console) -> None:
    """Print the per-layer widths table and the target / reached / params summary."""
    from nas_prune.export import layer_rows, table_stages, threshold_text
    from nas_prune.macs import layer_costs, stage_totals
    from nas_prune.tables import new_table, num_column, text_column

    s, t = result.student_arch, result.teacher.arch
    conv = result.convention
    h, w = result.input_size
    stages = stage_totals(layer_costs(s, input_size=result.input_size, convention=conv))
    table = new_table(title=f"student of {Path(result.teacher.path).name} ({h}x{w}, MACs {conv})")
    text_column(table, "layer")
    text_column(table, "teacher")
    text_column(table, "student")
    num_column(table, "MACs")
    stage_names = table_stages(s)
    for (name, t_widths), (_, s_widths), stage in zip(layer_rows(t), layer_rows(s), stage_names):
        table.add_row(name, t_widths, s_widths, format_macs(stages[stage][0]) if stage in stages else "0")
    console.print(table)

    summary = new_table()
    text_column(summary, "")
    num_column(summary, "target")
    for c in CONVENTIONS:
        num_column(summary, f"MACs ({c})")
    num_column(summary, "params")
    summary.add_row("teacher", "", *(format_macs(result.teacher_macs[c]) for c in CONVENTIONS),
                    f"{result.teacher_params:,}")
    summary.add_row("student", "" if result.target_macs is None else format_macs(result.target_macs, conv),
                    *(format_macs(result.macs[c]) for c in CONVENTIONS), f"{result.params:,}")
    summary.add_row("ratio", "", *(f"{result.teacher_macs[c] / result.macs[c]:.2f}x" for c in CONVENTIONS),
                    f"{result.teacher_params / result.params:.2f}x")
    console.print(summary)
    thr = result.plan.threshold
    if result.target_macs is None:
        reached = f"reached {result.reached:,} MACs ({conv})"
    else:
        gap = (result.target_macs - result.reached) / result.target_macs
        reached = f"reached {result.reached:,} <= target {result.target_macs:,} MACs ({conv}), {gap:.3%} under"
    console.print(
        f"{reached}; criterion {result.criterion}"
        f"{f' on {result.calibration}' if result.calibration else ''}, threshold "
        f"{threshold_text(thr, result.plan.round_to)}"
        f"{f', +{result.plan.filled} channels by fill' if result.plan.filled else ''}"
        f"{f', widths rounded to {result.plan.round_to}' if result.plan.round_to else ''}"
    )
    if result.measured_fvcore is not None:
        th, tw = result.traced_size
        scaled = "" if (th, tw) == tuple(result.input_size) else f", traced at {th}x{tw} and scaled exactly"
        console.print(f"fvcore check on a real forward pass: {result.measured_fvcore:,} MACs{scaled} (matches)")
    if result.latency is not None:
        from nas_prune.latency.target import render_latency

        render_latency(result.latency, console)
    secs = result.seconds
    console.print(
        f"time {secs.get('total', sum(secs.values())):.2f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in secs.items() if k != "total")
        + ")"
    )
    if result.out is not None:
        console.print(f"wrote {result.out}/ (arch.json, student.safetensors, summary.md)")
    for note in result.teacher.notes:  # what loading assumed, e.g. a SPADE teacher's upsampling without --space
        console.print(f"note: {note}", highlight=False, markup=False)
