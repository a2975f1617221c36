"""Runtimes beyond eager PyTorch and ONNX Runtime, for latency tables and targets.

Each converts a module the way ``nas-prune export`` does (:mod:`nas_prune.deploy_formats`,
:mod:`nas_prune.quantize`) and returns a zero-argument callable that runs it once on the
example input:

``openvino``          ONNX -> OpenVINO IR, CPU plugin, float32 (``INFERENCE_PRECISION_HINT=f32``)
``ncnn``              pnnx -> ncnn, float32 storage and arithmetic, batch 1 per call
``executorch``        ExecuTorch + XNNPACK, instance norm decomposed
``onnxruntime-int8``  ONNX Runtime on the int8 file (QOperator, as export writes it by default; calibrated on the example input itself:
                      a timing does not depend on how good the ranges are)
``executorch-int8``   ExecuTorch + XNNPACK's int8 quantizer, calibrated the same way
``tflite``            litert-torch -> LiteRT interpreter (instance norm, padded transposed convs
                      decomposed), float32
``tflite-int8``       the same through litert-torch's int8 quantizer, calibrated as the others

Converting costs far more than running for these (ExecuTorch's lowering takes seconds per
module), so a latency table on them takes correspondingly longer to build; it is built once per
machine and cached as for the other runtimes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

EXTRA_RUNTIMES = ("openvino", "ncnn", "executorch", "onnxruntime-int8", "executorch-int8", "tflite", "tflite-int8")
_NEEDS = {"openvino": (("openvino", "onnx"), "openvino"), "ncnn": (("pnnx", "ncnn"), "ncnn"),
          "executorch": (("executorch.exir", "executorch.runtime"), "executorch"),
          "onnxruntime-int8": (("onnx", "onnxruntime.quantization"), "onnx"),
          "executorch-int8": (("executorch.exir", "executorch.runtime", "torchao"), "executorch"),
          "tflite": (("litert_torch", "ai_edge_litert.interpreter"), "tflite"),
          "tflite-int8": (("litert_torch", "ai_edge_litert.interpreter", "torchao"), "tflite")}
# What the int8 runtimes time (part of their tables' key): the layout, and which layers stay float.
INT8_RECIPE = "qoperator/per-channel/end-convs-float"
# Channels the runtime's conv kernels process together (nas_prune.latency.table.effective_width).
CHANNEL_BLOCK = {"openvino": 8, "ncnn": 4, "executorch": 1, "onnxruntime-int8": 8, "executorch-int8": 1,
                 "tflite": 1, "tflite-int8": 1}


def missing(name: str) -> tuple[list[str], str]:
    """``(modules that do not import, extra to install)`` for a runtime of :data:`EXTRA_RUNTIMES`."""
    import importlib

    mods, extra = _NEEDS[name]
    out = []
    for m in mods:
        try:
            importlib.import_module(m)
        except Exception:
            out.append(m)
    return out, extra


def versions(name: str) -> dict[str, str]:
    """Library versions a latency on ``name`` depends on."""
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {"openvino": ("openvino",), "ncnn": ("ncnn", "pnnx"), "executorch": ("executorch",),
            "onnxruntime-int8": ("onnx", "onnxruntime"), "executorch-int8": ("executorch", "torchao"),
            "tflite": ("litert-torch", "ai-edge-litert"), "tflite-int8": ("litert-torch", "ai-edge-litert", "torchao")}[name]
    out = {}
    for p in pkgs:
        try:
            out[p] = version(p)
        except PackageNotFoundError:  # pragma: no cover
            out[p] = "unknown"
    if name.endswith("-int8"):  # how the file is quantized keys its tables too
        out["int8"] = INT8_RECIPE
    return out


def _onnx_file(module, example, folder: Path) -> Path:
    from nas_prune.onnx_io import onnx_export as _onnx_export

    path = folder / "m.onnx"
    _onnx_export(module, example, path, opset=17, dynamic=False)
    return path


def runner(name: str, module, example, threads: int) -> Callable[[], object]:
    """Convert ``module`` for runtime ``name`` and return one pass on ``example``."""
    import torch

    with torch.no_grad():
        if name in ("executorch", "executorch-int8"):
            from nas_prune.deploy_formats.executorch_xnnpack import lower, method

            calib = example if name == "executorch-int8" else None
            run = method(lower(module, example, calibration=calib), threads)
            return lambda: run(example)
        with tempfile.TemporaryDirectory(prefix="nas-prune-rt-") as tmp:
            folder = Path(tmp)
            if name == "openvino":
                import openvino as ov

                from nas_prune.deploy_formats.openvino_ir import compiled

                model = ov.convert_model(str(_onnx_file(module, example, folder)))
                ov.save_model(model, str(folder / "m.xml"), compress_to_fp16=False)
                request = compiled(folder / "m.xml", threads).create_infer_request()
                feed = {0: example.numpy()}
                return lambda: request.infer(feed)
            if name in ("tflite", "tflite-int8"):
                from nas_prune.deploy_formats import tflite

                paths = [folder / "m.tflite"]
                tflite.write(module, example, paths, calibration=example if name == "tflite-int8" else None)
                run = tflite.runner(paths, threads)
                return lambda: run(example)
            if name == "ncnn":
                from nas_prune.deploy_formats import ncnn_pnnx

                paths = [folder / "m.ncnn.param", folder / "m.ncnn.bin"]
                ncnn_pnnx.write(module, example, paths, dynamic=False)
                run = ncnn_pnnx.runner(paths, threads)
                return lambda: run(example)
            if name == "onnxruntime-int8":
                from nas_prune.onnx_io import ort_runner
                from nas_prune.quantize import onnx_int8_bytes

                q = folder / "q.onnx"
                onnx_int8_bytes(_onnx_file(module, example, folder), q, example[:1])
                return ort_runner(q.read_bytes(), example, threads)
    raise ValueError(name)  # pragma: no cover - the Runtime checked the name
