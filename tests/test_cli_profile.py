"""`nas-prune profile` and the one-line errors of the core, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.model import build_generator

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("space,fvcore,paper", [
    ("cat_inception", "36.428G MACs (fvcore)", "43.527G MACs (paper)"),
    ("resnet_9blocks", "49.682G MACs (fvcore)", "56.799G MACs (paper)"),
])
def test_profile_space_prints_both_conventions(space, fvcore, paper):
    result = invoke("profile", space)
    assert result.exit_code == 0, result.output
    assert fvcore in result.output and paper in result.output
    assert "block9" in result.output


def test_profile_json_is_machine_readable():
    result = invoke("profile", "resnet_9blocks", "--json", "--per-layer", "--input-size", "128x256")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["input_size"] == [128, 256]
    assert report["macs"]["fvcore"] == sum(layer["macs"] for layer in report["layers"])
    assert report["params"] == 11_378_179


def test_profile_checkpoint_with_measure(tmp_path, tiny_arch):
    torch.save(build_generator(tiny_arch).state_dict(), tmp_path / "t.pth")
    result = invoke("profile", tmp_path / "t.pth", "--measure", "--input-size", "32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["measured"]["fvcore"] == report["macs"]["fvcore"]
    assert report["measured"]["paper (torchprofile)"] == report["macs"]["paper"]


def _bad_inputs(tmp_path, tiny_arch):
    (tmp_path / "noise.pth").write_bytes(b"\x00\x01not a checkpoint at all" * 10)
    torch.save(build_generator(tiny_arch), tmp_path / "pickled.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    state = build_generator(tiny_arch).state_dict()
    state["down_sampling.4.weight"] = torch.zeros(12, 7, 3, 3)
    torch.save(state, tmp_path / "mismatch.pth")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    return {
        "missing": ([tmp_path / "nope.pth"], "model not found"),
        "not a checkpoint": ([tmp_path / "noise.pth"], "not a PyTorch checkpoint"),
        "pickled": ([tmp_path / "pickled.pth"], "refused to load pickled Python objects"),
        "unknown layout": ([tmp_path / "other.pth"], "unknown checkpoint layout (first keys: fc.weight)"),
        "shape mismatch": ([tmp_path / "mismatch.pth"], "shape mismatch: down_sampling.4.weight (12, 7, 3, 3)"),
        "bad yaml": ([tmp_path / "bad.yaml"], "not valid YAML at line"),
        "input size": (["cat_inception", "--input-size", "250"], "divisible by 4"),
        "convention": (["cat_inception", "--convention", "flops"], "unknown MACs convention"),
    }


@pytest.mark.parametrize("case", [
    "missing", "not a checkpoint", "pickled", "unknown layout", "shape mismatch", "bad yaml", "input size", "convention",
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, tiny_arch, case):
    args, message = _bad_inputs(tmp_path, tiny_arch)[case]
    result = invoke("profile", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_help_does_not_import_heavy_modules():
    code = "import sys; from nas_prune.cli import app; print(sorted(m for m in ('torch', 'fvcore', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version():
    from nas_prune import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
