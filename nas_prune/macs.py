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

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

CONVENTIONS = ("fvcore", "paper")


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer of a generator.

    Attributes:
        name: module path in the built generator (``features.3.res_ops.0.1.0``).
        stage: ``stem``, ``block1`` .. ``blockN`` or ``head`` (SPADE: ``fc``, the block names, ``out``).
        kind: ``conv``, ``dwconv``, ``convT`` or ``norm`` (SPADE also ``resize``, ``mul``, ``act``).
        macs: MACs in the requested convention for one image.
        params: learnable parameters of the layer.
    """

    name: str
    stage: str
    kind: str
    macs: int
    params: int


def check_convention(convention: str) -> str:
    """Return ``convention`` or raise a one-line error listing the valid ones."""
    if convention not in CONVENTIONS:
        raise NasPruneError(f"unknown MACs convention {convention!r}: choose fvcore or paper")
    return convention


def parse_input_size(value: int | str | tuple[int, int]) -> tuple[int, int]:
    """``256`` / ``"256"`` -> (256, 256); ``"256x128"`` -> (256, 128) as (H, W).

    Raises:
        NasPruneError: unparsable, non-positive, or not divisible by 4 (the two
            stride-2 stages and the two ConvTransposes need it to give back H x W).
    """
    if isinstance(value, tuple):
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", str(value))
        if not m:
            raise NasPruneError(f"input size {value!r}: expected N or HxW, e.g. 256 or 256x512")
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
    if h <= 0 or w <= 0 or h % 4 or w % 4:
        raise NasPruneError(f"input size {h}x{w}: height and width must be positive and divisible by 4")
    return h, w


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}


def parse_macs(value: str | int | float) -> int:
    """Parse a MACs budget: ``2.6G``, ``2.6B`` (= G, as papers write it), ``2600M``, ``2.6e9``.

    Raises:
        NasPruneError: unparsable or not positive.
    """
    unit = ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([kKmMgGbBtT]?)\s*", str(value))
        if not m:
            raise NasPruneError(f"MACs value {value!r}: expected a number like 2.6G, 2.6B, 2600M or 2.6e9")
        unit = m.group(2)
        number = float(m.group(1)) * _SUFFIX[unit.upper()]
    if not math.isfinite(number):
        raise NasPruneError(f"MACs value {value!r}: not a finite number")
    if number <= 0:
        raise NasPruneError(f"MACs value {value!r}: must be positive")
    if not unit and number < 1e4 and not isinstance(value, int):  # typed by a person (text, 2.6): a unit left out
        raise NasPruneError(f"MACs value {value!r} has no unit and is {number:g} MACs, far below any generator; "
                            f"did you mean {str(value).strip()}G?")
    return int(round(number))


def format_macs(macs: int | float, convention: str | None = None) -> str:
    """``2_601_234_567`` -> ``"2.601G"`` (+ ``" MACs (fvcore)"`` when a convention is given)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            text = f"{macs / scale:.3f}{unit}"
            break
    else:
        text = f"{int(macs)}"
    return f"{text} MACs ({convention})" if convention else text


def _norm_cost(arch: Arch, numel: int, convention: str) -> int:
    if convention == "paper":
        return numel if arch.affine else 0
    if arch.norm == "instance":
        return numel * (5 if arch.affine else 4)
    return numel * (2 if arch.affine else 1)


def _conv_params(cin: int, cout: int, k: int, groups: int, bias: bool) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def layer_costs(
    arch: Arch, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"
) -> list[LayerCost]:
    """Every layer's MACs (for one image) and parameters, in forward order.

    Args:
        arch: the generator (SPADE generators: :mod:`nas_prune.spade.macs`).
        input_size: ``H``, ``"HxW"`` or ``(H, W)``; divisible by 4 (by ``2 ** n_upsampling``
            for SPADE generators).
        convention: ``"fvcore"`` or ``"paper"`` (see the module docstring).
    """
    check_convention(convention)
    if arch.family == "spade":
        from nas_prune.spade.macs import spade_costs

        return spade_costs(arch, input_size, convention)  # type: ignore[arg-type]
    return list(_iter_costs(arch, parse_input_size(input_size), convention))


