"""The inception-residual generator as an ``nn.Module``, built from an :class:`Arch`.

The module's state-dict keys are exactly CAT's layout, so CAT checkpoints load
unchanged and students exported here load in CAT's code::

    down_sampling.{1,4,7}           stem convs     down_sampling.{2,5,8}  their norms
    features.N.res_ops.i.1.0        first conv     features.N.res_ops.i.1.1  its norm
    features.N.res_ops.i.4          second conv
    features.N.dw_ops.i.0.0         1x1 conv       features.N.dw_ops.i.0.1   its norm
    features.N.dw_ops.i.2.0         depthwise conv features.N.dw_ops.i.2.1   its norm
    features.N.dw_ops.i.4           1x1 conv back to the stream
    features.N.pw_bn                block norm
    up_sampling.{0,3}               ConvTransposes up_sampling.{1,4}        their norms
    up_sampling.7                   final 7x7 conv

``i`` counts the branches that exist (width > 0) in kernel-size order, as CAT does.
An identity block has no modules at all (CAT keeps an unused ``pw_bn``; the
loader drops it).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.families.inception.arch import Arch, Block
from nas_prune.errors import NasPruneError


def make_norm(arch: Arch, channels: int) -> nn.Module:
    """The arch's norm over ``channels``: InstanceNorm without running stats, or BatchNorm with."""
    if arch.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=arch.affine, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=arch.affine, track_running_stats=True)


_PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "zero": "constant"}


def reflect_pad_by_slices(x: torch.Tensor, p: int) -> torch.Tensor:
    """``F.pad(x, (p, p, p, p), mode="reflect")`` built from slices, flips and concatenation.

    Same values; its backward has no atomic adds, so it is deterministic on CUDA, where
    the reflection-pad kernel's backward is not (PyTorch refuses it under
    ``torch.use_deterministic_algorithms(True)``).
    """
    x = torch.cat([x[..., :, 1 : p + 1].flip(-1), x, x[..., :, -p - 1 : -1].flip(-1)], dim=-1)
    return torch.cat([x[..., 1 : p + 1, :].flip(-2), x, x[..., -p - 1 : -1, :].flip(-2)], dim=-2)


