"""One-step pruning to a latency target on the runtime the student will run on.

``search --target-latency 40ms --runtime R`` (any runtime of
:data:`nas_prune.latency.runtime.RUNTIMES`; with or without ``--target-macs``):

1. Predict. The latency table of the teacher on this runtime is opened or built
   (:mod:`nas_prune.latency.table`; cached, so only the first run on a machine pays
   for it) and calibrated into a predictor that is non-decreasing in every width.
2. Search. The predictor is one more :class:`~nas_prune.plan.Budget` of the exact
   threshold search and fill pass of :func:`nas_prune.plan.plan_for_target`: the
   student is the largest of the threshold family whose predicted latency (and MACs,
   if given) meets the target.
3. Measure. The student, with its sliced weights, is timed end to end on the runtime
   (median of ``repeats`` >= 20 passes after ``warmup``) and reported next to the
   prediction. The student must *use* the budget: measure in ``[0.9, 1.0] x target``
   (:data:`USE_LOW`). Over the target, the predicted budget is scaled by ``target / measured``
   (times 0.99), so the next student is smaller; under 0.9 x target it is scaled up, aiming at
   0.97 x target (:data:`AIM`), so the next student is larger. Each new budget stays between the
   largest candidate measured within the target and the smallest measured over it (bisecting when
   the rescaled one falls outside), and each measured candidate is a new student, so the search
   closes in on the measured threshold from both sides. It stops at the first student within the
   window, or when no unmeasured student is left between the two (or after ``max_shrinks`` + 1
   measurements): then the largest student measured within the target is kept and the report
   says why it uses less (e.g. "the next larger student of the threshold family measures 41 ms,
   over the target", or "--target-macs is the binding limit"). No student within the target at
   all is an error.

``--round-to auto``: the students of every multiple in :data:`AUTO_ROUND` (1 = no
rounding) that meet the targets are timed interleaved, and the one with the most
MACs per measured millisecond wins (ties: the smaller multiple). That is speed per MAC,
not speed alone: a multiple whose rounding drops more channels gives a smaller, faster
student, and wins only if the runtime runs its MACs faster too. The candidates and their
numbers are recorded in ``arch.json`` (``provenance.round_to_auto``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from nas_prune.families import family_of
from nas_prune.errors import NasPruneError
from nas_prune.latency.runtime import Latency, Runtime, format_ms, measure_interleaved, parse_latency

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.load import LoadedGenerator
    from nas_prune.plan import PrunePlan

AUTO_ROUND = (1, 2, 4, 8, 16, 32)
SHRINK_MARGIN = 0.99
USE_LOW = 0.9  # the student must measure in [USE_LOW, 1] x target
AIM = 0.97  # where a growing step aims, inside that window


def parse_round_to(value: "int | str | None") -> "int | str | None":
    """``None`` / ``"auto"`` / an integer >= 1 (``"16"`` -> 16).

    Raises:
        NasPruneError: anything else.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, bool):
        raise NasPruneError(f"--round-to {value!r}: expected an integer >= 1 or auto")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise NasPruneError(f"--round-to {value!r}: expected an integer >= 1 or auto") from None
    if n < 1:
        raise NasPruneError(f"--round-to must be >= 1, got {n}")
    return n


@dataclass
class LatencyOptions:
    """What ``search`` was asked about latency.

    Attributes:
        target_ms: latency budget for one batch (None: only measure and report).
        runtime: where to measure (:class:`~nas_prune.latency.runtime.Runtime`).
        cache_dir: latency-table cache folder (default :func:`nas_prune.latency.table.cache_dir`).
        refresh: re-measure the table even if cached.
        allow_busy: build or spot-check the table while other processes keep a core busy (recorded).
        repeats: timed passes of the end-to-end check (>= 20 for a stable median).
        warmup: untimed passes before them.
        max_shrinks: re-measure rounds allowed when the measurement is over the target.
        log: prints progress while a latency table is built (minutes, once per key);
            default one line at a time to stderr.
    """

    target_ms: float | None
    runtime: Runtime
    cache_dir: str | os.PathLike | None = None
    refresh: bool = False
    allow_busy: bool = False
    repeats: int = 20
    warmup: int = 3
    max_shrinks: int = 8
    log: Callable[[str], None] | None = field(default=lambda text: print(text, file=sys.stderr, flush=True))


