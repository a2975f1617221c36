"""The inception-residual family's latency units (see :mod:`nas_prune.latency.table`).

Units (what is timed, one module each, built from the family's own pieces, at the
resolution it runs at inside the generator for an ``H x W`` input)::

    stem0(s0)        pad3 conv7x7 (in -> s0) norm relu              at H x W
    stem1(s0, s1)    conv3x3/2 (s0 -> s1) norm relu                 H x W -> H/2
    stem2(s1, c)     conv3x3/2 (s1 -> c) norm relu                  H/2 -> H/4
    resK(c, m)       the res branch of kernel K                     at H/4
    dwK(c, m)        the dw branch of kernel K                      at H/4
    merge(c)         x + norm(x): a block's norm and residual add   at H/4
    add(c)           x + y: summing one more branch                 at H/4
    head0(c, h0)     convT3x3/2 (c -> h0) norm relu                 H/4 -> H/2
    head1(h0, h1)    convT3x3/2 (h0 -> h1) norm relu                H/2 -> H
    final(h1)        pad3 conv7x7 (h1 -> out) tanh                  at H x W

Predicted latency of a student::

    t(student) = fixed + scale_ends * ( stem0 + stem1 + stem2 + head0 + head1 + final )
                 + scale_blocks * sum over non-identity blocks ( sum of its branches' units
                                                  + merge(c) + (branches - 1) * add(c) )
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from nas_prune.families.inception.arch import Arch, Block
from nas_prune.families.units import Axis as _Axis
from nas_prune.families.units import Unit, small_modules as _small_modules, width_grid

#: Width factors of the whole generators timed to calibrate the two scales.
CALIBRATION_FACTORS = (1.0, 0.5, 0.25, 0.125)


def _settings(arch: Arch) -> str:
    return f"{arch.norm}{'+affine' if arch.affine else ''}/{arch.padding}/{'bias' if arch.use_bias else 'nobias'}"


def build_unit(arch: Arch, unit: Unit):
    """The module a unit times, in eval mode, and its input shape ``(1, C, h, w)``."""
    from torch import nn

    from nas_prune.families.inception.model import _Branch, make_norm

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
        # Per block: [(prunable-layer name, unit kind)] of the branches the teacher has.
        t = teacher
        self.block_units = [
            [(f"blocks.{n}.res.{j}", f"res{k}") for j, k in enumerate(t.res_kernel_sizes) if b.res[j]]
            + [(f"blocks.{n}.dw.{j}", f"dw{k}") for j, k in enumerate(t.dw_kernel_sizes) if b.dw[j]]
            for n, b in enumerate(t.blocks)
        ]

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

    def build(self, unit: Unit):
        """The module ``unit`` times, in eval mode, and its input shape ``(1, C, h, w)``."""
        return build_unit(self.teacher, unit)

    def parts(self, dense: Mapping[str, np.ndarray], widths: Mapping[str, int]) -> tuple[float, float]:
        """``(stem and head units, block units)`` of the student with ``widths`` (ms), read off
        the dense unit grids."""
        d = dense
        s0, s1, c = widths["stem.0"], widths["stem.1"], widths["stem.2"]
        h0, h1 = widths["head.0"], widths["head.1"]
        ends = d["stem0"][s0] + d["stem1"][s0, s1] + d["stem2"][s1, c]
        ends += d["head0"][c, h0] + d["head1"][h0, h1] + d["final"][h1]
        total = 0.0
        for branches in self.block_units:
            n = 0
            for name, kind in branches:
                m = widths.get(name, 0)
                if m:
                    total += d[kind][c, m]
                    n += 1
            if n:
                total += d["merge"][c] + (n - 1) * d["add"][c]
        return float(ends), float(total)

    def arch_widths(self, arch: Arch) -> dict[str, int]:
        """Widths of a student keyed by prunable-layer names, zeros included."""
        return arch_widths(arch)

    def calibration_archs(self, min_channels: int = 16) -> list[Arch]:
        """The whole generators timed to calibrate the predictor."""
        return calibration_archs(self.teacher, min_channels)



def arch_widths(arch: Arch) -> dict[str, int]:
    """Widths of ``arch`` keyed by prunable-layer names (``nas_prune.plan``), zeros included."""
    out = {f"stem.{i}": w for i, w in enumerate(arch.stem)}
    for n, b in enumerate(arch.blocks):
        out.update({f"blocks.{n}.res.{j}": w for j, w in enumerate(b.res)})
        out.update({f"blocks.{n}.dw.{j}": w for j, w in enumerate(b.dw)})
    out.update({f"head.{i}": w for i, w in enumerate(arch.head)})
    return out


def calibration_archs(teacher: Arch, min_channels: int = 16) -> list[Arch]:
    """The teacher with every width times 1, 1/2, 1/4, 1/8 (floors kept, branches >= 1), and
    the smallest student (every branch dropped, stem/head at the floor); no repeats."""
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
