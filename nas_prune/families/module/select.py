"""One global importance threshold over every group, searched to a MACs target (no forward pass).

As for the shipped families: a group keeps its units scoring above the threshold ``t``
(at least ``min_channels``, in multiples of its ``multiple``); ``MACs(t)`` falls as ``t``
rises, so the smallest ``t`` among the sorted scores whose student fits the target is found
by bisection on the closed-form count (:mod:`.macs`). A fill pass then adds the units
just below the threshold, best score first, while they fit (a group whose next unit does
not fit is closed: costs only grow), which lands within a fraction of a unit's cost under
the target. ``fill=False`` gives the plain threshold student.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nas_prune.errors import NasPruneError


@dataclass
class Selection:
    """The result of :func:`select_channels`.

    Attributes:
        kept: group id -> kept root-channel indices (every prunable group; sorted).
        counts: group id -> kept units.
        macs: MACs of the student in the search's convention; ``target``, ``teacher`` too.
        threshold: the global threshold (units scoring above it are kept before the fill);
            None when the teacher already fits the target (everything kept).
        filled: units added by the fill pass.
    """

    kept: dict[str, list[int]]
    counts: dict[str, int]
    macs: int
    target: int
    teacher: int
    convention: str
    threshold: float | None
    filled: int = 0
    smallest: int = 0
    criteria: dict[str, str] = field(default_factory=dict)


def _top_units(scores: list[float]) -> list[int]:
    """Unit indices, best score first (ties: lower index first)."""
    return sorted(range(len(scores)), key=lambda u: (-scores[u], u))


def select_channels(
    trace,
    *,
    target_macs: int,
    convention: str = "fvcore",
    min_channels: int = 1,
    fill: bool = True,
) -> Selection:
    """Kept channels of every prunable group of ``trace`` for a MACs target.

    Args:
        trace: a :class:`nas_prune.families.module.trace.Trace`.
        target_macs: the budget (MACs in ``convention``, for the trace's input size).
        min_channels: the fewest units a group keeps (raised to its ``multiple``; at most all).
        fill: run the fill pass after thresholding.

    Raises:
        NasPruneError: nothing in the graph is prunable, or the target is below the smallest
            reachable student (named, with its MACs).
    """
    import numpy as np

    model = trace.macs
    groups = [trace.groups[g] for g in model.group_ids]
    if not groups:
        reasons = sorted({g.reason for g in trace.groups.values() if g.reason})
        raise NasPruneError(
            "nothing in the module is prunable" + (f" (groups left whole: {'; '.join(reasons)[:300]})" if reasons else "")
        )
    if min_channels < 1:
        raise NasPruneError(f"--min-channels {min_channels}: must be at least 1")
    orders = [_top_units(g.scores) for g in groups]
    mins = np.array([min(g.channels, -(-max(min_channels, g.multiple) // g.multiple) * g.multiple) for g in groups])
    full = np.array([g.channels for g in groups])
    mult = np.array([g.multiple for g in groups])
    teacher = model.macs_vec(full, convention)
    smallest = model.macs_vec(mins, convention)
    if target_macs < smallest:
        raise NasPruneError(
            f"target {target_macs:,} MACs ({convention}) is below the smallest student this module allows: "
            f"{smallest:,} MACs ({smallest / 1e6:.3f}M) with {min_channels} channel(s) per group"
        )
    sorted_scores = [np.array(sorted(g.scores, reverse=True)) for g in groups]

    def counts_at(t: float) -> "np.ndarray":
        above = np.array([int(np.sum(s > t)) for s in sorted_scores])
        return np.clip(above // mult * mult, mins, full)

    if teacher <= target_macs:
        k, threshold = full.copy(), None
    else:
        values = np.unique(np.concatenate([np.array(g.scores, dtype=float) for g in groups]))
        lo, hi = 0, len(values) - 1  # counts_at(values[-1]) == mins fits
        while lo < hi:
            mid = (lo + hi) // 2
            if model.macs_vec(counts_at(values[mid]), convention) <= target_macs:
                hi = mid
            else:
                lo = mid + 1
        threshold = float(values[lo])
        k = counts_at(threshold)
    filled = 0
    if fill:
        candidates = []
        for j, g in enumerate(groups):
            order = orders[j]
            for start in range(int(k[j]), g.channels - int(mult[j]) + 1, int(mult[j])):
                candidates.append((-g.scores[order[start]], j, start))
        candidates.sort()
        closed: set[int] = set()
        for _, j, start in candidates:
            if j in closed or k[j] != start:
                continue
            k[j] += mult[j]
            if model.macs_vec(k, convention) <= target_macs:
                filled += int(mult[j])
            else:
                k[j] -= mult[j]
                closed.add(j)
    kept, counts = {}, {}
    for j, g in enumerate(groups):
        units = orders[j][: int(k[j])]
        kept[g.id] = sorted(r for u in units for r in g.units[u])
        counts[g.id] = int(k[j])
    return Selection(
        kept=kept, counts=counts, macs=model.macs_vec(k, convention), target=int(target_macs), teacher=teacher,
        convention=convention, threshold=threshold, filled=filled, smallest=smallest,
        criteria={g.id: g.criterion for g in groups},
    )


def group_rows(trace, selection: Selection | None = None) -> list[dict]:
    """One row per group for a summary: id, members, channels, kept, criterion, and why a group
    is left whole. ``kept`` is the selection's count (all channels for groups it leaves whole)."""
    rows = []
    for g in trace.groups.values():
        channels = sum(len(u) for u in g.units)
        kept = channels
        if selection is not None and g.id in selection.kept:
            kept = len(selection.kept[g.id])
        rows.append({
            "group": g.id, "members": len(g.members), "channels": channels, "kept": kept,
            "criterion": g.criterion if g.prunable else None,
            "left whole": None if g.prunable else g.reason,
        })
    return rows
