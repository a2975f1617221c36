"""Checkpoints that lack tensors, or hold NaNs, are refused with the missing keys named.

Nothing is filled in: a block without tensors is not taken for an identity block, a
truncated ResNet generator is not taken for a shorter one.
"""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_
from nas_prune.errors import NasPruneError
from nas_prune.load import load_generator
from nas_prune.model import build_generator
from nas_prune.space import load_space

SPACE = """\
name: tiny
input_nc: 3
output_nc: 3
ngf: 8
n_blocks: 3
res_kernel_sizes: [1, 3, 5]
dw_kernel_sizes: [1, 3, 5]
channels_reduction_factor: 6
norm: instance
affine: true
padding: reflect
dropout: 0.0
"""


def _save(state, path):
    torch.save(state, path)
    return path


def _cat_state(tiny_arch):
    return dict(randomize_(build_generator(tiny_arch)).state_dict())


def test_a_block_without_tensors_is_missing_not_an_identity_block(tmp_path, tiny_arch):
    state = {k: v for k, v in _cat_state(tiny_arch).items() if not k.startswith("features.1.")}
    with pytest.raises(NasPruneError, match=r"missing keys: features\.1\.\* \(no tensor at all"):
        load_generator(_save(state, tmp_path / "g.pth"))


def test_trailing_blocks_of_a_space_are_missing_not_dropped(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    space = load_space(tmp_path / "tiny.yaml")
    state = dict(randomize_(build_generator(space.teacher_arch())).state_dict())
    assert load_generator(_save(state, tmp_path / "full.pth"), space=space).arch.n_blocks == 3
    state = {k: v for k, v in state.items() if not k.startswith("features.2.")}
    with pytest.raises(NasPruneError, match=r"missing keys: features\.2\.\*"):
        load_generator(_save(state, tmp_path / "short.pth"), space=space)


@pytest.mark.parametrize("key", [
    "features.0.res_ops.1.1.0.weight",  # the conv that gives a branch its width
    "features.2.dw_ops.0.2.0.weight",
    "down_sampling.2.weight",  # a stem norm: the norm kind must not flip
    "down_sampling.1.bias",
    "up_sampling.7.weight",
])
def test_one_missing_tensor_is_named_as_missing(tmp_path, tiny_arch, key):
    state = _cat_state(tiny_arch)
    del state[key]
    with pytest.raises(NasPruneError, match="missing key") as err:
        load_generator(_save(state, tmp_path / "g.pth"))
    assert key in str(err.value)


def test_a_gap_in_branch_numbers_is_named(tmp_path, tiny_arch):
    state = {k: v for k, v in _cat_state(tiny_arch).items() if not k.startswith("features.0.res_ops.1.")}
    with pytest.raises(NasPruneError, match=r"missing keys: features\.0\.res_ops\.1\.1\.0\.weight"):
        load_generator(_save(state, tmp_path / "g.pth"))


def test_nan_weights_are_named(tmp_path, tiny_arch):
    state = _cat_state(tiny_arch)
    state["features.1.pw_bn.weight"][3] = float("nan")
    state["up_sampling.0.weight"][0, 0, 0, 0] = float("inf")
    with pytest.raises(NasPruneError, match=r"non-finite weights .* features\.1\.pw_bn\.weight \(1 of 16 values\), "
                                            r"up_sampling\.0\.weight"):
        load_generator(_save(state, tmp_path / "g.pth"))


# ----------------------------------------------------------------------------- ResNet layout


def _resnet_state():
    from test_load import classic_resnet

    return dict(randomize_(classic_resnet(n_blocks=4)).state_dict())  # blocks at model.10..13


@pytest.mark.parametrize("gone, named", [
    ("model.11.conv_block.", r"model\.11\.conv_block"),  # a middle block
    ("model.13.conv_block.", r"model\.13\.conv_block"),  # the last block: not a 3-block generator
    ("model.14.", r"model\.14\.weight"),  # the first ConvTranspose
    ("model.4.", r"model\.4\.weight"),  # a stem conv
    ("model.21.", r"model\.21\.weight"),  # the final conv
])
def test_resnet_missing_parts_are_named(tmp_path, gone, named):
    state = {k: v for k, v in _resnet_state().items() if not k.startswith(gone)}
    with pytest.raises(NasPruneError, match=rf"missing keys: .*{named}"):
        load_generator(_save(state, tmp_path / "latest_net_G.pth"))


def test_resnet_block_missing_one_conv_is_named(tmp_path):
    state = {k: v for k, v in _resnet_state().items() if not k.startswith("model.12.conv_block.5.")}
    with pytest.raises(NasPruneError, match=r"missing keys: the second conv weight of model\.12\.conv_block"):
        load_generator(_save(state, tmp_path / "latest_net_G.pth"))


# ----------------------------------------------------------------------------- SPADE layout


@pytest.fixture(scope="module")
def spade_state():
    from nas_prune.families.spade import cat_teacher_arch

    torch.manual_seed(0)
    arch = cat_teacher_arch(ngf=4, label_nc=5, num_upsampling_layers="normal")
    return dict(randomize_(build_generator(arch)).state_dict())


@pytest.mark.parametrize("gone, named", [
    ("G_middle_1.", r"missing keys: G_middle_1\.\*"),
    ("up_3.", r"missing keys: up_3\.\*"),  # the last block: not a shorter generator
    ("up_1.res_ops.0.0.", r"missing keys: up_1\.res_ops\.0\.0\.conv\.weight"),
    ("head_0.spade.dw_ops.2.1.", r"missing keys: head_0\.spade\.dw_ops\.2\.1\.conv\.weight"),
    ("fc_norm.running_mean", r"missing key 'fc_norm\.running_mean'"),
])
def test_spade_missing_parts_are_named(tmp_path, spade_state, gone, named):
    assert load_generator(_save(spade_state, tmp_path / "full.pth")).layout == "cat_spade"
    state = {k: v for k, v in spade_state.items() if not k.startswith(gone)}
    with pytest.raises(NasPruneError, match=named):
        load_generator(_save(state, tmp_path / "G.pth"))


def test_spade_nan_is_named(tmp_path, spade_state):
    state = {k: v.clone() for k, v in spade_state.items()}
    state["conv_img.weight"].view(-1)[0] = float("nan")
    with pytest.raises(NasPruneError, match=r"non-finite weights .* conv_img\.weight"):
        load_generator(_save(state, tmp_path / "G.pth"))