def latency_options(
    *,
    target_latency: str | None = None,
    runtime: "str | Runtime | None" = None,
    threads: int | None = None,
    batch: int = 1,
    round_to: "int | str | None" = None,
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    repeats: int = 20,
    allow_busy: bool = False,
) -> LatencyOptions | None:
    """Validate the latency options of ``search``; None when none of them is in play.

    Latency is in play with a target, an explicit runtime, or ``round_to="auto"``
    (which measures on ``torch-cpu`` unless a runtime is named).

    Raises:
        NasPruneError: a bad value, or a runtime that is not available here.
    """
    target_ms = None if target_latency is None else parse_latency(target_latency)
    if repeats < 20:
        raise NasPruneError(f"latency repeats must be >= 20 for the end-to-end check, got {repeats}")
    if target_ms is None and runtime is None and round_to != "auto":
        if threads is not None or batch != 1:
            raise NasPruneError("--threads and --batch describe a latency measurement: "
                                "add --target-latency, --runtime or --round-to auto")
        return None
    if not isinstance(runtime, Runtime):
        runtime = Runtime(runtime or "torch-cpu", threads=threads, batch=batch)
    return LatencyOptions(target_ms, runtime, cache_dir=cache_dir, refresh=refresh, repeats=repeats,
                          allow_busy=allow_busy)


@dataclass
class LatencyReport:
    """Latency of the chosen student, as ``arch.json``'s ``latency`` section records it.

    Attributes:
        runtime: ``Runtime.describe()`` (runtime, device, threads, batch).
        input_size: ``(H, W)``.
        target_ms: the budget, or None.
        predicted_ms: the predictor's value for the student (None without a table).
        measured: the end-to-end measurement of the student.
        attempts: ``[{"predicted_ms", "measured_ms", "budget_ms"}]`` per measured student,
            in order (more than one when the check had to shrink the student).
        table: where the predictor came from (cache file, units timed now, calibration).
        round_to_auto: the ``--round-to auto`` candidates, or None.
        why: why the student measures below ``USE_LOW`` x target (None when it uses the budget).
    """

    runtime: dict
    input_size: tuple[int, int]
    target_ms: float | None
    predicted_ms: float | None
    measured: Latency
    attempts: list[dict] = field(default_factory=list)
    table: dict | None = None
    round_to_auto: dict | None = None
    why: str | None = None

    @property
    def measured_ms(self) -> float:
        return self.measured.median_ms

    @property
    def prediction_error(self) -> float | None:
        """``predicted / measured - 1`` (None without a prediction)."""
        return None if self.predicted_ms is None else self.predicted_ms / self.measured_ms - 1

    def to_json(self) -> dict[str, Any]:
        return {
            **self.runtime,
            "input_size": list(self.input_size),
            "target_ms": self.target_ms,
            "predicted_ms": None if self.predicted_ms is None else round(self.predicted_ms, 4),
            "measured_ms": round(self.measured_ms, 4),
            "measured": self.measured.to_json(),
            "attempts": self.attempts,
            "table": self.table,
            "used": None if self.target_ms is None else round(self.measured_ms / self.target_ms, 4),
            "why": self.why,
        }

    def summary(self) -> str:
        """One line: ``measured 38.2 ms (median of 20, torch-cpu, cpu (..., 2 threads)); predicted 39.0 ms (+2.1%)``."""
        m = self.measured
        text = (f"latency {format_ms(m.median_ms)} measured (median of {len(m.samples_ms)}, "
                f"min {format_ms(m.min_ms)}, max {format_ms(m.max_ms)}) on {m.runtime}, {m.device}")
        if self.predicted_ms is not None:
            text += f"; predicted {format_ms(self.predicted_ms)} ({self.prediction_error:+.1%})"
        if self.target_ms is not None:
            text += f"; target {format_ms(self.target_ms)}"
        if self.target_ms is not None:
            text += f" ({self.measured_ms / self.target_ms:.0%} used)"
        if len(self.attempts) > 1:
            over = sum(a["measured_ms"] > self.target_ms for a in self.attempts) if self.target_ms else 0
            text += f"; {len(self.attempts)} candidates measured ({over} over the target)"
        if self.why:
            text += f"; {self.why}"
        return text


