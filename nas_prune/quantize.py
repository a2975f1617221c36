"""int8 deployment: static post-training quantization calibrated on images.

``nas-prune export --quantize int8 --calib-data DIR`` (library: ``export_generator(...,
quantize="int8", calib_data=DIR)``):

``--format onnx`` (ONNX Runtime)
    The float32 ONNX file is quantized by ``onnxruntime.quantization.quantize_static``: int8
    weights per output channel (symmetric), uint8 activations whose ranges come from running the
    calibration images (min/max calibration). Before calibrating, ``quant_pre_process`` runs shape
    inference and graph optimisation as ONNX Runtime recommends. Two layouts (``quant_format``):
    ``qoperator`` (default: QLinearConv / QLinearAdd operators, what ONNX Runtime's CPU provider
    runs fastest) and ``qdq`` (QuantizeLinear/DequantizeLinear pairs around float operators, what
    NPU toolchains and other runtimes read and fuse themselves). Measured on the 2.6G student at
    256x256, 2 threads: QOperator 1.12x faster than float32, QDQ 0.97x (its pairs around every
    instance norm and transposed convolution cost more than the int8 convolutions save). Both
    quantize the operators ONNX Runtime has integer kernels for (convolution, add, pad, ReLU,
    concat, ...); QDQ around the others (instance norm, transposed convolution) only added
    passes: 0.93x.

``--format executorch`` (XNNPACK)
    XNNPACK's own quantizer in the PT2E flow (:mod:`nas_prune.deploy_formats.executorch_xnnpack`):
    per-channel symmetric int8 weights, int8 activations calibrated on the same images.
``--format tflite`` (LiteRT)
    litert-torch's own PT2E quantizer (:mod:`nas_prune.deploy_formats.tflite`): per-channel
    symmetric int8 weights, int8 activations calibrated on the same images, converted in
    litert-torch's static QDQ mode; the file takes an int8 input (scale and zero point in its
    input details; nas-prune's runner quantizes the float image with them) and gives a float32
    output. The decomposed instance norms stay float, as for XNNPACK.

On every int8 runtime, the first and the last convolution of the generator (by execution order: the one reading
the 3-channel image and the one writing it, both at full resolution) stay float32
(:func:`end_convs`, :func:`onnx_end_convs`), as is common practice for image-to-image networks:
in int8 those two ran 2.3x slower than in float32 on ONNX Runtime (a 3-channel convolution gives
int8 kernels nothing to vectorise over) and carry the output's precision; keeping them float
moved the 2.6G student from 0.82x to 0.93x (QDQ) and PSNR from 30.3 to 30.5 dB.

Calibration images: :func:`nas_prune.calibration.calibration_images` (the folder's first
``calib_images`` files; without a folder, crops of scikit-image's sample photos). A generator's
output quality, not its logits, is what int8 must keep, so the check is the PSNR of the int8
file's outputs to the float32 generator's (outputs in [-1, 1], :func:`nas_prune.metrics.psnr`)
on held-out images (the folder's next files, else the calibration images, which the report
says). Below ``MIN_PSNR_DB`` the export is an error and no file is written. The report also
gives the measured speed-up of the int8 file over the float32 one on the same runtime
(interleaved passes, median; the machine's other load is reported beside it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nas_prune.errors import NasPruneError

__all__ = ["QUANT_FORMATS", "MIN_PSNR_DB", "Int8Report", "check_quantize", "onnx_int8_bytes", "time_pair"]

QUANT_FORMATS = ("onnx", "executorch", "tflite")
ONNX_LAYOUTS = ("qoperator", "qdq")  # quantize_static's QuantFormat.QOperator / QuantFormat.QDQ
MIN_PSNR_DB = 20.0


@dataclass
class Int8Report:
    """What an int8 export measured.

    Attributes:
        psnr_db: mean PSNR of int8 outputs to float32 PyTorch outputs (dB).
        psnr_images: how many images, and whether they were held out.
        fp32_ms / int8_ms: ``(median, min, max)`` ms of the float32 and int8 files on the runtime.
        busy_cores: cores other processes kept busy while timing (None without /proc).
        calibration: description of the calibration images.
    """

    psnr_db: float
    psnr_images: str
    calibration: str
    fp32_ms: tuple[float, float, float] | None = None
    int8_ms: tuple[float, float, float] | None = None
    busy_cores: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return None if not self.fp32_ms or not self.int8_ms else self.fp32_ms[0] / self.int8_ms[0]

    def to_json(self) -> dict[str, Any]:
        r = lambda t: None if t is None else [round(v, 4) for v in t]  # noqa: E731
        return {"dtype": "int8", "psnr_db_to_fp32": round(self.psnr_db, 3), "psnr_images": self.psnr_images,
                "calibration": self.calibration, "fp32_ms": r(self.fp32_ms), "int8_ms": r(self.int8_ms),
                "speedup": None if self.speedup is None else round(self.speedup, 3),
                "busy_cores": None if self.busy_cores is None else round(self.busy_cores, 2), **self.details}

    def summary(self) -> str:
        text = f"int8: PSNR {self.psnr_db:.1f} dB to float32 on {self.psnr_images}"
        if self.speedup is not None:
            text += (f"; {self.int8_ms[0]:.3g} ms vs {self.fp32_ms[0]:.3g} ms float32 (median), "
                     f"{self.speedup:.2f}x")
            if self.busy_cores is not None:
                text += f" (other processes kept {self.busy_cores:.1f} cores busy)"
        return text


def check_quantize(quantize: str, *, format: str, calib_images: int, quant_format: str = "qoperator") -> None:
    """Fail before any work on an unknown mode, a format without an int8 path, a bad layout or count."""
    if quant_format not in ONNX_LAYOUTS:
        raise NasPruneError(f"--quant-format {quant_format!r}: choose {' or '.join(ONNX_LAYOUTS)}")
    if quant_format != "qoperator" and format != "onnx":
        raise NasPruneError(f"--quant-format {quant_format} is a layout of int8 ONNX files, not of {format}")
    if quantize != "int8":
        raise NasPruneError(f"--quantize {quantize!r}: the only mode is int8")
    if format not in QUANT_FORMATS:
        raise NasPruneError(f"--quantize int8 is available for {', '.join(QUANT_FORMATS)}, not {format}")
    if isinstance(calib_images, bool) or calib_images < 1:
        raise NasPruneError(f"--calib-images must be >= 1, got {calib_images}")


def calibration_sets(arch, *, source: str | os.PathLike | None, n: int, size: tuple[int, int]):
    """``(calibration images, held-out images or None, description)``, all ``(N, C, H, W)`` in [-1, 1]."""
    from nas_prune.calibration import calibration_images

    from nas_prune.families import data_kind, family_of

    if data_kind(arch) != "images":
        raise NasPruneError(f"--quantize int8 takes image generators: a {family_of(arch).title} generator's input "
                            "is a semantic map")
    calib, held, desc = calibration_images(arch, source=source, n_images=n, n_train=n, input_size=tuple(size))
    return calib, held, desc


def end_convs(net, x) -> tuple[str, ...]:
    """Names of the first and the last convolution (``Conv2d`` / ``ConvTranspose2d``) that
    ``net`` runs on ``x``, in execution order (one name when it runs a single one)."""
    import torch

    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name))
             for name, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return tuple(dict.fromkeys((order[0], order[-1]))) if order else ()


_FLOAT_TYPES: dict = {}  # a convolution type -> its float-keeping subclass


def keep_float(net, names) -> tuple[type, ...]:
    """Give the convolutions ``names`` of ``net`` (a copy the caller owns) a subclass of their
    own type, so that a PT2E quantizer told ``set_module_type(T, None)`` leaves exactly those in
    float; returns the subclasses. Same weights, same forward (a user's own ``Conv2d`` subclass
    keeps its forward too)."""
    made = []
    for name in names:
        mod = net.get_submodule(name)
        base = type(mod)
        if base not in _FLOAT_TYPES:
            _FLOAT_TYPES[base] = type(f"Float{base.__name__}", (base,), {"__module__": __name__})
        mod.__class__ = _FLOAT_TYPES[base]
        made.append(_FLOAT_TYPES[base])
    return tuple(dict.fromkeys(made))


def onnx_end_convs(model) -> list[str]:
    """Node names of the first and the last ``Conv`` / ``ConvTranspose`` of an ONNX graph (its
    nodes are in execution order)."""
    convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    return list(dict.fromkeys((convs[0], convs[-1]))) if convs else []


def onnx_int8_bytes(fp32: Path, out: Path, calibration, *, input_name: str = "input",
                    quant_format: str = "qoperator") -> list[str]:
    """Quantize the float32 ONNX file ``fp32`` to ``out`` (module docstring); returns the nodes
    kept in float32."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QLinearOpsRegistry

    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:  # pragma: no cover - older onnxruntime
        quant_pre_process = None

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: calibration[i : i + 1].numpy().astype(np.float32)}
                               for i in range(calibration.shape[0])])

        def get_next(self):
            return next(self.items, None)

    src = fp32
    if quant_pre_process is not None:
        pre = fp32.with_suffix(".pre.onnx")
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        src = pre
    graph = onnx.load(str(src))
    keep = onnx_end_convs(graph)
    ops = sorted({n.op_type for n in graph.graph.node} & set(QLinearOpsRegistry))
    layout = QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator
    quantize_static(str(src), str(out), Reader(), quant_format=layout, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=ops, nodes_to_exclude=keep)
    if src != fp32:
        src.unlink()
    return keep


def psnr_to_fp32(net, run: Callable, images, batch: int) -> float:
    """Mean PSNR of ``run``'s outputs to ``net``'s on ``images``, passed ``batch`` at a time
    (an image repeated to fill a static batch)."""
    import torch

    from nas_prune.metrics import psnr

    scores = []
    for i in range(images.shape[0]):
        x = images[i : i + 1].expand(batch, -1, -1, -1).contiguous()
        with torch.no_grad():
            ref = net(x)[:1]
        got = torch.from_numpy(run(x))[:1]
        scores.append(psnr(got.clamp(-1, 1), ref))
    return float(sum(scores) / len(scores))


def time_pair(runs: dict[str, Callable], x, *, repeats: int = 10, warmup: int = 2):
    """Interleaved timing (:func:`nas_prune.timing.round_robin`) of callables taking ``x``:
    ``({name: (median, min, max) ms}, busy cores)``."""
    from nas_prune.threads import cpu_sample, others_busy
    from nas_prune.timing import round_robin, summary

    start = cpu_sample()
    samples = round_robin({k: (lambda run=run: run(x)) for k, run in runs.items()}, repeats=repeats, warmup=warmup)
    busy = others_busy(start)
    return {k: summary(v) for k, v in samples.items()}, busy
