"""One-step pruning plans: which channels of each prunable layer a student keeps.

Prunable layers (CAT, CVPR 2021) and their names in scores, plans and ``arch.json``::

    stem.0, stem.1, stem.2      the three stem convs (stem.2's channels ARE the residual stream)
    blocks.N.res.J              first conv of block N's res branch in kernel-size slot J
    blocks.N.dw.J               1x1 conv of block N's dw branch in slot J (its depthwise conv
                                and norm follow the same channels)
    head.0, head.1              the two ConvTransposes

``N`` and ``J`` are 0-based: ``blocks.3.dw.2`` is ``arch.blocks[3].dw[2]``, the dw branch
with kernel size ``arch.dw_kernel_sizes[2]``. Branches of width 0 in the teacher are not
prunable layers.

The one-step rule (CAT): one global threshold ``t`` over all prunable channels; a layer
keeps its channels whose score is ``> t``. Branch widths may reach 0 (the branch, i.e.
the kernel size, is dropped; a block without branches is the identity). Stem and head
layers keep at least ``min(min_channels, teacher width)`` channels: when the threshold
leaves fewer, the top ones by score are kept.

Why a search over the sorted scores is exact: every width is a non-decreasing function
of the number of scores above ``t``, and every term of the MACs count (conv, depthwise
conv, ConvTranspose, norm; see :mod:`nas_prune.macs`) is a product or sum of
non-negative widths, so ``MACs(t)`` is non-increasing in ``t``. It only changes when
``t`` crosses a score value, so the candidates are ``-inf`` (the teacher) and the
distinct score values; bisecting their sorted list finds the lowest threshold whose
student meets the target, i.e. the largest student of the family, with ``log2(#scores)``
analytic MACs counts and no forward pass.

A fill pass then adds the channels just below the threshold that still fit (see
:func:`plan_for_target`); it closes the ~1% gap that one residual-stream channel can
leave, and ``fill=False`` gives CAT's plain threshold student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.macs import check_convention, format_macs, parse_input_size

if TYPE_CHECKING:  # pragma: no cover
    import torch

FLOOR_KINDS = ("stem", "head", "stream")


@dataclass(frozen=True)
class PrunableLayer:
    """A layer whose output channels are pruned.

    Attributes:
        name: ``stem.I``, ``blocks.N.res.J``, ``blocks.N.dw.J`` or ``head.I`` (module docstring).
        kind: ``stem``, ``res``, ``dw`` or ``head``.
        width: the teacher's width (number of channels, >= 1).
        index: stem/head position ``I``, or the kernel-size slot ``J`` for branches.
        block: block index ``N`` for branches, None for stem/head.
        unit: the width is kept a multiple of this (SPADE ``stream.0``; 1 elsewhere).
        follows: a layer whose width is set from this one's (SPADE ``stream.K`` follow
            ``stream.0``) instead of by the threshold; None for thresholded layers.
    """

    name: str
    kind: str
    width: int
    index: int
    block: int | None = None
    unit: int = 1
    follows: str | None = None

    @property
    def has_floor(self) -> bool:
        """Stem and head layers have the ``min_channels`` floor; branches may reach 0."""
        return self.kind in FLOOR_KINDS


def prunable_layers(arch: Arch) -> list[PrunableLayer]:
    """Every prunable layer of ``arch`` in forward order (branches of width 0 are skipped).

    SPADE generators: :func:`nas_prune.spade.plan.spade_prunable_layers`.
    """
    if arch.family == "spade":
        from nas_prune.spade.plan import spade_prunable_layers

        return spade_prunable_layers(arch)  # type: ignore[arg-type]
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
    if teacher.family == "spade":
        from nas_prune.spade.plan import spade_arch_from_widths

        return spade_arch_from_widths(teacher, widths)  # type: ignore[arg-type,return-value]
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


@dataclass(frozen=True)
class PrunePlan:
    """Kept channel indices per prunable layer of a teacher.

    Attributes:
        teacher: the teacher's architecture.
        kept: ``{layer name: ascending teacher channel indices}`` for every prunable
            layer of the teacher (an empty tuple drops a branch).
        threshold: the global threshold (channels with score > threshold are kept,
            before floors and rounding), or None when nothing was thresholded
            (the ``-inf`` candidate: the teacher's widths).
        min_channels: the stem/head floor used.
        round_to: width multiple used, or None.
        filled: channels added after thresholding by the fill pass
            (:meth:`ThresholdFamily.fill`); they all score <= ``threshold``.
    """

    teacher: Arch
    kept: Mapping[str, tuple[int, ...]]
    threshold: float | None = None
    min_channels: int = 16
    round_to: int | None = None
    filled: int = 0

    @property
    def widths(self) -> dict[str, int]:
        """``{layer name: kept channel count}``."""
        return {name: len(idx) for name, idx in self.kept.items()}

    def student_arch(self) -> Arch:
        """The student's :class:`Arch` (same settings as the teacher, pruned widths)."""
        return arch_from_widths(self.teacher, self.widths)

    def is_identity(self) -> bool:
        """True when every channel of the teacher is kept (nothing pruned)."""
        return all(len(self.kept[l.name]) == l.width for l in prunable_layers(self.teacher))

    def kept_lists(self) -> dict[str, list[int]]:
        """JSON-ready copy of :attr:`kept`."""
        return {name: list(idx) for name, idx in self.kept.items()}

    @classmethod
    def from_kept(
        cls,
        teacher: Arch,
        kept: Mapping[str, Sequence[int]],
        *,
        threshold: float | None = None,
        min_channels: int = 16,
        round_to: int | None = None,
        filled: int = 0,
        where: str = "kept",
    ) -> "PrunePlan":
        """Validate kept indices against ``teacher`` (names, range, ascending, no repeats).

        Raises:
            NasPruneError: naming the first bad layer, e.g. ``kept.blocks.2.res.1``.
        """
        layers = {l.name: l for l in prunable_layers(teacher)}
        unknown = sorted(set(kept) - set(layers))
        if unknown:
            raise NasPruneError(f"{where}.{unknown[0]}: not a prunable layer of the teacher")
        clean: dict[str, tuple[int, ...]] = {}
        for name, layer in layers.items():
            if name not in kept:
                raise NasPruneError(f"{where}.{name}: missing")
            idx = kept[name]
            if not isinstance(idx, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in idx
            ):
                raise NasPruneError(f"{where}.{name}: expected a list of channel indices")
            if any(b <= a for a, b in zip(idx, idx[1:])):
                raise NasPruneError(f"{where}.{name}: indices must be strictly increasing")
            if idx and (idx[0] < 0 or idx[-1] >= layer.width):
                raise NasPruneError(f"{where}.{name}: indices must be in [0, {layer.width})")
            if layer.has_floor and not idx:
                raise NasPruneError(f"{where}.{name}: a {layer.kind} layer needs at least one channel")
            clean[name] = tuple(idx)
        return cls(teacher, clean, threshold, min_channels, round_to, filled)


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


def macs_formula(teacher: Arch, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"):
    """The closed MACs formula of ``teacher``'s students (:class:`MacsFormula`, or
    :class:`nas_prune.spade.plan.SpadeMacsFormula` for SPADE generators)."""
    if teacher.family == "spade":
        from nas_prune.spade.plan import SpadeMacsFormula

        return SpadeMacsFormula(teacher, input_size=input_size, convention=convention)  # type: ignore[arg-type]
    return MacsFormula(teacher, input_size=input_size, convention=convention)


def complete_widths(teacher: Arch, widths: Mapping[str, int]) -> dict[str, int]:
    """``widths`` with the layers that follow others filled in (SPADE stream segments, idle
    modulation networks); unchanged for the CycleGAN/pix2pix generators."""
    if teacher.family == "spade":
        from nas_prune.spade.plan import spade_complete_widths

        return spade_complete_widths(teacher, widths)  # type: ignore[arg-type]
    return dict(widths)


def layer_rule(layer: PrunableLayer, teacher: Arch, *, min_channels: int, round_to: int | None) -> tuple[int, int]:
    """``(step, floor)``: a thresholded layer's width is a multiple of ``step`` and at least ``floor``.

    Stem/head: ``step = round_to`` (or 1), ``floor = min(min_channels, width)`` rounded up to
    a step; branches: no floor. SPADE: :func:`nas_prune.spade.plan.spade_layer_rule`.
    """
    if teacher.family == "spade":
        from nas_prune.spade.plan import spade_layer_rule

        return spade_layer_rule(layer, min_channels, round_to, teacher)  # type: ignore[arg-type]
    step = round_to or 1
    return step, (min(layer.width, -(-min_channels // step) * step) if layer.has_floor else 0)


@dataclass(frozen=True)
class Budget:
    """A limit besides MACs for the threshold search: ``cost(widths) <= limit``.

    ``cost`` takes ``{prunable-layer name: width}`` (missing branches are 0) and must be
    non-decreasing in every width, or the search is no longer exact (e.g. the predicted
    latency of :class:`nas_prune.latency.table.LatencyModel`).

    Attributes:
        cost: the cost of a student's widths.
        limit: the largest accepted cost.
        label: names the limit in errors, e.g. ``--target-latency``.
        format: renders a cost, e.g. ``lambda ms: f"{ms:.1f} ms"``.
    """

    cost: Callable[[Mapping[str, int]], float]
    limit: float
    label: str = "limit"
    format: Callable[[float], str] = str


class ThresholdFamily:
    """The students of one teacher and one set of scores, indexed by threshold.

    Precomputes each layer's channel order (descending score, ties by lower index)
    and the sorted distinct score values, so :meth:`widths_at` is a handful of
    ``searchsorted`` calls and a candidate's MACs one :class:`MacsFormula` call.

    Candidates are numbered ``0 .. n_candidates - 1``: 0 is the threshold ``-inf``
    (keep everything) and ``i >= 1`` is the ``i``-th smallest distinct score value.
    Candidate ``n_candidates - 1`` (the largest score) is the smallest student: all
    branches dropped, stem/head at their floors.

    Args:
        scores: ``{layer name: 1-D scores}``, one per teacher channel, for every layer
            of :func:`prunable_layers`; any real values (|gamma|, normalised L1, ...).
        teacher: the teacher's architecture.
        input_size: ``H``, ``"HxW"`` or ``(H, W)`` the MACs are counted at.
        convention: ``"fvcore"`` or ``"paper"``.
        min_channels: stem/head floor (>= 1); capped at the teacher's width.
        round_to: round each width down to a multiple of this (>= 1), branches may go
            to 0; floors are rounded up to a multiple first (capped at the teacher's
            width). None or 1 for no rounding.
    """

    def __init__(
        self,
        scores: Mapping[str, "torch.Tensor | np.ndarray | Sequence[float]"],
        teacher: Arch,
        *,
        input_size: int | str | tuple[int, int] = 256,
        convention: str = "fvcore",
        min_channels: int = 16,
        round_to: int | None = None,
    ):
        if min_channels < 1:
            raise NasPruneError(f"min_channels must be >= 1, got {min_channels}")
        if round_to is not None and round_to < 1:
            raise NasPruneError(f"round_to must be >= 1, got {round_to}")
        self.teacher = teacher
        self.convention = convention
        self.macs = macs_formula(teacher, input_size=input_size, convention=convention)
        self.min_channels = min_channels
        self.round_to = round_to if round_to and round_to > 1 else None
        self.layers = prunable_layers(teacher)
        self.thresholded = [l for l in self.layers if l.follows is None]
        self.scores = _check_scores(scores, self.layers)
        self._order: dict[str, np.ndarray] = {}
        self._ascending: dict[str, np.ndarray] = {}
        self._step: dict[str, int] = {}
        self._floor: dict[str, int] = {}
        for layer in self.layers:
            s = self.scores[layer.name]
            self._order[layer.name] = np.argsort(-s, kind="stable")
            self._ascending[layer.name] = np.sort(s)
            self._step[layer.name], self._floor[layer.name] = layer_rule(
                layer, teacher, min_channels=min_channels, round_to=self.round_to
            )
        self.values = np.unique(np.concatenate([self.scores[l.name] for l in self.thresholded]))

    @property
    def n_candidates(self) -> int:
        return len(self.values) + 1

    def threshold(self, i: int) -> float | None:
        """Threshold of candidate ``i`` (None for candidate 0, i.e. ``-inf``)."""
        return None if i == 0 else float(self.values[i - 1])

    def widths_at(self, i: int) -> dict[str, int]:
        """Width of every prunable layer for candidate ``i`` (floors and rounding applied)."""
        t = -math.inf if i == 0 else self.values[i - 1]
        out = {}
        for layer in self.thresholded:
            above = layer.width - int(np.searchsorted(self._ascending[layer.name], t, side="right"))
            above -= above % self._step[layer.name]
            out[layer.name] = max(above, self._floor[layer.name])
        return complete_widths(self.teacher, out)

    def macs_at(self, i: int) -> int:
        """MACs of candidate ``i`` in the family's convention."""
        return self.macs(self.widths_at(i))

    def plan_at(self, i: int, widths: Mapping[str, int] | None = None, filled: int = 0) -> PrunePlan:
        """The plan of candidate ``i`` (or of ``widths``): each layer keeps its top channels."""
        widths = self.widths_at(i) if widths is None else widths
        kept = {
            name: tuple(sorted(int(c) for c in self._order[name][:w])) for name, w in widths.items()
        }
        return PrunePlan(
            self.teacher, kept, self.threshold(i), self.min_channels, self.round_to, filled
        )

    def search(self, target_macs: int | None, *, budgets: Sequence["Budget"] = ()) -> int:
        """Index of the lowest-threshold candidate with MACs <= ``target_macs`` and every
        budget's cost <= its limit (``target_macs=None``: the budgets only).

        Exact for any budget whose cost is non-decreasing in every width (like MACs):
        then every limit is met by a suffix of the candidates.

        Raises:
            NasPruneError: target above the teacher's MACs, or a limit below the smallest student.
        """
        conv = self.convention
        teacher_macs = self.macs(complete_widths(self.teacher, {l.name: l.width for l in self.layers}))
        if target_macs is not None and target_macs > teacher_macs:
            raise NasPruneError(
                f"target {format_macs(target_macs, conv)} is above the teacher's "
                f"{format_macs(teacher_macs, conv)} ({teacher_macs:,}): nothing to prune"
            )
        lo, hi = 0, self.n_candidates - 1
        smallest = self.widths_at(hi)
        floor_macs = self.macs(smallest)
        floors = (f"every branch dropped, stem/head at {self.min_channels} channels"
                  f"{f' rounded to {self.round_to}' if self.round_to else ''}")
        if target_macs is not None and floor_macs > target_macs:
            raise NasPruneError(
                f"target {format_macs(target_macs, conv)} is below the smallest reachable "
                f"student, {format_macs(floor_macs, conv)} ({floor_macs:,}; {floors}): lower --min-channels "
                f"or raise the target"
            )
        for b in budgets:
            cost = b.cost(smallest)
            if cost > b.limit:
                raise NasPruneError(
                    f"{b.label} {b.format(b.limit)} is below the smallest reachable student, "
                    f"{b.format(cost)} ({floors}): lower --min-channels or raise the target"
                )

        def fits(i: int) -> bool:
            widths = self.widths_at(i)
            if target_macs is not None and self.macs(widths) > target_macs:
                return False
            return all(b.cost(widths) <= b.limit for b in budgets)

        # Invariant: candidate hi fits and every candidate below lo does not.
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi

    def fill(self, widths: Mapping[str, int], target_macs: int | None, *,
             budgets: Sequence["Budget"] = ()) -> tuple[dict[str, int], int]:
        """Greedily grow ``widths`` while the MACs stay <= ``target_macs`` (None: no MACs
        limit) and every budget's cost <= its limit.

        Visits the channels that ``widths`` leaves out in descending score order (in
        units of ``round_to`` channels of one layer when rounding) and adds each one
        that still fits. A layer whose next unit does not fit is closed: adding
        channels elsewhere only raises its cost (every MACs term, and every budget's
        cost, is non-decreasing in every width) and the budget only shrinks. So the result is maximal by
        inclusion: adding the next unit of any layer passes the target.

        Returns:
            ``(new widths, number of channels added)``.
        """
        widths = dict(widths)
        candidates = []
        for layer in self.thresholded:
            step = self._step[layer.name]
            s = self.scores[layer.name][self._order[layer.name]]
            for start in range(widths[layer.name], layer.width - step + 1, step):
                candidates.append((-float(s[start]), layer.name, start))
        candidates.sort()
        closed: set[str] = set()
        added = 0
        for _, name, start in candidates:
            if name in closed or widths[name] != start:
                continue
            step = self._step[name]
            widths[name] = start + step
            completed = complete_widths(self.teacher, widths)
            if completed[name] != widths[name]:  # a layer that cannot grow yet (SPADE: idle modulation)
                widths[name] = start
            elif (target_macs is None or self.macs(completed) <= target_macs) and all(
                b.cost(completed) <= b.limit for b in budgets
            ):
                widths = completed
                added += step
            else:
                widths[name] = start
                closed.add(name)
        return widths, added


def _check_scores(
    scores: Mapping[str, object], layers: Iterable[PrunableLayer]
) -> dict[str, np.ndarray]:
    layers = list(layers)
    names = {l.name for l in layers}
    unknown = sorted(set(scores) - names)
    if unknown:
        raise NasPruneError(f"scores: {unknown[0]} is not a prunable layer of the teacher")
    out = {}
    for layer in layers:
        if layer.name not in scores:
            raise NasPruneError(f"scores: missing layer {layer.name}")
        value = scores[layer.name]
        if hasattr(value, "detach"):
            value = value.detach().cpu().double().numpy()
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (layer.width,):
            raise NasPruneError(
                f"scores: {layer.name} has shape {tuple(arr.shape)}, expected ({layer.width},)"
            )
        if not np.isfinite(arr).all():
            raise NasPruneError(f"scores: {layer.name} has non-finite values")
        out[layer.name] = arr
    return out


def plan_for_target(
    scores: Mapping[str, "torch.Tensor | np.ndarray | Sequence[float]"],
    teacher_arch: Arch,
    *,
    target_macs: int | None,
    convention: str = "fvcore",
    input_size: int | str | tuple[int, int] = 256,
    min_channels: int = 16,
    round_to: int | None = None,
    fill: bool = True,
    budgets: Sequence[Budget] = (),
) -> PrunePlan:
    """The largest student of the global-threshold family with MACs <= ``target_macs``
    (and within every extra :class:`Budget`, e.g. a predicted latency).

    Two steps, both analytic (no forward pass):

    1. Threshold (CAT's rule). The plan's threshold is the lowest candidate (``-inf``
       or a score value) whose student meets the target, so lowering it to the next
       smaller score value gives a student above the target. With ``round_to`` the
       same holds for the rounded students (widths rounded down after thresholding,
       floors rounded up); it is the largest rounded student *of the threshold
       family*, not the largest multiple-of-N student overall (a knapsack problem).
    2. Fill (``fill=True``, the default). One channel of the residual stream costs
       about ``1 / stream width`` of all block MACs, so the threshold student alone
       can end ~1% under the target. The fill pass then adds the remaining channels
       in descending score order whenever they still fit (units of ``round_to``
       channels), until adding the next channel (unit) of any layer would pass the
       target. Every layer still keeps its top channels by score. ``fill=False``
       gives CAT's plain threshold student.

    ``target_macs == teacher MACs`` is allowed and keeps every channel (without
    rounding); a target above the teacher's MACs is an error.

    Args:
        scores: one 1-D score tensor per prunable layer (see :func:`prunable_layers`);
            callers may rescale groups of scores (e.g. an Optuna search) and rerun this.
        teacher_arch: the teacher.
        target_macs: budget in MACs for one image of ``input_size``.
        convention: ``"fvcore"`` or ``"paper"`` (:mod:`nas_prune.macs`).
        input_size: ``H``, ``"HxW"`` or ``(H, W)``.
        min_channels: stem/head floor.
        round_to: width multiple, or None.
        fill: run the fill pass after thresholding.
        budgets: extra limits, each non-decreasing in every width; with
            ``target_macs=None`` they are the only ones.

    Raises:
        NasPruneError: bad scores, target above the teacher or below the smallest student.

    Example:
        >>> plan = plan_for_target(scores, arch, target_macs=2_600_000_000, convention="paper")
        >>> student = plan.student_arch()
    """
    family = ThresholdFamily(
        scores,
        teacher_arch,
        input_size=input_size,
        convention=convention,
        min_channels=min_channels,
        round_to=round_to,
    )
    if target_macs is None and not budgets:
        raise NasPruneError("plan_for_target needs target_macs or at least one budget")
    target_macs = None if target_macs is None else int(target_macs)
    i = family.search(target_macs, budgets=budgets)
    if not fill:
        return family.plan_at(i)
    widths, added = family.fill(family.widths_at(i), target_macs, budgets=budgets)
    return family.plan_at(i, widths, added)
