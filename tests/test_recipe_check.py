"""validate / run check everything a run needs before its first stage, naming recipe keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.recipe import load_recipe
from nas_prune.recipe_run import run_recipe
from nas_prune.recipe_check import as_recipe_keys, check_recipe


def _images(folder, n, size=32, seed=0, width=1):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, width * size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def h2z(tmp_path_factory):
    """Unpaired data and a pytorch-CycleGAN-and-pix2pix ResNet teacher (ngf 16, 9 blocks)."""
    from test_load import classic_resnet

    root = tmp_path_factory.mktemp("h2z")
    for split, n in (("trainA", 3), ("trainB", 3), ("testA", 2), ("testB", 2)):
        _images(root / "data" / split, n)
    torch.manual_seed(0)
    torch.save(classic_resnet(ngf=16, n_blocks=9).state_dict(), root / "latest_net_G_A.pth")
    aligned = root / "aligned"
    for split in ("train", "test"):
        _images(aligned / split, 2, width=2)
    return {"root": root, "data": root / "data", "teacher": root / "latest_net_G_A.pth", "aligned": aligned}


def _sets(h2z, *extra):
    base = [f"data={h2z['data']}", f"teacher={h2z['teacher']}", "distill.batch_size=2", "evaluate.inception=null",
            "evaluate.save_real_stats=false"]
    return [*base, *extra]


def _validate(*overrides):
    args = ["validate", "horse2zebra"]
    for o in overrides:
        args += ["--set", o]
    return CliRunner().invoke(app, args)


def test_horse2zebra_takes_a_resnet_layout_teacher(h2z, tmp_path):
    result = _validate(*_sets(h2z))
    assert result.exit_code == 0, result.output
    assert "checked teacher: stem 16/32/64 | 9 blocks | head 32/16" in result.output
    assert "checked data:" in result.output and "(unaligned)" in result.output
    # the prune stage runs on it: the space follows the teacher
    drop = ["distill=null", "baseline=null", "evaluate=null", "export=null", "report=null"]
    res = run_recipe("horse2zebra", overrides=[*_sets(h2z)[:2], *drop, f"run_dir={tmp_path / 'run'}",
                                               "prune.target_macs=1.5G"], log=lambda s: None)
    assert res.outcome("prune").summary["macs"]["paper"] <= 1.5e9
    # pinning CAT's space is what stopped ResNet teachers: the error says so and how to undo it
    result = _validate(*_sets(h2z), "space=cat_inception")
    assert result.exit_code == 2
    assert "teacher:" in result.output and "does not fit search space 'cat_inception'" in result.output
    assert "--set space=null" in result.output


@pytest.mark.parametrize("recipe", ["map2aerial", "cityscapes"])
def test_pix2pix_recipes_take_a_batch_norm_resnet_teacher(tmp_path, recipe):
    """pytorch-CycleGAN-and-pix2pix pix2pix with --netG resnet_9blocks --norm batch (running stats, affine)."""
    from test_load import classic_resnet

    for split in ("train", "val"):  # the pix2pix maps / cityscapes layout
        _images(tmp_path / "data" / split, 2, width=2)
    torch.manual_seed(0)
    torch.save(classic_resnet(ngf=16, n_blocks=9, norm=torch.nn.BatchNorm2d).state_dict(), tmp_path / "latest_net_G.pth")
    result = CliRunner().invoke(app, ["validate", recipe, "--set", f"data={tmp_path / 'data'}",
                                      "--set", f"teacher={tmp_path / 'latest_net_G.pth'}",
                                      "--set", "evaluate.inception=null", "--set", "evaluate.save_real_stats=false",
                                      "--set", "distill.batch_size=2", "--set", "prune.target_macs=1G"],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "checked teacher: stem 16/32/64 | 9 blocks | head 32/16" in result.output
    assert "checked data:" in result.output and "(aligned)" in result.output
    # off a terminal (here a pipe) nothing is re-wrapped: one line per stage, no trailing spaces
    lines = result.output.splitlines()
    assert all(line.startswith("  ") for line in lines[1:]) and not any(line.startswith("      ") for line in lines)
    assert all(line == line.rstrip() for line in lines)
    stages = [line for line in lines if line.startswith("  distill: ")]
    assert len(stages) == 1 and len(stages[0]) > 80 and "batch_size=2" in stages[0]


def test_only_the_inception_placeholder_left(h2z):
    result = _validate(*_sets(h2z)[:3], "evaluate.save_real_stats=false")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: horse2zebra: stages.evaluate.inception: replace the placeholder "
        "'<pt_inception-2015-12-05-6726825d.pth (FID Inception weights, local path)>' (--set evaluate.inception=...)")


@pytest.mark.parametrize("extra, message", [
    (["data=nowhere"], "data: nowhere is not a folder"),
    (["teacher=nowhere.pth"], "teacher: nowhere.pth not found"),
    (["evaluate.inception=nowhere.pth"], "stages.evaluate.inception: Inception weights not found: nowhere.pth"),
    (["evaluate.save_real_stats=true"], "stages.evaluate.save_real_stats: needs stages.evaluate.inception"),
    (["evaluate.real_stats=r.npz"], "stages.evaluate.real_stats: needs stages.evaluate.inception"),
    (["distill.amp=fp16", "distill.device=cpu"], "stages.distill.amp: fp16 needs a CUDA device"),
    (["distill.distill_taps=[stem, block12]"], "stages.distill.distill_taps: unknown feature layer 'block12'"),
    (["prune.target_macs=100G"], "stages.prune.target_macs: 100.000G MACs (paper) is not below the teacher's"),
    (["distill.batch_size=8"], "data: the train split has 3 images, fewer than one batch of stages.distill.batch_size 8"),
    (["distill.teacher_discriminator=d.pth"], "stages.distill.teacher_discriminator: d.pth not found"),
    (["prune.calib_data=nowhere"], "stages.prune.calib_data: nowhere is not a folder"),
])
def test_each_setting_that_would_stop_the_run(h2z, extra, message):
    result = _validate(*_sets(h2z), *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert message in result.output, result.output
    # one problem: one line; several: a line that counts them, then one line per problem
    assert len(lines) == 1 or (lines[0].endswith(f"{len(lines) - 1} settings would stop the run:")
                               and all(line.startswith("  - ") for line in lines[1:])), result.output
    assert "--inception" not in result.output and "--batch-size" not in result.output


def test_data_in_the_other_layout_names_the_mode_key(h2z):
    result = _validate(*_sets(h2z)[1:], f"data={h2z['aligned']}")
    assert result.exit_code == 2
    assert "has the aligned layout (train/, test/) but stages.distill.mode is unaligned" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda(h2z):
    result = _validate(*_sets(h2z), "distill.device=cuda")
    assert result.exit_code == 2 and "stages.distill.device: cuda, but CUDA is not available" in result.output


def test_several_problems_on_one_line_and_run_stops_before_any_stage(h2z, tmp_path):
    r = load_recipe("horse2zebra", overrides=["data=nowhere", "teacher=none.pth", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(NasPruneError, match=r"^horse2zebra: 3 settings would stop the run: stages.evaluate.inception: "
                                            r"replace the placeholder .*; teacher: none.pth not found; "
                                            r"data: nowhere is not a folder$"):
        check_recipe(r)
    with pytest.raises(NasPruneError, match="3 settings would stop the run"):
        run_recipe(r, log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_flags_in_library_messages_become_recipe_keys():
    assert as_recipe_keys("need --inception PATH and --batch-size >= 2, not --frobnicate", "distill") == (
        "need stages.distill.inception PATH and stages.distill.batch_size >= 2, not --frobnicate")
    assert as_recipe_keys("pass --inception PATH", "evaluate") == "pass stages.evaluate.inception PATH"
