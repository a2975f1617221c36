"""One-step pruning plans: which channels of each prunable layer a student keeps.

Prunable layers are the family's (:meth:`nas_prune.families.base.GeneratorFamily.prunable_layers`;
the inception-residual generators' names are in :mod:`nas_prune.families.inception.plan`).

The one-step rule (CAT): one global threshold ``t`` over all prunable channels; a layer
keeps its channels whose score is ``> t``. Layers with a floor (the family's
``layer_rule``: inception stem and head, every U-Net level, ...) keep at least
``min(min_channels, teacher width)`` channels: when the threshold leaves fewer, the top ones
by score are kept; others may reach 0 (an inception branch, i.e. its kernel size, is dropped).

Why a search over the sorted scores is exact: every width is a non-decreasing function
of the number of scores above ``t``, and the family's MACs count is non-decreasing in
every width (every term is a product or sum of non-negative widths: conv, depthwise conv,
ConvTranspose, norm; see :mod:`nas_prune.macs`), so ``MACs(t)`` is non-increasing in ``t``. It only changes when
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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from nas_prune.errors import NasPruneError
from nas_prune.families import family_of
from nas_prune.families.common import FLOOR_KINDS, PrunableLayer, check_convention, format_macs, parse_input_size
from nas_prune.families.inception.plan import MacsFormula  # noqa: F401  (historical name)

if TYPE_CHECKING:  # pragma: no cover
    import torch

Arch = Any  # an architecture of any registered family


def prunable_layers(arch: Arch) -> list[PrunableLayer]:
    """Every prunable layer of ``arch`` in forward order (the family's
    :meth:`~nas_prune.families.base.GeneratorFamily.prunable_layers`)."""
    return family_of(arch).prunable_layers(arch)


def arch_from_widths(teacher: Arch, widths: Mapping[str, int]) -> Arch:
    """The student of ``teacher`` with the given width per prunable layer name.

    Inception-residual generators: layers missing from ``widths`` keep 0 for branches;
    stem/head must be given.
    """
    return family_of(teacher).arch_from_widths(teacher, widths)


def student_widths(student: Arch, teacher: Arch) -> dict[str, int]:
    """A student's widths keyed by the teacher's prunable-layer names."""
    return family_of(teacher).student_widths(student, teacher)


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
        return family_of(self.teacher).arch_from_kept(self.teacher, self.kept)

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


def macs_formula(teacher: Arch, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"):
    """The closed MACs formula of ``teacher``'s students: a callable ``widths -> MACs``
    equal to :func:`nas_prune.macs.count_macs` of :func:`arch_from_widths` (the family's)."""
    check_convention(convention)
    return family_of(teacher).macs_formula(teacher, input_size=parse_input_size(input_size), convention=convention)


def complete_widths(teacher: Arch, widths: Mapping[str, int]) -> dict[str, int]:
    """``widths`` with the layers that follow others filled in (SPADE stream segments, idle
    modulation networks); unchanged for families without such layers."""
    return family_of(teacher).complete_widths(teacher, widths)


def layer_rule(layer: PrunableLayer, teacher: Arch, *, min_channels: int, round_to: int | None) -> tuple[int, int]:
    """``(step, floor)``: a thresholded layer's width is a multiple of ``step`` and at least ``floor``.

    By default layers with a floor (:attr:`PrunableLayer.has_floor`) keep ``min(min_channels,
    width)`` rounded up to a step and others may reach 0; a family may decide otherwise.
    """
    return family_of(teacher).layer_rule(layer, teacher, min_channels=min_channels, round_to=round_to)


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
    ``searchsorted`` calls and a candidate's MACs one call of the family's closed MACs formula.

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
        floors = family_of(self.teacher).smallest_student_text(self.teacher, min_channels=self.min_channels,
                                                               round_to=self.round_to)
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
