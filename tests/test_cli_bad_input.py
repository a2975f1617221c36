"""Bad input over the CLI: exit code 2, exactly one ``error:`` line, no traceback, and every
file that existed before the command unchanged (nothing written, nothing half-written).

One test per category of the reliability checklist: results that would be silently wrong,
inputs that used to end in a traceback, and messages that must point at the fix.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.model import build_generator

# k = 5 branches with reflect padding: the generator needs inputs of at least 12 x 12
ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 8, 16), blocks=(Block(res=(2, 2, 2), dw=(2, 2, 2)),) * 2, head=(8, 8))
TARGET = 2_000_000  # fvcore MACs at 32x32; the teacher has 3.3M


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fails_cleanly(root: Path, args: list, *, says: str | list[str]) -> str:
    """Run the CLI; assert exit 2, one ``error:`` line holding ``says``, no traceback, ``root`` unchanged."""
    before = _snapshot(root)
    result = CliRunner().invoke(app, [str(a) for a in args])
    out = result.output
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (args, out, result.exception)
    assert len(errors) == 1, (args, out)
    assert "Traceback" not in out, out
    for text in [says] if isinstance(says, str) else says:
        assert text in errors[0], (text, errors[0])
    assert _snapshot(root) == before, f"{args}: files changed"
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher, its pruned student, a paired dataset and an interrupted distillation run."""
    from nas_prune.distill import distill
    from nas_prune.search import search

    root = tmp_path_factory.mktemp("bad-input")
    torch.manual_seed(0)
    teacher = randomize_(build_generator(ARCH)).eval()
    torch.save(teacher.state_dict(), root / "t.pth")
    search(teacher=root / "t.pth", target_macs=TARGET, input_size=32, min_channels=4, out=root / "S", verify="off")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        (root / "data" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(root / "data" / split / f"{i}.png")

    def stop(step, losses):
        raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted"):
        distill(teacher=root / "t.pth", student=root / "S", data=root / "data", out=root / "run", mode="aligned",
                epochs=1, epochs_decay=1, batch_size=2, load_size=32, crop_size=32, ndf=8, d_layers=2, workers=0,
                progress=False, on_step=stop)
    return root


def _variant(world: Path, name: str, change) -> Path:
    state = torch.load(world / "t.pth", weights_only=True)
    change(state)
    torch.save(state, world / name)
    return world / name


# ----------------------------------------------------------------------------- silently wrong


def test_nothing_silently_wrong(world):
    no_block = _variant(world, "no-block.pth", lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("features.0.")])
    fails_cleanly(world, ["profile", no_block], says="missing keys: features.0.*")

    def poison(sd):
        sd["features.0.res_ops.1.4.weight"][0, 0, 0, 0] = float("nan")

    nan = _variant(world, "nan.pth", poison)
    fails_cleanly(world, ["search", "--teacher", nan, "--target-macs", "2M", "--input-size", "32",
                          "--out", world / "never"], says=["non-finite", "features.0.res_ops.1.4.weight"])

    other = world / "other-format"
    shutil.copytree(world / "S", other)
    doc = (other / "arch.json").read_text().replace('"nas-prune-arch"', '"my-arch"')
    (other / "arch.json").write_text(doc)
    fails_cleanly(world, ["evaluate", other, "--data", world / "data", "--crop-size", "32"],
                  says="format: expected 'nas-prune-arch', got 'my-arch'")

    for args in (["evaluate", world / "run" / "final", "--data", world / "data", "--crop-size", "32"],
                 ["export", world / "run" / "final", "--out", world / "x.onnx", "--input-size", "32"]):
        fails_cleanly(world, args, says=["not a finished result", "was interrupted", "--resume"])

    fails_cleanly(world, ["evaluate", f"={world / 'S'}", "--data", world / "data"], says="empty NAME")

    other_teacher = _variant(world, "t2.pth", lambda sd: sd["up_sampling.7.bias"].add_(1.0))
    fails_cleanly(world, ["distill", "--teacher", other_teacher, "--student", world / "S", "--data", world / "data",
                          "--out", world / "run", "--resume"], says="resume: the teacher differs")
    more = world / "data2"
    shutil.copytree(world / "data", more)
    shutil.copy(more / "train" / "0.png", more / "train" / "4.png")
    fails_cleanly(world, ["distill", "--teacher", world / "t.pth", "--student", world / "S", "--data", more,
                          "--out", world / "run", "--resume"], says="resume: the data differ")


# ----------------------------------------------------------------------------- no tracebacks


def test_no_tracebacks(world, monkeypatch):
    t, s, data = world / "t.pth", world / "S", world / "data"
    fails_cleanly(world, ["search", "--teacher", t, "--target-macs", "1e400", "--out", world / "x"],
                  says="not a finite number")
    fails_cleanly(world, ["search", "--teacher", t, "--target-macs", "2M", "--input-size", "4", "--verify", "full",
                          "--out", world / "x"], says=["--input-size 4x4 is too small", ">= 12"])
    fails_cleanly(world, ["export", t, "--out", world / "t.onnx", "--input-size", "8"], says=">= 12")
    fails_cleanly(world, ["distill", "--teacher", t, "--student", s, "--data", data, "--mode", "aligned",
                          "--crop-size", "8", "--load-size", "8", "--out", world / "d8"], says="--crop-size 8x8 is too small")
    fails_cleanly(world, ["train-teacher", "--data", data, "--out", world / "tt", "--crop-size", "32", "--load-size", "32",
                          "--d-layers", "9", "--ngf", "4", "--n-blocks", "1"], says=["PatchGAN", ">= 1536"])
    fails_cleanly(world, ["export", t, "--out", world / "t.onnx", "--opset", "3"], says="--opset 3")
    fails_cleanly(world, ["export", t, "--out", world / "t.onnx", "--input-size", "400000"], says="needs about")
    fails_cleanly(world, ["profile", t, "--input-size", "400000", "--measure"], says="needs about")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the onnx extra were not installed
    fails_cleanly(world, ["export", t, "--out", world / "t.onnx", "--input-size", "32"],
                  says="pip install 'nas-prune[onnx]'")


def test_out_of_memory_at_the_boundary_is_one_line(world, monkeypatch):
    import nas_prune.model as model

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(model, "check_forward_memory", lambda *a, **k: None)
    monkeypatch.setattr(model.Generator, "forward", oom)
    fails_cleanly(world, ["export", world / "t.pth", "--out", world / "t.onnx", "--input-size", "32"],
                  says="out of memory")


# ----------------------------------------------------------------------------- messages


def test_messages_point_at_the_fix(world):
    t, s, data = world / "t.pth", world / "S", world / "data"
    branch = _variant(world, "no-branch-key.pth", lambda sd: sd.pop("features.1.res_ops.2.1.0.weight"))
    fails_cleanly(world, ["profile", branch], says="missing keys: features.1.res_ops.2.1.0.weight")
    fails_cleanly(world, ["train-teacher", "--data", data, "--out", world / "tt", "--objective", "cyclegan"],
                  says=["--objective pix2pix"])
    fails_cleanly(world, ["distill", "--teacher", t, "--student", s, "--data", t, "--mode", "aligned",
                          "--out", world / "d"], says="is a file, not a dataset folder")
    fails_cleanly(world, ["distill", "--teacher", t, "--student", t, "--data", data, "--mode", "aligned",
                          "--out", world / "d"], says="is a checkpoint, not a student folder")
    fails_cleanly(world, ["evaluate", s, "--data", data, "--max-images", "0"], says="--max-images must be >= 1")
