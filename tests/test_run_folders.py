"""Run folders: a failed run leaves nothing half-written, nothing is written into an input, and the
messages a newcomer meets point at the fix (a run folder's final/, a MACs target without a unit)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import distill
from nas_prune.model import build_generator

T_ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(4,), dw=(4,)),) * 2, head=(16, 8),
              res_kernel_sizes=(3,), dw_kernel_sizes=(3,))
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2,), dw=(2,))] * 2, head=(8, 4))
FAST = dict(mode="aligned", epochs=1, epochs_decay=1, batch_size=4, load_size=36, crop_size=32, workers=0, ndf=8,
            progress=False, log_every=1)
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights", "ignore:interrupted at step")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from safetensors.torch import save_file

    from nas_prune.export import FORMAT, VERSION, write_student

    root = tmp_path_factory.mktemp("world")
    data = make_demo_dataset(root / "data", size=32, n_train=8, n_test=4, seed=0)
    torch.manual_seed(0)
    save_file(build_generator(T_ARCH).state_dict(), str(root / "t.safetensors"))
    write_student(root / "S", document={"format": FORMAT, "version": VERSION, "arch": S_ARCH.to_dict()},
                  state_dict=build_generator(S_ARCH).state_dict())
    return {"root": root, "data": data, "teacher": root / "t.safetensors", "student": root / "S"}


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _fail_at_step_1(step, losses):
    raise RuntimeError("a failure in the first step")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(world, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="first step"):
        distill(teacher=world["teacher"], student=world["student"], data=world["data"], out=out, on_step=_fail_at_step_1,
                **FAST)
    assert not out.exists()  # no config.json, status.json, tb/, log.jsonl, nor the folder it created

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(RuntimeError):
        distill(teacher=world["teacher"], student=world["student"], data=world["data"], out=mine,
                on_step=_fail_at_step_1, **FAST)
    assert _files(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "the user's"


def test_a_run_with_a_checkpoint_keeps_it_and_says_failed(world, tmp_path):
    out = tmp_path / "run"

    def fail_at_3(step, losses):
        if step == 3:  # after the end-of-epoch checkpoint of step 2
            raise RuntimeError("a failure later on")

    with pytest.raises(RuntimeError):
        distill(teacher=world["teacher"], student=world["student"], data=world["data"], out=out, on_step=fail_at_3,
                **FAST)
    from nas_prune.runstate import read_status

    status = read_status(out)
    assert status["state"] == "failed" and status["reason"] == "RuntimeError: a failure later on"
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "config.json").is_file()
    res = CliRunner().invoke(app, ["export", str(out / "final"), "--out", str(tmp_path / "g.onnx")])
    assert res.exit_code == 2 and "stopped on an error (RuntimeError: a failure later on)" in res.output, res.output


@pytest.mark.parametrize("command", ["export", "distill"])
def test_nothing_is_written_into_an_input_folder(world, command):
    s = world["student"]
    before = {p.name: p.read_bytes() for p in s.iterdir()}
    args = {"export": ["export", str(s), "--out", str(s), "--input-size", "32"],
            "distill": ["distill", "--teacher", str(world["teacher"]), "--student", str(s), "--data", str(world["data"]),
                        "--out", str(s), "--mode", "aligned", "--threads", "1"]}[command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{s} is an input of this command" in errors[0], res.output
    assert {p.name: p.read_bytes() for p in s.iterdir()} == before  # manifest included


def test_profile_of_a_run_folder_points_at_its_result(world, tmp_path):
    out = tmp_path / "run"
    distill(teacher=world["teacher"], student=world["student"], data=world["data"], out=out, **FAST)
    res = CliRunner().invoke(app, ["profile", str(out), "--input-size", "32"])
    assert res.exit_code == 2 and f"{out} is a training run folder: give its result ({out / 'final'})" in res.output
    res = CliRunner().invoke(app, ["profile", str(out / "final"), "--input-size", "32"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("value", ["2.6", "750"])
def test_a_macs_target_without_a_unit_asks_for_one(world, value):
    res = CliRunner().invoke(app, ["search", "--teacher", str(world["teacher"]), "--target-macs", value,
                                   "--input-size", "32", "--out", str(world["root"] / "never")])
    assert res.exit_code == 2 and f"did you mean {value}G?" in res.output, res.output
    assert not (world["root"] / "never").exists()
