"""One recorded forward pass: every op a MACs counter charges, with shapes and autograd nodes.

The tape is a ``TorchFunctionMode`` active while Torch-Pruning traces the module, so the
autograd nodes (``grad_fn``) it records are the very nodes Torch-Pruning's graph is built
from: each tensor an op reads or writes is tied to a node of the dependency graph, and
through it to the channel groups that set its channel count. Only the outermost call is
seen (``F.interpolate``, not the ``upsample_nearest2d`` inside it).

What the two counters charge (read from fvcore's ``jit_handles`` and torchprofile's
``handlers``; everything else is free in both):

=====================  ===========================  ===============================
op                     fvcore                       paper (torchprofile)
=====================  ===========================  ===============================
conv                   Cout*Cin/g*k*k*out pixels    the same
ConvTranspose          Cout*Cin/g*k*k*IN pixels     Cin*k*k*out elements (g = 1)
linear                 in elements * out features   the same
batch norm (eval)      2/elem affine, 1 without     1/elem affine, 0 without
batch norm (no stats)  5/elem affine, 4 without     1/elem affine, 0 without
instance/group/layer   5/elem affine, 4 without     1/elem affine, 0 without
upsample nearest       1/output element             0
upsample bilinear      4/output element             4/output element
upsample area          1/input element              1/output element (+1 per spatial dim
                                                    with a scale_factor: its size multiply)
adaptive avg pool      1/input element              1/output element
avg pool, mean         0                            1/output element
mul (incl. x * 0.2)    0                            1/output element
leaky_relu             0                            1/output element (in-place: 0)
=====================  ===========================  ===============================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from nas_prune.errors import NasPruneError

_CONV = {"conv1d", "conv2d", "conv3d"}
_CONVT = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_NORM = {"batch_norm", "instance_norm", "group_norm", "layer_norm"}
_MUL = {"mul", "__mul__", "__rmul__", "mul_", "__imul__", "multiply"}
_UNSUPPORTED = {
    "matmul", "__matmul__", "bmm", "mm", "addmm", "baddbmm", "einsum", "grid_sample",
    "scaled_dot_product_attention", "lstm", "gru",
}
_RECORDED = _CONV | _CONVT | _NORM | _MUL | {
    "linear", "interpolate", "upsample", "adaptive_avg_pool2d", "avg_pool2d", "mean",
    "leaky_relu", "leaky_relu_", "pixel_shuffle", "pixel_unshuffle",
}


#: functional activations with an ``inplace`` argument: traced out of place (an in-place op on
#: a view, such as instance norm's output, would replace the view's autograd node)
_INPLACE_ARG = {"relu", "relu6", "leaky_relu", "hardtanh", "elu", "selu", "celu", "silu", "mish",
                "hardswish", "hardsigmoid", "threshold", "rrelu", "dropout", "dropout2d", "alpha_dropout"}


def _out_of_place(func, args: tuple, kwargs: dict) -> tuple[tuple, dict, bool]:
    """``(args, kwargs, was in place)`` with ``inplace=False``, for functions that take it."""
    import inspect

    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs, False
    if not bound.arguments.get("inplace"):
        return args, kwargs, False
    bound.arguments["inplace"] = False
    return bound.args, bound.kwargs, True


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


@dataclass
class Op:
    """One recorded call.

    Attributes:
        name: the function's name (``conv2d``, ``batch_norm``, ``mul``, ...).
        in_fn / out_fn: ``grad_fn`` of the first tensor argument (before the call) and of
            the result (None for tensors outside autograd, e.g. the image input).
        in_shape / out_shape: their shapes.
        weight: the weight tensor of a conv / linear call (its identity tells a layer's
            parameter from a buffer used functionally).
        tensors: every tensor argument (identity only; to find buffers used functionally).
        extra: call settings the cost depends on (``groups``, ``affine``, ``training``, ``mode``).
        child: the top-level child of the module running when the op ran (for taps).
    """

    name: str
    in_fn: Any
    out_fn: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: Any = None
    tensors: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    child: str | None = None


class Tape(TorchFunctionMode):
    """Records the ops of :data:`_RECORDED` and the channel count of every autograd node."""

    def __init__(self, buffer_ids: set[int] | None = None) -> None:
        super().__init__()
        self.buffer_ids = buffer_ids or set()  # calls reading one of these are recorded too
        self.ops: list[Op] = []
        self.channels: dict[Any, int] = {}  # grad_fn -> dim-1 size of the tensor it made
        self.child: str | None = None
        self.unsupported: set[str] = set()
        self.internal: set[Any] = set()
        self.in_flipped = False  # inside a module traced out of place that runs in place  # autograd nodes inside one recorded call (instance norm's views)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        was_inplace = False
        if name in _INPLACE_ARG:
            args, kwargs, was_inplace = _out_of_place(func, args, kwargs)
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        in_fn = first.grad_fn if first is not None else None
        in_shape = tuple(first.shape) if first is not None else ()
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None and out.dim() >= 2:
            self.channels.setdefault(out.grad_fn, int(out.shape[1]))
        if name in _UNSUPPORTED:
            self.unsupported.add(name)
        reads_buffer = bool(self.buffer_ids) and name not in _RECORDED and any(
            isinstance(a, torch.Tensor) and id(a) in self.buffer_ids for a in list(args) + list(kwargs.values()))
        if (name in _RECORDED or reads_buffer) and isinstance(out, torch.Tensor) and first is not None:
            op = Op(name, in_fn, out.grad_fn, in_shape, tuple(out.shape), child=self.child)
            op.tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            if name in _CONV or name in _CONVT:
                op.weight = _arg(args, kwargs, 1, "weight")
                op.extra["groups"] = int(_arg(args, kwargs, 6, "groups", 1))
                op.extra["kernel"] = tuple(op.weight.shape[2:])
            elif name == "linear":
                op.weight = _arg(args, kwargs, 1, "weight")
            elif name == "batch_norm":
                op.extra["affine"] = _arg(args, kwargs, 3, "weight") is not None
                op.extra["training"] = bool(_arg(args, kwargs, 5, "training", False))
            elif name == "instance_norm":
                op.extra["affine"] = _arg(args, kwargs, 3, "weight") is not None
                self._mark_internal(out.grad_fn, in_fn)
            elif name in ("group_norm", "layer_norm"):
                op.extra["affine"] = _arg(args, kwargs, 2, "weight") is not None
            elif name in ("interpolate", "upsample"):
                op.extra["mode"] = _arg(args, kwargs, 3, "mode", "nearest")
                if op.extra["mode"] == "area" and _arg(args, kwargs, 2, "scale_factor") is not None:
                    # traced, the output size is computed by one tensor multiply per spatial dim,
                    # which torchprofile counts (1 each)
                    op.extra["paper_const"] = len(op.out_shape) - 2
            elif name == "leaky_relu":
                op.extra["inplace"] = was_inplace or self.in_flipped
            elif name in ("pixel_shuffle", "pixel_unshuffle"):
                op.extra["factor"] = int(args[1] if len(args) > 1 else next(iter(kwargs.values())))
            self.ops.append(op)
        return out

    def _mark_internal(self, out_fn, in_fn) -> None:
        """Autograd nodes between a call's input and output (instance norm reshapes to
        ``[1, N*C, H, W]`` and back: channel-preserving for the trace's batch of one)."""
        seen: set = set()
        for nxt, _ in getattr(out_fn, "next_functions", ()):
            _walk(nxt, in_fn, 6, seen)
        self.internal |= {fn for fn in seen if "AccumulateGrad" not in type(fn).__name__}


