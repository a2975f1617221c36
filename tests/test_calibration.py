"""One calibration input (--calib-data) for activation importance and the Optuna scores."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.calibration import calibration_images
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.importance import compute_importance
from nas_prune.load import load_generator
from nas_prune.model import build_generator
from nas_prune.plan import plan_for_target, prunable_layers
from nas_prune.study import run_study, study_requested

GREY = Arch(input_nc=1, output_nc=1, stem=(8, 8, 8), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),), head=(8, 8))


@pytest.fixture
def folder(tmp_path) -> Path:
    """Six RGB images: three at the top level, three in a subfolder (read after them)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "calib"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        where = root if i < 3 else root / "sub"
        Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(where / f"{i}.png")
    (root / ".hidden.png").write_bytes(b"not read")
    return root


@pytest.fixture
def teacher_file(tmp_path, tiny_arch) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save(randomize_(build_generator(tiny_arch), seed=1).state_dict(), path)
    return path


def _expected(path: Path, mode: str, size: tuple[int, int]) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert(mode).resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32)
    t = torch.from_numpy(arr / 127.5 - 1.0)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def test_folder_order_train_split_and_grey(folder, tiny_arch):
    images, train, text = calibration_images(tiny_arch, source=folder, n_images=4, n_train=2, input_size=(16, 20))
    assert images.shape == (4, 3, 16, 20) and train.shape == (2, 3, 16, 20)
    assert text == f"4 images from {folder}"
    order = [folder / "0.png", folder / "1.png", folder / "2.png", folder / "sub" / "3.png"]
    for got, path in zip(images, order):
        assert torch.allclose(got, _expected(path, "RGB", (16, 20)), atol=1e-6)
    assert torch.allclose(train[1], _expected(folder / "sub" / "5.png", "RGB", (16, 20)), atol=1e-6)
    grey, none, _ = calibration_images(GREY, source=folder, n_images=5, n_train=3, input_size=(8, 8))
    assert grey.shape == (5, 1, 8, 8) and none is None  # one file left: too few to train on
    assert torch.allclose(grey[4], _expected(folder / "sub" / "4.png", "L", (8, 8)), atol=1e-6)


def test_folder_errors_name_the_option(folder, tiny_arch, tmp_path):
    with pytest.raises(NasPruneError, match=r"^--calib-data: .* has 6 image files, at least 7 .*--calib-images"):
        calibration_images(tiny_arch, source=folder, n_images=7)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    with pytest.raises(NasPruneError, match=r"^--calib-data: .*a\.png: cannot be read as an image"):
        calibration_images(tiny_arch, source=tmp_path / "bad", n_images=1)
    with pytest.raises(NasPruneError, match=r"^--calib-data: the teacher takes 2 channels"):
        calibration_images(dataclasses.replace(GREY, input_nc=2), source=folder, n_images=1)
    with pytest.raises(NasPruneError, match=r"^--calib-images must be >= 1, got 0"):
        calibration_images(tiny_arch, n_images=0)


def test_fallback_photos_then_noise(tiny_arch, monkeypatch):
    photos, train, text = calibration_images(GREY, n_images=3, n_train=2, input_size=(16, 16), seed=1)
    assert photos.shape == (3, 1, 16, 16) and train.shape == (2, 1, 16, 16)
    assert text == "3 crops of scikit-image's sample photos (no --calib-data given)"
    two = dataclasses.replace(GREY, input_nc=2)
    noise, _, text = calibration_images(two, n_images=3, input_size=(8, 8))
    assert noise.shape == (3, 2, 8, 8) and "the teacher takes 2 channels" in text
    monkeypatch.setitem(sys.modules, "skimage", None)
    noise, _, text = calibration_images(tiny_arch, n_images=3, input_size=(8, 8))
    assert noise.shape == (3, 3, 8, 8) and "scikit-image is not installed" in text


