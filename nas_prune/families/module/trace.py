"""Channel groups of any ``nn.Module`` from Torch-Pruning's dependency graph, traced once.

:func:`trace_groups` runs one forward pass. Torch-Pruning (``torch_pruning.DependencyGraph``)
builds the graph of coupled channels from it (concat, residual adds, depthwise convs,
ConvTranspose, norms); the tape (:mod:`.tape`) records the ops the MACs counters charge in
the same pass. A **group** is a set of channels that must be pruned together: the output
channels of one or more convs (summed by residual adds), the norms and depthwise convs that
follow them and the input channels of every conv that reads them. Its id is
``<root module path>:out``, the root being its first conv in ``named_modules`` order.

Where nas-prune departs from Torch-Pruning:

* **PixelShuffle / PixelUnshuffle** modules are taught to the graph (Torch-Pruning treats
  them as channel-preserving, which merges unrelated groups): one channel after a
  shuffle by ``r`` is ``r*r`` channels before it, so a group feeding a shuffle is pruned in
  units of ``r*r`` root channels. ``F.pixel_shuffle`` (no module) is not: its groups are
  left whole, as the channel check below finds.
* **Channel check.** Every group is checked against the traced shapes (each position it
  claims exists, no two groups claim one, each unit covers the same number of positions
  at every node). A group that fails is left whole and listed, never pruned half right.
* **Buffers used functionally**: a depthwise ``F.conv2d(x, self.blur, groups=C)`` with a
  ``C x 1 x k x k`` buffer, or a ``[1, C, 1, 1]`` buffer broadcast in an elementwise op,
  are sliced with their channels; any other use of a buffer whose size matches the
  channels it meets leaves those groups whole. A probe prunes one unit of each group that
  slices a buffer on a copy and runs it, so code that reads a stored channel count
  (``groups=self.channels``) is found at trace time.
* **Left whole and listed, with the reason** (:attr:`Group.reason`): the model's outputs
  (the image channels), modules named in ``keep``, grouped (not depthwise) convs,
  LayerNorm (Torch-Pruning prunes its last dim), reshapes/splits/slices of channels,
  parameters used outside a layer unless shaped ``[..., C, 1, 1]``, group norm over
  several groups' channels, and whatever the channel check rejects.
* **InstanceNorm running statistics** are sliced (Torch-Pruning leaves them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families.module.groups import Group, Trace, _node_name  # noqa: F401  (Group, Trace: public names)

if TYPE_CHECKING:  # pragma: no cover
    import torch


class _Remap:
    """Index mapping across a pixel (un)shuffle: ``expand`` i -> [i*s, (i+1)*s), else i -> i // s."""

    def __init__(self, stride: int, expand: bool):
        self.stride, self.expand = stride, expand

    def __call__(self, idxs):
        from torch_pruning._helpers import _HybridIndex

        s = self.stride
        if self.expand:
            return [_HybridIndex(idx=k, root_idx=i.root_idx) for i in idxs for k in range(i.idx * s, (i.idx + 1) * s)]
        seen, out = set(), []
        for i in idxs:
            j = i.idx // s
            if j not in seen:
                seen.add(j)
                out.append(_HybridIndex(idx=j, root_idx=i.root_idx))
        return out


def _shuffle_pruner_class():
    from torch_pruning.pruner.function import BasePruningFunc

    class ShufflePruner(BasePruningFunc):
        """PixelShuffle/PixelUnshuffle as a node whose channel count Torch-Pruning can ask.

        Indices reaching the node are in its *output* space; counts are kept per module.
        """

        TARGET_MODULES = None

        def __init__(self):
            super().__init__()
            self.counts: dict[int, list[int]] = {}  # id(module) -> [in, out]

        def prune_out_channels(self, layer, idxs):
            c = self.counts[id(layer)]
            c[1] -= len(idxs)
            s = _factor(layer) ** 2
            c[0] = c[1] * s if _is_shuffle(layer) else c[1] // s
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return self.counts.get(id(layer), [None, None])[1]

        def get_in_channels(self, layer):
            return self.counts.get(id(layer), [None, None])[0]

    return ShufflePruner