def _macs_of(plan: "PrunePlan", input_size, convention: str) -> int:
    from nas_prune.macs import count_macs

    return count_macs(plan.student_arch(), input_size=input_size, convention=convention)


def plan_for_latency(
    scores: Mapping[str, "torch.Tensor"],
    teacher: "LoadedGenerator",
    options: LatencyOptions,
    *,
    target_macs: int | None,
    convention: str,
    input_size: tuple[int, int],
    min_channels: int,
    round_to: "int | str | None",
    fill: bool,
) -> tuple["PrunePlan", LatencyReport]:
    """The plan of the largest student meeting the targets, checked by measurement.

    Returns:
        ``(plan, report)``; ``plan.round_to`` is the multiple used (chosen when ``auto``).

    Raises:
        NasPruneError: unreachable targets, or no student measured within the target after
            ``options.max_shrinks`` + 1 measured candidates.
    """
    from nas_prune.latency.table import latency_model
    from nas_prune.plan import Budget, plan_for_target

    rt, arch = options.runtime, teacher.arch
    shape = (rt.batch, family_of(arch).input_channels(arch), *input_size)
    model = table_info = None

    def plan_at(r: int | None, budget_ms: float | None) -> "PrunePlan":
        budgets = () if budget_ms is None else (
            Budget(model, budget_ms, label="--target-latency (predicted)", format=format_ms),)
        return plan_for_target(scores, arch, target_macs=target_macs, convention=convention,
                               input_size=input_size, min_channels=min_channels,
                               round_to=None if r in (None, 1) else r, fill=fill, budgets=budgets)

    if target_macs is not None:  # an unreachable MACs target fails now, not after minutes of timing
        plan_at(None if round_to == "auto" else round_to, None)
    if options.target_ms is not None:
        model, table, cal = latency_model(arch, rt, input_size=input_size, min_channels=min_channels,
                                          directory=options.cache_dir, refresh=options.refresh, log=options.log,
                                          allow_busy=options.allow_busy)
        table_info = {"file": str(table.path), "units": len(table.units), "measured_now": table.measured_now,
                      "seconds": round(table.seconds, 2), "fixed_ms": round(cal.fixed, 4),
                      "scale_ends": round(cal.scale_ends, 6), "scale_blocks": round(cal.scale_blocks, 6),
                      "calibration_worst_error": round(cal.worst_error, 4), "conditions": table.conditions,
                      "spot_check": table.spot_check_now}
        teacher_ms = model.predict(arch)
        if target_macs is None and teacher_ms <= options.target_ms:
            raise NasPruneError(
                f"--target-latency {format_ms(options.target_ms)}: the teacher itself is predicted at "
                f"{format_ms(teacher_ms)} on {rt.name}: nothing to prune"
            )

    auto = None
    budget = options.target_ms
    if round_to == "auto":
        round_to, auto = _choose_round_to(plan_at, budget, teacher, rt, shape, input_size, convention, options)
    plan, lat, attempts, why = _fit_to_target(plan_at, round_to, budget, model, teacher, rt, shape, input_size,
                                              convention, options, target_macs=target_macs)
    report = LatencyReport(runtime=rt.describe(), input_size=tuple(input_size), target_ms=options.target_ms,
                           predicted_ms=None if model is None else model(plan.widths), measured=lat,
                           attempts=attempts, table=table_info, round_to_auto=auto, why=why)
    return plan, report


