"""The analytic MACs count equals fvcore (and torchprofile for the paper convention)."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import random_arch
from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.macs import count_macs, count_params, format_macs, layer_costs, measure_macs, parse_input_size, parse_macs
from nas_prune.model import build_generator
from nas_prune.space import load_space

SIZES = [(12, 12), (12, 20), (16, 12), (20, 12), (12, 24)]


@pytest.mark.parametrize("seed", range(50))
def test_analytic_equals_fvcore_on_random_architectures(seed):
    rng = random.Random(seed)
    arch = random_arch(rng)
    size = SIZES[seed % len(SIZES)]
    model = build_generator(arch)
    assert count_macs(arch, input_size=size) == measure_macs(model, input_size=size, convention="fvcore")
    assert count_params(arch) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("seed", range(0, 50, 5))
def test_paper_convention_equals_torchprofile(seed):
    rng = random.Random(1000 + seed)
    arch = random_arch(rng)
    size = SIZES[seed % len(SIZES)]
    assert count_macs(arch, input_size=size, convention="paper") == measure_macs(
        build_generator(arch), input_size=size, convention="paper"
    )


def test_identity_blocks_cost_nothing():
    empty = Block(res=(0, 0, 0), dw=(0, 0, 0))
    full = Block(res=(4, 4, 4), dw=(4, 4, 4))
    base = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(full,), head=(8, 8))
    with_ids = base.with_widths(blocks=(full, empty, empty))
    assert count_macs(with_ids, input_size=16) == count_macs(base, input_size=16)
    model = build_generator(with_ids).eval()
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(model.features[1](x), x)
    assert len(list(model.features[1].parameters())) == 0


@pytest.mark.parametrize("name", ["cat_inception", "resnet_9blocks", "cat_inception_pix2pix"])
@pytest.mark.parametrize("convention", ["fvcore", "paper"])
def test_shipped_spaces_match_the_measured_counts(name, convention):
    arch = load_space(name).teacher_arch()
    model = build_generator(arch)
    assert count_macs(arch, input_size=64, convention=convention) == measure_macs(
        model, input_size=64, convention=convention
    )


def test_classic_resnet_matches_the_literature():
    """Papers quote 56.8G MACs for the 9-block ResNet CycleGAN generator; fvcore gives 49.7G."""
    arch = load_space("resnet_9blocks").teacher_arch()
    assert round(count_macs(arch, input_size=256, convention="paper") / 1e9, 1) == 56.8
    assert round(count_macs(arch, input_size=256, convention="fvcore") / 1e9, 1) == 49.7
    assert count_params(arch) == 11_378_179


def test_conventions_differ_only_in_conv_transpose_and_norms():
    arch = load_space("resnet_9blocks").teacher_arch()
    fv = {c.name: c for c in layer_costs(arch, input_size=256, convention="fvcore")}
    pp = {c.name: c for c in layer_costs(arch, input_size=256, convention="paper")}
    for name in fv:
        if fv[name].kind == "convT":
            assert pp[name].macs == 4 * fv[name].macs
        elif fv[name].kind == "norm":
            assert pp[name].macs == 0  # affine-free norms are free in the paper convention
        else:
            assert pp[name].macs == fv[name].macs


def test_measured_count_at_256_on_the_classic_generator():
    arch = load_space("resnet_9blocks").teacher_arch()
    assert measure_macs(build_generator(arch), input_size=256) == count_macs(arch, input_size=256) == 49_681_530_880


@pytest.mark.parametrize("text,expected", [
    ("2.6G", 2_600_000_000), ("2.6B", 2_600_000_000), ("2600M", 2_600_000_000),
    ("2.6e9", 2_600_000_000), ("750k", 750_000), (5_600_000_000, 5_600_000_000),
])
def test_parse_macs(text, expected):
    assert parse_macs(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "2.6X", "-1G", "0"])
def test_parse_macs_rejects(text):
    with pytest.raises(NasPruneError):
        parse_macs(text)


def test_parse_input_size():
    assert parse_input_size("256") == (256, 256)
    assert parse_input_size("256x512") == (256, 512)
    assert parse_input_size(64) == (64, 64)
    for bad in ("255", "256x130", "0", "x", "-4"):
        with pytest.raises(NasPruneError, match="input size"):
            parse_input_size(bad)


def test_format_macs_names_the_convention():
    assert format_macs(2_601_000_000, "paper") == "2.601G MACs (paper)"
    assert format_macs(999) == "999"