def _is_shuffle(m) -> bool:
    import torch

    return isinstance(m, torch.nn.PixelShuffle)


def _factor(m) -> int:
    return int(m.upscale_factor if _is_shuffle(m) else m.downscale_factor)


def trace_groups(
    module: "torch.nn.Module",
    example_input: "torch.Tensor",
    *,
    keep: Sequence[str] = (),
    probe: bool = True,
) -> Trace:
    """Trace ``module`` once and return its channel groups, importance and MACs model.

    Args:
        module: the generator (its training flag is restored afterwards; the trace runs in
            eval mode, as the counters count).
        example_input: one input batch, ``[1, C, H, W]``; MACs are for this size.
        keep: module paths whose channels are never pruned (a path covers its submodules).
        probe: prune one unit of each group that slices a buffer on a copy and run it.

    Raises:
        NasPruneError: ``keep`` names no module, or the module uses ops the MACs model
            cannot count (:func:`.tape.check_supported`).
    """
    import torch

    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise NasPruneError(f"the module family needs Torch-Pruning: pip install 'nas-prune[module]' ({err})") from None

    from nas_prune.families.module import macs as macs_mod
    from nas_prune.families.module.importance import score_groups
    from nas_prune.families.module.rules import apply_rules
    from nas_prune.families.module.tape import Tape, check_supported

    if example_input.dim() < 3 or example_input.shape[0] != 1:
        raise NasPruneError(f"example input {tuple(example_input.shape)}: expected one image, [1, C, H, W]")
    names = {m: n for n, m in module.named_modules()}
    all_names = set(names.values())
    for k in keep:
        if k not in all_names:
            raise NasPruneError(f"--keep {k}: no module of that name (top-level: {', '.join(n for n, _ in module.named_children())})")

    shuffle_cls = _shuffle_pruner_class()
    shuffle = shuffle_cls()
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm,
                  torch.nn.GroupNorm, torch.nn.LayerNorm)
    tape = Tape(buffer_ids={id(b) for m in module.modules() if not isinstance(m, norm_types)
                            for b in m.buffers(recurse=False)})
    hooks = []
    fn2module: dict[Any, Any] = {}

    def shuffle_hook(m, inputs, output):
        shuffle.counts[id(m)] = [int(inputs[0].shape[1]), int(output.shape[1])]

    def module_hook(m, inputs, output):
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            fn2module.setdefault(output.grad_fn, m)

    prunable_types = (torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm,
                      torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm,
                      torch.nn.PReLU)
    for m in module.modules():
        if isinstance(m, (torch.nn.PixelShuffle, torch.nn.PixelUnshuffle)):
            hooks.append(m.register_forward_hook(shuffle_hook))
        if isinstance(m, prunable_types) or isinstance(m, (torch.nn.PixelShuffle, torch.nn.PixelUnshuffle)):
            hooks.append(m.register_forward_hook(module_hook))
    body = _top_children(module)
    for cname, child in body:
        hooks.append(child.register_forward_pre_hook(lambda m, i, _n=cname: setattr(tape, "child", _n)))
        hooks.append(child.register_forward_hook(lambda m, i, o, _n=cname: _child_done(tape, _n, o)))
    tape.child_ends = []  # type: ignore[attr-defined]

    outputs: list = []
    shapes: list = []

    def forward_fn(model, x):
        with tape:
            out = model(x)
        outputs.extend(o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor))
        shapes.append(tuple(tuple(o.shape) for o in outputs) if isinstance(out, (tuple, list)) else tuple(out.shape))
        return out

    # In-place activations on a view (instance norm's output) replace its autograd node, so
    # Torch-Pruning would never see the norm: trace with them out of place.
    inplace = [m for m in module.modules() if getattr(m, "inplace", None) is True]
    for m in inplace:
        m.inplace = False
        hooks.append(m.register_forward_pre_hook(lambda *_: setattr(tape, "in_flipped", True)))
        hooks.append(m.register_forward_hook(lambda *_: setattr(tape, "in_flipped", False)))
    # the graph is read from autograd: frozen weights (requires_grad False) would hide it
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    was_training = module.training
    dg = tp.DependencyGraph()
    try:
        with torch.enable_grad():
            dg.build_dependency(
                module, example_inputs=example_input, forward_fn=forward_fn, verbose=False,
                customized_pruners={torch.nn.PixelShuffle: shuffle, torch.nn.PixelUnshuffle: shuffle},
            )
    finally:
        for h in hooks:
            h.remove()
        for m in inplace:
            m.inplace = True
        for p in frozen:
            p.requires_grad_(False)
        module.train(was_training)
    check_supported(tape)
    _teach_shuffles(dg)
    tp.dependency.index_mapping.update_index_mapping(dg)

    fn2node = {node.grad_fn: node for node in dg.module2node.values() if node.grad_fn is not None}
    for fn, m in fn2module.items():
        if fn not in fn2node and m in dg.module2node:
            fn2node[fn] = dg.module2node[m]

    ran = {m for m in fn2module.values()}
    lost = [names[m] for m in ran if m not in dg.module2node and (
        any(p is not None for p in m._parameters.values()) or any(b is not None for b in m._buffers.values()))]
    if lost:
        raise NasPruneError(
            f"{', '.join(sorted(lost)[:3])} ran but is not in the traced graph (an in-place op on its output, "
            "or an output that is not used): the module family cannot prune this module"
        )
    trace = Trace(module=module, graph=dg, groups={}, input_shape=list(example_input.shape), keep=list(keep))
    trace.output_nodes = {fn2node[o.grad_fn] for o in outputs if o.grad_fn in fn2node}
    trace.output_shape = shapes[0] if shapes else None
    _collect_groups(trace, names)
    apply_rules(trace, tape, names, fn2node, keep)
    forms = macs_mod.node_forms(trace, tape, fn2node)
    trace.macs = macs_mod.build_model(trace, tape, fn2node, forms)
    trace.taps_profile = _taps_profile(tape, trace.macs)
    score_groups(trace)
    if probe:
        _probe(trace, example_input)
    trace.macs = macs_mod.build_model(trace, tape, fn2node, macs_mod.node_forms(trace, tape, fn2node))
    return trace


