"""Turn a prune plan into a student module, and check its MACs with fvcore.

Slicing the teacher's tensors is the family's part
(:meth:`nas_prune.families.base.GeneratorFamily.slice_state_dict`; for the
inception-residual generators, :mod:`nas_prune.families.inception.slicing`). Kept indices
are ascending, so a plan that keeps everything reproduces the teacher tensor for tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.families import family_of
from nas_prune.families.inception.slicing import map_convt as _map_convt  # noqa: F401  (historical name)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.plan import PrunePlan


def slice_state_dict(
    plan: "PrunePlan", teacher_state_dict: Mapping[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """The student's state dict for ``plan.student_arch()`` (the teacher family's slicing).

    Args:
        plan: kept channel indices per prunable layer of ``plan.teacher``.
        teacher_state_dict: the teacher's tensors in its family's native layout (as
            ``load_generator`` returns them). Tensors are copied, never shared with the teacher.

    Raises:
        NasPruneError: a tensor the plan needs is missing from the teacher's weights.
    """
    return family_of(plan.teacher).slice_state_dict(plan, teacher_state_dict)


def build_student(plan: "PrunePlan", teacher_state_dict: Mapping[str, "torch.Tensor"]):
    """Build the student module with sliced weights, in eval mode.

    Loads with ``strict=True``, so a key or shape the builder does not expect is a
    loud error rather than a silently skipped layer.
    """
    from nas_prune.model import build_generator

    model = build_generator(plan.student_arch())
    model.load_state_dict(slice_state_dict(plan, teacher_state_dict), strict=True)
    return model.eval()


def trace_size(arch: Any, input_size: tuple[int, int], *, min_side: int = 32) -> tuple[int, int, int]:
    """The smallest input ``(h, w)`` whose fvcore count gives the one at ``input_size`` exactly.

    When every layer costs a fixed amount per pixel of a grid that is a fixed fraction of
    the input, ``MACs(s*h, s*w) = s**2 * MACs(h, w)``; the family knows which ``h, w`` keep
    that exact (:meth:`~nas_prune.families.base.GeneratorFamily.trace_size`).

    Returns:
        ``(h, w, s)``; ``s == 1`` when no exact smaller size exists.
    """
    return family_of(arch).trace_size(arch, tuple(input_size), min_side=min_side)


def fvcore_by_distinct_layers(model, *, input_size: tuple[int, int]) -> tuple[int, int]:
    """fvcore's count of ``model`` on one ``input_size`` image, tracing each distinct layer once.

    fvcore counts ops (convolutions and norms here; pads, activations and adds are free),
    and in this space every op it counts runs inside a leaf module of the generator, with
    a count that depends only on the module's configuration and its input shape. So one
    eager forward pass records the input shape of every leaf module call; calls with the
    same configuration (``repr``, training flag) and input shape form a group; fvcore
    traces one small graph that runs the first module of each group once, on zeros of its
    recorded shape; the total is the sum over groups of its count times the group's size.
    The modules traced are the model's own; only repeats are skipped (a student has about
    2.5x as many leaf calls as distinct ones unrounded, 5x or more with ``--round-to``), as are
    the free functional ops between them. Equal to ``FlopCountAnalysis(model, x).total()``
    (a test checks it on random architectures of the space).

    Returns:
        ``(fvcore MACs, number of layers traced)``.
    """
    import torch
    from fvcore.nn import FlopCountAnalysis
    from torch import nn

    class Layers(nn.Module):
        """Runs each of its modules once, on its own input."""

        def __init__(self, mods):
            super().__init__()
            self.layers = nn.ModuleList(mods)

        def forward(self, *xs):
            return tuple(m(x) for m, x in zip(self.layers, xs))

    groups: dict[tuple, list] = {}

    def record(module, inputs):
        shape = tuple(inputs[0].shape)
        key = (repr(module), module.training, shape)
        group = groups.setdefault(key, [module, shape, 0])
        group[2] += 1

    leaves = [m for m in model.modules() if next(m.children(), None) is None and m is not model]
    handles = [m.register_forward_pre_hook(record) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        first = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, family_of(model.arch).input_channels(model.arch), *input_size, dtype=first.dtype, device=first.device))
        for h in handles:
            h.remove()
        handles = []
        layers = list(groups.values())
        light = Layers([g[0] for g in layers]).eval()
        xs = tuple(torch.zeros(g[1], dtype=first.dtype, device=first.device) for g in layers)
        with torch.no_grad():
            analysis = FlopCountAnalysis(light, xs)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            per_module = analysis.by_module()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = sum(per_module.get(f"layers.{i}", 0) * g[2] for i, g in enumerate(layers))
    return int(total), len(layers)


def verify_macs(model, *, input_size, expected_fvcore: int, full: bool = False) -> tuple[int, tuple[int, int]]:
    """Count ``model``'s MACs with fvcore on a real forward pass and compare.

    By default the forward pass runs at the reduced size of :func:`trace_size` and the
    count is scaled by ``s**2`` (exact, and ``s**2`` times cheaper in compute: 64x at
    256x256), and fvcore traces each distinct layer once
    (:func:`fvcore_by_distinct_layers`, where the family says every counted op runs in a
    leaf module; otherwise the whole model, e.g. SPADE generators, which resize the
    semantic map functionally, an op fvcore counts outside any layer);
    ``full=True`` traces the whole model at ``input_size`` itself.

    Returns:
        ``(measured fvcore MACs at input_size, traced input size)``.

    Raises:
        RuntimeError: measured != analytic (a bug in the MACs engine, not a user error).
    """
    import torch

    from nas_prune.macs import measure_macs, parse_input_size

    size = parse_input_size(input_size)
    h, w, s = (size[0], size[1], 1) if full else trace_size(model.arch, size)
    threads = torch.get_num_threads()
    if not full:  # a small trace is per-op overhead: extra threads only add synchronisation
        torch.set_num_threads(1)
    try:
        if full or not family_of(model.arch).fvcore_by_leaves:
            measured = measure_macs(model, input_size=(h, w), convention="fvcore") * s * s
        else:
            measured = fvcore_by_distinct_layers(model, input_size=(h, w))[0] * s * s
    finally:
        torch.set_num_threads(threads)
    if measured != expected_fvcore:
        raise RuntimeError(
            f"fvcore measured {measured:,} MACs for the student (traced at {h}x{w}) but the "
            f"analytic count is {expected_fvcore:,}: the MACs engine disagrees with fvcore"
        )
    return measured, (h, w)
