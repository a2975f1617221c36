"""CAT's inception SPADE generator: build, load, and outputs identical to CAT's class.

Reference data in tests/data/spade/ was made from CAT's published code
(snap-research/CAT, ``models/modules/inception_architecture/inception_spade_generator.py``)
run outside this repository; only the numbers are kept:

* ``<config>.safetensors``: a tiny ``InceptionSPADEGenerator`` built with the options in the
  file's metadata (ngf, num_upsampling_layers, active_fn, semantic_nc, kernel_sizes,
  channels, channels_reduction_factor, crop_size = W, aspect_ratio = W / H), its weights
  and running statistics set from a seeded normal draw, saved under ``sd.*``; the input
  (a blocky label map at H/8 and an instance map at H/4, nearest-upsampled to H x W,
  one-hot labels then CAT's ``get_edges`` instance edges); CAT's eval-mode output and
  activations at fc / head_0 / G_middle_1 / up_1 (``mapping_layers``), and for
  ``normal_leaky`` the training-mode output (batch statistics). Outputs are subsampled
  with the stride in the metadata to keep the files small.
* ``cat_spade_ngf64_shapes.json.gz``: key -> shape of CAT's ngf-64 cityscapes teacher
  (``more`` and ``most``) and its parameter count.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nas_prune.data_seg import instance_edges
from nas_prune.errors import NasPruneError
from nas_prune.load import load_generator
from nas_prune.model import build_generator, check_taps, tap_names
from nas_prune.families.spade import SpadeArch, cat_teacher_arch
from nas_prune.families.spade.space import SpadeSpace

DATA = Path(__file__).parent / "data" / "spade"
CONFIGS = ("normal_leaky", "more_relu", "most_leaky")
# Largest |ours - CAT| accepted. Same ops in the same order give bit-identical results on one
# machine (measured 0.0 here); the margin covers other CPUs' conv kernels.
ATOL = 1e-5


def reference(name: str):
    path = DATA / f"{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    label_nc = int(meta["label_nc"])
    labels = tensors["labels"].long().repeat_interleave(8, 2).repeat_interleave(8, 3)
    inst = tensors["instances"].long().repeat_interleave(4, 2).repeat_interleave(4, 3)
    onehot = torch.zeros(labels.shape[0], label_nc - 1, *labels.shape[2:]).scatter_(1, labels, 1.0)
    seg = torch.cat([onehot, instance_edges(inst)], 1)
    state = {k[3:]: v for k, v in tensors.items() if k.startswith("sd.")}
    return state, seg, tensors, meta


def space_for(meta: dict) -> SpadeSpace:
    return SpadeSpace(
        name="ref", family="spade", ngf=int(meta["ngf"]), label_nc=int(meta["label_nc"]),
        num_upsampling_layers=meta["num_upsampling_layers"], kernel_sizes=tuple(json.loads(meta["kernel_sizes"])),
        channels_reduction_factor=int(meta["channels_reduction_factor"]),
        channels=None if json.loads(meta["channels"]) is None else tuple(json.loads(meta["channels"])),
        activation="relu" if meta["activation"] == "nn.ReLU" else "leaky_relu",
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_outputs_equal_cat_reference(name, tmp_path):
    state, seg, ref, meta = reference(name)
    loaded = load_generator_from(state, tmp_path, space_for(meta))
    assert loaded.layout == "cat_spade" and loaded.arch.num_upsampling_layers == meta["num_upsampling_layers"]
    model = loaded.build()
    assert sum(p.numel() for p in model.parameters()) <= int(meta["params"])
    s = int(meta["output_stride"])
    with torch.no_grad():
        out, feats = model.forward_with_features(seg, ["fc", "head_0", "G_middle_1", "up_1"])
    diff = (out[:, :, ::s, ::s] - ref["out_eval"]).abs().max().item()
    assert diff <= ATOL, f"{name}: max |ours - CAT| = {diff:.3g}"
    for tap, value in feats.items():
        assert (value - ref[f"feat.{tap}"]).abs().max().item() <= ATOL * max(1.0, ref[f"feat.{tap}"].abs().max().item())
    with torch.no_grad():
        assert torch.equal(model(seg), out)  # forward == forward_with_features' output
    if "out_train" in ref:
        model.train()
        with torch.no_grad():
            out_train = model(seg)
        assert (out_train[:, :, ::s, ::s] - ref["out_train"]).abs().max().item() <= ATOL


def test_normal_and_more_differ_and_space_chooses(tmp_path):
    """The same tensors run as 'more' (default) or 'normal' (from the space): only 'normal' is CAT's output here."""
    state, seg, ref, meta = reference("normal_leaky")
    path = tmp_path / "G.safetensors"
    save_file(state, str(path))
    as_more = load_generator(path)
    assert as_more.arch.num_upsampling_layers == "more"
    assert any("assumed 'more'" in n for n in as_more.notes)
    with pytest.raises(NasPruneError, match="multiples of 64"):
        as_more.build()(seg)  # 32x64 is not a multiple of 64
    as_normal = load_generator(path, space=space_for(meta))
    assert as_normal.arch.num_upsampling_layers == "normal" and not as_normal.notes


def test_identity_blocks_drop_idle_modulation(tmp_path):
    """more_relu: up_1..up_3 have no branches (CAT keeps their SPADE); they become shortcut-only blocks."""
    state, _, _, meta = reference("more_relu")
    loaded = load_generator_from(state, tmp_path, space_for(meta))
    names = loaded.arch.block_names
    idle = [n for n, b in zip(names, loaded.arch.blocks) if b.is_identity]
    assert idle == ["up_1", "up_2", "up_3"]
    assert any("never run" in n for n in loaded.notes)
    assert not any(k.startswith("up_2.spade.") for k in loaded.state_dict)
    assert "up_2.shortcut.1.conv.weight" in loaded.state_dict