def _walk(fn, stop, depth: int, seen: set) -> None:
    if fn is None or fn is stop or depth < 0 or fn in seen:
        return
    seen.add(fn)
    for nxt, _ in getattr(fn, "next_functions", ()):
        _walk(nxt, stop, depth - 1, seen)


def op_cost(op: Op) -> tuple[str, float, float]:
    """``(shape kind, fvcore coefficient, paper coefficient)`` of one op.

    Kinds: ``dense`` (cost = coef * Cin * Cout), ``out`` (coef * C of the result, which
    equals C of the input for these channel-preserving ops), ``const`` (coef), ``free``. Channel counts are dim 1 (the trace's values give the recorded cost).
    """
    import math

    name, ins, outs = op.name, op.in_shape, op.out_shape
    if name in _CONV or name in _CONVT:
        g = op.extra["groups"]
        k = math.prod(op.extra["kernel"])
        cin, cout = ins[1], outs[1]
        n = outs[0]
        in_px, out_px = math.prod(ins[2:]), math.prod(outs[2:])
        transposed = name in _CONVT
        f_px = in_px if transposed else out_px
        if g == 1:
            return "dense", n * k * f_px, n * k * out_px
        if g == cin == cout and op.weight.shape[1] == 1:
            return "out", n * k * f_px, n * k * out_px
        w = math.prod(op.weight.shape)
        if transposed:
            w0 = op.weight.shape[0]
            paper_in = op.weight.shape[1] if cout == w0 else w0
            return "const", n * w * f_px, math.prod(outs) * paper_in * k
        return "const", n * w * f_px, math.prod(outs) * op.weight.shape[1] * k
    if name == "linear":
        if len(ins) != 2:
            return "const", math.prod(ins) * outs[-1], math.prod(ins) * outs[-1]
        return "dense", ins[0], ins[0]
    per = (math.prod(outs) // outs[1]) if len(outs) >= 2 and outs[1] else None
    if name in _NORM:
        affine = op.extra["affine"]
        if name == "batch_norm" and not op.extra["training"]:
            f = 2 if affine else 1
        else:
            f = 5 if affine else 4
        p = 1 if affine else 0
        return ("out", f * per, p * per) if per is not None else ("const", f * math.prod(outs), p * math.prod(outs))
    if name in ("interpolate", "upsample"):
        mode = op.extra["mode"]
        if mode == "area":  # runs adaptive_avg_pool2d: fvcore 1 per input element, paper 1 per output
            if len(ins) >= 2 and ins[1] == outs[1]:
                return "out", math.prod(ins) // ins[1], per
            return "const", math.prod(ins), math.prod(outs)
        f, p = {"nearest": (1, 0), "bilinear": (4, 4)}.get(mode, (0, 0))
        return ("out", f * per, p * per) if per is not None else ("const", f * math.prod(outs), p * math.prod(outs))
    if name == "adaptive_avg_pool2d":
        if len(ins) >= 2 and len(outs) >= 2 and ins[1] == outs[1]:
            return "out", math.prod(ins) // ins[1], per
        return "const", math.prod(ins), math.prod(outs)
    if name in ("avg_pool2d", "mean") or name in _MUL or (name == "leaky_relu" and not op.extra["inplace"]):
        if per is not None and len(ins) >= 2 and len(outs) >= 2 and ins[1] == outs[1]:
            return "out", 0, per
        return "const", 0, math.prod(outs)
    return "free", 0, 0


def check_supported(tape: Tape) -> None:
    """Raise for ops the MACs model cannot express (attention, sampling grids)."""
    if tape.unsupported:
        raise NasPruneError(
            f"the module uses {', '.join(sorted(tape.unsupported))}: the module family counts MACs only of "
            "convolutions, linear layers, norms, upsampling, pooling and elementwise ops"
        )
