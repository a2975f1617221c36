"""The smallest input sizes nas-prune states are the real ones: the model runs at the stated
minimum and fails one step (4 pixels) below it; a huge size is refused before allocating."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import random_arch
from nas_prune.errors import NasPruneError
from nas_prune.gan import PatchDiscriminator, patch_input_limit
from nas_prune.macs import parse_macs
from nas_prune.model import build_generator, check_forward_memory, check_input_size, input_size_limits


def _runs(model, x) -> bool:
    try:
        with torch.no_grad():
            model(x)
        return True
    except (RuntimeError, ValueError, IndexError):
        return False


@pytest.mark.parametrize("seed", range(12))
def test_generator_minimum_is_exact(seed):
    arch = random_arch(random.Random(seed), max_width=4)
    model = build_generator(arch).eval()
    side, why = input_size_limits(arch)[0]
    check_input_size(arch, (side, side))
    assert _runs(model, torch.randn(1, arch.input_nc, side, side)), (arch, side, why)
    if side > 4:
        smaller = side - 4
        with pytest.raises(NasPruneError, match=rf"{smaller}x{smaller} is too small .* use a size >= {side}"):
            check_input_size(arch, (smaller, smaller))
        assert not _runs(model, torch.randn(1, arch.input_nc, smaller, smaller)), (arch, smaller)


def test_instance_norm_needs_two_pixels_in_all_not_per_side(tiny_arch):
    arch = tiny_arch.with_widths(blocks=[b.__class__(res=(4, 0, 0), dw=(4, 0, 0)) for b in tiny_arch.blocks])
    model = build_generator(arch).eval()  # only 1x1 branches: instance norm sets the limit
    assert input_size_limits(arch)[0][0] == 8
    check_input_size(arch, (4, 8))  # 1 x 2 pixels at 1/4 resolution
    assert _runs(model, torch.randn(1, 3, 4, 8))
    with pytest.raises(NasPruneError, match="instance norm"):
        check_input_size(arch, (4, 4))
    assert not _runs(model, torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_patchgan_minimum_is_exact(n_layers, norm):
    side, why = patch_input_limit(n_layers)
    assert side == 3 * 2**n_layers and "PatchGAN" in why
    d = PatchDiscriminator(3, ndf=4, n_layers=n_layers, norm=norm).train()
    assert d(torch.randn(2, 3, side, side)).shape[-1] == 1
    assert not _runs(d, torch.randn(2, 3, side - 1, side - 1))


def test_huge_sizes_are_refused_before_allocating(tiny_arch):
    with pytest.raises(NasPruneError, match=r"--input-size 400000x400000 needs about .* TiB"):
        check_forward_memory(tiny_arch, (400000, 400000))
    check_forward_memory(tiny_arch, (256, 256))


def test_targets_must_be_finite():
    for bad in ("1e400", 1e400, float("nan"), "inf"):
        with pytest.raises(NasPruneError):
            parse_macs(bad)


def test_three_by_three_reflect_branches_need_eight(tiny_arch):
    from dataclasses import replace

    arch = replace(tiny_arch.with_widths(blocks=[b.__class__(res=(0, 4, 0), dw=(0, 0, 0)) for b in tiny_arch.blocks]),
                   norm="batch")
    model = build_generator(arch).eval()
    assert input_size_limits(arch)[0] == (8, "its 3x3 branches reflect-pad 1 pixel at 1/4 resolution")
    assert _runs(model, torch.randn(1, 3, 8, 8))
    assert not _runs(model, torch.randn(1, 3, 4, 4))
