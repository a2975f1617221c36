"""What the module family leaves whole, and the buffers it slices (the rules of :mod:`.trace`).

Each rule names its reason in :attr:`.trace.Group.reason`; the module docstring of
:mod:`.trace` lists them.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from nas_prune.families.module.groups import Trace, _node_channels, _node_name


def apply_rules(trace: Trace, tape, names: dict, fn2node: dict, keep: Iterable[str]) -> None:
    """Leave whole every group nas-prune cannot prune correctly; plan functional buffer slices."""
    import torch
    import torch_pruning as tp

    dg, groups = trace.graph, trace.groups
    by_node: dict[Any, set[str]] = {}
    for (node, space), items in trace.node_items.items():
        for gid, positions, roots in items:
            by_node.setdefault(node, set()).add(gid)
    keep = list(keep)
    claimed: dict[tuple, str] = {}
    for (node, space), items in trace.node_items.items():
        name = dg._module2name.get(node.module)
        total = _node_channels(trace, node, space, tape.channels)
        m = node.module
        for gid, positions, roots in items:
            g = groups[gid]
            if node.type == tp.ops.OPTYPE.OUTPUT or (node in trace.output_nodes and space == "out"):
                g.leave_whole("the model's output channels")
            if name is not None and any(name == k or name.startswith(k + ".") for k in keep):
                g.leave_whole(f"kept (--keep {next(k for k in keep if name == k or name.startswith(k + '.'))})")
            if isinstance(m, tp.ops.TORCH_CONV) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels):
                g.leave_whole(f"grouped convolution {name} (groups={m.groups})")
            if isinstance(m, torch.nn.LayerNorm):
                g.leave_whole(f"LayerNorm {name} (not pruned along channels)")
            if node.grad_fn not in tape.internal and node.type in (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE,
                             tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND):
                g.leave_whole(f"channels reshaped, split or sliced ({type(node.grad_fn).__name__})")
            if node.type == tp.ops.OPTYPE.PARAMETER:
                p = m
                nonsingle = [i for i, s in enumerate(p.shape) if s > 1]
                if not (p.dim() >= 3 and nonsingle == [p.dim() - 3]):
                    g.leave_whole(f"parameter {dg._param_to_name.get(p, '?')} {tuple(p.shape)} used outside a layer")
            if total is not None and (len(set(positions)) != len(positions) and space == "in" or
                                      any(not 0 <= q < total for q in positions)):
                g.leave_whole(f"Torch-Pruning could not map its channels at {_node_name(dg, node)}")
            for q in set(positions):
                other = claimed.setdefault((node, space, q), gid)
                if other != gid:
                    g.leave_whole(f"its channels overlap group {other} at {_node_name(dg, node)}")
                    groups[other].leave_whole(f"its channels overlap group {gid} at {_node_name(dg, node)}")
    # Torch-Pruning takes every op it does not know as channel-preserving: where the traced
    # channel count changes across one (F.pixel_shuffle, a broadcast from one channel, a
    # mean over channels), the groups it coupled there are wrong
    for node in dg.module2node.values():
        if node.type != tp.ops.OPTYPE.ELEMENTWISE:
            continue
        c_out = tape.channels.get(node.grad_fn)
        for in_node in node.inputs:
            c_in = _node_channels(trace, in_node, "out", tape.channels)
            if c_out is not None and c_in is not None and c_in != c_out:
                for gid in by_node.get(node, set()) | by_node.get(in_node, set()):
                    groups[gid].leave_whole(f"channel count changes across {type(node.grad_fn).__name__} "
                                            f"({c_in} -> {c_out}), an op Torch-Pruning takes as channel-preserving")
    # a unit must cover the same number of positions at every node it reaches
    for (node, space), items in trace.node_items.items():
        for gid, positions, roots in items:
            g = groups[gid]
            unit_of = {r: u for u, unit in enumerate(g.units) for r in unit}
            counts = [0] * g.channels
            for q, r in dict(zip(positions, roots)).items():
                if r in unit_of:
                    counts[unit_of[r]] += 1
            if len(set(counts)) > 1:
                g.leave_whole(f"channels split or sliced at {_node_name(dg, node)}")
    # group norm: kept counts in multiples of num_groups, one group's channels only
    for (node, space), items in trace.node_items.items():
        m = node.module
        if isinstance(m, torch.nn.GroupNorm) and m.num_groups > 1:
            gids = {gid for gid, _, _ in items}
            mults = {gid: len(pos) // max(1, groups[gid].channels) for gid, pos, _ in items}
            if len(gids) > 1 or any(v != 1 for v in mults.values()) or sum(len(p) for _, p, _ in items) != m.num_channels:
                for gid in gids:
                    groups[gid].leave_whole(f"group norm {dg._module2name.get(m)} over channels of several groups")
            else:
                g = groups[next(iter(gids))]
                g.multiple = g.multiple * m.num_groups // math.gcd(g.multiple, m.num_groups)
    plan_buffers(trace, tape, fn2node, by_node)


def plan_buffers(trace: Trace, tape, fn2node: dict, by_node: dict) -> None:
    """Functional uses of buffers: slice them with their channels, or leave the groups whole."""
    import torch

    groups = trace.groups
    buffers = {id(b): (owner, bname) for owner, mod in trace.module.named_modules()
               for bname, b in mod.named_buffers(recurse=False)}
    layer_params = {id(p) for m in trace.module.modules()
                    if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) for p in m.parameters(recurse=False)}
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm,
                  torch.nn.GroupNorm, torch.nn.LayerNorm)
    norm_buffers = {id(b) for m in trace.module.modules() if isinstance(m, norm_types) for b in m.buffers(recurse=False)}
    planned: dict[int, tuple] = {}
    for op in tape.ops:
        node = fn2node.get(op.out_fn)
        gids = set(by_node.get(node, set())) if node is not None else set()
        in_node = fn2node.get(op.in_fn)
        gids |= set(by_node.get(in_node, set())) if in_node is not None else set()
        if op.name in ("conv1d", "conv2d", "conv3d", "conv_transpose2d") and op.weight is not None and id(op.weight) not in layer_params:
            depthwise = op.extra["groups"] == op.in_shape[1] == op.out_shape[1] and op.weight.shape[1] == 1
            if id(op.weight) in buffers and depthwise and node is not None:
                planned.setdefault(id(op.weight), (buffers[id(op.weight)], 0, node, op.weight, gids))
            else:
                for gid in gids:
                    groups[gid].leave_whole(f"functional convolution with weight {tuple(op.weight.shape)}")
            continue
        for t in op.tensors:
            if id(t) not in buffers or id(t) in norm_buffers:
                continue
            c = op.out_shape[1] if len(op.out_shape) > 1 else None
            shape = tuple(t.shape)
            dim = len(shape) - (len(op.out_shape) - 1)
            ok = (op.name in _BROADCAST_OPS and c is not None and 0 <= dim < len(shape)
                  and shape[dim] == c and all(s == 1 for i, s in enumerate(shape) if i != dim) and node is not None)
            if ok:
                planned.setdefault(id(t), (buffers[id(t)], dim, node, t, gids))
            elif any(s == c for s in shape):
                for gid in gids:
                    groups[gid].leave_whole(f"buffer {'.'.join(x for x in buffers[id(t)] if x)} {shape} used in {op.name}")
    # buffers used elsewhere (other ops, e.g. x + self.bias_buffer) are checked by the probe
    trace.buffer_slices = [(owner, bname, dim, node, gids) for (owner, bname), dim, node, t, gids in planned.values()]


#: elementwise ops through which a ``[..., C, 1, 1]`` buffer broadcasts along the channels
_BROADCAST_OPS = {"mul", "__mul__", "__rmul__", "mul_", "__imul__", "add", "__add__", "__radd__", "add_",
                  "__iadd__", "sub", "__sub__", "__rsub__", "sub_", "__isub__", "div", "__truediv__",
                  "__rtruediv__", "div_", "__itruediv__", "where", "maximum", "minimum"}
