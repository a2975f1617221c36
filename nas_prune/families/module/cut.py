"""Cut a traced module to kept channels with explicit indices (the structural edit itself).

:func:`cut_module` does the edit given a trace of the very module: Torch-Pruning's pruners
remove the dropped root channels of every group (and everything coupled to them), buffers
used functionally and instance-norm running statistics are sliced with their channels, and the
cut module must run and give outputs of the original shape. :func:`.prune.prune_module` traces
first when it has no trace and writes the record; :func:`.trace.trace_groups`' probe cuts copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _kept_positions(trace, node, space: str, kept_roots: Mapping[str, set[int]], total: int) -> list[int]:
    """Positions of ``node``'s tensor that survive: fixed ones and those of kept roots."""
    dropped = set()
    for gid, positions, roots in trace.node_items.get((node, space), []):
        if gid in kept_roots:
            keep = kept_roots[gid]
            dropped.update(q for q, r in zip(positions, roots) if r not in keep)
    return [q for q in range(total) if q not in dropped]


def cut_module(module: "torch.nn.Module", kept: Mapping[str, Sequence[int]], *, example_input: "torch.Tensor",
               trace) -> tuple["torch.nn.Module", dict[str, set[int]]]:
    """Cut ``module`` in place to ``kept`` (group id -> kept root-channel indices) using ``trace``,
    a trace of this very module at ``example_input``'s shape.

    Returns:
        ``(module, {group id: kept roots})`` for the groups actually cut.

    Raises:
        NasPruneError: an unknown or unprunable group, indices outside the group, a partial
            unit, no channel left in a group, or a cut module that no longer runs or changes
            its output shape.
    """
    import torch

    if trace.module is not module:
        raise NasPruneError("prune_module: the trace was made on another module object (pass trace.module)")
    kept_roots: dict[str, set[int]] = {}
    for gid, idxs in kept.items():
        g = trace.groups.get(gid)
        if g is None:
            raise NasPruneError(f"kept channels: no group {gid!r} in the module")
        idxs = {int(i) for i in idxs}
        every = {r for unit in g.units for r in unit}
        if idxs == every:
            continue
        if not g.prunable:
            raise NasPruneError(f"kept channels: group {gid} is not prunable ({g.reason})")
        if not idxs:
            raise NasPruneError(f"kept channels: group {gid} keeps no channel")
        if not idxs <= every:
            raise NasPruneError(f"kept channels: group {gid} has no channels {sorted(idxs - every)[:5]}")
        for unit in g.units:
            if 0 < len(idxs & set(unit)) < len(unit):
                raise NasPruneError(f"kept channels: group {gid} must keep or drop channels {unit} together")
        kept_roots[gid] = idxs

    reference_shape = trace.output_shape
    if reference_shape is None:
        with torch.no_grad():
            reference_shape = _output_shape(module, example_input)
    # plan buffer slices and instance-norm running stats before the graph changes
    slices = []
    for owner, bname, dim, node, gids in trace.buffer_slices:
        if not set(gids) & set(kept_roots):
            continue
        buf = module.get_submodule(owner).get_buffer(bname) if owner else module.get_buffer(bname)
        slices.append((owner, bname, dim, _kept_positions(trace, node, "out", kept_roots, buf.shape[dim])))
    norm_stats = []
    for (node, space), items in trace.node_items.items():
        m = node.module
        if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) and getattr(m, "running_mean", None) is not None:
            if {gid for gid, _, _ in items} & set(kept_roots):
                norm_stats.append((m, _kept_positions(trace, node, "out", kept_roots, m.num_features)))

    dg = trace.graph
    for gid, idxs in kept_roots.items():
        root = trace.root_modules[gid]
        pruner = dg.get_pruner_of_module(root)
        every = sorted(r for unit in trace.groups[gid].units for r in unit)
        drop = [r for r in every if r not in idxs]
        group = dg.get_pruning_group(root, pruner.prune_out_channels, drop)
        group.prune(record_history=False)
    with torch.no_grad():
        for owner, bname, dim, positions in slices:
            mod = module.get_submodule(owner) if owner else module
            buf = mod.get_buffer(bname)
            mod._buffers[bname] = buf.index_select(dim, torch.tensor(positions, dtype=torch.long)).contiguous()
        for m, positions in norm_stats:
            index = torch.tensor(positions, dtype=torch.long)
            m.running_mean = m.running_mean.index_select(0, index).contiguous()
            m.running_var = m.running_var.index_select(0, index).contiguous()
        try:
            shape = _output_shape(module, example_input)
        except Exception as err:  # noqa: BLE001 - the user's forward pass
            raise NasPruneError(f"the pruned module does not run: {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
    if shape != reference_shape:
        raise NasPruneError(f"the pruned module's output changed shape: {shape} vs {reference_shape}")
    return module, kept_roots


def _output_shape(module, x) -> tuple:
    was = module.training
    module.eval()
    try:
        out = module(x)
    finally:
        module.train(was)
    if isinstance(out, (tuple, list)):
        return tuple(tuple(o.shape) for o in out if hasattr(o, "shape"))
    return tuple(out.shape)
