"""What a trace finds: channel groups (:class:`Group`) and the trace itself (:class:`Trace`).

Shared by :mod:`.trace` (which builds them), :mod:`.rules`, :mod:`.macs` and :mod:`.prune`
(which read them); it imports no other module of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Group:
    """One set of channels pruned together.

    Attributes:
        id: ``<root module path>:out``.
        root: module path of the root conv; kept indices are its output channel indices.
        units: root channel indices pruned together, one list per prunable unit (one index
            each, ``r*r`` before a PixelShuffle by ``r``); ``channels == len(units)``.
        members: ``"<module path>:<in|out>"`` of every layer the group touches.
        prunable: False if the group is left whole; ``reason`` says why.
        multiple: kept unit counts must be multiples of this (group norm's ``num_groups``).
        criterion: ``gamma`` (|gamma| of the affine norms after the producers) or ``l1``
            (per-filter L1 of the producing convs, each scaled to mean 1).
        scores: importance of each unit (mean over its channels and over the norms/convs).
    """

    id: str
    root: str
    units: list[list[int]]
    members: list[str] = field(default_factory=list)
    prunable: bool = True
    reason: str | None = None
    multiple: int = 1
    criterion: str | None = None
    scores: list[float] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return len(self.units)

    @property
    def min_channels(self) -> int:
        """The fewest units the group may keep (its ``multiple``; ``select_channels`` may ask more)."""
        return min(self.multiple, self.channels)

    def leave_whole(self, reason: str) -> None:
        if self.prunable:
            self.prunable, self.reason = False, reason


@dataclass
class Trace:
    """What :func:`trace_groups` learnt from one forward pass.

    Attributes:
        groups: every group by id (prunable or not), in root order.
        input_shape: the example input's shape (``[N, C, H, W]``); MACs are for that size.
        macs: the closed-form MACs model (:class:`nas_prune.families.module.macs.MacsModel`).
        taps_profile: ``(child name, cumulative fvcore MACs at its output, output is a 4-D
            feature map)`` in execution order.
    """

    module: Any
    graph: Any
    groups: dict[str, Group]
    input_shape: list[int]
    keep: list[str]
    macs: Any = None
    taps_profile: list[tuple[str, int, bool]] = field(default_factory=list)
    # internals for prune_module: node -> [(group id, positions, roots)], buffer slices
    node_items: dict = field(default_factory=dict)
    buffer_slices: list = field(default_factory=list)
    root_modules: dict = field(default_factory=dict)
    output_nodes: set = field(default_factory=set)
    output_shape: Any = None  # as prune_module's shape check compares it

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.prunable]


def _node_name(dg, node) -> str:
    n = dg._module2name.get(node.module)
    return n if n is not None else str(node.module)


def _node_channels(trace: Trace, node, space: str, tape_channels: dict) -> int | None:
    """Channel count of a node's tensor (``space`` ``in`` only for dense convs/linears)."""
    import torch_pruning as tp

    m = node.module
    if isinstance(m, tp.ops.TORCH_CONV):
        return m.in_channels if space == "in" else m.out_channels
    if isinstance(m, tp.ops.TORCH_LINEAR):
        return m.in_features if space == "in" else m.out_features
    for attr in ("num_features", "num_channels"):
        if hasattr(m, attr) and isinstance(getattr(m, attr), int):
            return getattr(m, attr)
    if node.type == tp.ops.OPTYPE.OUTPUT:
        return m.shape[1] if len(m.shape) > 1 else None
    if node.type == tp.ops.OPTYPE.CUSTOMIZED:
        return trace.graph.get_out_channels(m)
    return tape_channels.get(node.grad_fn)
