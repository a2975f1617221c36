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

LiteRT's converter cannot legalise a padded transposed convolution (``ConvTranspose2d(k=3,
stride=2, padding=1, output_padding=1)``, the generators' up-sampling: ``failed to legalize
operation 'mhlo.convolution'``). :class:`CroppedConvTranspose` computes the same output as the
unpadded transposed convolution, ``(H - 1) * stride + k`` rows, cropped to rows
``[padding, padding + out)`` with ``out = (H - 1) * stride - 2 * padding + k + output_padding``:
``padding`` trims that many rows on each side and ``output_padding`` gives back rows at the end,
which exist in the full output as long as ``output_padding <= padding`` (true for every
generator here; other layers are left alone). Same weights, same sums, so equal up to rounding.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["decompose_instance_norm", "count_instance_norms", "decompose_conv_transpose"]


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


def decomposed_norm_type() -> type:
    """The class of the decomposed instance norm (an int8 quantizer leaves it in float)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _module_class()
    return _CLASS


def decompose_instance_norm(model: "torch.nn.Module") -> "torch.nn.Module":
    """A deep copy of ``model`` whose ``nn.InstanceNorm2d`` modules (without running
    statistics) are replaced by their decomposition; ``model`` itself is not changed.
    The copy keeps ``model.arch`` (a generator's architecture) when it has one.

    An instance norm that tracks running statistics behaves as batch norm in eval mode and
    is kept (none of nas-prune's generators has one).
    """
    from torch import nn

    cls = decomposed_norm_type()
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.track_running_stats:
                setattr(parent, name, cls(child))
    return out.eval()


def count_instance_norms(model: "torch.nn.Module") -> int:
    """How many ``nn.InstanceNorm2d`` modules ``model`` holds."""
    from torch import nn

    return sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules())


def _crop_class():
    from torch import nn

    class CroppedConvTranspose(nn.Module):
        """``nn.ConvTranspose2d`` with padding as the unpadded one plus a crop (module docstring)."""

        def __init__(self, conv: nn.ConvTranspose2d):
            super().__init__()
            self.conv = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                           padding=0, output_padding=0, groups=conv.groups,
                                           bias=conv.bias is not None, dilation=conv.dilation)
            self.conv.load_state_dict(conv.state_dict())
            self.pad, self.out_pad = tuple(conv.padding), tuple(conv.output_padding)

        def forward(self, x):
            y = self.conv(x)
            (ph, pw), (oh, ow) = self.pad, self.out_pad
            h, w = y.shape[2] - 2 * ph + oh, y.shape[3] - 2 * pw + ow
            return y[:, :, ph : ph + h, pw : pw + w]

    return CroppedConvTranspose


def decompose_conv_transpose(model: "torch.nn.Module") -> "torch.nn.Module":
    """A deep copy of ``model`` whose padded ``nn.ConvTranspose2d`` layers (``output_padding <=
    padding``) are unpadded transposed convolutions followed by a crop; ``model`` is not changed."""
    from torch import nn

    cls = _crop_class()
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.ConvTranspose2d) and any(child.padding)
                    and all(o <= p for o, p in zip(child.output_padding, child.padding))):
                setattr(parent, name, cls(child))
    return out.eval()
