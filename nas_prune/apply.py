"""Slice a teacher's weights by a :class:`~nas_prune.plan.PrunePlan` into a student.

Every tensor of the teacher's state dict (CAT layout, :mod:`nas_prune.model`) that the
student keeps is indexed along its channel dims by the kept indices:

========================================  =====================================
tensor                                    sliced by
========================================  =====================================
stem conv ``I`` weight ``[out, in]``      ``stem.I`` (out), ``stem.I-1`` (in)
branch first conv / dw 1x1 ``[m, C]``     branch (out), ``stem.2`` (in)
depthwise conv ``[m, 1]``                 branch (out)
branch last conv ``[C, m]``               ``stem.2`` (out), branch (in)
block norm ``pw_bn``                      ``stem.2``
ConvTranspose ``I`` ``[in, out]``         ``stem.2`` / ``head.0`` (in), ``head.I`` (out)
final conv ``[out_nc, h1]``               ``head.1`` (in)
norms (gamma, beta, running stats)        the channels of the conv they follow
========================================  =====================================

Biases follow the output channels; ``num_batches_tracked`` is copied. Dropped
branches and the norms of blocks that became the identity are left out. Kept
indices are ascending, so a plan that keeps everything reproduces the teacher
tensor for tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.plan import PrunePlan

if TYPE_CHECKING:  # pragma: no cover
    import torch

NORM_VECTORS = ("weight", "bias", "running_mean", "running_var")


class _ByModule(dict):
    """``{module path: [(leaf name, tensor), ...]}`` of a state dict (``a.b.weight`` -> ``a.b``)."""

    def __init__(self, sd: Mapping):
        super().__init__()
        for key, value in sd.items():
            module, _, leaf = key.rpartition(".")
            self.setdefault(module, []).append((leaf, value))


def _map(out: dict, sd: Mapping, src: str, dst: str, rows=None, cols=None, required=True) -> None:
    """Copy every ``src.*`` tensor to ``dst.*``: dim 0 by ``rows``, dim 1 of weights by ``cols``.

    ``sd`` is the teacher's state dict, or its :class:`_ByModule` index (no scan of every
    key per call). ``required=False`` for norms that hold no tensors (affine-free instance norm).
    """
    import torch

    found = False
    if isinstance(sd, _ByModule):
        tensors = sd.get(src, ())
    else:
        n = len(src) + 1
        tensors = [(k[n:], v) for k, v in sd.items() if k.startswith(src + ".") and "." not in k[n:]]
    for leaf, value in tensors:
        found = True
        t = value
        if leaf == "num_batches_tracked":
            out[f"{dst}.{leaf}"] = t.clone()
            continue
        if rows is not None and t.ndim >= 1:
            t = t.index_select(0, torch.as_tensor(rows, dtype=torch.long))
        if cols is not None and leaf == "weight" and t.ndim >= 2:
            t = t.index_select(1, torch.as_tensor(cols, dtype=torch.long))
        out[f"{dst}.{leaf}"] = t.clone().contiguous() if t is value else t.contiguous()  # never shared
    if not found and required:
        raise NasPruneError(f"teacher weights: no tensors under {src}")


def _branch_modules(widths: Sequence[int], kept: Mapping[str, Sequence[int]], prefix: str):
    """Yield ``(teacher module index, student module index, kept indices)`` per kept branch."""
    ti = si = 0
    for j, w in enumerate(widths):
        if w == 0:
            continue
        idx = kept[f"{prefix}.{j}"]
        if idx:
            yield ti, si, idx
            si += 1
        ti += 1


def slice_state_dict(
    plan: PrunePlan, teacher_state_dict: Mapping[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """The student's state dict (CAT layout) for ``plan.student_arch()``.

    Args:
        plan: kept channel indices per prunable layer of ``plan.teacher``.
        teacher_state_dict: the teacher's tensors (CAT layout, as ``load_generator``
            returns them). Tensors are copied, never shared with the teacher.

    Raises:
        NasPruneError: a tensor the plan needs is missing from the teacher's weights.
    """
    if plan.teacher.family == "spade":
        from nas_prune.spade.apply import spade_slice_state_dict

        return spade_slice_state_dict(plan, teacher_state_dict)
    t: Arch = plan.teacher
    k = plan.kept
    sd = _ByModule(teacher_state_dict)
    out: dict[str, torch.Tensor] = {}
    norms = t.affine or t.norm == "batch"  # do the norms hold tensors?

    s0, s1, c = k["stem.0"], k["stem.1"], k["stem.2"]
    _map(out, sd, "down_sampling.1", "down_sampling.1", rows=s0)
    _map(out, sd, "down_sampling.2", "down_sampling.2", rows=s0, required=norms)
    _map(out, sd, "down_sampling.4", "down_sampling.4", rows=s1, cols=s0)
    _map(out, sd, "down_sampling.5", "down_sampling.5", rows=s1, required=norms)
    _map(out, sd, "down_sampling.7", "down_sampling.7", rows=c, cols=s1)
    _map(out, sd, "down_sampling.8", "down_sampling.8", rows=c, required=norms)

    for n, block in enumerate(t.blocks):
        any_branch = False
        for ti, si, m in _branch_modules(block.res, k, f"blocks.{n}.res"):
            src, dst = f"features.{n}.res_ops.{ti}", f"features.{n}.res_ops.{si}"
            _map(out, sd, f"{src}.1.0", f"{dst}.1.0", rows=m, cols=c)
            _map(out, sd, f"{src}.1.1", f"{dst}.1.1", rows=m, required=norms)
            _map(out, sd, f"{src}.4", f"{dst}.4", rows=c, cols=m)
            any_branch = True
        for ti, si, m in _branch_modules(block.dw, k, f"blocks.{n}.dw"):
            src, dst = f"features.{n}.dw_ops.{ti}", f"features.{n}.dw_ops.{si}"
            _map(out, sd, f"{src}.0.0", f"{dst}.0.0", rows=m, cols=c)
            _map(out, sd, f"{src}.0.1", f"{dst}.0.1", rows=m, required=norms)
            _map(out, sd, f"{src}.2.0", f"{dst}.2.0", rows=m)  # depthwise: [m, 1, k, k]
            _map(out, sd, f"{src}.2.1", f"{dst}.2.1", rows=m, required=norms)
            _map(out, sd, f"{src}.4", f"{dst}.4", rows=c, cols=m)
            any_branch = True
        if any_branch:
            _map(out, sd, f"features.{n}.pw_bn", f"features.{n}.pw_bn", rows=c, required=norms)

    h0, h1 = k["head.0"], k["head.1"]
    # ConvTranspose2d weights are [in, out, k, k]: rows are inputs, cols outputs.
    _map_convt(out, teacher_state_dict, "up_sampling.0", rows=c, cols=h0)
    _map(out, sd, "up_sampling.1", "up_sampling.1", rows=h0, required=norms)
    _map_convt(out, teacher_state_dict, "up_sampling.3", rows=h0, cols=h1)
    _map(out, sd, "up_sampling.4", "up_sampling.4", rows=h1, required=norms)
    _map(out, sd, "up_sampling.7", "up_sampling.7", cols=h1)
    return out


def _map_convt(out: dict, sd: Mapping, key: str, *, rows, cols) -> None:
    import torch

    for leaf in ("weight", "bias"):
        name = f"{key}.{leaf}"
        if name not in sd:
            if leaf == "weight":
                raise NasPruneError(f"teacher weights: missing {name}")
            continue
        value = sd[name]
        if leaf == "weight":
            value = value.index_select(0, torch.as_tensor(rows, dtype=torch.long))
            value = value.index_select(1, torch.as_tensor(cols, dtype=torch.long))
        else:
            value = value.index_select(0, torch.as_tensor(cols, dtype=torch.long))
        out[name] = value.clone().contiguous()


def build_student(plan: PrunePlan, teacher_state_dict: Mapping[str, "torch.Tensor"]):
    """Build the student module with sliced weights, in eval mode.

    Loads with ``strict=True``, so a key or shape the builder does not expect is a
    loud error rather than a silently skipped layer.
    """
    from nas_prune.model import build_generator

    model = build_generator(plan.student_arch())
    model.load_state_dict(slice_state_dict(plan, teacher_state_dict), strict=True)
    return model.eval()


def trace_size(arch: Arch, input_size: tuple[int, int], *, min_side: int = 32) -> tuple[int, int, int]:
    """The smallest input ``(h, w)`` whose fvcore count gives the one at ``input_size`` exactly.

    Every layer of the space costs a fixed amount per output pixel at full, 1/2 or 1/4
    resolution (ConvTransposes per input pixel in fvcore), so when ``H = s*h`` and
    ``W = s*w`` with ``h, w`` divisible by 4, ``MACs(H, W) = s**2 * MACs(h, w)``
    exactly. ``min(h, w) >= min_side`` keeps the stream resolution above every
    reflection pad.

    SPADE generators: every op's cost is proportional to the pixels of a grid that is a
    fixed fraction of the input (convs zero-padded), so any ``h, w`` that are multiples of
    ``arch.size_multiple`` scale exactly.

    Returns:
        ``(h, w, s)``; ``s == 1`` when no exact smaller size exists.
    """
    H, W = input_size
    if arch.family == "spade":
        m = arch.size_multiple
        best = (H, W, 1)
        for s in range(2, min(H, W) // m + 1):
            if H % s == 0 and W % s == 0 and (H // s) % m == 0 and (W // s) % m == 0:
                best = (H // s, W // s, s)
        return best
    pads = [(k - 1) // 2 for k in (*arch.res_kernel_sizes, *arch.dw_kernel_sizes)]
    side = max(min_side, 4 * (max(pads, default=0) + 1))
    best = (H, W, 1)
    for s in range(2, min(H, W) + 1):
        h, w = H // s, W // s
        if H % s or W % s or h % 4 or w % 4 or min(h, w) < side:
            continue
        best = (h, w, s)
    return best


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
            model(torch.zeros(1, model.arch.input_nc, *input_size, dtype=first.dtype, device=first.device))
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
    (:func:`fvcore_by_distinct_layers`; SPADE generators: the whole model, since they
    resize the semantic map functionally, an op fvcore counts outside any layer);
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
        if full or model.arch.family == "spade":
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
