"""DRN-D segmenter for mIoU of generated cityscapes photos, loaded from a local weights file.

CAT and GAN Compression score GauGAN / pix2pix on cityscapes with a DRN-D-105 segmenter
(Yu, Koltun & Funkhouser, "Dilated Residual Networks", CVPR 2017) trained on cityscapes, the
``drn-d-105_ms_cityscapes.pth`` file of the ``fyu/drn`` release. This module rebuilds that
network (``DRNSeg`` around ``drn_d_105``) with the same module names, so the file loads by
path without any code from those projects::

    base.0   conv7x7 (3 -> 16) BN ReLU                                   stride 1
    base.1   [conv3x3 BN ReLU] x 1 (16)                                   stride 1
    base.2   [conv3x3 BN ReLU] x 1 (32), first conv stride 2
    base.3   Bottleneck x 3  (64 -> 256), stride 2                        (1/4)
    base.4   Bottleneck x 4  (128 -> 512), stride 2                       (1/8)
    base.5   Bottleneck x 23 (256 -> 1024), dilation 2
    base.6   Bottleneck x 3  (512 -> 2048), dilation 4
    base.7   [conv3x3 BN ReLU] x 1 (512), dilation 2
    base.8   [conv3x3 BN ReLU] x 1 (512), dilation 1
    seg      conv1x1 (512 -> 19 classes, bias)
    up       ConvTranspose 16x16, stride 8, padding 4, one group per class, no bias
             (fixed bilinear kernel; stored in the file)

Bottleneck (ResNet v1): conv1x1 BN ReLU, conv3x3 (the block's stride and dilation) BN ReLU,
conv1x1 (x4) BN, plus the input (through conv1x1 + BN when the shape changes), ReLU. The
network's widths and depths are read from the file, so other DRN-D variants with Bottleneck
blocks (``drn_d_54``) and tiny test networks in the same key layout load too.

Input: RGB in [0, 1] normalised with the cityscapes mean/std of ``fyu/drn``'s ``info.json``
(:data:`CITYSCAPES_MEAN`, :data:`CITYSCAPES_STD`). Output: per-class scores at the input size
(1/8 resolution upsampled by ``up``). How mIoU is computed from them is in :mod:`nas_prune.miou`.
No departure from the published network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError

__all__ = ["DRNSeg", "DRNConfig", "load_segmenter", "CITYSCAPES_MEAN", "CITYSCAPES_STD", "DRN_D_105",
           "SEGMENTER_FILE", "SEGMENTER_HINT"]

CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)
SEGMENTER_FILE = "drn-d-105_ms_cityscapes.pth"
SEGMENTER_HINT = (f"download {SEGMENTER_FILE} once from http://go.yf.io/drn-cityscapes-models "
                  "(the fyu/drn release that CAT and GAN Compression use) and pass its local path")


@dataclass(frozen=True)
class DRNConfig:
    """Depths and widths of a DRN-D with Bottleneck blocks.

    Attributes:
        layers: blocks (or conv layers) per stage ``base.1 .. base.8`` (``layers[0]`` is base.1).
        channels: widths per stage; for the Bottleneck stages (base.3 .. base.6) the
            block's inner width (its output is 4x).
        classes: output classes (19 cityscapes train ids).
    """

    layers: tuple[int, ...]
    channels: tuple[int, ...]
    classes: int

    @property
    def name(self) -> str:
        if self.layers == DRN_D_105.layers and self.channels == DRN_D_105.channels:
            return "drn_d_105"
        if self.layers == (1, 1, 3, 4, 6, 3, 1, 1) and self.channels == DRN_D_105.channels:
            return "drn_d_54"
        return "drn_d (custom widths)"


DRN_D_105 = DRNConfig(layers=(1, 1, 3, 4, 23, 3, 1, 1), channels=(16, 32, 64, 128, 256, 512, 512, 512), classes=19)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, *, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + res)


def _conv_layers(cin: int, cout: int, n: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(n):
        mods += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride=stride if i == 0 else 1, padding=dilation,
                           dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods)


def _blocks(cin: int, planes: int, n: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    blocks = [Bottleneck(cin, planes, stride=stride, dilation=dilation)]
    blocks += [Bottleneck(planes * 4, planes, dilation=dilation) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


def bilinear_up_kernel(classes: int, size: int = 16) -> torch.Tensor:
    """The fixed bilinear kernel ``(classes, 1, size, size)`` of DRNSeg's ``up`` (fyu/drn's ``fill_up_weights``)."""
    f = (size + 1) // 2
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - (torch.arange(size, dtype=torch.float64, device="cpu") / f - c).abs()
    return (r[:, None] * r[None, :]).float().expand(classes, 1, size, size).clone()


class DRNSeg(nn.Module):
    """DRN-D backbone + 1x1 classifier + x8 transposed-conv upsampling (module docstring).

    ``forward(x)``: ``x`` ``(N, 3, H, W)`` normalised RGB (H, W multiples of 8) -> class scores
    ``(N, classes, H, W)``.
    """

    def __init__(self, config: DRNConfig = DRN_D_105):
        super().__init__()
        L, C = config.layers, config.channels
        if len(L) != 8 or len(C) != 8 or min(L[:6]) < 1 or min(C) < 1 or config.classes < 1:
            raise NasPruneError(f"DRN-D: bad configuration {config}")
        self.config = config
        stages: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, C[0], 7, padding=3, bias=False), nn.BatchNorm2d(C[0]), nn.ReLU(inplace=True)),
            _conv_layers(C[0], C[0], L[0]),
            _conv_layers(C[0], C[1], L[1], stride=2),
            _blocks(C[1], C[2], L[2], stride=2),
            _blocks(C[2] * 4, C[3], L[3], stride=2),
            _blocks(C[3] * 4, C[4], L[4], dilation=2),
            _blocks(C[4] * 4, C[5], L[5], dilation=4),
        ]
        cin = C[5] * 4
        for n, width, dil in ((L[6], C[6], 2), (L[7], C[7], 1)):
            if n:
                stages.append(_conv_layers(cin, width, n, dilation=dil))
                cin = width
        self.base = nn.Sequential(*stages)
        self.seg = nn.Conv2d(cin, config.classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(config.classes, config.classes, 16, stride=8, padding=4, groups=config.classes, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_up_kernel(config.classes))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.seg(self.base(x)))


def _count(state, prefix: str, pattern: str) -> int:
    rx = re.compile(re.escape(prefix) + pattern)
    return len({m.group(1) for k in state for m in [rx.fullmatch(k)] if m})


def config_from_state(state, source: str) -> DRNConfig:
    """Read a :class:`DRNConfig` from a DRNSeg state dict's key names and shapes."""
    if "seg.weight" not in state or "base.0.0.weight" not in state:
        raise NasPruneError(f"{source}: not a DRN segmentation checkpoint (expected DRNSeg keys base.0.0.weight, "
                            f"seg.weight, up.weight as in {SEGMENTER_FILE})")
    if "base.3.0.conv1.weight" not in state or "base.3.0.conv3.weight" not in state:
        raise NasPruneError(f"{source}: only DRN-D segmenters with Bottleneck blocks (drn_d_54, drn_d_105) are supported")
    layers, channels = [], []
    for i in range(1, 9):
        if i in (3, 4, 5, 6):  # Bottleneck stages: blocks and their inner width
            layers.append(_count(state, f"base.{i}.", r"(\d+)\.conv1\.weight"))
            w = state.get(f"base.{i}.0.conv1.weight")
        else:  # conv stages: one batch norm per conv
            layers.append(_count(state, f"base.{i}.", r"(\d+)\.running_mean"))
            w = state.get(f"base.{i}.0.weight")
        channels.append(int(w.shape[0]) if w is not None else 1)
    if min(layers[:6]) < 1:
        raise NasPruneError(f"{source}: not a DRN-D segmentation checkpoint (stage base.{layers.index(0) + 1} is empty)")
    return DRNConfig(layers=tuple(layers), channels=tuple(channels), classes=int(state["seg.weight"].shape[0]))


