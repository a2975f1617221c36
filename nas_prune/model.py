"""Build an ``nn.Module`` from an :class:`~nas_prune.arch.Arch`.

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
from torch import nn

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError


def make_norm(arch: Arch, channels: int) -> nn.Module:
    """The arch's norm over ``channels``: InstanceNorm without running stats, or BatchNorm with."""
    if arch.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=arch.affine, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=arch.affine, track_running_stats=True)


def make_pad(arch: Arch, amount: int) -> nn.Module:
    """Explicit padding layer of a branch conv (convs themselves use padding 0, as in CAT)."""
    if arch.padding == "reflect":
        return nn.ReflectionPad2d(amount)
    if arch.padding == "replicate":
        return nn.ReplicationPad2d(amount)
    return nn.ZeroPad2d(amount)


def _conv_norm_relu(arch: Arch, cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, 1, 0, groups=groups, bias=arch.use_bias),
        make_norm(arch, cout),
        nn.ReLU(inplace=True),
    )


class InceptionBlock(nn.Module):
    """``x + norm(sum of branches(x))``; the identity when it has no branch.

    Args:
        arch: the generator's settings (norm, padding, kernel sizes, dropout).
        block: this block's branch widths.
    """

    def __init__(self, arch: Arch, block: Block):
        super().__init__()
        c = arch.stream
        self.res_ops = nn.ModuleList()
        for k, m in zip(arch.res_kernel_sizes, block.res):
            if m > 0:
                self.res_ops.append(
                    nn.Sequential(
                        make_pad(arch, (k - 1) // 2),
                        _conv_norm_relu(arch, c, m, k),
                        nn.Dropout(arch.dropout),
                        make_pad(arch, (k - 1) // 2),
                        nn.Conv2d(m, c, k, 1, 0, bias=arch.use_bias),
                    )
                )
        self.dw_ops = nn.ModuleList()
        for k, m in zip(arch.dw_kernel_sizes, block.dw):
            if m > 0:
                self.dw_ops.append(
                    nn.Sequential(
                        _conv_norm_relu(arch, c, m, 1),
                        make_pad(arch, (k - 1) // 2),
                        _conv_norm_relu(arch, m, m, k, groups=m),
                        nn.Dropout(arch.dropout),
                        nn.Conv2d(m, c, 1, 1, 0, bias=arch.use_bias),
                    )
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
            nn.ReflectionPad2d(3),
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
            nn.ReflectionPad2d(3),
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


def build_generator(arch: Arch) -> Generator:
    """Build a freshly initialised :class:`Generator` for ``arch``.

    Weights use PyTorch's default init except norms (gamma 1, beta 0). The module is
    in training mode, like any new ``nn.Module``.
    """
    return Generator(arch)