def _top_children(module) -> list[tuple[str, Any]]:
    """Top-level children, descending through single-child wrappers (``self.model = Sequential(...)``)."""
    prefix, mod = "", module
    while True:
        kids = list(mod.named_children())
        if len(kids) != 1:
            break
        prefix, mod = f"{prefix}{kids[0][0]}.", kids[0][1]
    return [(f"{prefix}{n}", c) for n, c in mod.named_children()]


def _child_done(tape, name: str, output) -> None:
    import torch

    is_map = isinstance(output, torch.Tensor) and output.dim() == 4
    tape.child_ends.append((name, len(tape.ops), is_map))
    tape.child = None


def _teach_shuffles(dg) -> None:
    """Index mappings across PixelShuffle/PixelUnshuffle nodes (their node space is the output's)."""
    from torch_pruning import ops

    for node in dg.module2node.values():
        if node.type != ops.OPTYPE.CUSTOMIZED:
            continue
        m = node.module
        s = _factor(m) ** 2
        up = _is_shuffle(m)
        for in_node in node.inputs:
            for dep in node.dependencies:
                if dep.target is in_node:
                    dep.index_mapping[0] = _Remap(s, expand=up)
            for dep in in_node.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = _Remap(s, expand=not up)


def _collect_groups(trace: Trace, names: dict) -> None:
    """One Torch-Pruning group per root conv/linear (first in ``named_modules`` order)."""
    import torch

    dg = trace.graph
    covered: dict[Any, set[int]] = {}
    partial = []
    for name, m in trace.module.named_modules():
        if m not in dg.module2node or not isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            continue
        pruner = dg.get_pruner_of_module(m)
        n_out = pruner.get_out_channels(m)
        done = covered.get(m, set())
        todo = [i for i in range(n_out) if i not in done]
        if not todo:
            continue
        if done:
            partial.append((name, m, todo))
            continue
        _add_group(trace, name, m, todo, covered)
    for name, m, todo in partial:  # channels of one conv split across groups: listed, not pruned
        todo = [i for i in todo if i not in covered.get(m, set())]
        if todo:
            g = _add_group(trace, f"{name}@{todo[0]}", m, todo, covered, root_name=name)
            g.leave_whole("its root conv's channels are shared with another group")


