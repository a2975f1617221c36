"""Latency tables: each layer shape of a teacher's students timed once, cached on disk.

The layer shapes are the family's (:meth:`nas_prune.families.base.GeneratorFamily.latency_unit_grids`):
a *unit* is one module, built from the family's own pieces at the resolution it runs at
inside the generator; the inception-residual family's units and formula are in
:mod:`nas_prune.families.inception.latency` (stem, branches, block merges, head). A family
without units (``latency_units = False``, e.g. the U-Net) gets the end-to-end model of
:class:`MacsGrids`: the prediction is ``fixed + scale * MACs`` (fvcore), calibrated on the
same whole generators, so every family can take a latency target; the final student is
measured end to end either way (:mod:`nas_prune.latency.target`).

Each unit is timed at the widths of a grid per axis (:func:`width_grid`: the floor, the
teacher's width, and 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, ... in between); a
unit's cost is its median time minus the runtime's median time for a trivial pass
(the per-call overhead, which the whole generator pays once, not once per layer).

Predicted latency of a student (:class:`LatencyModel`)::

    t(student) = fixed + scale_ends * ends(student) + scale_blocks * blocks(student)

where the family splits the sum of its units into two parts (inception: stem and head units,
block units), with each unit read off its grid by (bi)linear interpolation. A conv's time is close
to bilinear in its two widths (its MACs are), which is why a coarse grid suffices. The CPU
kernels of ONNX Runtime (MLAS) and of eager PyTorch (oneDNN) process channels in blocks of 8, so
there a width above 8 is charged what the next multiple of 8 costs (:func:`effective_width`,
``Runtime.channel_block``): 60 channels cost what 64 do. Measured on the 2.6G student of CAT's
rule (odd widths such as 13 and 37): every width rounded *up* to a multiple of 8, 41% more MACs,
ran 5% faster than it on torch-cpu and as fast on ONNX Runtime; without the step such students
were predicted 12-20% too fast on both runtimes.
Before interpolating, each grid is made non-decreasing along every axis (a running
maximum), so the prediction never falls when a width grows: the exact threshold
search of :mod:`nas_prune.plan` relies on that monotonicity, exactly as for MACs. A
real runtime is sometimes faster at a multiple of 8 or 16 than just below it;
``--round-to auto`` is where that is exploited, not the table.

``fixed`` is the runtime's time for a trivial pass (the one call into the runtime that a
whole generator pays, and that was subtracted from every unit). The two scales are
calibrated: whole generators spanning the family (the teacher with every width multiplied
by 1, 1/2, 1/4 and 1/8, and the smallest student: no branch, stem and head at the floor)
are timed end to end and the scales minimise the relative errors of the prediction over
them (both kept > 0). They absorb what timing layers one by one misses, which differs
between the two parts: a block's many small branches run with cold caches inside the
network (their weights and the stream were evicted by the other branches), while the
stem and head layers are few and large.

Cache: one JSON file per key (runtime, device, threads, batch, input size, library
versions, this table format) in ``<cache dir>/latency/`` (:func:`cache_dir`); units
are stored by signature (kind, widths, norm, padding, resolution), so students of
other teachers reuse what was measured. A file whose stored key differs from the
expected one, or that cannot be read, is ignored and rebuilt.

Trust (:mod:`nas_prune.latency.trust`): a table records the machine's load when it was built
and per entry; it is not built while other processes keep a core busy (``allow_busy`` forces
it, recorded); a search spot-checks a cached table and re-measures entries more than 15% off,
then times the calibration generators again and fits the scales to those fresh times (seconds,
against the minutes of the units): the speed of a shared machine drifts by 10-30% between runs,
and a scale fitted an hour earlier carries that drift into every prediction. A busy machine
skips both (recorded) and the cached calibration is used.
Format 2 added those records: a format-1 table cannot say how it was measured and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from nas_prune.errors import NasPruneError
from nas_prune.families import family_of
from nas_prune.families.inception.latency import (  # noqa: F401  (historical names)
    CALIBRATION_FACTORS,
    UnitGrids,
    arch_widths,
    build_unit,
    calibration_archs,
)
from nas_prune.families.units import LADDER, Axis, Unit, small_modules, width_grid  # noqa: F401
from nas_prune.latency.runtime import Runtime

Arch = object  # an architecture of any registered family

TABLE_FORMAT = 2
CACHE_ENV = "NAS_PRUNE_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where latency tables live: ``override``, else ``$NAS_PRUNE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/nas-prune``, else ``~/.cache/nas-prune``."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nas-prune"


class MacsGrids:
    """The end-to-end latency model of a family without latency units: no unit is timed, and
    a student's one part is its fvcore MACs (in G), so ``t = fixed + scale * MACs``.

    MACs are non-decreasing in every width, so the prediction is too and the exact threshold
    search holds. The scale is fitted on the same whole generators as the unit tables (the
    teacher with every width times 1, 1/2, 1/4 and 1/8, and the smallest student).
    """

    kinds: dict = {}

    def __init__(self, teacher: Arch, *, input_size: tuple[int, int], min_channels: int = 16):
        from nas_prune.plan import macs_formula

        self.teacher, self.input_size, self.min_channels = teacher, input_size, min_channels
        self.family = family_of(teacher)
        self._macs = macs_formula(teacher, input_size=input_size, convention="fvcore")

    def units(self) -> list[Unit]:
        return []

    def parts(self, dense, widths: Mapping[str, int]) -> tuple[float, float]:
        full = self.family.complete_widths(self.teacher, widths)
        return self._macs(full) / 1e9, 0.0

    def arch_widths(self, arch) -> dict[str, int]:
        return self.family.student_widths(arch, self.teacher)

    def calibration_archs(self, min_channels: int = 16) -> list:
        layers = self.family.prunable_layers(self.teacher)
        out = []
        for f in (*CALIBRATION_FACTORS, 0.0):
            widths = {}
            for layer in layers:
                if layer.follows is not None:
                    continue
                step, floor = self.family.layer_rule(layer, self.teacher, min_channels=min_channels, round_to=None)
                widths[layer.name] = max(floor, min(layer.width, round(layer.width * f)))
            arch = self.family.arch_from_widths(self.teacher, self.family.complete_widths(self.teacher, widths))
            if arch not in out:
                out.append(arch)
        return out


def unit_grids(teacher: Arch, *, input_size: tuple[int, int], min_channels: int = 16):
    """The family's latency units for ``teacher`` (:class:`MacsGrids` for a family without any)."""
    family = family_of(teacher)
    if family.latency_units:
        return family.latency_unit_grids(teacher, input_size=input_size, min_channels=min_channels)
    return MacsGrids(teacher, input_size=input_size, min_channels=min_channels)


