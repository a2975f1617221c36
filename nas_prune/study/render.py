"""Showing a study: the Pareto plot and the console table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nas_prune.macs import format_macs
from nas_prune.study.records import StudyResult, TrialRecord


def plot_pareto(
    records: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    path: str | os.PathLike,
    *,
    picked: TrialRecord | None = None,
    one_step: TrialRecord | None = None,
    quality_metric: str = "psnr",
    title: str = "",
) -> Path:
    """Latency (x) vs quality (y) of every complete trial, the front as a step line.

    Marks the one-step solution (star) and the exported trial (ring). Written
    atomically as PNG with matplotlib's Agg backend.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas_prune.fileio import atomic_path

    done = [r for r in records if r.state == "COMPLETE" and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter([r.latency_ms for r in done], [r.quality for r in done], s=14, c="#9aa5b1", label="trials")
    fx = [r.latency_ms for r in front]
    fy = [r.quality for r in front]
    ax.step(fx, fy, where="post", color="#1f77b4", lw=1.2)
    ax.scatter(fx, fy, s=26, c="#1f77b4", label="Pareto front", zorder=3)
    if one_step is not None and one_step.latency_ms is not None:
        ax.scatter([one_step.latency_ms], [one_step.quality], marker="*", s=220, c="#d62728",
                   label=f"one-step (trial {one_step.number})", zorder=4)
    if picked is not None and picked.latency_ms is not None:
        ax.scatter([picked.latency_ms], [picked.quality], s=160, facecolors="none", edgecolors="#2ca02c",
                   linewidths=2, label=f"exported (trial {picked.number})", zorder=5)
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel("PSNR to teacher (dB)" if quality_metric == "psnr" else "GCKA to teacher")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def render_study(result: StudyResult, console, *, top: int = 10) -> None:
    """Rich table of the pick list (top ``top``) and a summary of the study and export."""
    from nas_prune.tables import new_table, num_column, text_column

    conv = result.convention
    two = len(result.objectives) == 2
    title = (
        f"{'Pareto front' if two else 'top trials'} of {result.study_name} "
        f"({sum(r.state in ('COMPLETE', 'PRUNED') for r in result.trials)} finished trials)"
    )
    table = new_table(title=title, caption=f"PSNR in dB and GCKA: fidelity to the teacher; ms: median latency; "
                                           f"MACs: {conv} convention")
    for col in ("pick", "trial", "PSNR", "GCKA", "ms", "MACs", "params"):
        num_column(table, col)
    text_column(table, "student")
    text_column(table, "")
    rows = list(enumerate(result.front[:top]))
    if result.one_step is not None and all(r.number != result.one_step.number for _, r in rows):
        rows.append((None, result.one_step))
    for i, r in rows:
        notes = []
        if r.one_step:
            notes.append("one-step")
        if i == result.pick:
            notes.append("exported")
        table.add_row(
            "-" if i is None else str(i), str(r.number), _cell(r.psnr, ".2f"), _cell(r.gcka, ".4f"),
            _cell(r.latency_ms, ".1f"), format_macs(r.macs) if r.macs else "-",
            f"{r.params_count:,}" if r.params_count else "-", r.summary or "", ", ".join(notes),
        )
    console.print(table)
    for line in result.notes:
        console.print(line)
    retried = result.retried
    if retried:
        pairs = ", ".join(f"trial {r.retry_of} ran again as trial {r.number}" for r in retried)
        many = len(retried) > 1
        console.print(f"{len(retried)} trial{'s' if many else ''} retried after {'their workers' if many else 'its worker'} "
                      f"stopped: {pairs}")
    else:
        console.print("0 trials retried (no worker was interrupted)")
    p, o = result.picked, result.one_step
    if o is not None and p.number != o.number:
        diff = f"{p.psnr - o.psnr:+.2f} dB PSNR"
        if p.latency_ms is not None and o.latency_ms is not None:
            diff += f", {p.latency_ms - o.latency_ms:+.1f} ms"
        console.print(f"exported trial {p.number} vs one-step trial {o.number}: {diff}")
    console.print(f"study {result.study_name!r} in {result.storage}; student written to {result.student_dir}")
    if result.plot:
        console.print(f"Pareto plot: {result.plot}")


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
