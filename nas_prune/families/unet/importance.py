"""Channel importance for U-Net generators: one score per output channel of each prunable layer.

``gamma`` (Network Slimming, ICCV 2017; CAT, CVPR 2021)
    ``|gamma|`` of the norm after the producing conv: level I's down norm for ``down.I``
    (middle levels) and level I's up norm for ``up.I``. The outermost and the innermost down
    convs have no norm; their channels are scored by the normalised L1 of their filters put
    on the gamma scale: ``l1_c / mean_c(l1_c) * mean(|gamma|)``, the mean ``|gamma|`` taken
    over every channel of every norm of the network. A filter of average L1 norm then scores
    like a channel of average ``|gamma|``, so one global threshold treats both kinds alike
    (a heuristic: pix2pix's LeakyReLU after the outermost conv and ReLU after the innermost
    one see the raw conv output, whose scale is the filter's). Needs affine norms.
``l1``
    L1 norm of each output filter of the producing conv (``Conv2d`` ``[out, in, k, k]`` summed
    over ``in, k, k``; ``ConvTranspose2d`` ``[in, out, k, k]`` summed over ``in, k, k``),
    divided by the layer's mean, as the core's ``l1`` does. The default for affine-free norms.
``activation``
    Mean ``|act(f)|`` per channel over calibration images, ``f`` the tap of the layer
    (:mod:`nas_prune.families.unet.model`) and ``act`` what the next layer applies to it
    (LeakyReLU(0.2) for down outputs, ReLU for up outputs), divided by the layer's mean.

Default (``--importance auto``): ``gamma`` when the norms are affine (pix2pix's batch norm),
``l1`` otherwise (instance norm without affine parameters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.unet.arch import UnetArch
from nas_prune.families.unet.model import module_keys
from nas_prune.families.unet.plan import prunable_layers

if TYPE_CHECKING:  # pragma: no cover
    import torch

CRITERIA = ("gamma", "l1", "activation")


def default_criterion(arch: UnetArch) -> str:
    """``gamma`` with affine norms, ``l1`` without."""
    return "gamma" if arch.affine else "l1"


def _tensor(sd: Mapping[str, "torch.Tensor"], key: str) -> "torch.Tensor":
    if key not in sd:
        raise NasPruneError(f"teacher weights: missing {key}")
    return sd[key].detach().float()


def _mean_one(values: "torch.Tensor") -> "torch.Tensor":
    mean = values.mean()
    return values / mean if float(mean) > 0 else values.clone()


def _producers(arch: UnetArch) -> dict[str, tuple[str, str | None, bool]]:
    """``{layer: (conv module, norm module or None, is ConvTranspose)}``."""
    out = {}
    for layer in prunable_layers(arch):
        keys = module_keys(arch, layer.index)
        if layer.name.startswith("down."):
            out[layer.name] = (keys["conv"], keys["down_norm"], False)
        else:
            out[layer.name] = (keys["convT"], keys["up_norm"], True)
    return out


def l1(arch: UnetArch, sd: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Per-layer mean-one filter L1 norms (module docstring)."""
    scores = {}
    for name, (conv, _, transposed) in _producers(arch).items():
        w = _tensor(sd, f"{conv}.weight").abs()
        raw = w.sum(dim=(0, 2, 3)) if transposed else w.sum(dim=(1, 2, 3))
        scores[name] = _mean_one(raw)
    return scores


def gamma(arch: UnetArch, sd: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """``|gamma|``, and the L1 of normless convs on the gamma scale (module docstring).

    Raises:
        NasPruneError: the norms are affine-free (no gamma): use ``l1`` or ``activation``.
    """
    import torch

    if not arch.affine:
        raise NasPruneError("importance gamma needs affine norms (|gamma|); this U-Net's norms have none: "
                            "use --importance l1 or activation")
    producers = _producers(arch)
    scores: dict[str, torch.Tensor] = {}
    for name, (_, norm, _) in producers.items():
        if norm is not None:
            scores[name] = _tensor(sd, f"{norm}.weight").abs()
    scale = torch.cat(list(scores.values())).mean() if scores else torch.tensor(1.0)
    filters = l1(arch, sd)
    for name, (_, norm, _) in producers.items():
        if norm is None:
            scores[name] = filters[name] * scale
    return {layer.name: scores[layer.name] for layer in prunable_layers(arch)}


def activation(arch: UnetArch, sd: Mapping[str, "torch.Tensor"], calib: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """Mean activation magnitude per channel over ``calib`` (N, input_nc, H, W) (module docstring)."""
    import torch
    import torch.nn.functional as F

    from nas_prune.families.unet.model import build_unet

    if calib is None:
        raise NasPruneError("importance activation needs calibration images")
    net = build_unet(arch)
    net.load_state_dict(dict(sd), strict=True)
    net.eval()
    names = [layer.name for layer in prunable_layers(arch)]
    with torch.no_grad():
        _, feats = net.forward_with_features(calib.float(), names)
    out = {}
    for name in names:
        f = feats[name]
        f = F.leaky_relu(f, 0.2) if name.startswith("down.") else F.relu(f)
        out[name] = _mean_one(f.abs().mean(dim=(0, 2, 3)))
    return out


def compute_importance(criterion: str, arch: UnetArch, sd: Mapping[str, "torch.Tensor"], *,
                       calib: "torch.Tensor | None" = None) -> dict[str, "torch.Tensor"]:
    """One 1-D score tensor per prunable layer (``{layer: scores over teacher channels}``)."""
    if criterion == "gamma":
        return gamma(arch, sd)
    if criterion == "l1":
        return l1(arch, sd)
    if criterion == "activation":
        return activation(arch, sd, calib)
    raise NasPruneError(f"unknown importance criterion {criterion!r}: choose from {', '.join(CRITERIA)}")
