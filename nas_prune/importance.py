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
norm follow the same channels. Each family computes its own scores
(:meth:`nas_prune.families.base.GeneratorFamily.importance`); this module is the entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families import family_of
from nas_prune.families.inception.importance import activation, gamma, l1, producer_keys  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch

CRITERIA = ("gamma", "l1", "activation")


def default_criterion(arch: Any) -> str:
    """The family's default: ``gamma`` when the norms are affine (CAT teachers, SPADE
    generators), else ``l1``."""
    return family_of(arch).default_criterion(arch)


def compute_importance(
    criterion: str | None,
    arch: Any,
    state_dict: Mapping[str, "torch.Tensor"],
    **options: object,
) -> tuple[str, dict[str, "torch.Tensor"]]:
    """Run a criterion by name (None picks :func:`default_criterion`).

    Options: ``images`` (calibration inputs for criteria that run the network; without
    them, 8 crops at 64x64 from :func:`nas_prune.calibration.calibration_images`).

    Returns:
        ``(criterion name, {layer name: scores})``.

    Raises:
        NasPruneError: unknown criterion or unusable for this teacher.
    """
    family = family_of(arch)
    name = criterion or family.default_criterion(arch)
    if name not in CRITERIA and name not in family.criteria:
        raise NasPruneError(f"unknown importance criterion {name!r}: choose {', '.join(CRITERIA)}")
    images = options.get("images")
    if images is None and name in family.calibrated_criteria:
        from nas_prune.calibration import calibration_images

        images, _, _ = calibration_images(arch, input_size=(64, 64))
    return name, family.importance(name, arch, state_dict, calib=images)
