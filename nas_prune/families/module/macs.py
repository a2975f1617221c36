"""Closed-form MACs of any traced module as a function of the kept channels per group.

Every tensor's channel count is a linear *form* in the kept unit counts ``k_g`` of the
prunable groups: ``C = const + sum_g mult_g * k_g`` (``mult_g`` channels per unit: 1, ``r*r``
before a PixelShuffle, 2 for ``cat([x, x])``). Every op the counters charge costs
``coef * C_in * C_out`` (convs, linear) or ``coef * C`` (norms, depthwise convs, upsampling,
elementwise ops), with the coefficients of :func:`.tape.op_cost` in each convention. So
``MACs(k)`` is a quadratic in ``k`` evaluated without a forward pass (one matrix-vector
product), equal to fvcore / torchprofile on the pruned module at the traced input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

CONVENTIONS = ("fvcore", "paper")


def node_forms(trace, tape, fn2node) -> dict:
    """``{node: (const, {group id: channels per unit})}`` for every node's output tensor."""
    from nas_prune.families.module.groups import _node_channels

    forms = {}
    for (node, space), items in trace.node_items.items():
        if space != "out":
            continue
        total = _node_channels(trace, node, "out", tape.channels)
        mult, claimed = {}, 0
        fixed_claimed = 0
        for gid, positions, _ in items:
            g = trace.groups[gid]
            n = len(set(positions))
            if g.prunable:
                mult[gid] = mult.get(gid, 0) + n // g.channels
                claimed += n
            else:
                fixed_claimed += n
        const = (total - claimed) if total is not None else fixed_claimed
        forms[node] = (const, mult)
    return forms


@dataclass
class MacsModel:
    """``MACs(kept unit counts)`` in both conventions, from one trace.

    Attributes:
        group_ids: prunable group ids (the order of the count vector).
        full: each prunable group's full unit count.
        teacher: MACs of the traced (unpruned) module per convention.
        op_costs_fvcore: cost of each recorded op at full width (for distillation taps).
    """

    group_ids: list[str]
    full: list[int]
    const: Any  # [F] int64
    matrix: Any  # [F, G] int64
    a: Any  # [T] form index
    b: Any  # [T] form index, -1 = 1
    coef: dict[str, Any]  # convention -> [T] int64
    fixed: dict[str, int]  # convention -> cost of constant ops
    teacher: dict[str, int] = field(default_factory=dict)
    op_costs_fvcore: list[int] = field(default_factory=list)
    op_child: list = field(default_factory=list)  # [T] top-level child running each charged op (None: outside)

    def vector(self, counts: Mapping[str, int] | None) -> "np.ndarray":
        import numpy as np

        counts = counts or {}
        unknown = set(counts) - set(self.group_ids)
        if unknown:
            raise NasPruneError(f"not prunable groups: {', '.join(sorted(unknown))}")
        return np.array([int(counts.get(g, n)) for g, n in zip(self.group_ids, self.full)], dtype=np.int64)

    def macs_vec(self, k: "np.ndarray", convention: str = "fvcore") -> int:
        """MACs for a count vector ``k`` (aligned with :attr:`group_ids`)."""
        import numpy as np

        v = self.const + (self.matrix @ k if self.matrix.shape[1] else 0)
        va = v[self.a]
        vb = np.where(self.b >= 0, v[np.maximum(self.b, 0)], 1)
        return int(self.fixed[convention] + int(np.sum(self.coef[convention] * va * vb)))

    def macs_by_child(self, k: "np.ndarray", convention: str = "fvcore") -> dict:
        """``{top-level child (None: outside any): MACs}`` for a count vector ``k``; the constant
        ops (grouped convs left whole, ...) are under the key ``"(fixed)"``. Sums to :meth:`macs_vec`."""
        import numpy as np

        v = self.const + (self.matrix @ k if self.matrix.shape[1] else 0)
        vb = np.where(self.b >= 0, v[np.maximum(self.b, 0)], 1)
        per_op = self.coef[convention] * v[self.a] * vb
        out: dict = {}
        for child, cost in zip(self.op_child, per_op.tolist()):
            out[child] = out.get(child, 0) + int(cost)
        if self.fixed[convention]:
            out["(fixed)"] = out.get("(fixed)", 0) + int(self.fixed[convention])
        return out

    def macs(self, counts: Mapping[str, int] | None = None, *, convention: str = "fvcore") -> int:
        """MACs with ``counts[group id]`` units kept (missing groups: all kept).

        Raises:
            NasPruneError: an unknown convention or a group that is not prunable.
        """
        if convention not in CONVENTIONS:
            raise NasPruneError(f"unknown MACs convention {convention!r}: choose fvcore or paper")
        return self.macs_vec(self.vector(counts), convention)


