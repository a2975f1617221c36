"""Teacher training: pix2pix and CycleGAN objectives, teacher file, exact resume."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from nas_prune.errors import NasPruneError
from nas_prune.load import load_generator
from nas_prune.train_teacher import TeacherConfig, _ImagePool, train_teacher

TINY = dict(ngf=4, n_blocks=1, ndf=8, d_layers=2, epochs=1, epochs_decay=1, load_size=20, crop_size=16, workers=0, progress=False)


def _images(folder, n, size, rng, pair=False):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size * (2 if pair else 1), 3), dtype=np.uint8)).save(folder / f"{i}.png")


# pix2pix teacher training runs (and its teacher file is loaded back) in tests/test_demo_recipe.py.


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    rng = np.random.default_rng(0)
    _images(root / "train", 4, 16, rng, pair=True)
    _images(root / "test", 2, 16, rng, pair=True)
    return root


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("unaligned")
    rng = np.random.default_rng(1)
    for split in ("trainA", "trainB", "testA", "testB"):
        _images(root / split, 4, 16, rng)
    return root


def test_cyclegan_trains_both_generators_and_resumes_exactly(tmp_path, unaligned):
    opts = dict(objective="cyclegan", batch_size=2, pool_size=2, **TINY)
    straight = train_teacher(data=unaligned, out=tmp_path / "a", **opts)
    assert straight.step == 4 and straight.finished
    assert (tmp_path / "a" / "teacher_BtoA.safetensors").is_file()
    g_a = load_generator(straight.teacher)
    assert g_a.arch.norm == "instance"

    def stop_at_3(step, losses):
        assert {"g_gan", "cycle", "idt", "d_a", "d_b"} <= set(losses)
        if step == 3:  # a real SIGTERM (docker stop, Slurm): stops after this step with a checkpoint
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.warns(UserWarning, match="interrupted at step 3"):
        first = train_teacher(data=unaligned, out=tmp_path / "b", on_step=stop_at_3, **opts)
    assert first.interrupted and first.step == 3 and first.signal == signal.SIGTERM
    from nas_prune.runstate import read_status

    assert read_status(tmp_path / "b")["reason"] == "SIGTERM"
    with pytest.raises(NasPruneError, match="already holds a run"):
        train_teacher(data=unaligned, out=tmp_path / "b", **opts)
    with pytest.raises(NasPruneError, match="resume: lambda_cycle"):
        train_teacher(data=unaligned, out=tmp_path / "b", resume=True, **{**opts, "lambda_cycle": 5.0})
    second = train_teacher(data=unaligned, out=tmp_path / "b", resume=True, **opts)
    assert second.step == 4 and second.finished
    for name in ("teacher.safetensors", "teacher_BtoA.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_image_pool_mixes_history():
    pool = _ImagePool(2, seed=0)
    first = torch.zeros(2, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling up: returned as given
    seen = torch.cat([pool.query(torch.full((2, 1, 1, 1), float(i))) for i in range(1, 20)]).flatten()
    assert (seen < seen.max()).any()  # some older images came back
    assert torch.equal(_ImagePool(0, seed=0).query(first + 1), first + 1)


def test_config_errors(aligned):
    with pytest.raises(NasPruneError, match="objective: 'stylegan'"):
        TeacherConfig(objective="stylegan")
    with pytest.raises(NasPruneError, match="batch_size: must be >= 2 for pix2pix"):
        TeacherConfig(batch_size=1)
    assert TeacherConfig(objective="cyclegan", batch_size=1).mode == "unaligned"
    with pytest.raises(NasPruneError, match="colour: unknown option"):
        TeacherConfig.from_dict({"colour": 1})
    with pytest.raises(NasPruneError, match=r" has the aligned layout \(train/, test/\) but --objective is cyclegan; "
                                            r"use --objective pix2pix") as err:
        train_teacher(data=aligned, out=aligned / "x", objective="cyclegan", batch_size=2, **TINY)
    assert "--mode" not in str(err.value)


def test_train_teacher_cli(tmp_path, unaligned):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    args = ["train-teacher", "--data", str(unaligned), "--out", str(tmp_path / "run"), "--ngf", "4", "--n-blocks", "1",
            "--epochs", "1", "--epochs-decay", "0", "--batch-size", "2", "--load-size", "20", "--crop-size", "16",
            "--ndf", "8", "--d-layers", "2", "--workers", "0", "--json"]
    result = CliRunner().invoke(app, [*args, "--objective", "pix2pix"])
    assert result.exit_code == 2 and "has the unaligned layout" in result.output
    result = CliRunner().invoke(app, [*args, "--objective", "cyclegan"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.output)
    assert info["step"] == 2 and info["finished"] and load_generator(info["teacher"]).arch.stem == (4, 8, 16)
