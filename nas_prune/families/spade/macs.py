"""MACs and parameters of inception SPADE generators, analytically, in both conventions.

Conventions as in :mod:`nas_prune.macs`; for this generator they count:

==============================  =====================  ==========================
op                              ``fvcore``             ``paper`` (torchprofile)
==============================  =====================  ==========================
conv (incl. depthwise)          MACs                   MACs
batch norm with affine          2 per element          1 per element
batch norm without affine       1 per element          0
nearest resize / 2x upsample    1 per output element   0 (see below)
``normalized * (1 + gamma)``    0                      1 per element
final ``leaky_relu(0.2)``       0                      1 per element (not in place)
in-place activations, adds      0                      0
==============================  =====================  ==========================

A modulation network without branches does not resize the map (CAT's class resizes it and
discards it, which a traced graph drops). That is ``FlopCountAnalysis(model, seg).total()`` in eval mode and
``torchprofile.profile_macs(model, seg)`` exactly (tests check both on random students).
On CAT's ngf-64 cityscapes teacher at 256x512 ("normal" upsampling) they are
117,198,406,272 (fvcore) and 117,079,377,664 (paper).

CAT's own pruning profiler (``utils/model_profiling.py``) counts conv MACs only (its batch
norms track running statistics and are charged 0); the ``paper`` convention here is
torchprofile's, which GAN Compression and CAT quote, and differs from conv-only by the
norm, modulation and activation terms (0.1% of the teacher: 116,957,367,936 conv MACs).
"""

from __future__ import annotations

from typing import Iterator

from nas_prune.errors import NasPruneError
from nas_prune.families.common import LayerCost, check_convention, parse_input_size
from nas_prune.families.spade.arch import SpadeArch


def check_spade_size(arch: SpadeArch, input_size) -> tuple[int, int]:
    """``(H, W)`` parsed, or an error unless both are multiples of ``arch.size_multiple``."""
    h, w = parse_input_size(input_size)
    m = arch.size_multiple
    if h % m or w % m:
        raise NasPruneError(
            f"input size {h}x{w}: height and width must be multiples of {m} for a SPADE generator with "
            f"num_upsampling_layers {arch.num_upsampling_layers!r}"
        )
    return h, w


def _conv_params(cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def spade_layer_costs(arch: SpadeArch, size: tuple[int, int], convention: str) -> Iterator[LayerCost]:
    """Every op's MACs for one image and parameters, in forward order (module docstring)."""
    check_convention(convention)
    fv = convention == "fvcore"
    H, W = size
    n = arch.n_upsampling
    h0, w0 = H >> n, W >> n
    L = arch.label_nc

    def conv(name, stage, cin, cout, k, p, groups=1, bias=True):
        kind = "dwconv" if groups > 1 else "conv"
        return LayerCost(name, stage, kind, p * cout * (cin // groups) * k * k, _conv_params(cin, cout, k, groups, bias))

    def norm(name, stage, c, p, affine):
        macs = c * p * ((2 if affine else 1) if fv else (1 if affine else 0))
        return LayerCost(name, stage, "norm", macs, 2 * c if affine else 0)

    def free_in(name, stage, kind, numel, paper: bool):
        """An op without parameters charged 1 per element in one convention, 0 in the other."""
        return LayerCost(name, stage, kind, numel if paper != fv else 0, 0)

    c0 = arch.stream[0]
    p0 = h0 * w0
    yield free_in("fc.resize", "fc", "resize", L * p0, paper=False)
    yield conv("fc", "fc", L, c0, 3, p0)
    yield norm("fc_norm", "fc", c0, p0, True)

    ks = arch.kernel_sizes
    for i, (name, block, s) in enumerate(zip(arch.block_names, arch.blocks, arch.block_scales())):
        fin, fout = arch.fin(i), arch.fout(i)
        p = p0 * s * s
        if arch.upsampled_before(i):
            yield free_in(f"{name}.upsample", name, "resize", fin * p, paper=False)
        if not block.is_identity:
            sp = f"{name}.spade"
            yield norm(f"{sp}.param_free_norm", name, fin, p, False)
            if block.has_modulation:
                yield free_in(f"{sp}.resize", name, "resize", L * p, paper=False)
            j = 0
            for k, h in zip(ks, block.spade_res):
                if h:
                    yield conv(f"{sp}.res_ops.{j}.0.conv", name, L, h, k, p)
                    yield norm(f"{sp}.res_ops.{j}.0.norm", name, h, p, True)
                    yield conv(f"{sp}.res_ops.{j}.1", name, h, 2 * fin, k, p)
                    j += 1
            j = 0
            for k, h in zip(ks, block.spade_dw):
                if h:
                    yield conv(f"{sp}.dw_ops.{j}.0.conv", name, L, h, 1, p)
                    yield norm(f"{sp}.dw_ops.{j}.0.norm", name, h, p, True)
                    yield conv(f"{sp}.dw_ops.{j}.1.conv", name, h, h, k, p, groups=h)
                    yield norm(f"{sp}.dw_ops.{j}.1.norm", name, h, p, True)
                    yield conv(f"{sp}.dw_ops.{j}.2", name, h, 2 * fin, 1, p)
                    j += 1
            yield free_in(f"{sp}.modulate", name, "mul", fin * p, paper=True)
            j = 0
            for k, m in zip(ks, block.res):
                if m:
                    yield conv(f"{name}.res_ops.{j}.0.conv", name, fin, m, k, p)
                    yield norm(f"{name}.res_ops.{j}.0.norm", name, m, p, True)
                    yield conv(f"{name}.res_ops.{j}.1.conv", name, m, fout, k, p)
                    j += 1
            j = 0
            for k, m in zip(ks, block.dw):
                if m:
                    yield conv(f"{name}.dw_ops.{j}.0.conv", name, fin, m, 1, p)
                    yield norm(f"{name}.dw_ops.{j}.0.norm", name, m, p, True)
                    yield conv(f"{name}.dw_ops.{j}.1.conv", name, m, m, k, p, groups=m)
                    yield norm(f"{name}.dw_ops.{j}.1.norm", name, m, p, False)
                    yield conv(f"{name}.dw_ops.{j}.2.conv", name, m, fout, 1, p)
                    j += 1
        if fin != fout:
            yield norm(f"{name}.shortcut.0", name, fin, p, True)
            yield conv(f"{name}.shortcut.1.conv", name, fin, fout, 1, p, bias=False)

    c, pf = arch.stream[-1], H * W
    yield free_in("out.leaky_relu", "out", "act", c * pf, paper=True)
    yield conv("conv_img", "out", c, arch.output_nc, 3, pf)


def spade_costs(arch: SpadeArch, input_size, convention: str) -> list[LayerCost]:
    """:func:`spade_layer_costs` after checking ``input_size`` against the generator."""
    return list(spade_layer_costs(arch, check_spade_size(arch, input_size), convention))


def spade_params(arch: SpadeArch) -> int:
    """Learnable parameters of ``build_spade_generator(arch)``."""
    m = arch.size_multiple
    return sum(c.params for c in spade_layer_costs(arch, (m, m), "fvcore"))
