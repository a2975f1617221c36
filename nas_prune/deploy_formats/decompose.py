"""Equivalent decompositions of ops a deployment runtime lacks or runs slowly.

Instance norm is the known one. LiteRT has no instance-norm op, and ExecuTorch's XNNPACK
backend does not take ``aten._native_batch_norm_legit.no_stats`` (what ``nn.InstanceNorm2d``
exports to): it runs in ExecuTorch's portable kernels, which splits the graph into one
XNNPACK call per stretch between two norms. :class:`DecomposedInstanceNorm` computes the
same function from reductions and element-wise ops every one of these runtimes has::

    mean = x.mean((2, 3))                  per image and channel, over H x W
    d    = x - mean
    var  = (d * d).mean((2, 3))            biased, as instance norm uses
    y    = d * rsqrt(var + eps)            (* weight + bias when affine)

It is the textbook definition (Ulyanov et al. 2016), in float32 it differs from
PyTorch's kernel by rounding only (tests prove ``|Δ| < 1e-5`` on real generators). Batch norm
in eval mode is an affine per-channel map that every converter folds into the preceding
conv, so it is left alone.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["decompose_instance_norm", "count_instance_norms"]


def _module_class():
    from torch import nn

    class DecomposedInstanceNorm(nn.Module):
        """``nn.InstanceNorm2d`` without running statistics, as reductions and element-wise ops."""

        def __init__(self, norm: nn.InstanceNorm2d):
            super().__init__()
            self.eps = float(norm.eps)
            self.affine = bool(norm.affine)
            if self.affine:
                # (1, C, 1, 1) buffers: broadcasting needs no reshape op in the exported graph
                self.register_buffer("weight", norm.weight.detach().clone().reshape(1, -1, 1, 1))
                self.register_buffer("bias", norm.bias.detach().clone().reshape(1, -1, 1, 1))

        def forward(self, x):
            import torch

            mean = x.mean(dim=(2, 3), keepdim=True)
            d = x - mean
            var = (d * d).mean(dim=(2, 3), keepdim=True)
            y = d * torch.rsqrt(var + self.eps)
            if self.affine:
                y = y * self.weight + self.bias
            return y

    return DecomposedInstanceNorm


_CLASS = None


def decompose_instance_norm(model: "torch.nn.Module") -> "torch.nn.Module":
    """A deep copy of ``model`` whose ``nn.InstanceNorm2d`` modules (without running
    statistics) are replaced by their decomposition; ``model`` itself is not changed.
    The copy keeps ``model.arch`` (a generator's architecture) when it has one.

    An instance norm that tracks running statistics behaves as batch norm in eval mode and
    is kept (none of nas-prune's generators has one).
    """
    from torch import nn

    global _CLASS
    if _CLASS is None:
        _CLASS = _module_class()
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.track_running_stats:
                setattr(parent, name, _CLASS(child))
    return out.eval()


def count_instance_norms(model: "torch.nn.Module") -> int:
    """How many ``nn.InstanceNorm2d`` modules ``model`` holds."""
    from torch import nn

    return sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