def pad2d(x: torch.Tensor, p: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by ``p`` (``mode`` as ``F.pad``); reflection uses
    :func:`reflect_pad_by_slices` when a CUDA tensor needs gradients under deterministic algorithms."""
    if mode == "reflect" and x.is_cuda and x.requires_grad and torch.are_deterministic_algorithms_enabled():
        return reflect_pad_by_slices(x, p)
    return F.pad(x, (p,) * 4, mode=mode)


class ReflectPad(nn.Module):
    """``nn.ReflectionPad2d(p)`` through :func:`pad2d` (deterministic on CUDA when asked)."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return str(self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad2d(x, self.p, "reflect")


class _ConvNorm(nn.Module):
    """Holds a conv (``0``) and its norm (``1``) under CAT's key names; run by its branch."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module):
        super().__init__()
        self.add_module("0", conv)
        self.add_module("1", norm)


class _Branch(nn.Module):
    """One branch of an inception-residual block, with CAT's state-dict keys.

    ``res`` (keys ``1.0`` conv kxk, ``1.1`` norm, ``4`` conv kxk back to the stream)::

        pad -> conv kxk (C -> m) -> norm -> relu -> dropout -> pad -> conv kxk (m -> C)

    ``dw`` (keys ``0.0`` conv 1x1, ``0.1`` norm, ``2.0`` depthwise conv, ``2.1`` norm, ``4`` conv 1x1)::

        conv 1x1 (C -> m) -> norm -> relu -> pad -> dwconv kxk -> norm -> relu -> dropout -> conv 1x1 (m -> C)

    Padding, ReLU and dropout are applied functionally rather than as modules: the
    computation and the keys are CAT's, but a traced forward pass (fvcore's check)
    visits a third as many modules.
    """

    def __init__(self, arch: Arch, kind: str, c: int, m: int, k: int):
        super().__init__()
        self.kind, self.k = kind, k
        self.pad = (k - 1) // 2
        self.pad_mode = _PAD_MODES[arch.padding]
        self.dropout = float(arch.dropout)
        b = arch.use_bias
        if kind == "res":
            self.add_module("1", _ConvNorm(nn.Conv2d(c, m, k, 1, 0, bias=b), make_norm(arch, m)))
        else:
            self.add_module("0", _ConvNorm(nn.Conv2d(c, m, 1, 1, 0, bias=b), make_norm(arch, m)))
            self.add_module("2", _ConvNorm(nn.Conv2d(m, m, k, 1, 0, groups=m, bias=b), make_norm(arch, m)))
        self.add_module("4", nn.Conv2d(m, c, k if kind == "res" else 1, 1, 0, bias=b))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, kernel_size={self.k}, dropout={self.dropout}"

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        return pad2d(x, self.pad, self.pad_mode)

    def _conv_norm_relu(self, key: str, x: torch.Tensor) -> torch.Tensor:
        pair = self._modules[key]
        return F.relu(pair._modules["1"](pair._modules["0"](x)), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "res":
            h = self._conv_norm_relu("1", self._padded(x))
            h = F.dropout(h, self.dropout, self.training)
            return self._modules["4"](self._padded(h))
        h = self._padded(self._conv_norm_relu("0", x))
        h = F.dropout(self._conv_norm_relu("2", h), self.dropout, self.training)
        return self._modules["4"](h)


class InceptionBlock(nn.Module):
    """``x + norm(sum of branches(x))``; the identity when it has no branch.

    Args:
        arch: the generator's settings (norm, padding, kernel sizes, dropout).
        block: this block's branch widths.
    """

    def __init__(self, arch: Arch, block: Block):
        super().__init__()
        c = arch.stream
        self.res_ops = nn.ModuleList(
            _Branch(arch, "res", c, m, k) for k, m in zip(arch.res_kernel_sizes, block.res) if m > 0
        )
        self.dw_ops = nn.ModuleList(
            _Branch(arch, "dw", c, m, k) for k, m in zip(arch.dw_kernel_sizes, block.dw) if m > 0
        )
        self.pw_bn = None if block.is_identity else make_norm(arch, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pw_bn is None:
            return x
        total = None
        for op in (*self.res_ops, *self.dw_ops):
            y = op(x)
            total = y if total is None else total + y
        return x + self.pw_bn(total)


class Generator(nn.Module):
    """Stem, inception-residual blocks, head. Input ``(N, input_nc, H, W)`` with H, W
    divisible by 4; output ``(N, output_nc, H, W)`` in [-1, 1].

    Attributes:
        arch: the :class:`Arch` it was built from.
    """

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        s0, s1, s2 = arch.stem
        h0, h1 = arch.head
        b = arch.use_bias
        # The 7x7 convs are always reflection-padded (CAT and pytorch-CycleGAN-and-pix2pix
        # alike); `arch.padding` applies to the branch convs inside blocks.
        self.down_sampling = nn.Sequential(
            ReflectPad(3),
            nn.Conv2d(arch.input_nc, s0, 7, 1, 0, bias=b),
            make_norm(arch, s0),
            nn.ReLU(inplace=True),
            nn.Conv2d(s0, s1, 3, 2, 1, bias=b),
            make_norm(arch, s1),
            nn.ReLU(inplace=True),
            nn.Conv2d(s1, s2, 3, 2, 1, bias=b),
            make_norm(arch, s2),
            nn.ReLU(inplace=True),
        )
        self.features = nn.Sequential(*(InceptionBlock(arch, blk) for blk in arch.blocks))
        self.up_sampling = nn.Sequential(
            nn.ConvTranspose2d(s2, h0, 3, 2, 1, output_padding=1, bias=b),
            make_norm(arch, h0),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(h0, h1, 3, 2, 1, output_padding=1, bias=b),
            make_norm(arch, h1),
            nn.ReLU(inplace=True),
            ReflectPad(3),
            nn.Conv2d(h1, arch.output_nc, 7, 1, 0, bias=True),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_sampling(self.features(self.down_sampling(x)))

    def forward_with_features(
        self, x: torch.Tensor, taps: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the generator and return the output with the activations named in ``taps``.

        Tap names: ``"stem"`` (stem output, the residual stream before block 1),
        ``"blockN"`` (stream after block N, 1-based: CAT distils at stem, block3,
        block6, block9), ``"up1"`` (after the first ConvTranspose's ReLU).

        Returns:
            ``(output, {tap: tensor})``; feature tensors are ``(N, C, h, w)``.
        """
        check_taps(self.arch, taps)
        wanted = set(taps)
        feats: dict[str, torch.Tensor] = {}
        h = self.down_sampling(x)
        if "stem" in wanted:
            feats["stem"] = h
        for i, block in enumerate(self.features, start=1):
            h = block(h)
            if f"block{i}" in wanted:
                feats[f"block{i}"] = h
        for j, layer in enumerate(self.up_sampling):
            h = layer(h)
            if j == 2 and "up1" in wanted:
                feats["up1"] = h
        return h, feats


