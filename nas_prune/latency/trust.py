"""Latency tables you can trust: the machine's load is recorded, busy machines are refused,
cached tables are spot-checked.

Why: a table built while other processes kept the cores busy (load ~40 on 2 cores) and reused
once the machine was quiet predicted the smallest student at 304 ms against a teacher that ran in
589 ms, and refused a reachable target. Nothing in the cache said how it had been measured.

- **Load recorded.** Every table records ``conditions`` (cores other processes kept busy when
  building started, whether ``--allow-busy`` forced it, when) and every entry the cores kept busy
  while it was timed (``unit_load`` / ``calibration_load``: the average over the stretch of
  measuring it belongs to, :data:`LOAD_WINDOW_S`; :func:`nas_prune.threads.others_busy`, this
  process's own threads excluded).
- **Busy machines refused.** Building (any entry to measure) starts only when other processes keep
  less than :data:`BUSY_LIMIT` cores busy, and stops with the same message if they start to
  while it runs (entries measured quiet are kept; the stretch measured under load is dropped).
  ``--allow-busy`` forces it, and the table records that it was forced.
- **Spot check.** When a search opens a cached table, :data:`SPOT_UNITS` of its entries (the two
  costliest, which dominate predictions, and others spread over the cost ranking) are timed
  again. An entry more than :data:`SPOT_TOLERANCE` (15%) off is re-measured (its fresh value
  replaces it); when most spot-checked entries are off, the machine has changed since the table
  was built, so every entry and the calibration are measured again. On a busy machine the
  spot check is skipped with a note (a busy measurement would not be a better reference than a
  quiet one), unless ``--allow-busy``.

Every timing and every load reading goes through the :class:`~nas_prune.latency.runtime.Runtime`
(``clock``, ``busy_cores``, ``load_meter``), so tests drive all of this with a fake timer and a
fake load.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.families.units import Unit
    from nas_prune.latency.runtime import Runtime

BUSY_LIMIT = 0.5
SPOT_UNITS = 4
SPOT_TOLERANCE = 0.15
LOAD_WINDOW_S = 2.0


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def busy_message(busy: float, what: str) -> str:
    return (f"{what}: other processes keep {busy:.1f} cores busy (limit {BUSY_LIMIT:g}), so the "
            "latencies measured now would be those of a loaded machine and would mislead every later "
            "search; run it when the machine is quiet, or pass --allow-busy to measure anyway "
            "(the table records that it was forced)")


def check_quiet(runtime: "Runtime", *, allow_busy: bool, what: str) -> dict:
    """``{"busy_cores", "allow_busy", "at"}`` now; raises when busy unless ``allow_busy``.

    Raises:
        NasPruneError: other processes keep ``BUSY_LIMIT`` cores or more busy (:func:`busy_message`).
    """
    busy = runtime.busy_cores()
    forced = busy is not None and busy >= BUSY_LIMIT
    if forced and not allow_busy:
        raise NasPruneError(busy_message(busy, what))
    return {"busy_cores": None if busy is None else round(busy, 2), "allow_busy": bool(allow_busy and forced),
            "at": now_iso()}


class LoadWindows:
    """Cuts a long measurement into stretches of about ``LOAD_WINDOW_S`` seconds and gives each
    the cores other processes kept busy during it (:meth:`Runtime.load_meter`)."""

    def __init__(self, runtime: "Runtime", *, allow_busy: bool, what: str):
        self.runtime, self.allow_busy, self.what = runtime, allow_busy, what
        self.pending: list[str] = []
        self._start()

    def _start(self) -> None:
        self.meter = self.runtime.load_meter()
        self.t0 = time.perf_counter()

    def add(self, key: str) -> None:
        self.pending.append(key)

    def due(self) -> bool:
        return time.perf_counter() - self.t0 >= LOAD_WINDOW_S

    def close(self) -> tuple[list[str], float | None]:
        """``(keys of the stretch, busy cores during it)``; raises (after the caller drops the
        stretch's entries, see :meth:`LatencyTable.fill`) when it was busy and not allowed."""
        keys, busy = self.pending, self.meter()
        self.pending = []
        self._start()
        return keys, busy

    def too_busy(self, busy: float | None) -> bool:
        return busy is not None and busy >= BUSY_LIMIT and not self.allow_busy


@dataclass
class SpotCheck:
    """What :func:`spot_check` found.

    Attributes:
        checked: ``[{"unit", "cached_ms", "fresh_ms", "off"}]`` per spot-checked entry.
        action: ``"ok"``, ``"re-measured N entries"``, ``"table re-measured"`` or ``"skipped: ..."``.
        busy_cores: load while checking.
    """

    checked: list[dict] = field(default_factory=list)
    action: str = "ok"
    busy_cores: float | None = None
    at: str = field(default_factory=now_iso)

    @property
    def off(self) -> list[dict]:
        return [c for c in self.checked if abs(c["off"]) > SPOT_TOLERANCE]

    def to_json(self) -> dict:
        return {"at": self.at, "action": self.action, "tolerance": SPOT_TOLERANCE,
                "busy_cores": None if self.busy_cores is None else round(self.busy_cores, 2),
                "checked": self.checked}

    def summary(self) -> str:
        if self.action.startswith("skipped"):
            return f"latency table spot check {self.action}"
        worst = max((abs(c["off"]) for c in self.checked), default=0.0)
        return (f"latency table spot check: {len(self.checked)} entries timed again, worst {worst:.0%} off "
                f"(tolerance {SPOT_TOLERANCE:.0%}): {self.action}")


def pick_spot_units(table, units: Sequence["Unit"], k: int = SPOT_UNITS) -> list["Unit"]:
    """The two costliest of ``units`` in ``table``, then others evenly spread over the cost ranking."""
    have = sorted((u for u in units if u.signature in table.units),
                  key=lambda u: (-table.units[u.signature], u.signature))
    if len(have) <= k:
        return have
    picks = have[:2]
    rest = have[2:]
    step = len(rest) / (k - 2)
    picks += [rest[int(i * step + step / 2)] for i in range(k - 2)]
    return picks


def time_unit(grids, unit: "Unit", runtime: "Runtime", overhead_ms: float) -> float:
    """One entry's cost (ms): median of the unit's timed passes minus the per-call overhead, as
    :meth:`LatencyTable.fill` measures it (``grids`` builds the unit's module, as there)."""
    mod, shape = grids.build(unit)
    samples = runtime.time(mod, (runtime.batch, *shape[1:]), warmup=2, repeats=5, min_total_ms=20.0, max_repeats=50)
    return max(0.0, statistics.median(samples) - overhead_ms)


def spot_check(table, grids, units: Sequence["Unit"], runtime: "Runtime", *,
               allow_busy: bool = False, log: Callable[[str], None] | None = None,
               k: int = SPOT_UNITS) -> SpotCheck:
    """Time ``k`` cached entries again and repair the table (module docstring).

    The table is changed in place: entries off by more than the tolerance take their fresh value;
    when more than half are off, every entry and the calibration are dropped (the caller's
    :meth:`LatencyTable.fill` measures them again, on a quiet machine). The result is appended to
    ``table.spot_checks`` and saved with the table.
    """
    picks = pick_spot_units(table, units, k)
    result = SpotCheck()
    if not picks or table.overhead_ms is None:
        result.action = "skipped: nothing cached yet"
        return result
    busy = runtime.busy_cores()
    result.busy_cores = busy
    if busy is not None and busy >= BUSY_LIMIT and not allow_busy:
        result.action = (f"skipped: other processes keep {busy:.1f} cores busy; the cached table "
                         f"(measured with {_table_busy(table)} busy) is used as it is")
        table.spot_checks.append(result.to_json())
        table.spot_check_now = result.to_json()
        if log:
            log(result.summary())
        return result
    meter = runtime.load_meter()
    fresh = {}
    for u in picks:
        cached = table.units[u.signature]
        new = time_unit(grids, u, runtime, table.overhead_ms)
        fresh[u.signature] = new
        off = new / cached - 1 if cached > 0 else (0.0 if new == 0 else float("inf"))
        result.checked.append({"unit": u.signature, "cached_ms": round(cached, 5), "fresh_ms": round(new, 5),
                               "off": round(off, 4) if off != float("inf") else None})
    load = meter()
    for c in result.checked:
        if c["off"] is None:
            c["off"] = float("inf")
    off = result.off
    if len(off) * 2 > len(result.checked):
        table.units.clear()
        table.unit_load.clear()
        table.calibration.clear()
        table.calibration_load.clear()
        table.overhead_ms = None
        result.action = f"table re-measured ({len(off)} of {len(result.checked)} entries off)"
    elif off:
        for c in off:
            table.units[c["unit"]] = fresh[c["unit"]]
            table.unit_load[c["unit"]] = None if load is None else round(load, 2)
        table.calibration.clear()  # the unit sums changed: fit the scales to fresh end-to-end times
        table.calibration_load.clear()
        result.action = f"re-measured {len(off)} entries"
    for c in result.checked:
        if c["off"] == float("inf"):
            c["off"] = None
    table.spot_checks.append(result.to_json())
    table.spot_checks[:] = table.spot_checks[-20:]
    table.spot_check_now = result.to_json()
    table.save()
    if log:
        log(result.summary())
    return result


def _table_busy(table) -> str:
    busy = table.conditions.get("busy_cores")
    return "unknown cores" if busy is None else f"{busy:.1f} cores"