def _iter_costs(arch: Arch, size: tuple[int, int], convention: str) -> Iterator[LayerCost]:
    H, W = size
    bias = arch.use_bias
    norm_p = 2 if arch.affine else 0

    def conv(name, stage, cin, cout, k, out_hw, groups=1, kind="conv", has_bias=bias):
        macs = out_hw * cout * (cin // groups) * k * k
        return LayerCost(name, stage, kind, macs, _conv_params(cin, cout, k, groups, has_bias))

    def norm(name, stage, c, hw):
        return LayerCost(name, stage, "norm", _norm_cost(arch, c * hw, convention), norm_p * c)

    s0, s1, s2 = arch.stem
    hw0, hw1, hw2 = H * W, (H // 2) * (W // 2), (H // 4) * (W // 4)
    yield conv("down_sampling.1", "stem", arch.input_nc, s0, 7, hw0)
    yield norm("down_sampling.2", "stem", s0, hw0)
    yield conv("down_sampling.4", "stem", s0, s1, 3, hw1)
    yield norm("down_sampling.5", "stem", s1, hw1)
    yield conv("down_sampling.7", "stem", s1, s2, 3, hw2)
    yield norm("down_sampling.8", "stem", s2, hw2)

    c = s2
    for n, block in enumerate(arch.blocks):
        stage = f"block{n + 1}"
        i = 0
        for k, m in zip(arch.res_kernel_sizes, block.res):
            if m == 0:
                continue
            p = f"features.{n}.res_ops.{i}"
            yield conv(f"{p}.1.0", stage, c, m, k, hw2)
            yield norm(f"{p}.1.1", stage, m, hw2)
            yield conv(f"{p}.4", stage, m, c, k, hw2)
            i += 1
        i = 0
        for k, m in zip(arch.dw_kernel_sizes, block.dw):
            if m == 0:
                continue
            p = f"features.{n}.dw_ops.{i}"
            yield conv(f"{p}.0.0", stage, c, m, 1, hw2)
            yield norm(f"{p}.0.1", stage, m, hw2)
            yield conv(f"{p}.2.0", stage, m, m, k, hw2, groups=m, kind="dwconv")
            yield norm(f"{p}.2.1", stage, m, hw2)
            yield conv(f"{p}.4", stage, m, c, 1, hw2)
            i += 1
        if not block.is_identity:
            yield norm(f"features.{n}.pw_bn", stage, c, hw2)

    h0, h1 = arch.head
    # ConvTranspose: fvcore counts input pixels, the paper convention output pixels.
    t0_hw = hw2 if convention == "fvcore" else hw1
    t1_hw = hw1 if convention == "fvcore" else hw0
    yield conv("up_sampling.0", "head", c, h0, 3, t0_hw, kind="convT")
    yield norm("up_sampling.1", "head", h0, hw1)
    yield conv("up_sampling.3", "head", h0, h1, 3, t1_hw, kind="convT")
    yield norm("up_sampling.4", "head", h1, hw0)
    yield conv("up_sampling.7", "head", h1, arch.output_nc, 7, hw0, has_bias=True)


def count_macs(
    arch: Arch, *, input_size: int | str | tuple[int, int] = 256, convention: str = "fvcore"
) -> int:
    """Total MACs of ``arch`` for one image, analytically (no forward pass).

    Equals ``FlopCountAnalysis(build_generator(arch).eval(), x).total()`` exactly for
    ``convention="fvcore"``.
    """
    return sum(c.macs for c in layer_costs(arch, input_size=input_size, convention=convention))


def count_params(arch: Arch) -> int:
    """Learnable parameters of ``build_generator(arch)`` (buffers such as running stats excluded)."""
    if arch.family == "spade":
        from nas_prune.spade.macs import spade_params

        return spade_params(arch)  # type: ignore[arg-type]
    return sum(c.params for c in _iter_costs(arch, (4, 4), "fvcore"))


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
    in_ch = model.arch.input_nc if hasattr(model, "arch") else first.shape[1]
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
