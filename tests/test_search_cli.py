"""`nas-prune search` end to end: output folder, --json, errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.export import load_student, read_student, reslice
from nas_prune.load import load_generator
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.outputs import MANIFEST
from nas_prune.search import default_out_dir, search
from nas_prune.shipped import shipped_dir

runner = CliRunner()
SPACES = shipped_dir("search_spaces")

TEACHER = Arch(
    input_nc=3, output_nc=3, stem=(16, 16, 16), head=(16, 16),
    blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 3,
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "tiny_G.pth"
    torch.save(randomize_(build_generator(TEACHER), 3).state_dict(), path)
    return path


def teacher_macs(convention="fvcore"):
    return count_macs(TEACHER, input_size=32, convention=convention)


def test_search_writes_student_folder_and_prints_table(teacher_file, tmp_path):
    target = teacher_macs("paper") // 2
    out = tmp_path / "s"
    result = invoke("search", "--teacher", teacher_file, "--target-macs", f"{target / 1e6:.4f}M",
                    "--convention", "paper", "--input-size", "32", "--min-channels", "4", "--out", out)
    assert result.exit_code == 0, result.output
    for text in ("block 1", "stem", "head", "target", "MACs (fvcore)", "MACs (paper)", "params", "ratio",
                 "fvcore check", "time"):
        assert text in result.output, text
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "arch.json", "student.safetensors", "summary.md"]
    arch, sd, doc = read_student(out)
    assert doc["macs"]["paper"] <= round(target / 100) * 100  # the parsed 4-decimal M target
    assert doc["provenance"]["criterion"] == "gamma" and doc["provenance"]["min_channels"] == 4
    # Re-slicing the teacher with arch.json's kept indices gives the exported weights.
    again = reslice(load_generator(teacher_file).state_dict, out / "arch.json")
    assert all(torch.equal(again[k], sd[k]) for k in sd)
    profiled = invoke("profile", out / "arch.json", "--input-size", "32", "--json")
    assert profiled.exit_code == 0, profiled.output
    assert json.loads(profiled.stdout)["macs"]["paper"] == doc["macs"]["paper"]


def test_search_json_output_only(teacher_file, tmp_path):
    target = teacher_macs() * 6 // 10
    result = invoke("search", "--teacher", teacher_file, "--target-macs", str(target), "--input-size", "32",
                    "--min-channels", "4", "--round-to", "4", "--out", tmp_path / "j", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == {"macs": target, "convention": "fvcore"}
    assert report["student"]["macs"]["fvcore"] <= target
    assert report["student"]["measured_fvcore"] == report["student"]["macs"]["fvcore"]
    assert 0 <= report["gap"] < 0.2
    arch = report["student"]["arch"]
    assert all(w % 4 == 0 for w in arch["stem"] + arch["head"])
    assert report["compression"] == pytest.approx(teacher_macs() / report["student"]["macs"]["fvcore"])


def test_target_equal_to_teacher_keeps_teacher_outputs(teacher_file, tmp_path):
    out = tmp_path / "same"
    result = invoke("search", "--teacher", teacher_file, "--target-macs", teacher_macs(), "--input-size", "32",
                    "--out", out, "--verify", "off")
    assert result.exit_code == 0, result.output
    assert "nothing pruned" in result.output
    student, teacher = load_student(out), load_generator(teacher_file).build()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(student(x), teacher(x))


def _assert_user_error(result, *fragments, out=None):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_target_above_teacher_is_an_error(teacher_file, tmp_path):
    out = tmp_path / "x"
    result = invoke("search", "--teacher", teacher_file, "--target-macs", teacher_macs() + 1, "--input-size", "32",
                    "--out", out)
    _assert_user_error(result, "above the teacher's", f"{teacher_macs():,}", out=out)


def test_target_below_floor_is_an_error(teacher_file, tmp_path):
    out = tmp_path / "x"
    result = invoke("search", "--teacher", teacher_file, "--target-macs", "10K", "--input-size", "32", "--out", out)
    _assert_user_error(result, "below the smallest reachable student", "stem/head at 16 channels", out=out)


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--target-macs", "lots"], ["'lots'", "2.6G"]),
        (["--target-macs", "1M", "--convention", "flops"], ["unknown MACs convention 'flops'"]),
        (["--target-macs", "1M", "--input-size", "30"], ["divisible by 4"]),
        (["--target-macs", "1M", "--importance", "taylor"], ["unknown importance criterion"]),
        (["--target-macs", "1M", "--verify", "maybe"], ["unknown verify mode"]),
        (["--target-macs", "1M", "--space", SPACES / "resnet_9blocks.yaml"], ["does not fit search space"]),
    ],
)
def test_bad_options_are_one_line_errors(teacher_file, tmp_path, args, fragments):
    out = tmp_path / "x"
    size = [] if "--input-size" in args else ["--input-size", "32"]
    result = invoke("search", "--teacher", teacher_file, "--out", out, *size, *args)
    _assert_user_error(result, *fragments, out=out)


def test_missing_teacher_and_existing_output(teacher_file, tmp_path):
    _assert_user_error(invoke("search", "--teacher", tmp_path / "nope.pth", "--target-macs", "1M"), "not found")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("search", "--teacher", teacher_file, "--target-macs", "2M", "--input-size", "32", "--out", out)
    _assert_user_error(result, "output folder exists", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_malformed_arch_json_through_profile(tmp_path):
    (tmp_path / "arch.json").write_text(json.dumps({"format": "nas-prune-arch", "version": 3, "arch": {}}))
    _assert_user_error(invoke("profile", tmp_path / "arch.json"), "version", "not supported")
    (tmp_path / "arch.json").write_text(json.dumps({"format": "nas-prune-arch", "version": 1,
                                                   "arch": {**TEACHER.to_dict(), "norm": "layer"}}))
    _assert_user_error(invoke("profile", tmp_path), "arch: norm")


def test_library_search_activation_with_calibration_folder(teacher_file, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    monkeypatch.chdir(tmp_path)
    target = teacher_macs() // 2
    result = search(teacher=teacher_file, target_macs=target, input_size=32, min_channels=4,
                    importance="activation", calib_data=images, calib_images=2, verify="full")
    assert result.out == default_out_dir(teacher_file, target, "fvcore")
    assert result.out.parts[:2] == ("runs", "search") and result.out.name.startswith("tiny_G-")
    assert (tmp_path / result.out / "arch.json").is_file()
    assert result.criterion == "activation" and result.reached <= target
    assert result.calibration == f"2 images from {images}"
    assert result.measured_fvcore == result.macs["fvcore"] and result.traced_size == (32, 32)


def test_default_out_dir_names():
    assert default_out_dir("models/horse2zebra.pth", 2_600_000_000, "paper").as_posix() == "runs/search/horse2zebra-2.6G-paper"
    assert default_out_dir("G.pth", 1_000_000_000, "fvcore").name == "G-1G-fvcore"
    assert default_out_dir("G.pth", 5_650_000, "fvcore").name == "G-5.65M-fvcore"


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["paper", "fvcore"])
def test_cat_ngf64_teacher_2p6g_end_to_end(tmp_path, convention):
    """The issue's case with the fvcore check on the built 9-block ngf 64 student."""
    from nas_prune.space import load_space

    arch = load_space(SPACES / "cat_inception.yaml").teacher_arch()
    model = build_generator(arch)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    torch.save(model.state_dict(), tmp_path / "cat.pth")
    result = search(teacher=tmp_path / "cat.pth", target_macs="2.6G", convention=convention,
                    out=tmp_path / "out", space=SPACES / "cat_inception.yaml")
    assert 0 <= 2.6e9 - result.reached < 0.005 * 2.6e9
    assert result.measured_fvcore == result.macs["fvcore"]