def load_segmenter(path: str | os.PathLike | None, *, device: str | torch.device = "cpu") -> DRNSeg:
    """Build :class:`DRNSeg` shaped like the checkpoint at ``path`` and load it (eval mode, no gradients).

    Args:
        path: local ``drn-d-105_ms_cityscapes.pth`` (or any DRNSeg state dict with Bottleneck
            blocks; ``.pth`` / ``.pt`` read with ``weights_only=True``, or ``.safetensors``);
            a ``module.`` prefix (DataParallel) is dropped, ``num_batches_tracked`` keys are ignored.

    Raises:
        NasPruneError: no path, missing file (the message says where to get it), unreadable
            file, another layout, missing / unexpected keys, or wrong shapes.
    """
    from nas_prune.gan import read_state_dict
    from nas_prune.families.common import check_state

    if path is None:
        raise NasPruneError(f"mIoU needs the DRN-D-105 segmenter weights: {SEGMENTER_HINT} (--segmenter PATH)")
    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"segmenter weights not found: {path}; {SEGMENTER_HINT}")
    state = {k: v for k, v in read_state_dict(path, what="segmenter weights").items() if not k.endswith("num_batches_tracked")}
    net = DRNSeg(config_from_state(state, str(path)))
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    net.load_state_dict(check_state(expected, state, path), strict=False)
    return net.eval().to(device)
