"""Prunable layers and the closed MACs formula of the inception-residual generators.

Prunable layers (CAT, CVPR 2021) and their names in scores, plans and ``arch.json``::

    stem.0, stem.1, stem.2      the three stem convs (stem.2's channels ARE the residual stream)
    blocks.N.res.J              first conv of block N's res branch in kernel-size slot J
    blocks.N.dw.J               1x1 conv of block N's dw branch in slot J (its depthwise conv
                                and norm follow the same channels)
    head.0, head.1              the two ConvTransposes

``N`` and ``J`` are 0-based: ``blocks.3.dw.2`` is ``arch.blocks[3].dw[2]``, the dw branch
with kernel size ``arch.dw_kernel_sizes[2]``. Branches of width 0 in the teacher are not
prunable layers.
"""

from __future__ import annotations

from typing import Mapping

from nas_prune.families.common import PrunableLayer, check_convention, parse_input_size
from nas_prune.families.inception.arch import Arch, Block


def prunable_layers(arch: Arch) -> list[PrunableLayer]:
    """Every prunable layer of ``arch`` in forward order (branches of width 0 are skipped).

    """
    layers = [PrunableLayer(f"stem.{i}", "stem", w, i) for i, w in enumerate(arch.stem)]
    for n, block in enumerate(arch.blocks):
        for kind, widths in (("res", block.res), ("dw", block.dw)):
            for j, w in enumerate(widths):
                if w > 0:
                    layers.append(PrunableLayer(f"blocks.{n}.{kind}.{j}", kind, w, j, n))
    layers += [PrunableLayer(f"head.{i}", "head", w, i) for i, w in enumerate(arch.head)]
    return layers


def arch_from_widths(teacher: Arch, widths: Mapping[str, int]) -> Arch:
    """The student of ``teacher`` with the given width per prunable layer name.

    Layers missing from ``widths`` keep 0 for branches; stem/head must be given.
    """
    blocks = []
    for n, block in enumerate(teacher.blocks):
        res = tuple(widths.get(f"blocks.{n}.res.{j}", 0) for j in range(len(block.res)))
        dw = tuple(widths.get(f"blocks.{n}.dw.{j}", 0) for j in range(len(block.dw)))
        blocks.append(Block(res=res, dw=dw))
    return teacher.with_widths(
        stem=[widths[f"stem.{i}"] for i in range(3)],
        blocks=blocks,
        head=[widths[f"head.{i}"] for i in range(2)],
    )


