"""GauGAN's multi-scale PatchGAN discriminator (Park et al., CVPR 2019; NVlabs SPADE, as CAT uses it).

``num_d`` discriminators of the same shape see the semantic map concatenated with an image
(``label_nc + output_nc`` channels) at full, 1/2, 1/4, ... resolution (3x3 average pooling,
stride 2, padding 1, padding excluded from the mean, between scales). Each is an N-layer
PatchGAN whose every layer's output is kept for the feature-matching loss::

    model0: conv4x4/2 (in -> ndf) lrelu(0.2)
    model1: SN(conv4x4/2 (-> 2 ndf, no bias)) instance-norm lrelu(0.2)
    ...     doubling the width up to 512; stride 2 except in the last of these layers (stride 1)
    modelN: conv4x4/1 (-> 1)                                 patch logits

``n_layers`` (GauGAN's ``n_layers_D``, 4) counts ``model0`` .. ``model{n_layers-1}``; every
conv is padded by 2 (GauGAN's ``ceil((4 - 1) / 2)``). ``SN`` is spectral normalisation and
the norm is an affine-free instance norm (GauGAN's ``norm_D = spectralinstance``). Module
names and parameter names are GauGAN's (``discriminator_0.model1.0.0.weight_orig``, ...), so
a discriminator saved by NVlabs SPADE or CAT (``best_net_D.pth``) loads with
:func:`load_multiscale_discriminator`.

Departure from the published code: none in the computation. Weights of a fresh
discriminator are initialised as CAT's GauGAN runs do (``init_type xavier``, gain 0.02,
biases 0) on every conv, the spectral-normalised ones included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError

__all__ = ["NLayerDiscriminator", "MultiscaleDiscriminator", "load_multiscale_discriminator"]


class NLayerDiscriminator(nn.Module):
    """One scale: returns the list of every layer's output (the last one holds the logits).

    Args:
        in_channels: ``label_nc + output_nc``.
        ndf: width of ``model0``.
        n_layers: layers before the logits conv (GauGAN: 4).
    """

    def __init__(self, in_channels: int, *, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        if in_channels < 1 or ndf < 1 or n_layers < 1:
            raise NasPruneError("discriminator: in_channels, ndf and n_layers must be >= 1")
        kw, pad = 4, 2
        layers: list[list[nn.Module]] = [[nn.Conv2d(in_channels, ndf, kw, 2, pad), nn.LeakyReLU(0.2, False)]]
        nf = ndf
        for n in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.utils.spectral_norm(nn.Conv2d(prev, nf, kw, stride, pad, bias=False))
            layers.append([nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False)), nn.LeakyReLU(0.2, False)])
        layers.append([nn.Conv2d(nf, 1, kw, 1, pad)])
        for i, mods in enumerate(layers):
            self.add_module(f"model{i}", nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.children():
            x = layer(x)
            outs.append(x)
        return outs


class MultiscaleDiscriminator(nn.Module):
    """GauGAN's discriminator: ``num_d`` :class:`NLayerDiscriminator` at halving resolutions.

    ``forward(x)`` with ``x = cat(semantic map, image)`` of shape ``(N, in_channels, H, W)``
    returns ``[scale 0 outputs, scale 1 outputs, ...]``, each a list of ``n_layers + 1``
    tensors whose last is the ``(N, 1, h, w)`` logits.

    Args:
        in_channels: ``label_nc + output_nc`` (39 for cityscapes: 35 labels, 1 edge map, RGB).
        ndf / n_layers: of every scale (GauGAN: 64 and 4).
        num_d: number of scales (GauGAN: 2).
    """

    def __init__(self, in_channels: int, *, ndf: int = 64, n_layers: int = 4, num_d: int = 2, init: bool = True):
        super().__init__()
        if num_d < 1:
            raise NasPruneError(f"discriminator: num_d must be >= 1, got {num_d}")
        self.in_channels, self.ndf, self.n_layers, self.num_d = in_channels, ndf, n_layers, num_d
        for i in range(num_d):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(in_channels, ndf=ndf, n_layers=n_layers))
        if init:
            self.reset_parameters()

    def reset_parameters(self, gain: float = 0.02) -> None:
        """CAT's GauGAN init: xavier-normal convs with ``gain``, zero biases (spectral-norm weights included)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    w = m.weight_orig if hasattr(m, "weight_orig") else m.weight
                    nn.init.xavier_normal_(w, gain=gain)
                    if m.bias is not None:
                        m.bias.zero_()

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for i, d in enumerate(self.children()):
            if i:
                x = self.downsample(x)
            result.append(d(x))
        return result


def _shape_of(state: Mapping[str, torch.Tensor], source: str) -> tuple[int, int, int, int]:
    """``(in_channels, ndf, n_layers, num_d)`` read from a GauGAN discriminator state dict."""
    scales = sorted({int(k.split(".")[0].split("_")[1]) for k in state if k.startswith("discriminator_")})
    if not scales or scales != list(range(len(scales))):
        raise NasPruneError(f"{source}: not a GauGAN multi-scale discriminator (expected keys discriminator_0.model0.0.weight, ...)")
    first = state.get("discriminator_0.model0.0.weight")
    if first is None or first.dim() != 4:
        raise NasPruneError(f"{source}: missing key 'discriminator_0.model0.0.weight'")
    layers = {int(k.split(".")[1][len("model"):]) for k in state if k.startswith("discriminator_0.model")}
    return int(first.shape[1]), int(first.shape[0]), max(layers), len(scales)


def load_multiscale_discriminator(path: str | os.PathLike, *, in_channels: int | None = None) -> MultiscaleDiscriminator:
    """Load a GauGAN / CAT multi-scale discriminator checkpoint (weights only, safely).

    The width, depth and number of scales are read from the tensors; every key must match.

    Args:
        path: ``.pth`` / ``.pt`` / ``.safetensors`` (a bare state dict or one nested under
            ``state_dict`` / ``model`` / ``netD`` / ``discriminator``; a ``module.`` prefix is dropped).
        in_channels: the channels the run feeds it (``label_nc + output_nc``); a mismatch is an error.

    Raises:
        NasPruneError: unreadable file, another layout, missing/unexpected keys or wrong shapes.
    """
    from nas_prune.gan import read_state_dict
    from nas_prune.families.common import check_state

    state = read_state_dict(path, what="discriminator checkpoint")
    src = str(path)
    cin, ndf, n_layers, num_d = _shape_of(state, src)
    if in_channels is not None and cin != in_channels:
        raise NasPruneError(f"discriminator {src} takes {cin} input channels, this run feeds it {in_channels} "
                            "(semantic map channels + image channels)")
    disc = MultiscaleDiscriminator(cin, ndf=ndf, n_layers=n_layers, num_d=num_d, init=False)
    disc.load_state_dict(check_state(disc.state_dict(), state, Path(src)))
    return disc