def _add_group(trace: Trace, gid_root: str, m, todo: list[int], covered: dict, root_name: str | None = None) -> Group:
    import torch_pruning as tp

    dg = trace.graph
    pruner = dg.get_pruner_of_module(m)
    grp = dg.get_pruning_group(m, pruner.prune_out_channels, todo)
    gid = f"{gid_root}:out"
    group = Group(id=gid, root=root_name or gid_root, units=[[i] for i in todo])
    members, shuffled = [], False
    for item in grp:
        node, handler = item.dep.target, item.dep.handler
        is_out = dg.is_out_channel_pruning_fn(handler)
        positions, roots = list(item.idxs), list(item.root_idxs)
        space = "out" if is_out else "in"
        trace.node_items.setdefault((node, space), []).append((gid, positions, roots))
        if node.type == tp.ops.OPTYPE.CUSTOMIZED:
            shuffled = True
        if is_out and isinstance(node.module, (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)):
            covered.setdefault(node.module, set()).update(positions)
        label = f"{_node_name(dg, node)}:{space}"
        if dg._module2name.get(node.module) is not None and label not in members:
            members.append(label)
    group.members = members
    if shuffled:
        group.units = _units_by_query(dg, m, pruner, todo)
    trace.groups[gid] = group
    trace.root_modules[gid] = m
    return group


def _units_by_query(dg, m, pruner, todo: list[int]) -> list[list[int]]:
    """Root channels that Torch-Pruning prunes together (one query per root channel)."""
    parent = {i: i for i in todo}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in todo:
        q = dg.get_pruning_group(m, pruner.prune_out_channels, [i])
        for j in q[0].idxs:
            if j in parent:
                parent[find(j)] = find(i)
    units: dict[int, list[int]] = {}
    for i in todo:
        units.setdefault(find(i), []).append(i)
    return [sorted(u) for u in sorted(units.values())]


def _taps_profile(tape, model) -> list[tuple[str, int, bool]]:
    """``(child, cumulative fvcore MACs after it, output is a feature map)`` for the top-level
    children, in run order (a child run twice counts at its last run)."""
    costs = model.op_costs_fvcore  # per recorded op, at full width
    out, seen = [], set()
    for name, end, is_map in getattr(tape, "child_ends", []):
        if name in seen:
            out = [row for row in out if row[0] != name]
        seen.add(name)
        out.append((name, int(sum(costs[:end])), is_map))
    return out


def _probe(trace: Trace, example_input) -> None:
    """Prune one unit of each buffer-slicing group on a copy and run it; leave whole what breaks."""
    import copy

    import torch

    from nas_prune.families.module.cut import cut_module

    suspects = sorted({gid for *_, gids in trace.buffer_slices for gid in gids if trace.groups[gid].prunable})
    for gid in suspects:
        g = trace.groups[gid]
        if g.channels < 2:
            continue
        kept = {gid: sorted(r for unit in g.units[:-1] for r in unit)}
        try:
            clone = copy.deepcopy(trace.module)
            sub = trace_groups(clone, example_input, keep=trace.keep, probe=False)
            pruned, _ = cut_module(clone, kept, example_input=example_input, trace=sub)
            with torch.no_grad():
                pruned.eval()(example_input)
        except Exception as err:  # noqa: BLE001 - the user's forward pass, any failure
            g.leave_whole(f"pruning it breaks the forward pass ({type(err).__name__}: {' '.join(str(err).split())[:120]})")
