"""arch.json files written before the families redesign still load, with identical outputs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.export import load_student, read_student, reslice
from nas_prune.load import load_generator

LEGACY = Path(__file__).parent / "data" / "legacy"


def test_legacy_students_load_with_identical_outputs():
    """Made and checked with one torch thread: with more, the order of float additions (and so
    the last bits) may differ between runs of the same code."""
    ref = load_file(str(LEGACY / "reference_outputs.safetensors"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("inception", "spade"):
            arch, state, _ = read_student(LEGACY / f"{name}_student")
            assert arch.family == name and state is not None
            with torch.no_grad():
                out = load_student(LEGACY / f"{name}_student")(ref[f"{name}_input"])
            diff = (out - ref[f"{name}_output"]).abs().max()
            assert torch.equal(out, ref[f"{name}_output"]), f"{name}: max |diff| {diff}"
    finally:
        torch.set_num_threads(threads)


def test_legacy_student_reslices_to_the_same_weights():
    teacher = load_generator(LEGACY / "inception_teacher.pth")
    _, state, doc = read_student(LEGACY / "inception_student")
    again = reslice(teacher.state_dict, doc)
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)


def test_legacy_students_profile(tmp_path):
    for name in ("inception_student", "spade_student"):
        result = CliRunner().invoke(app, ["profile", str(LEGACY / name)])
        assert result.exit_code == 0, result.output
        assert "MACs (fvcore)" in result.output
