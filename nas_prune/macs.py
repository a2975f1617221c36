"""MACs and parameter counts: one analytic definition, two conventions, measured cross-checks.

Conventions (every number nas-prune prints or exports names one):

``fvcore`` (default)
    What ``fvcore.nn.FlopCountAnalysis(model, x).total()`` returns in eval mode: one
    per conv multiply-accumulate, ConvTranspose counted over its *input* pixels,
    instance norm charged 5 per element with affine parameters and 4 without, batch
    norm (eval) 2 per element with affine parameters and 1 without; pads, ReLU, Tanh,
    adds are free. :func:`count_macs` equals fvcore exactly for every architecture
    of the space and every input size divisible by 4.
``paper``
    What GAN Compression and CAT report (their profiler, ``torchprofile``): conv
    MACs with ConvTranspose counted over its *output* pixels (4x the fvcore count
    for a stride-2 ConvTranspose), affine norms 1 per element, affine-free norms 0.
    This is why the classic 9-block ResNet CycleGAN generator is quoted as 56.8G
    MACs at 256x256 while fvcore gives 49.7G. Use it to reproduce paper budgets
    (e.g. CAT's 2.6B horse->zebra student).

MACs are multiply-accumulates, not FLOPs (1 MAC ~ 2 FLOPs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas_prune.families import family_of
from nas_prune.families.common import (  # noqa: F401  (public names of this module)
    CONVENTIONS,
    LayerCost,
    check_convention,
    format_macs,
    parse_input_size,
    parse_macs,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


def layer_costs(
    arch: Any, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"
) -> list[LayerCost]:
    """Every layer's MACs (for one image) and parameters, in forward order.

    Args:
        arch: a generator of any family (the family counts: :meth:`GeneratorFamily.layer_costs`).
        input_size: ``H``, ``"HxW"`` or ``(H, W)``; divisible by 4 (and by the family's size multiple, which the family checks).
        convention: ``"fvcore"`` or ``"paper"`` (see the module docstring).
    """
    check_convention(convention)
    return list(family_of(arch).layer_costs(arch, parse_input_size(input_size), convention))


def count_macs(
    arch: Any, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"
) -> int:
    """Total MACs of ``arch`` for one image, analytically (no forward pass).

    Equals ``FlopCountAnalysis(build_generator(arch).eval(), x).total()`` exactly for
    ``convention="fvcore"``.
    """
    return sum(c.macs for c in layer_costs(arch, input_size=input_size, convention=convention))


def count_params(arch: Any) -> int:
    """Learnable parameters of ``build_generator(arch)`` (buffers such as running stats excluded)."""
    return family_of(arch).count_params(arch)


def stage_totals(costs: list[LayerCost]) -> dict[str, tuple[int, int]]:
    """``{stage: (macs, params)}`` in forward order."""
    out: dict[str, tuple[int, int]] = {}
    for c in costs:
        m, p = out.get(c.stage, (0, 0))
        out[c.stage] = (m + c.macs, p + c.params)
    return out


def _dummy_input(model: "torch.nn.Module", size: tuple[int, int]) -> "torch.Tensor":
    import torch

    first = next(p for p in model.parameters())
    in_ch = family_of(model.arch).input_channels(model.arch) if hasattr(model, "arch") else first.shape[1]
    return torch.zeros(1, in_ch, *size, dtype=first.dtype, device=first.device)


def measure_macs(
    model: "torch.nn.Module", *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"
) -> int:
    """Count MACs by tracing a real forward pass of ``model`` (in eval mode) on one image.

    ``fvcore`` uses ``fvcore.nn.FlopCountAnalysis``; ``paper`` uses ``torchprofile``
    (the profiler GAN Compression and CAT report with). The model's training flag is
    restored afterwards.
    """
    import torch

    check_convention(convention)
    size = parse_input_size(input_size)
    was_training = model.training
    model.eval()
    try:
        x = _dummy_input(model, size)
        with torch.no_grad():
            if convention == "fvcore":
                from fvcore.nn import FlopCountAnalysis

                analysis = FlopCountAnalysis(model, x)
                analysis.unsupported_ops_warnings(False)
                analysis.uncalled_modules_warnings(False)
                return int(analysis.total())
            import warnings

            from torchprofile import profile_macs

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "No handlers found" for pads/activations: free ops
                return int(profile_macs(model, x))
    finally:
        model.train(was_training)


def thop_macs(model: "torch.nn.Module", *, input_size: int | str | tuple[int, int] = 256) -> int:
    """MACs as thop counts them (cross-check only: thop has its own norm/ConvTranspose rules).

    thop attaches counters to the modules; they are removed afterwards by profiling a
    deep copy, so ``model`` is left untouched.
    """
    import copy
    import io
    import contextlib

    import torch
    from thop import profile

    size = parse_input_size(input_size)
    clone = copy.deepcopy(model).eval()
    x = _dummy_input(clone, size)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, _ = profile(clone, inputs=(x,), verbose=False)
    return int(macs)
