"""Latency tables: each layer shape of a teacher's students timed once, cached on disk.

Units (what is timed, one module each, built from :mod:`nas_prune.model`'s pieces, at
the resolution it runs at inside the generator for an ``H x W`` input)::

    stem0(s0)        pad3 conv7x7 (in -> s0) norm relu              at H x W
    stem1(s0, s1)    conv3x3/2 (s0 -> s1) norm relu                 H x W -> H/2
    stem2(s1, c)     conv3x3/2 (s1 -> c) norm relu                  H/2 -> H/4
    resK(c, m)       the res branch of kernel K (nas_prune.model)   at H/4
    dwK(c, m)        the dw branch of kernel K                      at H/4
    merge(c)         x + norm(x): a block's norm and residual add   at H/4
    add(c)           x + y: summing one more branch                 at H/4
    head0(c, h0)     convT3x3/2 (c -> h0) norm relu                 H/4 -> H/2
    head1(h0, h1)    convT3x3/2 (h0 -> h1) norm relu                H/2 -> H
    final(h1)        pad3 conv7x7 (h1 -> out) tanh                  at H x W

Each unit is timed at the widths of a grid per axis (:func:`width_grid`: the floor, the
teacher's width, and 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, ... in between); a
unit's cost is its median time minus the runtime's median time for a trivial pass
(the per-call overhead, which the whole generator pays once, not once per layer).

Predicted latency of a student (:class:`LatencyModel`)::

    t(student) = fixed + scale_ends * ( stem0 + stem1 + stem2 + head0 + head1 + final )
                 + scale_blocks * sum over non-identity blocks ( sum of its branches' units
                                                  + merge(c) + (branches - 1) * add(c) )

with each unit read off its grid by (bi)linear interpolation. A conv's time is close
to bilinear in its two widths (its MACs are), which is why a coarse grid suffices. ONNX
Runtime's CPU kernels (MLAS) process channels in blocks of 8, so there a width above 8 is
charged what the next multiple of 8 costs (:func:`effective_width`,
``Runtime.channel_block``): 60 channels cost what 64 do. Without that step, students with
unrounded widths were predicted up to 20% too fast on ONNX Runtime; on eager PyTorch the
step over-predicted them instead (up to 13%), so ``torch-cpu`` and ``cuda`` interpolate
plainly.
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
it, recorded); a search spot-checks a cached table and re-measures entries more than 15% off.
Format 2 added those records: a format-1 table cannot say how it was measured and is rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.latency.runtime import Runtime

TABLE_FORMAT = 2
LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
CALIBRATION_FACTORS = (1.0, 0.5, 0.25, 0.125)
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


def width_grid(low: int, high: int) -> list[int]:
    """Widths a unit is timed at along one axis: ``low``, ``high`` and the ladder in between."""
    low = max(1, min(low, high))
    return sorted({low, high, *(v for v in LADDER if low < v < high)})


# ----------------------------------------------------------------------------- units


def _settings(arch: Arch) -> str:
    return f"{arch.norm}{'+affine' if arch.affine else ''}/{arch.padding}/{'bias' if arch.use_bias else 'nobias'}"


@dataclass(frozen=True)
class Unit:
    """One timed layer shape: ``kind`` (module docstring), its widths and its input ``(h, w)``."""

    kind: str
    widths: tuple[int, ...]
    hw: tuple[int, int]
    settings: str
    channels: tuple[int, int] = (0, 0)  # image channels in / out (stem0, final only)

    @property
    def signature(self) -> str:
        io = f"/io{self.channels[0]}-{self.channels[1]}" if self.kind in ("stem0", "final") else ""
        return f"{self.kind}:{'x'.join(map(str, self.widths))}@{self.hw[0]}x{self.hw[1]}/{self.settings}{io}"


def build_unit(arch: Arch, unit: Unit):
    """The module a unit times, in eval mode, and its input shape ``(1, C, h, w)``."""
    from torch import nn

    from nas_prune.model import _Branch, make_norm

    _NormAdd, _Add = _small_modules()
    b = arch.use_bias
    kind, w = unit.kind, unit.widths
    h, wd = unit.hw
    if kind == "stem0":
        mod = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(arch.input_nc, w[0], 7, 1, 0, bias=b),
                            make_norm(arch, w[0]), nn.ReLU(inplace=True))
        cin = arch.input_nc
    elif kind in ("stem1", "stem2"):
        mod = nn.Sequential(nn.Conv2d(w[0], w[1], 3, 2, 1, bias=b), make_norm(arch, w[1]), nn.ReLU(inplace=True))
        cin = w[0]
    elif kind in ("head0", "head1"):
        mod = nn.Sequential(nn.ConvTranspose2d(w[0], w[1], 3, 2, 1, output_padding=1, bias=b),
                            make_norm(arch, w[1]), nn.ReLU(inplace=True))
        cin = w[0]
    elif kind == "final":
        mod = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w[0], arch.output_nc, 7, 1, 0, bias=True), nn.Tanh())
        cin = w[0]
    elif kind == "merge":
        mod = _NormAdd(make_norm(arch, w[0]))
        cin = w[0]
    elif kind == "add":
        mod = _Add()
        cin = w[0]
    elif kind == "null":
        mod = _Add()
        cin = 1
    else:  # resK / dwK
        branch = kind[:3] if kind.startswith("res") else kind[:2]
        k = int(kind[len(branch):])
        mod = _Branch(arch, branch, w[0], w[1], k)
        cin = w[0]
    return mod.eval(), (1, cin, h, wd)


@functools.cache
def _small_modules():
    """``(NormAdd, Add)`` module classes, defined on first use so importing stays torch-free."""
    from torch import nn

    class NormAdd(nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.norm = norm

        def forward(self, x):
            return x + self.norm(x)

    class Add(nn.Module):
        def forward(self, x):
            return x + x

    return NormAdd, Add


@dataclass(frozen=True)
class _Axis:
    """An axis of a unit grid: a prunable width of the teacher (``name``) and its grid."""

    name: str
    grid: tuple[int, ...]
    high: int


class UnitGrids:
    """The units of a teacher's students: one grid per kind over its width axes.

    Args:
        teacher: the teacher's architecture (grids reach its widths).
        input_size: ``(H, W)`` of the generator's input.
        min_channels: stem/head floor (grids start there).
    """

    def __init__(self, teacher: Arch, *, input_size: tuple[int, int], min_channels: int = 16):
        H, W = input_size
        self.teacher, self.input_size = teacher, (H, W)
        s, hd = teacher.stem, teacher.head
        lo = lambda w: min(min_channels, w)  # noqa: E731
        ax = {
            "s0": _Axis("s0", tuple(width_grid(lo(s[0]), s[0])), s[0]),
            "s1": _Axis("s1", tuple(width_grid(lo(s[1]), s[1])), s[1]),
            "c": _Axis("c", tuple(width_grid(lo(s[2]), s[2])), s[2]),
            "h0": _Axis("h0", tuple(width_grid(lo(hd[0]), hd[0])), hd[0]),
            "h1": _Axis("h1", tuple(width_grid(lo(hd[1]), hd[1])), hd[1]),
        }
        r0, r1, r2 = (H, W), (H // 2, W // 2), (H // 4, W // 4)
        self.kinds: dict[str, tuple[tuple[_Axis, ...], tuple[int, int]]] = {
            "stem0": ((ax["s0"],), r0), "stem1": ((ax["s0"], ax["s1"]), r0), "stem2": ((ax["s1"], ax["c"]), r1),
            "head0": ((ax["c"], ax["h0"]), r2), "head1": ((ax["h0"], ax["h1"]), r1), "final": ((ax["h1"],), r0),
        }
        has_blocks = any(not b.is_identity for b in teacher.blocks)
        if has_blocks:
            self.kinds["merge"] = ((ax["c"],), r2)
            self.kinds["add"] = ((ax["c"],), r2)
        for branch, sizes in (("res", teacher.res_kernel_sizes), ("dw", teacher.dw_kernel_sizes)):
            for j, k in enumerate(sizes):
                top = max((getattr(b, branch)[j] for b in teacher.blocks), default=0)
                if top:
                    m = _Axis(f"m{branch}{k}", tuple(width_grid(1, top)), top)
                    self.kinds[f"{branch}{k}"] = ((ax["c"], m), r2)
        self.settings = _settings(teacher)

    def units(self) -> list[Unit]:
        """Every unit at every grid point (what a table for this teacher holds)."""
        out = []
        for kind, (axes, hw) in self.kinds.items():
            for point in np.ndindex(*(len(a.grid) for a in axes)):
                widths = tuple(a.grid[i] for a, i in zip(axes, point))
                out.append(self.unit(kind, widths))
        return out

    def unit(self, kind: str, widths: tuple[int, ...]) -> Unit:
        hw = self.kinds[kind][1]
        return Unit(kind, tuple(int(w) for w in widths), hw, self.settings,
                    (self.teacher.input_nc, self.teacher.output_nc))


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
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("key") != key:
                return table
            table.units = {str(k): float(v) for k, v in doc.get("units", {}).items()}
            table.overhead_ms = None if doc.get("overhead_ms") is None else float(doc["overhead_ms"])
            table.calibration = {str(k): float(v) for k, v in doc.get("calibration", {}).items()}
            table.conditions = dict(doc.get("conditions", {}))
            table.unit_load = {str(k): v for k, v in doc.get("unit_load", {}).items()}
            table.calibration_load = {str(k): v for k, v in doc.get("calibration_load", {}).items()}
            table.spot_checks = list(doc.get("spot_checks", []))
        except (OSError, ValueError, TypeError, AttributeError):
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

    def fill(self, arch: Arch, units: Iterable[Unit], runtime: Runtime, *,
             log: Callable[[str], None] | None = None, save_every: int = 50, allow_busy: bool = False) -> None:
        """Time every unit not in the table yet (and the overhead), saving as it goes.

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
            mod, shape = build_unit(arch, Unit("null", (1,), (4, 4), ""))
            self.overhead_ms = statistics.median(runtime.time(mod, shape, warmup=3, repeats=30))
            self.seconds += time.perf_counter() - start
        if not todo:
            return
        if log:
            log(f"latency table: timing {len(todo)} layer shapes on {runtime.name} "
                f"({runtime.device()}); cached in {self.path}")
        start = time.perf_counter()
        for i, unit in enumerate(todo, 1):
            mod, shape = build_unit(arch, unit)
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