class MacsFormula:
    """Analytic MACs of the students of one teacher as a closed formula of the widths.

    Equal to :func:`nas_prune.macs.count_macs` of :func:`arch_from_widths` exactly (a
    test checks it) but about 20x cheaper, since it skips building an :class:`Arch`
    and the per-layer records. With input ``H x W``, ``hw0 = HW``, ``hw1 = hw0 / 4``,
    ``hw2 = hw0 / 16``, stream width ``c = stem[2]`` and ``a`` the per-element norm
    charge of the convention::

        stem   in*s0*49*hw0 + a*s0*hw0 + s0*s1*9*hw1 + a*s1*hw1 + s1*c*9*hw2 + a*c*hw2
        res_k  m * (2*c*k*k + a) * hw2
        dw_k   m * (2*c + k*k + 2*a) * hw2
        block  + a*c*hw2 when the block has any branch (its norm)
        head   c*h0*9*p0 + a*h0*hw1 + h0*h1*9*p1 + a*h1*hw0 + h1*out*49*hw0

    where ConvTranspose pixels ``p0, p1`` are ``hw2, hw1`` (fvcore) or ``hw1, hw0`` (paper).
    """

    def __init__(self, teacher: Arch, *, input_size: int | str | tuple[int, int] = 256,
                 convention: str = "fvcore"):
        check_convention(convention)
        H, W = parse_input_size(input_size)
        self.teacher = teacher
        self.hw0, self.hw1, self.hw2 = H * W, (H // 2) * (W // 2), (H // 4) * (W // 4)
        if convention == "paper":
            self.a = 1 if teacher.affine else 0
        elif teacher.norm == "instance":
            self.a = 5 if teacher.affine else 4
        else:
            self.a = 2 if teacher.affine else 1
        self.p0, self.p1 = (self.hw2, self.hw1) if convention == "fvcore" else (self.hw1, self.hw0)
        # Per block: [(layer name, res?, k)] for branches that exist in the teacher.
        self.blocks = [
            [(f"blocks.{n}.res.{j}", True, k) for j, (k, m) in enumerate(zip(teacher.res_kernel_sizes, b.res)) if m]
            + [(f"blocks.{n}.dw.{j}", False, k) for j, (k, m) in enumerate(zip(teacher.dw_kernel_sizes, b.dw)) if m]
            for n, b in enumerate(teacher.blocks)
        ]

    def __call__(self, widths: Mapping[str, int]) -> int:
        """MACs for one image of the student with ``widths`` (missing branches are 0)."""
        a, hw0, hw1, hw2 = self.a, self.hw0, self.hw1, self.hw2
        s0, s1, c = widths["stem.0"], widths["stem.1"], widths["stem.2"]
        h0, h1 = widths["head.0"], widths["head.1"]
        t = self.teacher
        total = (t.input_nc * s0 * 49 + a * s0) * hw0 + (s0 * s1 * 9 + a * s1) * hw1
        total += (s1 * c * 9 + a * c) * hw2
        for branches in self.blocks:
            block = 0
            for name, is_res, k in branches:
                m = widths.get(name, 0)
                if m:
                    block += m * ((2 * c * k * k + a) if is_res else (2 * c + k * k + 2 * a))
            if block:
                total += (block + a * c) * hw2
        total += c * h0 * 9 * self.p0 + a * h0 * hw1 + h0 * h1 * 9 * self.p1
        total += (a * h1 + h1 * t.output_nc * 49) * hw0
        return total


def student_widths(student: Arch, teacher: Arch) -> dict[str, int]:
    """Student widths keyed by the teacher's prunable-layer names."""
    out = {}
    for layer in prunable_layers(teacher):
        if layer.kind == "stem":
            out[layer.name] = student.stem[layer.index]
        elif layer.kind == "head":
            out[layer.name] = student.head[layer.index]
        else:
            out[layer.name] = getattr(student.blocks[layer.block], layer.kind)[layer.index]
    return out


def describe_block(arch: Arch, n: int) -> str:
    """``res k3:24 k5:10, dw k1:6`` or ``identity``."""
    b = arch.blocks[n]
    if b.is_identity:
        return "identity"
    parts = []
    for kind, ks, ws in (("res", arch.res_kernel_sizes, b.res), ("dw", arch.dw_kernel_sizes, b.dw)):
        kept = [f"k{k}:{w}" for k, w in zip(ks, ws) if w]
        if kept:
            parts.append(f"{kind} {' '.join(kept)}")
    return ", ".join(parts)


def search_groups(arch: Arch) -> dict[str, tuple[str, ...]]:
    """``{study variable: prunable layer names}``: stem, stream and head, one group per branch
    kernel size, and the branches of the early, middle and late thirds of the blocks.

    Groups that would hold no layer (a kernel size no block has, an empty third)
    are left out. Every prunable layer is in exactly one of ``stem``/``stream``/
    ``head``/``res_kK``/``dw_kK``; branch layers are also in one depth group.
    """
    import numpy as np

    layers = prunable_layers(arch)
    groups: dict[str, list[str]] = {"stem": [], "stream": [], "head": []}
    for layer in layers:
        if layer.kind == "stem":
            groups["stream" if layer.index == 2 else "stem"].append(layer.name)
        elif layer.kind == "head":
            groups["head"].append(layer.name)
    for kind, sizes in (("res", arch.res_kernel_sizes), ("dw", arch.dw_kernel_sizes)):
        for j, k in enumerate(sizes):
            groups[f"{kind}_k{k}"] = [
                l.name for l in layers if l.kind == kind and l.index == j
            ]
    thirds = np.array_split(np.arange(arch.n_blocks), 3)
    for name, blocks in zip(("early", "middle", "late"), thirds):
        members = set(int(b) for b in blocks)
        groups[name] = [l.name for l in layers if l.block is not None and l.block in members]
    return {name: tuple(names) for name, names in groups.items() if names}
