"""Trials as nas-prune reads them back, the Pareto front, and the result of a study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas_prune.search import SearchResult


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as nas-prune reads it back.

    Attributes:
        number: Optuna trial number.
        state: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``.
        params: ``{group: multiplier}``.
        quality: the quality objective (dB for PSNR), or None.
        psnr / gcka: fidelity numbers (None if not scored).
        latency_ms: median forward latency, or None when not measured.
        macs: student MACs in the study's convention.
        params_count: student parameters.
        widths: the cache key (comma-joined widths in prunable-layer order).
        one_step: all multipliers are 1 (CAT's one-step solution).
        cached_from: the trial whose score this one reused, or None.
        summary: :meth:`Arch.summary` of the student.
        retry_of: the interrupted trial (its worker died or stopped) whose parameters
            this trial runs again, or None (Optuna's ``retry_history``).
    """

    number: int
    state: str
    params: dict[str, float]
    quality: float | None
    psnr: float | None
    gcka: float | None
    latency_ms: float | None
    macs: int | None
    params_count: int | None
    widths: str | None
    one_step: bool
    cached_from: int | None
    summary: str | None
    retry_of: int | None = None

    @classmethod
    def from_trial(cls, trial: "optuna.trial.FrozenTrial") -> "TrialRecord":
        ua = trial.user_attrs
        values = trial.values or []
        return cls(
            number=trial.number,
            state=trial.state.name,
            params={k: float(v) for k, v in trial.params.items()},
            quality=float(values[0]) if values else None,
            psnr=ua.get("psnr"),
            gcka=ua.get("gcka"),
            latency_ms=float(values[1]) if len(values) > 1 else ua.get("latency_ms"),
            macs=ua.get("macs"),
            params_count=ua.get("params"),
            widths=ua.get("widths"),
            one_step=bool(trial.params) and all(float(v) == 1.0 for v in trial.params.values()),
            cached_from=ua.get("cached_from"),
            summary=ua.get("summary"),
            retry_of=_retry_of(trial),
        )


def _retry_of(trial: "optuna.trial.FrozenTrial") -> int | None:
    history = trial.system_attrs.get("retry_history")
    if history:
        return int(history[-1])
    first = trial.system_attrs.get("failed_trial")
    return None if first is None else int(first)


def pareto_front(records: Sequence[TrialRecord], *, objectives: Sequence[str]) -> list[TrialRecord]:
    """Complete trials not dominated by another, one per student, in pick order.

    One objective: every distinct student ranked by quality (best first). Two: the
    non-dominated students (higher quality, lower latency) sorted by latency. A
    student reached by several trials is represented by the first of them.
    """
    seen: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.state == "COMPLETE" and r.quality is not None and r.widths not in seen:
            seen[r.widths] = r
    unique = list(seen.values())
    if len(objectives) == 1:
        return sorted(unique, key=lambda r: (-r.quality, r.number))
    front = [
        r for r in unique
        if not any(
            o.quality >= r.quality and o.latency_ms <= r.latency_ms
            and (o.quality > r.quality or o.latency_ms < r.latency_ms)
            for o in unique
        )
    ]
    return sorted(front, key=lambda r: (r.latency_ms, -r.quality, r.number))


@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes:
        study_name / storage: the Optuna study and its storage URL (password hidden).
        objectives: ``("quality",)`` or ``("quality", "latency")``.
        score: ``zero-shot`` or ``finetune:STEPS``.
        quality_metric: ``psnr`` or ``gcka``.
        calibration: where the calibration images came from.
        trials: every trial of the study (all workers), by number.
        front: the pick list (:func:`pareto_front`); ``picked`` is ``front[pick]``.
        pick: index of the exported trial in ``front``.
        one_step: the one-step trial, if it finished.
        evaluated: numbers of the trials this process scored (not cached, not reused).
        ran: numbers of the trials this process ran (evaluated or cached).
        export: the exported student (a :class:`~nas_prune.search.SearchResult`).
        out: the output folder; ``student_dir`` the exported student folder (``out``
            itself: ``arch.json``, ``student.safetensors``, ``summary.md`` next to the study's files).
        plot: the Pareto PNG, when written.
        latency_device: where latencies were measured (this process's setting).
        notes: remarks worth printing (fallbacks, recovered trials).
    """

    study_name: str
    storage: str
    objectives: tuple[str, ...]
    score: str
    quality_metric: str
    calibration: str
    trials: list[TrialRecord]
    front: list[TrialRecord]
    pick: int
    one_step: TrialRecord | None
    evaluated: list[int]
    ran: list[int]
    export: "SearchResult"
    out: Path
    student_dir: Path
    plot: Path | None
    target_macs: int
    convention: str
    latency_device: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def picked(self) -> TrialRecord:
        return self.front[self.pick]

    @property
    def retried(self) -> list[TrialRecord]:
        """Trials that run again the parameters of an interrupted trial (all workers)."""
        return [r for r in self.trials if r.retry_of is not None]

    def to_json(self) -> dict[str, Any]:
        """Machine-readable summary (what ``--json`` prints)."""

        def rec(r: TrialRecord | None) -> dict[str, Any] | None:
            return None if r is None else {
                "number": r.number, "state": r.state, "params": r.params, "quality": r.quality,
                "psnr": r.psnr, "gcka": r.gcka, "latency_ms": r.latency_ms, "macs": r.macs,
                "params_count": r.params_count, "one_step": r.one_step, "cached_from": r.cached_from,
                "retry_of": r.retry_of,
            }

        return {
            "study": self.study_name,
            "storage": self.storage,
            "objectives": list(self.objectives),
            "score": self.score,
            "quality_metric": self.quality_metric,
            "calibration": self.calibration,
            "target": {"macs": self.target_macs, "convention": self.convention},
            "finished": sum(r.state in ("COMPLETE", "PRUNED") for r in self.trials),
            "retried": [{"trial": r.number, "retry_of": r.retry_of} for r in self.retried],
            "front": [rec(r) for r in self.front],
            "pick": self.pick,
            "picked": rec(self.picked),
            "one_step": rec(self.one_step),
            "evaluated_here": self.evaluated,
            "out": str(self.out),
            "student": str(self.student_dir),
            "plot": str(self.plot) if self.plot else None,
            "notes": list(self.notes),
        }
