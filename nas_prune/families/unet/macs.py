"""Analytic MACs and parameters of U-Net generators, in both conventions.

Per level I of an input H x W (``h_I = H / 2**I``; the down conv writes ``h_{I+1}``)::

    down conv I   cin_I * down[I] * 16 * h_{I+1} w_{I+1}             (both conventions)
    down norm I   norm_cost(down[I] * h_{I+1} w_{I+1})                (middle levels)
    convT I       up_in_I * up_I * 16 * h_{I+1} w_{I+1}   fvcore: over the ConvT's input pixels
                  up_in_I * up_I * 16 * h_I w_I           paper: over its output pixels (torchprofile)
    up norm I     norm_cost(up_I * h_I w_I)                           (levels 1 .. n-1)

with ``cin_0 = input_nc``, ``cin_I = down[I-1]``, ``up_in_I = down[I] + up[I+1]``
(``down[n-1]`` at the innermost level) and ``up_0 = output_nc``. fvcore is counted in eval
mode (its batch-norm charge differs in training mode); activations, Tanh, Dropout and the
concatenations are free in both counters. :func:`nas_prune.families.common.norm_cost` gives
the per-element norm charges. Every term is a product of non-negative widths, so the total
is non-decreasing in every width (the threshold search relies on it).
"""

from __future__ import annotations

from typing import Callable, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import LayerCost, check_convention, conv_params, norm_cost
from nas_prune.families.unet.arch import UnetArch
from nas_prune.families.unet.model import module_keys


def _grid(arch: UnetArch, size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    m = arch.size_multiple
    if h % m or w % m or h < m or w < m:
        raise NasPruneError(f"input size {h}x{w}: a {arch.num_downs}-level U-Net needs multiples of {m}")
    return h, w


def layer_costs(arch: UnetArch, size: tuple[int, int], convention: str) -> list[LayerCost]:
    """Every conv, ConvTranspose and norm of ``build_unet(arch)`` with its MACs for one image
    of ``size`` = (H, W) in ``convention`` and its parameters, down paths first (forward order
    of the down convs, then the up paths from the innermost out)."""
    check_convention(convention)
    h, w = _grid(arch, size)
    n = arch.num_downs
    norm_params = 2 if arch.affine else 0
    costs: list[LayerCost] = []
    for i in range(n):
        keys = module_keys(arch, i)
        px = (h >> (i + 1)) * (w >> (i + 1))
        d = arch.down[i]
        stage = f"level{i}"
        costs.append(LayerCost(keys["conv"], stage, "conv", arch.down_in(i) * d * 16 * px,
                               conv_params(arch.down_in(i), d, 4, bias=arch.use_bias)))
        if keys["down_norm"]:
            costs.append(LayerCost(keys["down_norm"], stage, "norm",
                                   norm_cost(arch.norm, arch.affine, d * px, convention), norm_params * d))
    for i in reversed(range(n)):
        keys = module_keys(arch, i)
        px_in = (h >> (i + 1)) * (w >> (i + 1))
        px_out = (h >> i) * (w >> i)
        cin, cout = arch.up_in(i), arch.up_width(i)
        stage = f"level{i}"
        macs = cin * cout * 16 * (px_out if convention == "paper" else px_in)
        costs.append(LayerCost(keys["convT"], stage, "convT", macs,
                               conv_params(cin, cout, 4, bias=i == 0 or arch.use_bias)))
        if keys["up_norm"]:
            costs.append(LayerCost(keys["up_norm"], stage, "norm",
                                   norm_cost(arch.norm, arch.affine, cout * px_out, convention), norm_params * cout))
    return costs


def macs_formula(teacher: UnetArch, *, input_size: tuple[int, int],
                 convention: str) -> Callable[[Mapping[str, int]], int]:
    """``widths -> MACs`` in closed form (module docstring), equal to ``layer_costs`` of
    ``arch_from_widths(teacher, widths)`` summed; ``widths`` maps ``down.I`` (I = 0 .. n-1)
    and ``up.I`` (I = 1 .. n-1) to channel counts."""
    check_convention(convention)
    h, w = _grid(teacher, input_size)
    n = teacher.num_downs
    paper = convention == "paper"
    affine = teacher.affine
    px = [(h >> i) * (w >> i) for i in range(n + 1)]
    unit = norm_cost(teacher.norm, affine, 1, convention)
    cin0, cout0 = teacher.input_nc, teacher.output_nc

    def formula(widths: Mapping[str, int]) -> int:
        d = [widths[f"down.{i}"] for i in range(n)]
        u = [cout0] + [widths[f"up.{i}"] for i in range(1, n)]
        total = 0
        for i in range(n):
            cin = cin0 if i == 0 else d[i - 1]
            total += cin * d[i] * 16 * px[i + 1]
            if 0 < i < n - 1:
                total += unit * d[i] * px[i + 1]
            up_in = d[i] if i == n - 1 else d[i] + u[i + 1]
            total += up_in * u[i] * 16 * (px[i] if paper else px[i + 1])
            if i > 0:
                total += unit * u[i] * px[i]
        return total

    return formula
