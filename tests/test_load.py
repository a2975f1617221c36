"""Loading teachers: CAT layout unchanged, classic ResNet generators mapped with identical outputs."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import random_arch, randomize_
from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.load import load_generator, read_tensors
from nas_prune.model import build_generator
from nas_prune.space import load_space


class ClassicResnetBlock(nn.Module):
    """pytorch-CycleGAN-and-pix2pix's ResnetBlock layer order, written here from its description."""

    def __init__(self, dim, norm, use_dropout, padding):
        super().__init__()
        bias = norm is nn.InstanceNorm2d
        layers = []
        for second in (False, True):
            p = 0
            if padding == "reflect":
                layers.append(nn.ReflectionPad2d(1))
            else:
                p = 1
            layers += [nn.Conv2d(dim, dim, 3, padding=p, bias=bias), norm(dim)]
            if not second:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


def classic_resnet(ngf=8, n_blocks=3, in_nc=3, out_nc=3, norm=nn.InstanceNorm2d, use_dropout=False, padding="reflect"):
    """ResnetGenerator: pad conv7 norm relu, 2x (conv s2 norm relu), blocks, 2x (convT norm relu), pad conv7 tanh."""
    bias = norm is nn.InstanceNorm2d
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), norm(ngf), nn.ReLU(True)]
    for i in range(2):
        m = 2**i
        layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=bias), norm(ngf * m * 2), nn.ReLU(True)]
    layers += [ClassicResnetBlock(ngf * 4, norm, use_dropout, padding) for _ in range(n_blocks)]
    for i in range(2):
        m = 2 ** (2 - i)
        layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                   norm(ngf * m // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
    model = nn.Sequential()
    model.model = nn.Sequential(*layers)
    model.forward = model.model.forward
    return model


@pytest.mark.parametrize("norm", [nn.InstanceNorm2d, nn.BatchNorm2d])
@pytest.mark.parametrize("use_dropout", [False, True])
@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_classic_resnet_loads_with_identical_outputs(tmp_path, norm, use_dropout, padding):
    torch.manual_seed(0)
    ref = randomize_(classic_resnet(norm=norm, use_dropout=use_dropout, padding=padding)).eval()
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), path)
    assert next(iter(ref.state_dict())).startswith("model.1.")
    loaded = load_generator(path)
    assert loaded.layout == "resnet"
    assert loaded.arch.res_kernel_sizes == (3,) and loaded.arch.dw_kernel_sizes == ()
    assert loaded.arch.norm == ("instance" if norm is nn.InstanceNorm2d else "batch")
    assert loaded.arch.padding == ("reflect" if padding == "reflect" else "zero")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        diff = (loaded.build()(x) - ref(x)).abs().max().item()
    assert diff <= 1e-6


def test_classic_resnet_legacy_instance_norm_stats_are_dropped(tmp_path):
    ref = randomize_(classic_resnet()).eval()
    state = ref.state_dict()
    state["model.2.running_mean"] = torch.zeros(8)
    state["model.2.running_var"] = torch.ones(8)
    state["model.10.conv_block.2.running_mean"] = torch.zeros(32)
    state["model.10.conv_block.2.running_var"] = torch.ones(32)
    path = tmp_path / "old.pth"
    torch.save(state, path)
    loaded = load_generator(path)
    assert any("legacy InstanceNorm" in n for n in loaded.notes)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.build()(x), ref(x), atol=1e-5, rtol=0)  # outputs in [-1, 1]


