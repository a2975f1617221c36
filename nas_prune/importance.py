"""Channel importance: one score per output channel of each prunable layer.

A criterion is a small callable ``criterion(arch, state_dict, **options) ->
{layer name: 1-D float tensor}`` over the prunable layers of
:func:`nas_prune.plan.prunable_layers` (``stem.0`` .. ``head.1``); the state dict is in
CAT's layout (:mod:`nas_prune.model`). Scores feed one global threshold
(:func:`nas_prune.plan.plan_for_target`), so they must be comparable across layers.

``gamma`` (CAT, CVPR 2021; Network Slimming, ICCV 2017)
    ``|gamma|`` of the norm that follows the producing conv. Needs affine norms.
``l1``
    L1 norm of each output filter of the producing conv (``Conv2d`` weight
    ``[out, in, k, k]`` summed over ``in, k, k``; ``ConvTranspose2d`` weight
    ``[in, out, k, k]`` summed over ``in, k, k``), divided by the layer's mean filter
    L1 norm. Raw L1 norms grow with fan-in (a 7x7 stem conv on 3 channels vs a 5x5
    conv on 256), so each layer is scaled to mean 1: a global threshold ``t`` then
    keeps the filters at least ``t`` times their layer's average. Behind an
    affine-free norm a filter's scale is normalised away, so this is a heuristic;
    it is the default when the norms have no gamma (classic ResNet generators).
``activation``
    Mean ``|ReLU(norm(conv(x)))|`` per channel over calibration images (the value
    the next layer reads), divided by the layer's mean like ``l1``. The images come
    from :func:`nas_prune.calibration.calibration_images` (``--calib-data``; without
    it, crops of real sample photos); images of the training domain give the most
    meaningful scores.

The scores of a depthwise branch are those of its 1x1 conv: the depthwise conv and its
norm follow the same channels. SPADE generators: :mod:`nas_prune.spade.importance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.plan import PrunableLayer, prunable_layers

if TYPE_CHECKING:  # pragma: no cover
    import torch

CRITERIA = ("gamma", "l1", "activation")


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
        images: ``(N, input_nc, H, W)`` in [-1, 1]; default 8 calibration images at
            64x64 without a folder (:func:`nas_prune.calibration.calibration_images`).
        batch_size: images per forward pass.
    """
    import torch

    from nas_prune.calibration import calibration_images
    from nas_prune.model import build_generator

    if images is None:
        images, _, _ = calibration_images(arch, input_size=(64, 64))
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


_CRITERIA: dict[str, Callable[..., dict]] = {"gamma": gamma, "l1": l1, "activation": activation}


def default_criterion(arch: Arch) -> str:
    """``gamma`` when the norms are affine (CAT teachers, SPADE generators), else ``l1``."""
    return "gamma" if arch.family == "spade" or arch.affine else "l1"


def compute_importance(
    criterion: str | None,
    arch: Arch,
    state_dict: Mapping[str, "torch.Tensor"],
    **options: object,
) -> tuple[str, dict[str, "torch.Tensor"]]:
    """Run a criterion by name (None picks :func:`default_criterion`).

    Returns:
        ``(criterion name, {layer name: scores})``.

    Raises:
        NasPruneError: unknown criterion or unusable for this teacher.
    """
    name = criterion or default_criterion(arch)
    if name not in _CRITERIA:
        raise NasPruneError(f"unknown importance criterion {name!r}: choose {', '.join(CRITERIA)}")
    if arch.family == "spade":
        from nas_prune.spade.importance import spade_importance

        return name, spade_importance(name, arch, state_dict)  # type: ignore[arg-type]
    return name, _CRITERIA[name](arch, state_dict, **options)