def build_model(trace, tape, fn2node, forms: dict) -> MacsModel:
    """Turn the tape's ops into a :class:`MacsModel` over the trace's prunable groups."""
    import numpy as np

    from nas_prune.families.module.tape import op_cost

    gids = [g.id for g in trace.groups.values() if g.prunable]
    col = {g: i for i, g in enumerate(gids)}
    form_index: dict[Any, int] = {}
    consts: list[int] = []
    rows: list[dict[int, int]] = []

    def form_of(fn, channels: int) -> int:
        node = fn2node.get(fn) if fn is not None else None
        key = node if node is not None and node in forms else ("const", channels)
        if key not in form_index:
            if key in forms:
                const, mult = forms[key]
                consts.append(int(const))
                rows.append({col[g]: m for g, m in mult.items() if g in col})
            else:
                consts.append(int(channels))
                rows.append({})
            form_index[key] = len(consts) - 1
        return form_index[key]

    a, b = [], []
    coef = {"fvcore": [], "paper": []}
    children: list = []
    fixed = {"fvcore": 0, "paper": 0}
    full_costs = []
    for op in tape.ops:
        kind, cf, cp = op_cost(op)
        fixed["paper"] += int(op.extra.get("paper_const", 0))
        if kind == "free":
            full_costs.append(0)
            continue
        if kind == "const":
            fixed["fvcore"] += int(cf)
            fixed["paper"] += int(cp)
            full_costs.append(int(cf))
            continue
        out_c = op.out_shape[1] if len(op.out_shape) > 1 else 1
        if kind == "out" and op.in_fn in fn2node and len(op.in_shape) > 1 and op.in_shape[1] == out_c:
            ob = form_of(op.in_fn, out_c)  # channel-preserving: the input's node is the surer one
        else:
            ob = form_of(op.out_fn, out_c)
        if kind == "dense":
            in_c = op.in_shape[1] if len(op.in_shape) > 1 else 1
            a.append(form_of(op.in_fn, in_c))
            b.append(ob)
            full_costs.append(int(cf) * in_c * out_c)
        else:
            a.append(ob)
            b.append(-1)
            full_costs.append(int(cf) * out_c)
        coef["fvcore"].append(int(cf))
        coef["paper"].append(int(cp))
        children.append(op.child)
    matrix = np.zeros((len(consts), len(gids)), dtype=np.int64)
    for i, row in enumerate(rows):
        for j, m in row.items():
            matrix[i, j] = m
    model = MacsModel(
        group_ids=gids,
        full=[trace.groups[g].channels for g in gids],
        const=np.array(consts, dtype=np.int64),
        matrix=matrix,
        a=np.array(a, dtype=np.int64),
        b=np.array(b, dtype=np.int64),
        coef={k: np.array(v, dtype=np.int64) for k, v in coef.items()},
        fixed=fixed,
        op_costs_fvcore=full_costs,
        op_child=children,
    )
    model.teacher = {c: model.macs(None, convention=c) for c in CONVENTIONS}
    return model


def measure_macs(module, example_input, *, convention: str = "fvcore") -> int:
    """MACs of a real forward pass in eval mode: fvcore's ``FlopCountAnalysis`` or torchprofile."""
    import warnings

    import torch

    was = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if convention == "fvcore":
                from fvcore.nn import FlopCountAnalysis

                analysis = FlopCountAnalysis(module, example_input)
                analysis.unsupported_ops_warnings(False)
                analysis.uncalled_modules_warnings(False)
                return int(analysis.total())
            from torchprofile import profile_macs

            return int(profile_macs(module, example_input))
    finally:
        module.train(was)
