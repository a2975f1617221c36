"""ONNX and TorchScript export match PyTorch; failures leave no file behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.deploy import export_generator
from nas_prune.errors import NasPruneError
from nas_prune.model import build_generator

from conftest import randomize_


def _student(norm: str) -> torch.nn.Module:
    arch = Arch(input_nc=3, output_nc=3, stem=(8, 12, 16),
                blocks=(Block(res=(4, 0, 4), dw=(4, 4, 0)), Block(res=(0, 0, 0), dw=(0, 0, 0)), Block(res=(0, 6, 0), dw=(0, 0, 5))),
                head=(12, 8), norm=norm)
    return randomize_(build_generator(arch), seed=1).eval()


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_onnx_matches_pytorch(tmp_path, norm):
    import onnxruntime as ort

    g = _student(norm)
    res = export_generator(g, out=tmp_path / "g.onnx", format="onnx", input_size=32)
    assert res.path.is_file() and res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
    assert res.checked == [(1, 32, 32), (2, 40, 48)]  # dynamic batch / height / width checked too
    # an independent run of the file at a third size
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 24, 36) * 2 - 1
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = g(x).numpy()
    assert got.shape == (3, 3, 24, 36)
    assert np.abs(got - ref).max() <= 1e-4


def test_torchscript_matches_pytorch(tmp_path):
    g = _student("instance")
    res = export_generator(g, out=tmp_path, format="torchscript", input_size=(32, 48))
    assert res.path == tmp_path / "generator.pt"
    assert res.max_abs_diff <= 1e-5
    loaded = torch.jit.load(str(res.path))
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), g(x), rtol=0, atol=1e-5)


def test_failed_check_leaves_no_file(tmp_path):
    g = _student("instance")
    with pytest.raises(NasPruneError, match="differs from PyTorch"):
        export_generator(g, out=tmp_path / "g.onnx", input_size=32, atol=1e-12)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NasPruneError, match="format 'tensorrt'"):
        export_generator(g, out=tmp_path / "g.x", format="tensorrt")
    with pytest.raises(NasPruneError):
        export_generator(g, out=tmp_path / "g.onnx", input_size=30)


def test_export_from_student_folder(tmp_path):
    from safetensors.torch import save_file

    from nas_prune.fileio import write_json

    g = _student("batch")
    folder = tmp_path / "student"
    folder.mkdir()
    write_json(folder / "arch.json", {"format": "nas-prune-arch", "version": 1, "arch": g.arch.to_dict()})
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(folder / "student.safetensors"))
    res = export_generator(folder, out=tmp_path / "out" / "s.pt", format="torchscript", input_size=16)
    assert res.max_abs_diff <= 1e-5 and res.file_bytes > 0


def test_export_cli(tmp_path):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    from nas_prune.export import FORMAT, VERSION, write_student

    g = _student("instance")  # its block 2 has no branch, so a bare state dict cannot describe it
    torch.save(g.state_dict(), tmp_path / "g.pth")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "g.pth"), "--out", str(tmp_path / "g.onnx")])
    assert result.exit_code == 2 and "missing keys: features.1.*" in result.output
    write_student(tmp_path / "s", document={"format": FORMAT, "version": VERSION, "arch": g.arch.to_dict()},
                  state_dict=g.state_dict())
    result = CliRunner().invoke(app, ["export", str(tmp_path / "s"), "--out", str(tmp_path / "g.onnx"),
                                      "--input-size", "32", "--json"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.output)
    assert info["max_abs_diff"] <= 1e-4 and info["format"] == "onnx"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "g.pth"), "--out", str(tmp_path / "x"), "--format", "tensorrt"])
    assert result.exit_code == 2 and result.output.strip() == (
        "error: format 'tensorrt' is not one of onnx, torchscript, tflite, executorch, ncnn, openvino, coreml")