def arch_widths(arch: Arch) -> dict[str, int]:
    """Widths of ``arch`` keyed by prunable-layer names (``nas_prune.plan``), zeros included."""
    out = {f"stem.{i}": w for i, w in enumerate(arch.stem)}
    for n, b in enumerate(arch.blocks):
        out.update({f"blocks.{n}.res.{j}": w for j, w in enumerate(b.res)})
        out.update({f"blocks.{n}.dw.{j}": w for j, w in enumerate(b.dw)})
    out.update({f"head.{i}": w for i, w in enumerate(arch.head)})
    return out


def effective_width(w: int, high: int, block: int = 1) -> int:
    """The width whose cost a width ``w`` is charged: ``w`` up to ``block``, above it the
    next multiple of ``block`` (at most ``high``). Non-decreasing in ``w``."""
    return w if w <= block else min(-(-w // block) * block, high)


def _dense(grid_values: np.ndarray, axes: Sequence[_Axis], block: int = 1) -> np.ndarray:
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
    ``fixed + scale_ends * (stem and head units) + scale_blocks * (block units)``.

    Call it with ``{prunable-layer name: width}`` (as :class:`nas_prune.plan.MacsFormula`);
    non-decreasing in every width (both scales are > 0). Built by :func:`latency_model`.
    """

    def __init__(self, grids: UnitGrids, costs: Mapping[str, float], *, fixed: float = 0.0,
                 scale_ends: float = 1.0, scale_blocks: float = 1.0, block: int = 1):
        t = grids.teacher
        self.grids, self.fixed = grids, float(fixed)
        self.scale_ends, self.scale_blocks = float(scale_ends), float(scale_blocks)
        self.dense: dict[str, np.ndarray] = {}
        for kind, (axes, _) in grids.kinds.items():
            values = np.zeros(tuple(len(a.grid) for a in axes))
            for point in np.ndindex(*values.shape):
                widths = tuple(a.grid[i] for a, i in zip(axes, point))
                values[point] = costs[grids.unit(kind, widths).signature]
            self.dense[kind] = _dense(values, axes, block)
        self.blocks = [
            [(f"blocks.{n}.res.{j}", f"res{k}") for j, k in enumerate(t.res_kernel_sizes) if b.res[j]]
            + [(f"blocks.{n}.dw.{j}", f"dw{k}") for j, k in enumerate(t.dw_kernel_sizes) if b.dw[j]]
            for n, b in enumerate(t.blocks)
        ]

    def units(self, widths: Mapping[str, int]) -> float:
        """Sum of the unit costs of the student with ``widths`` (ms, before calibration)."""
        return sum(self.parts(widths))

    def parts(self, widths: Mapping[str, int]) -> tuple[float, float]:
        """``(stem and head units, block units)`` of the student with ``widths`` (ms)."""
        d = self.dense
        s0, s1, c = widths["stem.0"], widths["stem.1"], widths["stem.2"]
        h0, h1 = widths["head.0"], widths["head.1"]
        ends = d["stem0"][s0] + d["stem1"][s0, s1] + d["stem2"][s1, c]
        ends += d["head0"][c, h0] + d["head1"][h0, h1] + d["final"][h1]
        total = 0.0
        for branches in self.blocks:
            n = 0
            for name, kind in branches:
                m = widths.get(name, 0)
                if m:
                    total += d[kind][c, m]
                    n += 1
            if n:
                total += d["merge"][c] + (n - 1) * d["add"][c]
        return float(ends), float(total)

    def __call__(self, widths: Mapping[str, int]) -> float:
        ends, blocks = self.parts(widths)
        return self.fixed + self.scale_ends * ends + self.scale_blocks * blocks

    def predict(self, arch: Arch) -> float:
        """Predicted latency of a student architecture of the teacher."""
        return self(arch_widths(arch))


def calibration_archs(teacher: Arch, min_channels: int = 16) -> list[Arch]:
    """The teacher with every width times 1, 1/2, 1/4, 1/8 (floors kept, branches >= 1), and
    the smallest student (every branch dropped, stem/head at the floor); no repeats."""
    from nas_prune.arch import Block

    out = []
    floor = teacher.with_widths(stem=[min(min_channels, w) for w in teacher.stem],
                                blocks=[Block(res=(0,) * len(b.res), dw=(0,) * len(b.dw)) for b in teacher.blocks],
                                head=[min(min_channels, w) for w in teacher.head])
    for f in CALIBRATION_FACTORS:
        def scale(w: int, floor: int) -> int:
            return max(min(floor, w), round(w * f))

        blocks = tuple(Block(res=tuple(scale(m, 1) if m else 0 for m in b.res),
                             dw=tuple(scale(m, 1) if m else 0 for m in b.dw)) for b in teacher.blocks)
        arch = teacher.with_widths(stem=[scale(w, min_channels) for w in teacher.stem], blocks=blocks,
                                   head=[scale(w, min_channels) for w in teacher.head])
        if arch not in out:
            out.append(arch)
    return out + ([floor] if floor not in out else [])


def arch_signature(arch: Arch) -> str:
    return hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


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
            (:func:`nas_prune.latency.trust.spot_check`; its result is ``table.spot_checks[-1]``).

    Returns:
        ``(model, table, calibration)``.

    Raises:
        NasPruneError: entries to measure on a busy machine without ``allow_busy``.
    """
    from nas_prune.latency.trust import BUSY_LIMIT, LoadWindows, busy_message, check_quiet
    from nas_prune.latency.trust import spot_check as run_spot_check
    from nas_prune.latency.runtime import measure_interleaved
    from nas_prune.model import build_generator

    grids = UnitGrids(teacher, input_size=input_size, min_channels=min_channels)
    table = LatencyTable.open(runtime, input_size, directory=directory, refresh=refresh)
    units = grids.units()
    if spot_check and table.units:
        run_spot_check(table, teacher, units, runtime, allow_busy=allow_busy, log=log)
    table.fill(teacher, units, runtime, log=log, allow_busy=allow_busy)
    model = LatencyModel(grids, table.units, block=runtime.channel_block)
    archs = calibration_archs(teacher, min_channels)
    missing = {arch_signature(a): a for a in archs if arch_signature(a) not in table.calibration}
    if missing:
        check_quiet(runtime, allow_busy=allow_busy, what="latency table not calibrated")
        start = time.perf_counter()
        if log:
            log(f"latency table: timing {len(missing)} whole generators to calibrate")
        shape = (runtime.batch, teacher.input_nc, *input_size)
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
    cal = fit_calibration([(*model.parts(arch_widths(a)), table.calibration[arch_signature(a)]) for a in archs],
                          fixed=table.overhead_ms or 0.0)
    model.fixed, model.scale_ends, model.scale_blocks = cal.fixed, cal.scale_ends, cal.scale_blocks
    return model, table, cal
