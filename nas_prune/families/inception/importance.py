"""Channel importance of the inception-residual generators (criteria of :mod:`nas_prune.importance`).

Every criterion returns ``{layer name: 1-D float tensor}`` over
:func:`nas_prune.families.inception.plan.prunable_layers`; the state dict is in CAT's
layout. The scores of a depthwise branch are those of its 1x1 conv: the depthwise conv
and its norm follow the same channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import PrunableLayer
from nas_prune.families.inception.arch import Arch
from nas_prune.families.inception.plan import prunable_layers

if TYPE_CHECKING:  # pragma: no cover
    import torch


def producer_keys(arch: Arch, layer: PrunableLayer) -> tuple[str, str]:
    """``(conv prefix, norm prefix)`` in CAT's state-dict layout for a prunable layer.

    The module index of a branch counts the branches of ``arch`` that exist, in
    kernel-size order, so a slot ``J`` maps to index ``#{j < J: width_j > 0}``.
    """
    if layer.kind == "stem":
        conv = 1 + 3 * layer.index
        return f"down_sampling.{conv}", f"down_sampling.{conv + 1}"
    if layer.kind == "head":
        conv = 3 * layer.index
        return f"up_sampling.{conv}", f"up_sampling.{conv + 1}"
    block = arch.blocks[layer.block]
    widths = block.res if layer.kind == "res" else block.dw
    i = sum(1 for w in widths[: layer.index] if w > 0)
    if layer.kind == "res":
        p = f"features.{layer.block}.res_ops.{i}.1"
    else:
        p = f"features.{layer.block}.dw_ops.{i}.0"
    return f"{p}.0", f"{p}.1"


def _tensor(state_dict: Mapping[str, "torch.Tensor"], key: str) -> "torch.Tensor":
    if key not in state_dict:
        raise NasPruneError(f"teacher weights: missing {key}")
    return state_dict[key].detach().float()


def gamma(arch: Arch, state_dict: Mapping[str, "torch.Tensor"], **_: object) -> dict[str, "torch.Tensor"]:
    """``|gamma|`` of the norm after each producing conv (CAT's criterion).

    Raises:
        NasPruneError: the norms are affine-free (no gamma): use ``l1`` or ``activation``.
    """
    if not arch.affine:
        raise NasPruneError(
            "importance gamma: the teacher's norms have no affine parameters; use l1 or activation"
        )
    out = {}
    for layer in prunable_layers(arch):
        _, norm = producer_keys(arch, layer)
        out[layer.name] = _tensor(state_dict, f"{norm}.weight").abs()
    return out


def _per_layer_mean_one(values: "torch.Tensor") -> "torch.Tensor":
    """Scale to mean 1 (all-zero layers stay zero)."""
    mean = values.mean()
    return values / mean if float(mean) > 0 else values


def l1(arch: Arch, state_dict: Mapping[str, "torch.Tensor"], **_: object) -> dict[str, "torch.Tensor"]:
    """L1 norm of each output filter, divided by the layer's mean (module docstring)."""
    out = {}
    for layer in prunable_layers(arch):
        conv, _ = producer_keys(arch, layer)
        w = _tensor(state_dict, f"{conv}.weight")
        if layer.kind == "head":  # ConvTranspose2d: [in, out, k, k]
            norms = w.abs().sum(dim=(0, 2, 3))
        else:  # Conv2d: [out, in, k, k]
            norms = w.abs().flatten(1).sum(dim=1)
        out[layer.name] = _per_layer_mean_one(norms)
    return out


def activation(
    arch: Arch,
    state_dict: Mapping[str, "torch.Tensor"],
    *,
    images: "torch.Tensor | None" = None,
    batch_size: int = 4,
    **_: object,
) -> dict[str, "torch.Tensor"]:
    """Mean ``|ReLU(norm(conv(x)))|`` per channel over ``images``, scaled to layer mean 1.

    Args:
        images: ``(N, input_nc, H, W)`` in [-1, 1] (the core passes 8 calibration images at
            64x64 when none are given: :func:`nas_prune.importance.compute_importance`).
        batch_size: images per forward pass.
    """
    import torch

    from nas_prune.families.inception.model import build_generator

    if images is None:
        raise NasPruneError("importance activation: needs calibration images")
    model = build_generator(arch)
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(name: str) -> Callable:
        def hook(_module, _inputs, output):
            value = torch.relu(output).abs().mean(dim=(2, 3)).sum(dim=0)
            sums[name] = sums.get(name, 0) + value

        return hook

    for layer in prunable_layers(arch):
        _, norm = producer_keys(arch, layer)
        hooks.append(modules[norm].register_forward_hook(make_hook(layer.name)))
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(images[start : start + batch_size].float())
    finally:
        for h in hooks:
            h.remove()
    return {name: _per_layer_mean_one(total / len(images)) for name, total in sums.items()}


CRITERIA: dict[str, Callable[..., dict]] = {"gamma": gamma, "l1": l1, "activation": activation}
