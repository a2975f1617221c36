"""Importance of each unit of each group, as CAT scores channels, for any traced module.

``gamma`` (CAT, CVPR 2021; Network Slimming, ICCV 2017) where the group passes through an
affine norm (batch, instance or group norm with a weight): ``|gamma|`` of those norms, the
mean over them when there are several (a residual stream normalised in several places).
``l1`` otherwise (affine-free or no norms): the L1 norm of each output filter of the
group's producing convs (``Conv`` weight ``[out, in, k, k]`` summed over ``in, k, k``,
``ConvTranspose`` ``[in, out, k, k]`` over ``in, k, k``, ``Linear`` over ``in``), each conv
scaled to mean 1 so one threshold compares convs of different fan-in; the mean over the
producers of a residual sum. A unit of several channels (before a PixelShuffle) scores the
mean of its channels. Scores from both criteria meet one global threshold: ``|gamma|`` of a
trained norm is of order 1, like a mean-1 L1; the summary names the criterion per group.
"""

from __future__ import annotations

from typing import Any


def score_groups(trace, *, prefer: str = "gamma") -> None:
    """Fill ``criterion`` and ``scores`` of every prunable group of ``trace`` (in place).

    ``prefer="l1"`` scores every group by L1, affine norms or not.
    """
    import torch

    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm,
                  torch.nn.GroupNorm)
    dense_types = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    per_group: dict[str, dict[str, list[tuple[Any, list[int], list[int]]]]] = {}
    for (node, space), items in trace.node_items.items():
        m = node.module
        for gid, positions, roots in items:
            kind = None
            if space == "out" and isinstance(m, norm_types) and getattr(m, "weight", None) is not None:
                kind = "gamma"
            elif space == "out" and isinstance(m, dense_types) and not _depthwise(m):
                kind = "l1"
            if kind:
                per_group.setdefault(gid, {}).setdefault(kind, []).append((m, positions, roots))
    for gid, g in trace.groups.items():
        if not g.prunable:
            continue
        found = per_group.get(gid, {})
        criterion = "gamma" if prefer != "l1" and "gamma" in found else "l1"
        unit_of = {r: u for u, unit in enumerate(g.units) for r in unit}
        values: list[list[float]] = [[] for _ in g.units]
        for m, positions, roots in found.get(criterion, []):
            v = _gamma(m) if criterion == "gamma" else _l1(m)
            for q, r in zip(positions, roots):
                if r in unit_of:
                    values[unit_of[r]].append(float(v[q]))
        g.criterion = criterion
        g.scores = [sum(vs) / len(vs) if vs else 0.0 for vs in values]


def _depthwise(m) -> bool:
    import torch

    return isinstance(m, torch.nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.out_channels


def _gamma(m):
    return m.weight.detach().abs().float()


def _l1(m):
    import torch

    w = m.weight.detach().abs().float()
    if isinstance(m, torch.nn.modules.conv._ConvNd) and m.transposed:
        per = w.sum(dim=[d for d in range(w.dim()) if d != 1])
    else:
        per = w.flatten(1).sum(dim=1)
    mean = per.mean()
    return per / mean if float(mean) > 0 else per