def test_classic_resnet_against_the_shipped_space(tmp_path):
    ref = classic_resnet(ngf=64, n_blocks=9).eval()
    path = tmp_path / "resnet.pth"
    torch.save(ref.state_dict(), path)
    loaded = load_generator(path, space=load_space("resnet_9blocks"))
    assert loaded.arch == load_space("resnet_9blocks").teacher_arch()
    with pytest.raises(NasPruneError, match="does not fit search space"):
        load_generator(path, space=load_space("cat_inception"))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_cat_layout_round_trip(tmp_path, seed, suffix):
    arch = random_arch(random.Random(seed))
    model = randomize_(build_generator(arch), seed).eval()
    path = tmp_path / f"g{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    # a block without branches leaves no tensor: before the last block with tensors it is a
    # hole that the file cannot explain, and is refused by name
    kept = [n for n, b in enumerate(arch.blocks) if not b.is_identity]
    holes = [n for n in range(max(kept, default=-1)) if arch.blocks[n].is_identity]
    x = torch.randn(2, arch.input_nc, 16, 16)
    with torch.no_grad():
        want = model(x)
    if holes:
        with pytest.raises(NasPruneError, match=rf"missing keys: features\.{holes[0]}\.\*"):
            load_generator(path)
        # the same tensors with the architecture beside them (a nas-prune student) give the outputs
        from nas_prune.export import FORMAT, VERSION, write_student

        folder = write_student(tmp_path / "s", document={"format": FORMAT, "version": VERSION, "arch": arch.to_dict()},
                               state_dict=read_tensors(path))
        with torch.no_grad():
            assert torch.equal(load_generator(folder / "student.safetensors").build()(x), want)
        return
    loaded = load_generator(path)
    assert loaded.layout == "cat"
    # Shapes cannot show padding, kernel-size slots without any branch, or the number of blocks.
    rebuilt = loaded.arch
    assert rebuilt.stem == arch.stem and rebuilt.head == arch.head and rebuilt.norm == arch.norm
    assert rebuilt.n_blocks == len(kept) and (not kept or kept[-1] == len(kept) - 1)
    # The padding (reflect unless a space or an arch.json says otherwise) is the only one of them that
    # changes outputs: with the teacher's padding the loaded weights give its outputs in every case
    # (trailing identity blocks and empty kernel-size slots dropped).
    assert rebuilt.padding == "reflect"
    model_as_loaded = build_generator(dataclasses.replace(rebuilt, padding=arch.padding))
    model_as_loaded.load_state_dict(loaded.state_dict, strict=True)
    with torch.no_grad():
        assert (model_as_loaded.eval()(x) - want).abs().max().item() <= 1e-5  # outputs in [-1, 1]
        if arch.padding == "reflect" or not kept:  # blocks are where the padding setting acts
            assert (loaded.build()(x) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("seed", range(6))
def test_student_file_takes_the_arch_json_beside_it(tmp_path, seed):
    """A student's identity blocks leave no tensor; its arch.json gives them back, trailing ones included."""
    from nas_prune.export import FORMAT, VERSION, write_student

    arch = random_arch(random.Random(seed))
    model = randomize_(build_generator(arch), seed).eval()
    folder = write_student(tmp_path / "s", document={"format": FORMAT, "version": VERSION, "arch": arch.to_dict()},
                           state_dict=model.state_dict())
    loaded = load_generator(folder / "student.safetensors")
    assert loaded.arch == arch and any("arch.json" in n for n in loaded.notes)
    x = torch.randn(2, arch.input_nc, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.build()(x), model(x))


def test_cat_layout_round_trip_with_space_is_exact(tmp_path):
    space = load_space("cat_inception")
    arch = space.teacher_arch()
    model = randomize_(build_generator(arch)).eval()
    path = tmp_path / "teacher.pth"
    torch.save(model.state_dict(), path)
    loaded = load_generator(path, space=space)
    assert loaded.arch == arch
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (loaded.build()(x) - model(x)).abs().max().item() <= 1e-5  # outputs in [-1, 1]


def test_cat_identity_block_norm_is_dropped(tmp_path, tiny_arch):
    from nas_prune.arch import Block

    arch = tiny_arch.with_widths(blocks=(tiny_arch.blocks[0], Block(res=(0, 0, 0), dw=(0, 0, 0)), tiny_arch.blocks[0]))
    model = randomize_(build_generator(arch)).eval()
    state = model.state_dict()
    state["features.1.pw_bn.weight"] = torch.ones(16)  # CAT keeps an unused norm in empty blocks
    state["features.1.pw_bn.bias"] = torch.zeros(16)
    torch.save(state, tmp_path / "s.pth")
    loaded = load_generator(tmp_path / "s.pth")
    assert loaded.arch.blocks[1].is_identity
    assert any("identity" in n for n in loaded.notes)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: {"G": sd, "D": {"x": torch.zeros(1)}, "epoch": 3},
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"netG_A": {"module." + k: v for k, v in sd.items()}},
])
def test_wrapped_checkpoints(tmp_path, tiny_arch, wrap):
    model = randomize_(build_generator(tiny_arch)).eval()
    torch.save(wrap(model.state_dict()), tmp_path / "w.pth")
    loaded = load_generator(tmp_path / "w.pth")
    assert loaded.arch == tiny_arch
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.build()(x), model(x))


def test_pickled_module_is_refused(tmp_path, tiny_arch):
    torch.save(build_generator(tiny_arch), tmp_path / "whole.pth")
    with pytest.raises(NasPruneError, match="refused to load pickled Python objects"):
        read_tensors(tmp_path / "whole.pth")


def test_shape_mismatch_lists_the_first_keys(tmp_path, tiny_arch):
    state = build_generator(tiny_arch).state_dict()
    state["features.0.res_ops.0.4.weight"] = torch.zeros(16, 5, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(NasPruneError, match=r"shape mismatch: features\.0\.res_ops\.0\.4\.weight \(16, 5, 1, 1\)"):
        load_generator(tmp_path / "bad.pth")


def test_missing_keys_are_listed(tmp_path, tiny_arch):
    state = build_generator(tiny_arch).state_dict()
    del state["features.2.pw_bn.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(NasPruneError, match=r"missing keys: features\.2\.pw_bn\.weight"):
        load_generator(tmp_path / "bad.pth")


def test_arch_equality_is_by_value(tiny_arch):
    assert Arch.from_dict(tiny_arch.to_dict()) == tiny_arch
