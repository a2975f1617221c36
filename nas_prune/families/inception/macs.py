"""Analytic MACs and parameters of the inception-residual generators (both conventions).

Equal to ``fvcore.nn.FlopCountAnalysis`` (``fvcore``) and to ``torchprofile.profile_macs``
(``paper``) of :func:`nas_prune.families.inception.model.build_generator` for every
architecture of the space and every input size divisible by 4 (see
:mod:`nas_prune.macs` for the conventions).
"""

from __future__ import annotations

from typing import Iterator

from nas_prune.families.common import LayerCost, conv_params, norm_cost
from nas_prune.families.inception.arch import Arch


def iter_costs(arch: Arch, size: tuple[int, int], convention: str) -> Iterator[LayerCost]:
    H, W = size
    bias = arch.use_bias
    norm_p = 2 if arch.affine else 0

    def conv(name, stage, cin, cout, k, out_hw, groups=1, kind="conv", has_bias=bias):
        macs = out_hw * cout * (cin // groups) * k * k
        return LayerCost(name, stage, kind, macs, conv_params(cin, cout, k, groups, has_bias))

    def norm(name, stage, c, hw):
        return LayerCost(name, stage, "norm", norm_cost(arch.norm, arch.affine, c * hw, convention), norm_p * c)

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