def _fit_to_target(plan_at, round_to, budget, model, teacher, rt: Runtime, shape, input_size, convention,
                   options: LatencyOptions, *, target_macs):
    """Measure candidates around the predicted threshold until one measures in
    ``[USE_LOW, 1] x target`` (module docstring, step 3).

    The search is over the *predicted* latency, which the plan meets exactly: ``lo`` is the
    largest candidate (predicted, measured) within the target, ``hi`` the smallest over it. With
    both, the next budget interpolates between them to :data:`AIM` x target; before that it
    rescales the last prediction by ``target / measured``; it is bisected back inside ``(lo, hi)``
    when it falls outside; a budget whose student is one already measured is moved on by bisection over plans
    (no measurement), so every measured candidate is a new student.

    Returns:
        ``(plan, latency, attempts, why)``: the largest student measured within the target;
        ``why`` says why it is below ``USE_LOW`` x target (None when it is not).
    """
    from nas_prune.apply import build_student

    target = options.target_ms
    attempts: list[dict] = []
    measured: dict[tuple, tuple] = {}  # widths -> (plan, latency)
    lo = hi = None
    best = None
    plan = plan_at(round_to, budget)

    def key(p):
        return tuple(sorted(p.widths.items()))

    while True:
        student = build_student(plan, teacher.state_dict)
        lat = measure_interleaved({"student": student}, rt, shape, warmup=options.warmup,
                                  repeats=options.repeats)["student"]
        predicted = None if model is None else model(plan.widths)
        measured[key(plan)] = (plan, lat)
        attempts.append({"predicted_ms": None if predicted is None else round(predicted, 4),
                         "measured_ms": round(lat.median_ms, 4),
                         "budget_ms": None if budget is None else round(budget, 4),
                         "macs": _macs_of(plan, input_size, convention)})
        if target is None:
            return plan, lat, attempts, None
        ok = lat.median_ms <= target
        if ok and (best is None or lat.median_ms > best[1].median_ms):
            best = (plan, lat)
        if ok and (lo is None or predicted > lo[0]):
            lo = (predicted, lat.median_ms)
        if not ok and (hi is None or predicted < hi[0]):
            hi = (predicted, lat.median_ms)
        if ok and lat.median_ms >= USE_LOW * target:
            return plan, lat, attempts, None
        if len(attempts) > options.max_shrinks:
            break
        # the next budget: with a candidate on each side, interpolated between them (measured
        # against predicted) to AIM x target; else rescaled from this measurement
        if lo is not None and hi is not None and hi[1] > lo[1]:
            want = lo[0] + (AIM * target - lo[1]) / (hi[1] - lo[1]) * (hi[0] - lo[0])
        else:
            want = predicted * (min(target / lat.median_ms, 1.0) * SHRINK_MARGIN if not ok
                                else AIM * target / lat.median_ms)
        nxt = _new_plan(plan_at, round_to, want, lo and lo[0], hi and hi[0], measured, key)
        if nxt is None:
            break
        budget, plan = nxt
    if best is None:
        plan, lat = measured[key(plan)]
        raise NasPruneError(
            f"--target-latency {format_ms(target)}: the student still measures "
            f"{format_ms(lat.median_ms)} on {rt.name} after {options.max_shrinks} shrinks "
            "(a busy machine? measure again when it is quiet, or raise the target)"
            if len(attempts) > options.max_shrinks else
            f"--target-latency {format_ms(target)}: the student measures "
            f"{format_ms(lat.median_ms)} on {rt.name} and no smaller student of the threshold family "
            "is left: raise the target or lower --min-channels"
        )
    plan, lat = best
    return plan, lat, attempts, _why_short(plan, lat, target, measured, key, plan_at, round_to, target_macs,
                                           len(attempts) > options.max_shrinks, options)


