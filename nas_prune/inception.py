"""InceptionV3 feature extractor for FID and KID, loaded from a local weights file.

FID (Heusel et al., NeurIPS 2017) and KID (Binkowski et al., ICLR 2018) are reported
on the 2048-d pool3 features of the TensorFlow InceptionV3 graph of 2015-12-05. The
PyTorch port of that graph that most papers use (pytorch-fid, GAN Compression, CAT)
is a torchvision-style ``Inception3`` whose weights file is
``pt_inception-2015-12-05-6726825d.pth``; this module rebuilds the same network so
that file loads by path::

    Conv2d_1a_3x3 .. Conv2d_4a_3x3     stem (BasicConv2d = conv, no bias + BN eps 1e-3 + ReLU)
    Mixed_5b/5c/5d                     A blocks (pool features 32, 64, 64)
    Mixed_6a                           B (grid reduction)
    Mixed_6b/6c/6d/6e                  C blocks (7x7 factorised, c7 = 128, 160, 160, 192)
    Mixed_7a                           D (grid reduction)
    Mixed_7b, Mixed_7c                 E blocks
    global average pool                -> (N, 2048)

Differences from torchvision's ImageNet InceptionV3 that matter for FID (they follow
the TF graph): average pools inside the A, C and E blocks exclude padding from the
mean, and the last E block (``Mixed_7c``) pools its branch with a 3x3 *max* pool.
Inputs are images in [0, 1] (or [-1, 1] with ``value_range``), resized bilinearly to
299x299 and mapped to [-1, 1], as pytorch-fid does.

Nothing is downloaded: :func:`load_inception` takes a local path and its error says
where the file comes from. The classifier (``fc.*``) and auxiliary-head keys of the
file are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError

__all__ = ["InceptionFeatures", "load_inception", "FEATURE_DIM", "WEIGHTS_HINT", "WEIGHTS_FILE"]

FEATURE_DIM = 2048
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_HINT = (
    "download it once from https://github.com/mseitzer/pytorch-fid/releases/download/"
    f"fid_weights/{WEIGHTS_FILE} and pass its local path"
)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, the TF default) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool whose mean ignores padded pixels (TF semantics)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1; out 224 + pool_features."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class BlockB(nn.Module):
    """35x35 -> 17x17 reduction; out 480 + cin (= 768 for cin 288)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convs (1x7 and 7x1); out 768."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = BasicConv2d(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row[0], padding=row[1])
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):
    """17x17 -> 8x8 reduction; out 512 + cin (= 1280 for cin 768)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.branch7x7x3_1(x)
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b)))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; out 2048.

    Args:
        cin: input channels.
        max_pool: pool the last branch with a 3x3 max pool (``Mixed_7c`` of the TF
            graph) instead of a padding-excluding average pool (``Mixed_7b``).
    """

    def __init__(self, cin: int, *, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(s), self.branch3x3_2b(s),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], 1)


class InceptionFeatures(nn.Module):
    """FID InceptionV3 up to pool3. Input ``(N, 3, H, W)``; output ``(N, 2048)`` float32.

    Args:
        value_range: range of the input images; ``(0, 1)`` (default) or ``(-1, 1)``
            for generator outputs. Grayscale ``(N, 1, H, W)`` is repeated to 3 channels.
        resize: resize to 299x299 bilinearly (as pytorch-fid); turn off only for
            inputs already at 299x299.
    """

    def __init__(self, *, value_range: tuple[float, float] = (0.0, 1.0), resize: bool = True):
        super().__init__()
        self.value_range = value_range
        self.resize = resize
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in ``value_range`` -> ``(N, 3, 299, 299)`` in [-1, 1]."""
        lo, hi = self.value_range
        x = x.float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise NasPruneError(f"Inception features need 1 or 3 image channels, got {x.shape[1]}")
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        if self.resize and tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


_IGNORED_PREFIXES = ("fc.", "AuxLogits.")


def _read(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad user file
        raise NasPruneError(f"Inception weights {path}: cannot be read ({type(err).__name__}: {err})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NasPruneError(f"Inception weights {path}: no state dict of tensors found")
    from nas_prune.tensor_checks import check_weights

    check_weights({str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}, f"Inception weights {path}")
    return obj


def load_inception(
    path: str | os.PathLike | None,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device = "cpu",
) -> InceptionFeatures:
    """Build :class:`InceptionFeatures` and load the FID Inception weights from ``path``.

    Args:
        path: local ``.pth`` / ``.pt`` (read with ``weights_only=True``) or
            ``.safetensors`` state dict with the torchvision/pytorch-fid key layout,
            e.g. ``pt_inception-2015-12-05-6726825d.pth``. ``fc.*``, ``AuxLogits.*``
            and ``num_batches_tracked`` keys are ignored; every other key must match.
        value_range: range of the images the extractor will be given.
        device: where to put the network.

    Returns:
        the extractor in eval mode with gradients off.

    Raises:
        NasPruneError: no path, missing file (the message says where to get it),
            unreadable file, missing / unexpected keys, or wrong shapes.
    """
    if path is None:
        raise NasPruneError(f"FID/KID need the Inception weights: {WEIGHTS_HINT} (--inception PATH)")
    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"Inception weights not found: {path}; {WEIGHTS_HINT}")
    raw = _read(path)
    state = {
        str(k).removeprefix("module."): v for k, v in raw.items()
        if isinstance(v, torch.Tensor)
        and not str(k).removeprefix("module.").startswith(_IGNORED_PREFIXES)
        and not str(k).endswith("num_batches_tracked")
    }
    net = InceptionFeatures(value_range=value_range)
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise NasPruneError(
            f"Inception weights {path}: missing {missing[0]} ({len(missing)} keys missing); "
            f"expected the FID InceptionV3 layout of {WEIGHTS_FILE}"
        )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise NasPruneError(f"Inception weights {path}: unexpected key {extra[0]}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise NasPruneError(
                f"Inception weights {path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
            )
    net.load_state_dict(state, strict=False)
    return net.to(device).eval().requires_grad_(False)