def load_generator_from(state, tmp_path, space=None):
    path = tmp_path / "G.pth"
    torch.save(state, path)
    return load_generator(path, space=space)


@pytest.mark.parametrize("mode", ["more", "most"])
def test_teacher_arch_has_cats_keys_shapes_and_params(mode):
    """cat_teacher_arch(ngf=64) builds CAT's cityscapes teacher: same keys in the same order, same shapes."""
    ref = json.loads(gzip.decompress((DATA / "cat_spade_ngf64_shapes.json.gz").read_bytes()))[mode]
    model = build_generator(cat_teacher_arch(ngf=64, num_upsampling_layers=mode))
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == ref["shapes"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    if mode == "more":
        assert ref["params"] == 55_592_325  # the figure measured on CAT's teacher


def test_arch_json_round_trip_and_errors():
    arch = cat_teacher_arch(ngf=4, num_upsampling_layers="most", label_nc=10)
    data = arch.to_dict()
    assert data["family"] == "spade" and [b["name"] for b in data["blocks"]][-1] == "up_4"
    from nas_prune.arch import Arch

    assert Arch.from_dict(data) == arch  # the generic reader dispatches on "family"
    bad = json.loads(json.dumps(data))
    bad["blocks"][2]["spade_dw"] = [1, 2]
    with pytest.raises(NasPruneError, match=r"arch\.blocks\[2\]\.spade_dw: expected 3 values"):
        Arch.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["blocks"][0]["name"] = "up_0"
    with pytest.raises(NasPruneError, match=r"blocks\[0\]\.name: expected 'head_0'"):
        Arch.from_dict(bad)
    bad = dict(data, family="gaugan")
    with pytest.raises(NasPruneError, match="arch.family"):
        Arch.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["blocks"][1].update(res=[0, 0, 0], dw=[0, 0, 0])
    with pytest.raises(NasPruneError, match="never runs its modulation network"):
        Arch.from_dict(bad)


def test_taps_and_input_checks():
    arch = cat_teacher_arch(ngf=2, label_nc=5, num_upsampling_layers="normal")
    model = build_generator(arch).eval()
    assert tap_names(arch) == ["fc", "head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]
    with pytest.raises(NasPruneError, match="unknown feature layer 'block3'"):
        check_taps(arch, ["block3"])
    seg = torch.zeros(1, 5, 64, 96)
    seg[:, 0] = 1
    with torch.no_grad():
        out, feats = model.forward_with_features(seg, ["head_0", "G_middle_1", "up_1"])
    assert out.shape == (1, 3, 64, 96)
    assert feats["head_0"].shape == (1, 32, 2, 3) and feats["G_middle_1"].shape == (1, 32, 4, 6)
    assert feats["up_1"].shape == (1, 8, 16, 24)
    with pytest.raises(NasPruneError, match="multiples of 32"):
        model(torch.zeros(1, 5, 48, 64))


def test_bad_checkpoints_name_the_problem(tmp_path):
    state, _, _, meta = reference("normal_leaky")
    broken = dict(state)
    del broken["head_0.res_ops.0.1.conv.bias"]
    with pytest.raises(NasPruneError, match=r"missing keys: head_0\.res_ops\.0\.1\.conv\.bias"):
        load_generator_from(broken, tmp_path)
    extra = dict(state, **{"head_0.extra.weight": torch.zeros(1)})
    with pytest.raises(NasPruneError, match=r"unexpected keys: head_0\.extra\.weight"):
        load_generator_from(extra, tmp_path)
    gaugan = {"fc.weight": torch.zeros(4, 3, 3, 3), "head_0.conv_0.weight": torch.zeros(4, 4, 3, 3),
              "head_0.norm_0.mlp_shared.0.weight": torch.zeros(2, 3, 3, 3), "conv_img.weight": torch.zeros(3, 4, 3, 3)}
    with pytest.raises(NasPruneError, match="not a point of CAT's inception SPADE space"):
        load_generator_from(gaugan, tmp_path)
    from nas_prune.space import load_space

    with pytest.raises(NasPruneError, match="SPADE generator in a CycleGAN/pix2pix space"):
        load_generator(_save(state, tmp_path), space=load_space(Path("cat_inception")))


def _save(state, tmp_path):
    path = tmp_path / "S.pth"
    torch.save(state, path)
    return path


def test_spade_space_yaml_is_strict(tmp_path):
    from nas_prune.space import load_space

    space = load_space("cat_spade_cityscapes")
    assert isinstance(space, SpadeSpace) and space.teacher_arch() == cat_teacher_arch(ngf=64)
    good = (Path(__file__).parent.parent / "search_spaces" / "cat_spade_cityscapes.yaml").read_text()
    cases = {
        "ngf: 64": ("ngf: 64\nnblocks: 9", "nblocks: unknown key"),
        "num_upsampling_layers: more": ("num_upsampling_layers: many", "num_upsampling_layers: 'many' is not one of"),
        "activation: leaky_relu": ("activation: gelu", "activation: 'gelu' is not one of"),
        "channels: null": ("channels: [12, 12]", "channels: expected one integer >= 0 per kernel size"),
        "family: spade": ("family: stylegan", "family: 'stylegan' is not one of inception, spade"),
    }
    for old, (new, message) in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text(good.replace(old, new))
        with pytest.raises(NasPruneError, match=message):
            load_space(path)
