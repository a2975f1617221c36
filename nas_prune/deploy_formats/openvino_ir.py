"""OpenVINO IR (``.xml`` + ``.bin``), converted from the ONNX file ``nas-prune export`` writes.

``openvino.convert_model`` reads the ONNX file (dynamic batch, height and width kept); the
IR is saved in float32 (``compress_to_fp16=False``: OpenVINO's default halves the weights).
The check compiles it for the CPU plugin with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with
AMX or AVX-512 BF16 OpenVINO otherwise runs bfloat16, which moved a tiny generator's outputs by
2e-2 in our runs; ask for ``bf16`` on the device when that is acceptable. Instance norm is
converted natively (ONNX InstanceNormalization -> MVN).
"""

from __future__ import annotations

from pathlib import Path

EXTRA = "openvino"
REQUIRES = ("openvino", "onnx")
RUN_REQUIRES = ()
STATIC = False


def outputs(out: Path) -> list[Path]:
    xml = out / "generator.xml" if out.is_dir() or not out.suffix else out.with_suffix(".xml")
    return [xml, xml.with_suffix(".bin")]


def write(net, x, paths: list[Path], *, dynamic: bool, opset: int, **_) -> list[str]:
    import openvino as ov

    from nas_prune.onnx_io import onnx_export as _onnx_export

    onnx_path = paths[0].with_suffix(".onnx")
    _onnx_export(net, x, onnx_path, opset=opset, dynamic=dynamic)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(paths[0]), compress_to_fp16=False)
    onnx_path.unlink()
    return [f"OpenVINO {ov.__version__.split('-')[0]} IR from ONNX opset {opset}, float32 weights"]


def compiled(xml: Path | str | bytes, threads: int, *, precision: str = "f32"):
    """An OpenVINO CPU-compiled model of the IR (path) with ``threads`` inference threads."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": int(threads),
                                             "INFERENCE_PRECISION_HINT": precision,
                                             "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})


def runner(paths: list[Path], threads: int):
    net = compiled(paths[0], threads)
    request = net.create_infer_request()

    def run(x):
        return request.infer({0: x.numpy()})[0].copy()

    return run