def _new_plan(plan_at, round_to, want, lo, hi, measured, key, steps: int = 40):
    """``(budget, plan)`` of a student not measured yet, at a budget near ``want`` inside
    ``(lo, hi)``, or None when there is none.

    ``plan_at(budget)`` is the largest student predicted within ``budget``; with ``budget < hi``
    it is never a student measured over the target, so a plan measured already is one within it
    (predicted at most ``lo``): the search moves up, bisecting towards ``hi``. Planning costs no
    measurement.
    """
    if lo is not None and want <= lo:
        want = lo * 1.02 if hi is None else (lo + hi) / 2
    if hi is not None and want >= hi:
        want = hi * 0.98 if lo is None else (lo + hi) / 2
    floor = want
    for _ in range(steps):
        try:
            p = plan_at(round_to, want)
        except NasPruneError:
            p = None  # no student is predicted this fast: only larger budgets hold one
        if p is not None and key(p) not in measured:
            return want, p
        floor = want
        if hi is None:
            want *= 1.05
        else:
            want = (floor + hi) / 2
            if hi - floor <= 1e-9 * hi:
                return None
    return None


def _why_short(plan, lat, target, measured, key, plan_at, round_to, target_macs, ran_out, options):
    """Why the chosen student measures below ``USE_LOW`` x target (one sentence)."""
    used = lat.median_ms / target
    over = sorted((l.median_ms, p) for p, l in measured.values() if l.median_ms > target)
    if target_macs is not None:
        try:
            macs_only = plan_at(round_to, None)
            if key(macs_only) == key(plan):
                return f"uses {used:.0%} of the latency target: --target-macs is the binding limit"
        except NasPruneError:  # pragma: no cover - the MACs target was checked before
            pass
    if ran_out:
        return (f"uses {used:.0%} of the latency target after {options.max_shrinks + 1} measured candidates"
                " (a machine whose timings move between runs?)")
    if over:
        ms = over[0][0]
        return (f"uses {used:.0%} of the latency target: the next larger student of the threshold family "
                f"measures {format_ms(ms)}, over the target")
    return f"uses {used:.0%} of the latency target: no larger student of the threshold family is left"


def _choose_round_to(plan_at, budget, teacher, rt: Runtime, shape, input_size, convention, options):
    """Time the student of every :data:`AUTO_ROUND` multiple; the most MACs per ms wins."""
    from nas_prune.apply import build_student

    plans, unreachable = {}, []
    for r in AUTO_ROUND:
        try:
            plans[r] = plan_at(r, budget)
        except NasPruneError:
            unreachable.append(r)
    if not plans:
        plan_at(1, budget)  # raises the plain error
    nets = {r: build_student(p, teacher.state_dict) for r, p in plans.items()}
    lats = measure_interleaved(nets, rt, shape, warmup=2, repeats=max(10, options.repeats // 2))
    rows = []
    for r, p in plans.items():
        macs = _macs_of(p, input_size, convention)
        rows.append({"round_to": r, "macs": macs, "convention": convention,
                     "measured_ms": round(lats[r].median_ms, 4),
                     "macs_per_ms": round(macs / lats[r].median_ms, 1)})
    best = max(rows, key=lambda row: (row["macs_per_ms"], -row["round_to"]))["round_to"]
    return best, {**rt.describe(), "chosen": best, "candidates": rows, "unreachable": unreachable}


def render_latency(report: LatencyReport, console) -> None:
    """Print the latency line (and the ``--round-to auto`` candidates) of a search result."""
    auto = report.round_to_auto
    if auto:
        from rich.table import Table

        from nas_prune.macs import format_macs

        table = Table(title=f"--round-to auto on {auto['runtime']} ({auto['device']})")
        for col in ("round to", "MACs", "measured", "MACs per ms"):
            table.add_column(col, justify="right")
        for row in auto["candidates"]:
            mark = " (chosen)" if row["round_to"] == auto["chosen"] else ""
            table.add_row(f"{row['round_to']}{mark}", format_macs(row["macs"], row["convention"]),
                          format_ms(row["measured_ms"]), f"{row['macs_per_ms']:,.0f}")
        console.print(table)
        if auto["unreachable"]:
            console.print(f"--round-to auto: no student meets the targets with multiples of "
                          f"{', '.join(map(str, auto['unreachable']))}")
    console.print(report.summary())