def test_activation_default_images_follow_the_policy(tiny_arch):
    sd = randomize_(build_generator(tiny_arch), seed=2).state_dict()
    default = compute_importance("activation", tiny_arch, sd)[1]
    images, _, _ = calibration_images(tiny_arch, input_size=(64, 64))
    explicit = compute_importance("activation", tiny_arch, sd, images=images)[1]
    assert default.keys() == explicit.keys()
    assert all(torch.equal(default[k], explicit[k]) for k in default)


def test_study_requested_names_the_option():
    assert study_requested(trials=None) is False
    assert study_requested(trials=3, score="finetune:5") is True
    for kw, name in ((dict(score="finetune:4"), "--score"), (dict(objectives="quality,latency"), "--objectives"),
                     (dict(score_size=32), "--score-size"), (dict(storage="sqlite:///x.db"), "--storage"),
                     (dict(study_name="s"), "--study-name"), (dict(pick=0), "--pick")):
        with pytest.raises(NasPruneError, match=f"^{name} needs --trials N$"):
            study_requested(trials=None, **kw)
    assert study_requested(trials=None, objectives=("quality",)) is False


def test_cli_one_option_for_activation_and_errors(teacher_file, folder, tmp_path):
    runner = CliRunner()
    base = ["search", "--teacher", str(teacher_file), "--target-macs", "2M", "--input-size", "32",
            "--min-channels", "4", "--verify", "off"]
    res = runner.invoke(app, [*base, "--importance", "activation", "--calib-data", str(folder),
                              "--calib-images", "5", "--out", str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["calibration"] == f"5 images from {folder}"
    res = runner.invoke(app, [*base, "--calib-data", str(folder), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "error: --calib-data is read by --importance activation" in res.output
    res = runner.invoke(app, [*base, "--importance", "activation", "--calib-data", str(folder), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "at least 8 are needed" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c").exists()
    res = runner.invoke(app, [*base, "--calibration", str(folder)])
    assert res.exit_code == 2 and "No such option" in res.output


def test_study_feeds_one_folder_to_activation_and_scores(teacher_file, folder, tmp_path):
    result = run_study(teacher=teacher_file, target_macs=2_000_000, trials=1, input_size=32, min_channels=4,
                       importance="activation", calib_data=folder, calib_images=3, latency_repeats=1,
                       device="cpu", out=tmp_path / "study", plot=False, verify="full")
    assert result.calibration == f"3 images from {folder}"
    assert result.export.measured_fvcore == result.export.macs["fvcore"] and result.export.traced_size == (32, 32)
    loaded = load_generator(teacher_file)
    images, _, _ = calibration_images(loaded.arch, source=folder, n_images=3, input_size=(32, 32))
    _, expected = compute_importance("activation", loaded.arch, loaded.state_dict, images=images)
    doc = json.loads((result.student_dir / "arch.json").read_text())
    assert doc["provenance"]["criterion"] == "activation"
    assert doc["provenance"]["study"]["calibration"] == str(folder.resolve())
    # trial 0 is the one-step solution of these very scores
    plan = plan_for_target(expected, loaded.arch, target_macs=2_000_000, convention="fvcore",
                           input_size=(32, 32), min_channels=4)
    assert result.one_step is not None
    assert result.one_step.widths == ",".join(str(plan.widths[l.name]) for l in prunable_layers(loaded.arch))


def test_study_checks_one_step_options_before_loading(tmp_path):
    missing = tmp_path / "no_such_teacher.pth"
    for kw, msg in ((dict(importance="bogus"), "unknown importance criterion 'bogus'"),
                    (dict(round_to=0), "--round-to must be >= 1"), (dict(verify="some"), "unknown verify mode"),
                    (dict(calib_images=1), "--calib-images must be >= 2")):
        with pytest.raises(NasPruneError, match=msg):
            run_study(teacher=missing, target_macs="2M", trials=1, out=tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()