# ----------------------------------------------------------------------------- the table


def table_key(runtime: Runtime, input_size: tuple[int, int]) -> dict:
    """The cache key: everything a measured latency depends on besides the layer shape."""
    import nas_prune

    return {
        "format": TABLE_FORMAT, "runtime": runtime.name, "device": runtime.device(),
        "threads": runtime.threads, "batch": runtime.batch, "input_size": list(input_size),
        "versions": {**runtime.versions(), "nas-prune": nas_prune.__version__},
    }


def table_path(key: Mapping, directory: str | os.PathLike | None = None) -> Path:
    """``<cache dir>/latency/<runtime>-<first 12 hex digits of the key's SHA-256>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir(directory) / "latency" / f"{key['runtime']}-{digest}.json"


@dataclass
class LatencyTable:
    """Measured unit costs for one key (one runtime, machine, thread count, input size).

    Attributes:
        key: :func:`table_key`.
        path: the cache file.
        units: ``{unit signature: median ms minus overhead}``.
        overhead_ms: median time of a trivial pass (subtracted from every unit).
        calibration: ``{generator signature: end-to-end median ms}``.
        measured_now: units measured by this process (0 = everything came from the cache).
        seconds: time spent measuring in this process.
        conditions: how busy the machine was when building started (``busy_cores``,
            ``allow_busy``: forced on a busy machine, ``at``), :mod:`nas_prune.latency.trust`.
        unit_load / calibration_load: per entry, cores other processes kept busy while it was timed.
        spot_checks: the last spot checks of this table (:func:`nas_prune.latency.trust.spot_check`);
            ``spot_check_now`` the one this process ran, if any.
    """

    key: dict
    path: Path
    units: dict[str, float] = field(default_factory=dict)
    overhead_ms: float | None = None
    calibration: dict[str, float] = field(default_factory=dict)
    measured_now: int = 0
    seconds: float = 0.0
    conditions: dict = field(default_factory=dict)
    unit_load: dict[str, float | None] = field(default_factory=dict)
    calibration_load: dict[str, float | None] = field(default_factory=dict)
    spot_checks: list[dict] = field(default_factory=list)
    spot_check_now: dict | None = None

    @classmethod
    def open(cls, runtime: Runtime, input_size: tuple[int, int], *,
             directory: str | os.PathLike | None = None, refresh: bool = False) -> "LatencyTable":
        """The cached table for this key (empty if none, unreadable, or ``refresh``)."""
        key = table_key(runtime, input_size)
        path = table_path(key, directory)
        table = cls(key, path)
        if refresh or not path.exists():
            return table
        from nas_prune.errors import NasPruneError
        from nas_prune.fileio import read_json

        try:
            doc = read_json(path, what="latency table")
            if doc.get("key") != key:
                return table
            table.units = {str(k): float(v) for k, v in doc.get("units", {}).items()}
            table.overhead_ms = None if doc.get("overhead_ms") is None else float(doc["overhead_ms"])
            table.calibration = {str(k): float(v) for k, v in doc.get("calibration", {}).items()}
            table.conditions = dict(doc.get("conditions", {}))
            table.unit_load = {str(k): v for k, v in doc.get("unit_load", {}).items()}
            table.calibration_load = {str(k): v for k, v in doc.get("calibration_load", {}).items()}
            table.spot_checks = list(doc.get("spot_checks", []))
        except (NasPruneError, OSError, ValueError, TypeError, AttributeError):
            return cls(key, path)
        return table

    def save(self) -> None:
        from nas_prune.fileio import write_text

        doc = {"key": self.key, "overhead_ms": self.overhead_ms, "units": self.units,
               "calibration": self.calibration, "conditions": self.conditions, "unit_load": self.unit_load,
               "calibration_load": self.calibration_load, "spot_checks": self.spot_checks}
        try:
            write_text(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        except OSError as err:
            raise NasPruneError(f"cannot write the latency table {self.path}: {err.strerror or err}") from None

    def fill(self, grids, units: Iterable[Unit], runtime: Runtime, *,
             log: Callable[[str], None] | None = None, save_every: int = 50, allow_busy: bool = False) -> None:
        """Time every unit not in the table yet (and the overhead), saving as it goes.

        ``grids`` builds each unit's module (``grids.build(unit) -> (module, input shape)``).

        Raises:
            NasPruneError: other processes keep a core busy, before or while measuring, and not
                ``allow_busy`` (entries measured before the load came are kept).
        """
        from nas_prune.latency.trust import LoadWindows, busy_message, check_quiet

        todo = [u for u in units if u.signature not in self.units]
        if not todo and self.overhead_ms is not None:
            return
        state = check_quiet(runtime, allow_busy=allow_busy, what="latency table not built")
        if not self.conditions:
            self.conditions = state
        elif state["allow_busy"]:
            self.conditions["allow_busy"] = True
        windows = LoadWindows(runtime, allow_busy=allow_busy, what="latency table")

        def close_window() -> None:
            keys, busy = windows.close()
            if windows.too_busy(busy):
                for k in keys:
                    self.units.pop(k, None)
                    self.unit_load.pop(k, None)
                self.save()
                raise NasPruneError(busy_message(busy, "latency table building stopped")
                                    + f"; {len(self.units)} entries measured quiet are kept in {self.path}")
            for k in keys:
                self.unit_load[k] = None if busy is None else round(busy, 2)

        if self.overhead_ms is None:
            start = time.perf_counter()
            mod, shape = small_modules()[1]().eval(), (1, 1, 4, 4)  # a trivial pass: the per-call overhead
            self.overhead_ms = statistics.median(runtime.time(mod, shape, warmup=3, repeats=30))
            self.seconds += time.perf_counter() - start
        if not todo:
            return
        if log:
            log(f"latency table: timing {len(todo)} layer shapes on {runtime.name} "
                f"({runtime.device()}); cached in {self.path}")
        start = time.perf_counter()
        for i, unit in enumerate(todo, 1):
            mod, shape = grids.build(unit)
            samples = runtime.time(mod, (runtime.batch, *shape[1:]), warmup=2, repeats=5,
                                   min_total_ms=20.0, max_repeats=50)
            self.units[unit.signature] = max(0.0, statistics.median(samples) - self.overhead_ms)
            windows.add(unit.signature)
            self.measured_now += 1
            if windows.due():
                close_window()
            if i % save_every == 0:
                self.save()
                if log:
                    log(f"latency table: {i}/{len(todo)} ({time.perf_counter() - start:.0f} s)")
        close_window()
        self.seconds += time.perf_counter() - start
        self.save()


# ----------------------------------------------------------------------------- the predictor


def effective_width(w: int, high: int, block: int = 1) -> int:
    """The width whose cost a width ``w`` is charged: ``w`` up to ``block``, above it the
    next multiple of ``block`` (at most ``high``). Non-decreasing in ``w``."""
    return w if w <= block else min(-(-w // block) * block, high)


def _dense(grid_values: np.ndarray, axes: Sequence[Axis], block: int = 1) -> np.ndarray:
    """Monotone (running max per axis) grid -> dense array over widths 0..high per axis,
    linear between grid points, each width charged at :func:`effective_width`."""
    g = grid_values.copy()
    for d in range(g.ndim):
        g = np.maximum.accumulate(g, axis=d)
    for d, axis in enumerate(axes):
        x = np.array([effective_width(w, axis.high, block) for w in range(axis.high + 1)])
        g = np.apply_along_axis(lambda v: np.interp(x, axis.grid, v), d, g)
    return g


class LatencyModel:
    """Predicted latency (ms) of the students of one teacher:
    ``fixed + scale_ends * ends + scale_blocks * blocks`` (the family's two parts of its units).

    Call it with ``{prunable-layer name: width}`` (as :class:`nas_prune.plan.MacsFormula`);
    non-decreasing in every width (both scales are > 0). Built by :func:`latency_model`.
    """

    def __init__(self, grids, costs: Mapping[str, float], *, fixed: float = 0.0,
                 scale_ends: float = 1.0, scale_blocks: float = 1.0, block: int = 1):
        self.grids, self.fixed = grids, float(fixed)
        self.scale_ends, self.scale_blocks = float(scale_ends), float(scale_blocks)
        self.dense: dict[str, np.ndarray] = {}
        for kind, (axes, _) in grids.kinds.items():
            values = np.zeros(tuple(len(a.grid) for a in axes))
            for point in np.ndindex(*values.shape):
                widths = tuple(a.grid[i] for a, i in zip(axes, point))
                values[point] = costs[grids.unit(kind, widths).signature]
            self.dense[kind] = _dense(values, axes, block)
    def units(self, widths: Mapping[str, int]) -> float:
        """Sum of the unit costs of the student with ``widths`` (ms, before calibration)."""
        return sum(self.parts(widths))

    def parts(self, widths: Mapping[str, int]) -> tuple[float, float]:
        """The family's two parts of the student with ``widths`` (ms, before calibration)."""
        return self.grids.parts(self.dense, widths)

    def __call__(self, widths: Mapping[str, int]) -> float:
        ends, blocks = self.parts(widths)
        return self.fixed + self.scale_ends * ends + self.scale_blocks * blocks

    def predict(self, arch: Arch) -> float:
        """Predicted latency of a student architecture of the teacher."""
        return self(self.grids.arch_widths(arch))


def arch_signature(arch: Arch) -> str:
    from nas_prune.arch import arch_to_dict

    return hashlib.sha256(json.dumps(arch_to_dict(arch), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Calibration:
    """How the unit sums were fitted to end-to-end times (see the module docstring).

    Attributes:
        fixed: the runtime's trivial-pass time (ms).
        scale_ends / scale_blocks: factors on the stem-and-head and on the block units.
        points: ``(stem and head units, block units, measured ms)`` per calibration generator.
    """

    fixed: float
    scale_ends: float
    scale_blocks: float
    points: list[tuple[float, float, float]]

    def predict(self, ends: float, blocks: float) -> float:
        return self.fixed + self.scale_ends * ends + self.scale_blocks * blocks

    @property
    def worst_error(self) -> float:
        """Largest |predicted / measured - 1| over the calibration generators."""
        return max(abs(self.predict(e, k) / m - 1) for e, k, m in self.points)


def fit_calibration(points: Sequence[tuple[float, float, float]], fixed: float) -> Calibration:
    """Scales minimising the relative errors of ``measured ~ fixed + a * ends + b * blocks`` over
    ``points`` (``(ends, blocks, measured)``), ``fixed`` given. Falls back to one common scale
    when the two cannot both be fitted positive, and to 1 when that one is not positive."""
    e, k, m = (np.array([p[i] for p in points], dtype=float) for i in range(3))
    y = 1.0 - fixed / m  # relative residual: fixed / m + a * e / m + b * k / m - 1
    X = np.stack([e / m, k / m], axis=1)
    if len(points) >= 2 and np.linalg.matrix_rank(X) == 2:
        (a, b), *_ = np.linalg.lstsq(X, y, rcond=None)
        if a > 0 and b > 0:
            return Calibration(float(fixed), float(a), float(b), list(points))
    x = (e + k) / m
    c = float(x @ y / (x @ x)) if (x @ x) > 0 else 1.0
    c = c if c > 0 else 1.0
    return Calibration(float(fixed), c, c, list(points))


def latency_model(
    teacher: Arch,
    runtime: Runtime,
    *,
    input_size: tuple[int, int],
    min_channels: int = 16,
    directory: str | os.PathLike | None = None,
    refresh: bool = False,
    log: Callable[[str], None] | None = None,
    allow_busy: bool = False,
    spot_check: bool = True,
) -> tuple[LatencyModel, LatencyTable, Calibration]:
    """Open (or build) the latency table for ``teacher`` on ``runtime`` and calibrate it.

    Args:
        allow_busy: measure even while other processes keep a core busy (recorded in the table).
        spot_check: time a few entries of a cached table again first and re-measure what is off
            (:func:`nas_prune.latency.trust.spot_check`; its result is ``table.spot_checks[-1]``),
            then calibrate on fresh end-to-end times (unless the check was skipped on a busy machine).

    Returns:
        ``(model, table, calibration)``.

    Raises:
        NasPruneError: entries to measure on a busy machine without ``allow_busy``.
    """
    from nas_prune.latency.trust import BUSY_LIMIT, LoadWindows, busy_message, check_quiet
    from nas_prune.latency.trust import spot_check as run_spot_check
    from nas_prune.latency.runtime import measure_interleaved
    from nas_prune.model import build_generator, input_channels

    grids = unit_grids(teacher, input_size=input_size, min_channels=min_channels)
    table = LatencyTable.open(runtime, input_size, directory=directory, refresh=refresh)
    units = grids.units()
    recalibrate = False
    if spot_check and table.units:
        check = run_spot_check(table, grids, units, runtime, allow_busy=allow_busy, log=log)
        recalibrate = not check.action.startswith("skipped")
    table.fill(grids, units, runtime, log=log, allow_busy=allow_busy)
    model = LatencyModel(grids, table.units, block=runtime.channel_block)
    archs = grids.calibration_archs(min_channels)
    missing = {arch_signature(a): a for a in archs if recalibrate or arch_signature(a) not in table.calibration}
    if missing:
        check_quiet(runtime, allow_busy=allow_busy, what="latency table not calibrated")
        start = time.perf_counter()
        if log:
            log(f"latency table: timing {len(missing)} whole generators to calibrate"
                + (" (again at every search: the machine's speed drifts)" if recalibrate else ""))
        shape = (runtime.batch, input_channels(teacher), *input_size)
        nets = {sig: build_generator(a).eval() for sig, a in missing.items()}
        windows = LoadWindows(runtime, allow_busy=True, what="latency table")
        for sig, lat in measure_interleaved(nets, runtime, shape, warmup=2, repeats=10).items():
            table.calibration[sig] = lat.median_ms
            windows.add(sig)
        _, busy = windows.close()
        if busy is not None and busy >= BUSY_LIMIT and not allow_busy:

            table.calibration = {k: v for k, v in table.calibration.items() if k not in missing}
            table.save()
            raise NasPruneError(busy_message(busy, "latency table calibration stopped"))
        for sig in missing:
            table.calibration_load[sig] = None if busy is None else round(busy, 2)
        table.seconds += time.perf_counter() - start
        table.save()
    cal = fit_calibration([(*model.parts(grids.arch_widths(a)), table.calibration[arch_signature(a)]) for a in archs],
                          fixed=table.overhead_ms or 0.0)
    model.fixed, model.scale_ends, model.scale_blocks = cal.fixed, cal.scale_ends, cal.scale_blocks
    return model, table, cal
