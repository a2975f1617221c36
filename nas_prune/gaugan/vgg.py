"""VGG19 features for GauGAN's perceptual loss, loaded from a local weights file.

GauGAN (Park et al., CVPR 2019) and CAT compare generated and real images on five
activations of an ImageNet VGG19 (Simonyan & Zisserman, ICLR 2015): relu1_1, relu2_1,
relu3_1, relu4_1 and relu5_1, i.e. torchvision's ``vgg19().features`` cut after indices
1, 6, 11, 20 and 29. This module rebuilds those 30 layers with torchvision's indices so that
torchvision's ImageNet weights file ``vgg19-dcbb9e9d.pth`` loads by path (keys
``features.0.weight`` .. ``features.28.bias``; the ``features.30`` .. ``features.34`` convs
after relu5_1 and the ``classifier.*`` keys are ignored)::

    idx   0 conv3-64  2 conv3-64  4 maxpool   5 conv3-128  7 conv3-128  9 maxpool
         10 conv3-256 12 conv3-256 14 conv3-256 16 conv3-256 18 maxpool
         19 conv3-512 21 conv3-512 23 conv3-512 25 conv3-512 27 maxpool  28 conv3-512
    (every conv is followed by a ReLU at the next index)

Inputs are the images as the generator produces them, in [-1, 1], *without* ImageNet
mean/std normalisation: that is what GauGAN's and CAT's ``VGGLoss`` feed the network, and
the published loss weights were tuned with it. No departure from the published computation.

Nothing is downloaded: :func:`load_vgg19` takes a local path and its error says where the
file comes from.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError

__all__ = ["VGG19Features", "VGGLoss", "load_vgg19", "VGG19_WIDTHS", "VGG_LAYER_WEIGHTS", "VGG_WEIGHTS_FILE", "VGG_WEIGHTS_HINT"]

VGG_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
VGG_WEIGHTS_HINT = (
    f"download torchvision's ImageNet VGG19 weights once from https://download.pytorch.org/models/{VGG_WEIGHTS_FILE} "
    "and pass its local path"
)
#: GauGAN's weights of relu1_1 .. relu5_1 in the perceptual loss.
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
#: torchvision's VGG19 widths of its five stages (conv1_x .. conv5_x).
VGG19_WIDTHS = (64, 128, 256, 512, 512)
# torchvision vgg19 "E" configuration up to conv5_1 (index 28) as (stage, "conv" | "pool").
_CFG = ((0, "conv"), (0, "conv"), (0, "pool"), (1, "conv"), (1, "conv"), (1, "pool"),
        (2, "conv"), (2, "conv"), (2, "conv"), (2, "conv"), (2, "pool"),
        (3, "conv"), (3, "conv"), (3, "conv"), (3, "conv"), (3, "pool"), (4, "conv"))
_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
_STAGE_FIRST_CONV = (0, 5, 10, 19, 28)  # torchvision index of each stage's first conv


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features[:30]``; ``forward`` returns the 5 relu activations of GauGAN's loss.

    Args:
        widths: channels of the five stages; torchvision's VGG19 is :data:`VGG19_WIDTHS`
            (other widths give a VGG-shaped network, e.g. a tiny one for tests).

    Gradients of the weights are off; the network stays in eval mode (it has no dropout or norm).
    """

    def __init__(self, widths=VGG19_WIDTHS):
        super().__init__()
        if len(widths) != 5 or any(int(w) < 1 for w in widths):
            raise NasPruneError(f"VGG19: expected 5 stage widths >= 1, got {list(widths)}")
        self.widths = tuple(int(w) for w in widths)
        layers: list[nn.Module] = []
        cin = 3
        for stage, kind in _CFG:
            if kind == "pool":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, self.widths[stage], 3, padding=1), nn.ReLU(inplace=False)]
                cin = self.widths[stage]
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                outs.append(x)
        return outs

    def train(self, mode: bool = True) -> "VGG19Features":  # always eval: a fixed feature extractor
        return super().train(False)


class VGGLoss(nn.Module):
    """``sum_i w_i * L1(phi_i(fake), phi_i(real))`` with GauGAN's weights; real features without gradient.

    ``fake`` and ``real`` are ``(N, 3, H, W)`` in [-1, 1]; the loss is a float32 scalar.
    """

    def __init__(self, vgg: VGG19Features, weights=VGG_LAYER_WEIGHTS):
        super().__init__()
        self.vgg = vgg
        self.weights = tuple(float(w) for w in weights)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        f = self.vgg(fake)
        with torch.no_grad():
            r = self.vgg(real)
        total = 0.0
        for w, a, b in zip(self.weights, f, r):
            total = total + w * F.l1_loss(a.float(), b.detach().float())
        return total


def load_vgg19(path: str | os.PathLike | None, *, device: str | torch.device = "cpu") -> VGG19Features:
    """Build :class:`VGG19Features` and load torchvision's VGG19 weights from ``path``.

    Args:
        path: local ``.pth`` / ``.pt`` (read with ``weights_only=True``) or ``.safetensors``
            state dict in torchvision's layout (``vgg19-dcbb9e9d.pth``); a ``module.`` prefix,
            ``features.30+`` and ``classifier.*`` keys are ignored, every other key must match.
            Stage widths are read from the tensors (torchvision's file has :data:`VGG19_WIDTHS`).

    Raises:
        NasPruneError: no path, missing file (the message says where to get it), unreadable
            file, missing / unexpected keys, or wrong shapes.
    """
    from nas_prune.gan import read_state_dict
    from nas_prune.families.common import check_state

    if path is None:
        raise NasPruneError(f"GauGAN's perceptual loss needs VGG19 weights: {VGG_WEIGHTS_HINT} (--vgg PATH)")
    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"VGG19 weights not found: {path}; {VGG_WEIGHTS_HINT}")
    raw = read_state_dict(path, what="VGG19 weights")
    widths = []
    for idx in _STAGE_FIRST_CONV:
        w = raw.get(f"features.{idx}.weight")
        if w is None or w.dim() != 4:
            raise NasPruneError(f"VGG19 weights {path}: missing features.{idx}.weight (expected torchvision's vgg19 layout)")
        widths.append(int(w.shape[0]))
    net = VGG19Features(widths)
    state = {}
    for k, v in raw.items():
        parts = k.split(".")
        if parts[0] == "classifier" or (parts[0] == "features" and len(parts) > 1 and parts[1].isdigit()
                                         and int(parts[1]) >= len(net.features)):
            continue
        state[k] = v
    net.load_state_dict(check_state(net.state_dict(), state, path))
    return net.to(device)
