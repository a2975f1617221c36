"""Phone formats (OpenVINO, ncnn, ExecuTorch, Core ML, LiteRT) and int8 exports: each run in its own
runtime and compared with PyTorch; the instance-norm decomposition equals instance norm; errors
are one line and leave no file. Each exporter's test is skipped, with the reason, when its extra
is not installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.deploy import export_generator
from nas_prune.errors import NasPruneError
from nas_prune.model import build_generator


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def needs(*names: str, extra: str):
    missing = [n for n in names if not _has(n)]
    return pytest.mark.skipif(bool(missing), reason=f"the {extra} extra is not installed ({', '.join(missing)})")


def _student(norm: str = "instance", affine: bool = True) -> torch.nn.Module:
    arch = Arch(input_nc=3, output_nc=3, stem=(8, 12, 16),
                blocks=(Block(res=(4, 0, 4), dw=(4, 4, 0)), Block(res=(0, 0, 0), dw=(0, 0, 0)),
                        Block(res=(0, 6, 0), dw=(0, 0, 5))),
                head=(12, 8), norm=norm, affine=affine)
    return randomize_(build_generator(arch), seed=1).eval()


def _ref(g, x):
    with torch.no_grad():
        return g(x).numpy()


# ----------------------------------------------------------------------------- decomposition


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_decomposition_is_equal(affine):
    from nas_prune.deploy_formats.decompose import count_instance_norms, decompose_instance_norm

    g = _student(affine=affine)
    n = count_instance_norms(g)
    d = decompose_instance_norm(g)
    assert n > 10 and count_instance_norms(d) == 0 and count_instance_norms(g) == n  # the original is untouched
    assert d.arch == g.arch
    for shape in ((1, 3, 32, 32), (3, 3, 24, 40)):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0])) * 2 - 1
        ref, got = _ref(g, x), _ref(d, x)
        assert np.abs(got - ref).max() < 1e-5
    # and it is really instance norm: a channel offset and scale per image do not change it
    norm = torch.nn.InstanceNorm2d(4, affine=False, eps=1e-12)  # eps would break the scale invariance
    dn = decompose_instance_norm(torch.nn.Sequential(norm))
    x = torch.randn(2, 4, 8, 8)
    shifted = x * torch.tensor([1.0, 3.0, 0.5, 2.0]).view(1, 4, 1, 1) + torch.arange(4.0).view(1, 4, 1, 1)
    torch.testing.assert_close(dn(shifted), norm(x), rtol=0, atol=1e-5)


def test_conv_transpose_decomposition_is_equal():
    from nas_prune.deploy_formats.decompose import decompose_conv_transpose

    g = _student()
    d = decompose_conv_transpose(g)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 2 and all(m.padding == (0, 0) and m.output_padding == (0, 0) for m in convs)
    assert all(m.padding == (1, 1) for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    for shape in ((1, 3, 32, 32), (2, 3, 24, 40)):
        x = torch.rand(*shape) * 2 - 1
        assert np.abs(_ref(d, x) - _ref(g, x)).max() < 1e-5
    # other paddings and strides of the same rule, output_padding <= padding
    for k, s, p, op in ((3, 2, 1, 1), (4, 2, 1, 0), (5, 3, 2, 2), (3, 1, 1, 0)):
        conv = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, k, s, p, output_padding=op))
        dec = decompose_conv_transpose(conv)
        assert type(dec[0]).__name__ == "CroppedConvTranspose"
        x = torch.randn(2, 4, 7, 9)
        torch.testing.assert_close(dec(x), conv(x), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- each format


@needs("openvino", "onnx", extra="openvino")
def test_openvino_runs_and_matches_pytorch(tmp_path):
    import openvino as ov

    g = _student()
    res = export_generator(g, out=tmp_path, format="openvino", input_size=32)
    assert res.files == [tmp_path / "generator.xml", tmp_path / "generator.bin"]
    assert all(f.is_file() for f in res.files) and res.file_bytes == sum(f.stat().st_size for f in res.files)
    assert res.max_abs_diff <= 1e-4 and res.checked == [(1, 32, 32), (2, 40, 48)]
    # an independent run at a third size, f32 as the export's own check
    core = ov.Core()
    net = core.compile_model(core.read_model(str(res.path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.rand(3, 3, 24, 36) * 2 - 1
    assert np.abs(net(x.numpy())[0] - _ref(g, x)).max() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["generator.bin", "generator.xml"]


@needs("pnnx", "ncnn", extra="ncnn")
def test_ncnn_runs_and_matches_pytorch(tmp_path):
    from nas_prune.deploy_formats.ncnn_pnnx import runner

    g = _student("batch")
    res = export_generator(g, out=tmp_path / "s.ncnn.param", format="ncnn", input_size=32)
    assert res.files == [tmp_path / "s.ncnn.param", tmp_path / "s.ncnn.bin"]
    assert res.max_abs_diff <= 1e-4 and res.checked == [(1, 32, 32), (2, 40, 48)]
    assert "float32 weights" in res.notes[0]
    x = torch.rand(2, 3, 28, 20) * 2 - 1
    assert np.abs(runner(res.files, 1)(x) - _ref(g, x)).max() <= 1e-4
    # pnnx's intermediate files did not land beside the output
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["s.ncnn.bin", "s.ncnn.param"]


@needs("executorch", extra="executorch")
def test_executorch_xnnpack_runs_and_matches_pytorch(tmp_path):
    from nas_prune.deploy_formats.executorch_xnnpack import method

    g = _student()
    res = export_generator(g, out=tmp_path / "g.pte", format="executorch", input_size=32)
    assert res.path.is_file() and res.max_abs_diff <= 1e-4
    assert res.checked == [(1, 32, 32), (1, 32, 32)]  # a fixed-shape program: two inputs of its shape
    assert "instance norm exported decomposed" in res.notes[0]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert np.abs(method(res.path, 1)(x) - _ref(g, x)).max() <= 1e-4


@needs("coremltools", extra="coreml")
def test_coreml_spec_is_validated_and_says_it_was_not_run(tmp_path):
    from nas_prune.deploy_formats import coreml

    g = _student()
    res = export_generator(g, out=tmp_path, format="coreml", input_size=32)
    assert res.path == tmp_path / "generator.mlpackage" and res.path.is_dir()
    assert res.max_abs_diff is None and res.checked == []
    assert any("Core ML cannot run on Linux" in n and "was not run" in n for n in res.notes)
    # the validation fails on a spec that is not this generator's
    other = _student(affine=False)
    with pytest.raises(NasPruneError, match="weight values"):
        coreml.validate([res.path], other, torch.zeros(1, 3, 32, 32))
    # an existing package is not replaced
    with pytest.raises(NasPruneError, match="does not replace a folder"):
        export_generator(g, out=tmp_path, format="coreml", input_size=32)


@needs("litert_torch", "ai_edge_litert", extra="tflite")
def test_tflite_runs_and_matches_pytorch(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    g = _student()
    res = export_generator(g, out=tmp_path / "g.tflite", format="tflite", input_size=32)
    assert res.path.is_file() and res.max_abs_diff <= 1e-4 and res.checked == [(1, 32, 32), (1, 32, 32)]
    assert "instance norm and padded transposed convs exported decomposed" in res.notes[0]
    interp = Interpreter(model_path=str(res.path), num_threads=1)  # an independent run
    interp.allocate_tensors()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert np.abs(got - _ref(g, x)).max() <= 1e-4


@needs("litert_torch", "ai_edge_litert", "torchao", extra="tflite")
def test_tflite_int8_is_calibrated_and_close_to_fp32(tmp_path):
    """Run in the LiteRT interpreter by hand: an int8 input quantized with the file's own scale and
    zero point, int8 convolutions inside, and the output within the PSNR the export reports."""
    from ai_edge_litert.interpreter import Interpreter

    g = _student()
    data = _image_folder(tmp_path / "calib", 8)
    res = export_generator(g, out=tmp_path / "g8.tflite", format="tflite", input_size=32, quantize="int8",
                           calib_data=data, calib_images=4)
    q = res.quantized
    assert q["psnr_images"] == "4 held-out images" and 20 <= q["psnr_db_to_fp32"] < 100
    assert "int8 (litert-torch's PT2E quantizer, calibrated" in " ".join(res.notes)
    interp = Interpreter(model_path=str(res.path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    assert inp["dtype"] == np.int8
    ops = [d["op_name"] for d in interp._get_ops_details()]
    assert "QUANTIZE" in ops and "DEQUANTIZE" in ops and "CONV_2D" in ops
    int8_filters = [t for t in interp.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) == 4
                    and t["quantization_parameters"]["scales"].size > 1]  # per-channel conv weights
    assert len(int8_filters) >= 10
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    scale, zero = inp["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.round(x.numpy() / scale) + zero, -128, 127).astype(np.int8))
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.float32)
    mse = float(((np.clip(got, -1, 1) - _ref(g, x)) ** 2).mean())
    assert 10 * np.log10(4 / mse) >= 20


# ----------------------------------------------------------------------------- int8


def _image_folder(path, n, size=40):
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size]
        img = np.stack([(xx * (i + 1) * 3) % 255, (yy * 5 + i * 20) % 255, (xx + yy) * 2 % 255], -1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path / f"{i:02d}.png")
    return path


@needs("onnxruntime", "onnx", extra="onnx")
@pytest.mark.parametrize("layout", ["qoperator", "qdq"])
def test_onnx_int8_is_calibrated_close_to_fp32_with_the_end_convs_in_float(tmp_path, layout):
    import onnx

    from nas_prune.quantize import end_convs

    g = _student()
    data = _image_folder(tmp_path / "calib", 12)
    res = export_generator(g, out=tmp_path / "g8.onnx", format="onnx", input_size=32, quantize="int8",
                           calib_data=data, calib_images=6, quant_format=layout)
    model = onnx.load(str(res.path))
    ops = [n.op_type for n in model.graph.node]
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    float_convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    if layout == "qoperator":  # int8 operators
        assert ops.count("QLinearConv") > 5 and "QLinearAdd" in ops
        # float: the end convolutions, and the transposed ones (ONNX Runtime has no int8 kernel for them)
        assert [n.op_type for n in float_convs] == ["Conv", "ConvTranspose", "ConvTranspose", "Conv"]
        assert len(int8_weights) == ops.count("QLinearConv")
    else:  # float operators between QuantizeLinear / DequantizeLinear pairs, int8 weights behind them
        assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10 and "QLinearConv" not in ops
        # every convolution's weights are int8 except the first and last convolution's
        assert len(int8_weights) == ops.count("Conv") - 2
        made_by = {o: n.op_type for n in model.graph.node for o in n.output}
        convs = [n for n in float_convs if n.op_type == "Conv"]
        assert [made_by.get(n.input[1]) for n in (convs[0], convs[-1])] == [None, None]  # float initializers
        assert {made_by.get(n.input[1]) for n in convs[1:-1]} == {"DequantizeLinear"}
    first, last = end_convs(g, torch.rand(1, 3, 32, 32))
    assert isinstance(getattr(g, "get_submodule")(first), torch.nn.Conv2d) and first != last
    assert f"{'QDQ' if layout == 'qdq' else 'QOperator'}: int8 weights" in " ".join(res.notes)
    q = res.quantized
    assert q["dtype"] == "int8" and q["psnr_images"] == "6 held-out images"
    assert q["calibration"].startswith(f"int8 calibrated on 6 images from {data}")
    assert 20 <= q["psnr_db_to_fp32"] < 100  # quantized: close to fp32, not identical
    assert q["speedup"] == pytest.approx(q["fp32_ms"][0] / q["int8_ms"][0], rel=1e-2)
    assert res.max_abs_diff > 1e-3  # int8 is not float32: the abs difference is reported, not required small
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["calib", "g8.onnx"]


def test_end_convs_follow_execution_order_not_registration_order():
    class Net(torch.nn.Module):  # registered last, run first
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(8, 3, 3, padding=1)
            self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.head(self.mid(self.stem(x)))

    from nas_prune.quantize import end_convs

    assert end_convs(Net(), torch.rand(1, 3, 8, 8)) == ("stem", "head")


def test_keep_float_marks_only_the_named_convs_and_keeps_their_forward():
    from nas_prune.quantize import keep_float

    class ScaledConv(torch.nn.Conv2d):  # a generator's own convolution type
        def forward(self, x):
            return 2 * super().forward(x)

    net = torch.nn.Sequential(ScaledConv(3, 4, 3), torch.nn.Conv2d(4, 4, 1), torch.nn.ConvTranspose2d(4, 3, 2))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
        types = keep_float(net, ["0", "2"])
        out = net(x)
    assert torch.equal(out, ref) and len(types) == 2
    assert isinstance(net[0], ScaledConv) and type(net[0]) in types and type(net[2]) in types
    assert type(net[1]) is torch.nn.Conv2d


def test_xnnpack_int8_leaves_exactly_the_end_convs_unquantized():
    """The filter XNNPACK's quantizer gets: False (leave float) for the graph nodes of the first and
    last convolution, True for every other convolution of the exported graph."""
    from nas_prune.deploy_formats.executorch_xnnpack import _in_modules
    from nas_prune.quantize import end_convs

    g = _student().eval()
    x = torch.rand(1, 3, 32, 32)
    ends = set(end_convs(g, x))
    graph = torch.export.export(g, (x,)).module().graph
    convs = [n for n in graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    flagged = [n for n in convs if _in_modules(n, ends)]
    assert len(convs) > 10 and flagged == [convs[0], convs[-1]]  # execution order: image in, image out


@pytest.mark.slow
@needs("executorch", extra="executorch")
def test_executorch_int8_is_close_to_fp32(tmp_path):
    g = _student()
    res = export_generator(g, out=tmp_path / "g8.pte", format="executorch", input_size=32, quantize="int8",
                           calib_images=4)
    assert 20 <= res.quantized["psnr_db_to_fp32"] < 100


# ----------------------------------------------------------------------------- errors


def test_int8_and_format_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    g = _student()
    with pytest.raises(NasPruneError, match="--quantize int8 is available for onnx, executorch, tflite, not torchscript"):
        export_generator(g, out=tmp_path / "g.pt", format="torchscript", quantize="int8")
    with pytest.raises(NasPruneError, match="the only mode is int8"):
        export_generator(g, out=tmp_path / "g.onnx", quantize="int4")
    with pytest.raises(NasPruneError, match="--quant-format 'qd': choose qoperator or qdq"):
        export_generator(g, out=tmp_path / "g.onnx", quantize="int8", quant_format="qd")
    with pytest.raises(NasPruneError, match="--quant-format qdq is a layout of int8 ONNX files, not of executorch"):
        export_generator(g, out=tmp_path / "g.pte", format="executorch", quantize="int8", quant_format="qdq")
    with pytest.raises(NasPruneError, match="--quant-format qdq is a layout of int8 files: add --quantize int8"):
        export_generator(g, out=tmp_path / "g.onnx", quant_format="qdq")
    with pytest.raises(NasPruneError, match="--calib-data: folder not found"):
        export_generator(g, out=tmp_path / "g.onnx", quantize="int8", calib_data=tmp_path / "nope", input_size=32)
    # a missing converter names its extra
    import nas_prune.deploy_formats as formats

    real = formats.importlib.import_module

    def no_openvino(name, *a, **k):
        if name.split(".")[0] == "openvino":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(formats.importlib, "import_module", no_openvino)
    with pytest.raises(NasPruneError, match=r"--format openvino needs the openvino extra \(openvino not installed\): "
                                            r"pip install 'nas-prune\[openvino\]'"):
        export_generator(g, out=tmp_path / "g.xml", format="openvino")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@needs("openvino", "onnx", extra="openvino")
def test_failed_phone_check_leaves_no_file(tmp_path):
    g = _student()
    with pytest.raises(NasPruneError, match="differs from PyTorch .*file not written"):
        export_generator(g, out=tmp_path / "g.xml", format="openvino", input_size=32, atol=1e-12)
    assert list(tmp_path.iterdir()) == []


@needs("pnnx", "ncnn", extra="ncnn")
def test_export_cli_phone_format(tmp_path):
    import json

    from typer.testing import CliRunner

    from nas_prune.cli import app
    from nas_prune.fileio import write_json

    from safetensors.torch import save_file

    g = _student()
    folder = tmp_path / "student"
    folder.mkdir()
    write_json(folder / "arch.json", {"format": "nas-prune-arch", "version": 1, "arch": g.arch.to_dict()})
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(folder / "student.safetensors"))
    r = CliRunner().invoke(app, ["export", str(folder), "--out", str(tmp_path / "out"), "--format", "ncnn",
                                 "--input-size", "32", "--threads", "1"])
    assert r.exit_code == 0, r.output
    flat = r.output.replace("\n", "")  # the console wraps long paths
    assert "generator.ncnn.param + generator.ncnn.bin" in flat and "max |ncnn - pytorch|" in flat
    r = CliRunner().invoke(app, ["export", str(folder), "--out", str(tmp_path / "o2"), "--format", "ncnn",
                                 "--input-size", "32", "--threads", "1", "--json"])
    doc = json.loads(r.output)
    assert doc["format"] == "ncnn" and len(doc["files"]) == 2 and doc["max_abs_diff"] <= 1e-4
    r = CliRunner().invoke(app, ["export", str(folder), "--out", str(tmp_path / "o3"), "--format", "ncnn",
                                 "--quantize", "int8"])
    assert r.exit_code == 2 and r.output.startswith("error: --quantize int8 is available for")