def tap_names(arch: Arch) -> list[str]:
    """Every valid tap of ``arch`` in forward order."""
    return ["stem", *(f"block{i}" for i in range(1, arch.n_blocks + 1)), "up1"]


def check_taps(arch: Arch, taps: Iterable[str]) -> None:
    """Raise NasPruneError naming the first tap that ``arch`` does not have."""
    valid = tap_names(arch)
    for t in taps:
        if t not in valid:
            raise NasPruneError(
                f"unknown feature layer {t!r}: choose from stem, block1..block{arch.n_blocks}, up1"
            )


_INSTANCE_NORM_LIMIT = "instance norm needs more than one pixel at 1/4 resolution"


def input_size_limits(arch: Arch) -> list[tuple[int, str]]:
    """What bounds the input size from below: ``(smallest side, reason)`` pairs, largest first.

    A size must also be divisible by 4 (:func:`nas_prune.macs.parse_input_size`). For a
    CycleGAN/pix2pix generator: the 7x7 convs reflect-pad 3 pixels at full resolution
    (side >= 4); instance norm needs more than one pixel at 1/4 resolution (side >= 8);
    a k x k branch with reflect padding pads (k - 1) / 2 pixels at 1/4 resolution, which
    must be less than the side there.
    """
    limits = [(4, "the 7x7 convs reflect-pad 3 pixels at full resolution")]
    if arch.norm == "instance":
        limits.append((8, _INSTANCE_NORM_LIMIT))
    if arch.padding == "reflect":
        used = [k for b in arch.blocks for ks, ws in ((arch.res_kernel_sizes, b.res), (arch.dw_kernel_sizes, b.dw))
                for k, w in zip(ks, ws) if w > 0]
        if used:
            k = max(used)
            pad = (k - 1) // 2
            if pad:
                limits.append((4 * (pad + 1), f"its {k}x{k} branches reflect-pad {pad} pixel{'s' if pad > 1 else ''} "
                                              "at 1/4 resolution"))
    return sorted(limits, key=lambda t: -t[0])


def check_input_size(arch: Arch, size: tuple[int, int], *, option: str = "--input-size", extra=()) -> None:
    """Raise NasPruneError when the generator cannot run at ``size`` = (H, W), stating the minimum.

    Args:
        extra: more ``(smallest side, reason)`` limits, e.g. a discriminator's.
    """
    h, w = size
    for side, why in sorted([*input_size_limits(arch), *extra], key=lambda t: -t[0]):
        if why == _INSTANCE_NORM_LIMIT:
            bad = (h // 4) * (w // 4) < 2  # one pixel in all at 1/4 resolution; 4x8 is fine
        else:
            bad = h < side or w < side
        if bad:
            raise NasPruneError(f"{option} {h}x{w} is too small for this model: {why}; "
                                f"use a size >= {side} (and divisible by 4)")


def forward_bytes(arch: Arch, size: tuple[int, int], *, batch: int = 1) -> int:
    """Rough peak memory of one inference forward pass at ``size`` (bytes, float32).

    The widest full-resolution activation (input, first stem conv, last head conv,
    output) held three times over (input, output and padding copies of a layer). It is
    meant to tell a size that cannot fit from one that can, not to size buffers.
    """
    h, w = size
    width = max(arch.input_nc, arch.output_nc, arch.stem[0], arch.head[-1])
    return 3 * 4 * batch * h * w * width


def build_generator(arch: Arch) -> Generator:
    """Build a freshly initialised :class:`Generator` for ``arch``.

    Weights use PyTorch's default init except norms (gamma 1, beta 0). The module is
    in training mode, like any new ``nn.Module``.
    """
    return Generator(arch)
