"""What a study writes besides its storage: the picked student and ``trials.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.study.records import TrialRecord
from nas_prune.study.variables import scaled_scores
from nas_prune.study.worker import _Study, _widths_key

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.search import SearchResult

STUDENT_DIR = "student"
TRIALS_FILE = "trials.csv"


def _export(loaded, record: TrialRecord, worker: _Study, out: Path, *, space: str | None,
            front_index: int, study_size: int) -> "SearchResult":
    """Prune with the trial's multipliers through the one-step code path and write ``student/``."""
    from nas_prune.search import export_result, prune_to_target

    result = prune_to_target(
        loaded, target_macs=worker.target, convention=worker.convention, input_size=worker.size,
        min_channels=worker.min_channels, importance=worker.criterion,
        scores=scaled_scores(worker.scores, worker.groups, record.params),
        round_to=worker.round_to, fill=worker.fill, verify=worker.verify, space=space,
    )
    key = _widths_key(result.plan.widths, worker.layers)
    if key != record.widths:  # the same multipliers give the same plan; a failure is a bug
        raise RuntimeError(f"re-pruning trial {record.number} gave other widths than the trial")
    study = {
        "name": worker.study_name,
        "storage": worker.store.url,
        "trial": record.number,
        "one_step": record.one_step,
        "params": dict(record.params),
        "groups": {k: list(v) for k, v in worker.groups.items()},
        "score": str(worker.spec),
        "objectives": list(worker.objectives),
        "quality_metric": worker.quality_metric,
        "values": {"psnr": record.psnr, "gcka": record.gcka, "latency_ms": record.latency_ms},
        "front_index": front_index,
        "trials": study_size,
        "calibration": worker.calibration,
        "score_size": list(worker.score_size),
    }
    note = (
        f"\nStudy `{worker.study_name}`, trial {record.number}"
        f"{' (the one-step solution)' if record.one_step else ''}: score {worker.spec}, "
        f"PSNR to the teacher {record.psnr:.2f} dB, GCKA {record.gcka:.4f}"
        + (f", latency {record.latency_ms:.1f} ms" if record.latency_ms is not None else "")
        + ". Multipliers: " + ", ".join(f"{k} {v:.3f}" for k, v in record.params.items()) + ".\n"
    )
    export_result(result, out, force=True, provenance={"study": study}, summary_note=note)
    return result


def _write_trials_csv(path: Path, records: Sequence[TrialRecord], groups: Mapping[str, Any]) -> None:
    from nas_prune.fileio import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "one_step", "cached_from", "quality", "psnr_db", "gcka",
                "latency_ms", "macs", "params", *groups, "widths"])
    for r in records:
        w.writerow([
            r.number, r.state, int(r.one_step), "" if r.cached_from is None else r.cached_from,
            _fmt(r.quality), _fmt(r.psnr), _fmt(r.gcka), _fmt(r.latency_ms),
            "" if r.macs is None else r.macs, "" if r.params_count is None else r.params_count,
            *(_fmt(r.params.get(g)) for g in groups), r.widths or "",
        ])
    write_text(path, buf.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
