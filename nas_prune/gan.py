"""Adversarial parts of distillation: the PatchGAN discriminator and the GAN losses.

The discriminator is pix2pix's N-layer PatchGAN (Isola et al., CVPR 2017): with
``n_layers`` 3 and 4x4 convs it scores overlapping 70x70 patches. Its module layout
(``model.0`` ... ``model.N`` of one ``nn.Sequential``) matches the discriminators
that pytorch-CycleGAN-and-pix2pix, GAN Compression and CAT save, so their
checkpoints load with :func:`load_discriminator`::

    conv4x4/2 (in -> ndf) lrelu
    [conv4x4/2 (-> ndf*min(2^i, 8)) norm lrelu] for i in 1..n_layers-1
    conv4x4/1 (-> ndf*min(2^n_layers, 8)) norm lrelu
    conv4x4/1 (-> 1)                                  # patch logits

Losses (``mode``): ``lsgan`` (least squares, Mao et al. 2017; CycleGAN's and CAT's
default), ``vanilla`` (the original cross-entropy GAN, on logits) and ``hinge``
(Lim & Ye 2017). They are computed in float32 also under autocast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError

__all__ = ["PatchDiscriminator", "GANLoss", "GAN_MODES", "load_discriminator", "read_state_dict"]

GAN_MODES = ("lsgan", "vanilla", "hinge")
D_NORMS = ("batch", "instance", "none")


class PatchDiscriminator(nn.Module):
    """N-layer PatchGAN. Input ``(N, in_channels, H, W)``; output logits ``(N, 1, h, w)``.

    Args:
        in_channels: image channels it sees (``input_nc + output_nc`` for a
            conditional pix2pix discriminator, ``output_nc`` for CycleGAN's).
        ndf: width of the first conv.
        n_layers: number of stride-2 convs (3 gives 70x70 receptive fields).
        norm: ``"batch"`` (pix2pix), ``"instance"`` (CycleGAN; affine-free) or ``"none"``.
    """

    def __init__(self, in_channels: int, *, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in D_NORMS:
            raise NasPruneError(f"discriminator norm {norm!r} is not one of {', '.join(D_NORMS)}")
        if n_layers < 1 or ndf < 1 or in_channels < 1:
            raise NasPruneError("discriminator: in_channels, ndf and n_layers must be >= 1")
        self.in_channels, self.ndf, self.n_layers, self.norm = in_channels, ndf, n_layers, norm
        bias = norm != "batch"

        def norm_layer(c: int) -> list[nn.Module]:
            if norm == "batch":
                return [nn.BatchNorm2d(c)]
            if norm == "instance":
                return [nn.InstanceNorm2d(c, affine=False, track_running_stats=False)]
            return []

        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        prev = ndf
        for i in range(1, n_layers + 1):
            cur = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(prev, cur, 4, stride, 1, bias=bias), *norm_layer(cur), nn.LeakyReLU(0.2, True)]
            prev = cur
        layers.append(nn.Conv2d(prev, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def input_limit(self) -> tuple[int, str]:
        """``(smallest input side, reason)``: see :func:`patch_input_limit`."""
        return patch_input_limit(self.n_layers)


def patch_input_limit(n_layers: int) -> tuple[int, str]:
    """Smallest input side a PatchGAN of ``n_layers`` scores, and why: ``3 * 2**n_layers``.

    Its ``n_layers`` stride-2 4x4 convs (padding 1) halve the side (rounding down), the two
    stride-1 4x4 convs take one pixel each; at least one patch logit must remain.
    """
    side = 3 * 2**n_layers
    return side, f"a {n_layers}-layer PatchGAN discriminator needs {side} pixels to score one patch"


class GANLoss(nn.Module):
    """GAN objective on discriminator logits.

    ``d_loss(real, fake)`` is what the discriminator minimises, ``g_loss(fake)`` what
    the generator minimises:

    - lsgan:   D: ((real-1)^2 + fake^2) / 2            G: (fake-1)^2
    - vanilla: D: (BCE(real, 1) + BCE(fake, 0)) / 2    G: BCE(fake, 1)
    - hinge:   D: (relu(1-real) + relu(1+fake)) / 2    G: -fake

    (means over patches and batch; the 1/2 on D follows pix2pix/CycleGAN.)
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise NasPruneError(f"GAN loss {mode!r} is not one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def _target(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "hinge":
            return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())
        return 0.5 * (self._target(real_logits, True) + self._target(fake_logits, False))

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "hinge":
            return -fake_logits.float().mean()
        return self._target(fake_logits, True)


def read_state_dict(path: str | os.PathLike, *, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Accepts a bare state dict or one nested under ``state_dict`` / ``model`` /
    ``netD`` / ``discriminator``; strips a DDP ``module.`` prefix.

    Raises:
        NasPruneError: missing file, unreadable file, or no tensors found.
    """
    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"{what} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad user file
        raise NasPruneError(f"{what} {path}: cannot be read ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model", "netD", "discriminator"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NasPruneError(f"{what} {path}: no state dict of tensors found")
    from nas_prune.tensor_checks import check_weights

    state = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    check_weights(state, f"{what} {path}")
    return state


def discriminator_from_state_dict(state: Mapping[str, torch.Tensor], *, source: str = "discriminator") -> PatchDiscriminator:
    """Build a :class:`PatchDiscriminator` shaped like ``state`` and load it.

    ``ndf``, ``n_layers``, the input channels and the norm are read from the tensors;
    InstanceNorm running statistics saved by old PyTorch versions are dropped.

    Raises:
        NasPruneError: the state dict is not an N-layer PatchGAN.
    """
    convs = sorted(
        (int(k.split(".")[1]), v) for k, v in state.items()
        if k.startswith("model.") and k.endswith(".weight") and v.dim() == 4
    )
    if len(convs) < 3 or convs[0][0] != 0:
        raise NasPruneError(f"{source}: not a PatchGAN discriminator (expected keys model.0.weight, model.2.weight, ...)")
    first = convs[0][1]
    n_layers = len(convs) - 2
    ndf, in_channels = int(first.shape[0]), int(first.shape[1])
    second_idx = convs[1][0]
    if f"model.{second_idx + 1}.running_mean" in state:
        norm = "batch"
    elif second_idx + 1 < convs[2][0] - 1:
        norm = "instance"
    else:
        norm = "none"
    disc = PatchDiscriminator(in_channels, ndf=ndf, n_layers=n_layers, norm=norm)
    expected = disc.state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    cleaned = {k: v for k, v in state.items() if k in expected or not k.endswith(stats)}
    for key, value in cleaned.items():
        if key not in expected:
            raise NasPruneError(f"{source}: unexpected key {key!r} for a {n_layers}-layer PatchGAN")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise NasPruneError(
                f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    missing = sorted(set(expected) - set(cleaned))
    if missing:
        raise NasPruneError(f"{source}: missing key {missing[0]!r}")
    disc.load_state_dict(cleaned)
    return disc


def load_discriminator(path: str | os.PathLike, *, in_channels: int | None = None) -> PatchDiscriminator:
    """Load a teacher's PatchGAN discriminator from ``path`` (safely, weights only).

    Args:
        path: ``.pth`` / ``.pt`` / ``.safetensors`` state dict.
        in_channels: the channel count the distillation run feeds it; a mismatch
            (e.g. an unconditional CycleGAN discriminator for a conditional pix2pix
            run) is an error.
    """
    disc = discriminator_from_state_dict(read_state_dict(path, what="discriminator checkpoint"), source=str(path))
    if in_channels is not None and disc.in_channels != in_channels:
        raise NasPruneError(
            f"discriminator {path} takes {disc.in_channels} input channels, this run feeds it {in_channels} "
            f"({'conditional' if in_channels > 3 else 'unconditional'} discriminator)"
        )
    return disc
