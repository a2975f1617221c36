"""LiteRT (``.tflite``) through litert-torch (formerly ai-edge-torch), checked with the LiteRT interpreter.

``litert_torch.convert(module, (x,))`` captures the module with ``torch.export`` at the
example's shape (fixed input shape, NCHW as PyTorch's) and lowers it to a TFLite flatbuffer.
LiteRT has no instance-norm op, and its converter cannot legalise the generators' padded
transposed convolutions, so nas-prune converts :mod:`~nas_prune.deploy_formats.decompose`'s
equivalent forms of both. The check runs the file in
``ai_edge_litert.interpreter.Interpreter`` on the CPU.

Installing: litert-torch 0.10 pulls xdsl 0.28, which pins ``typing-extensions<4.13``. In a fresh
environment pip resolves it beside torch 2.13.0 and every other extra (pydantic 2.11, cattrs
25.2, anyio 4.14 are chosen to match); added to an environment that already has newer ones it
downgrades them (``typing-extensions`` 4.16 -> 4.12.2, ``pydantic`` 2.13 -> 2.11), breaking the
declared requirements of what was installed with them. Install it with the other extras at
once (``pip install 'nas-prune[deploy]'``) or in an environment of its own.
"""

from __future__ import annotations

from pathlib import Path

EXTRA = "tflite"
REQUIRES = ("litert_torch",)
RUN_REQUIRES = ("ai_edge_litert.interpreter",)
STATIC = True
INSTALL_NOTE = (" (in a fresh environment, or with the other extras at once: litert-torch's xdsl pins "
                "typing-extensions<4.13, which downgrades newer ones already installed)")


def outputs(out: Path) -> list[Path]:
    return [out / "generator.tflite" if out.is_dir() or not out.suffix else out]


def write(net, x, paths: list[Path], *, calibration=None, **_) -> list[str]:  # pragma: no cover - needs litert-torch
    """Convert ``net`` at ``x``'s shape to ``paths[0]``; int8 when ``calibration`` (images) is given."""
    import warnings

    import litert_torch
    import torch

    from nas_prune.deploy_formats.decompose import decompose_conv_transpose, decompose_instance_norm

    net = decompose_conv_transpose(decompose_instance_norm(net))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if calibration is None:
            edge = litert_torch.convert(net, (x,))
        else:
            edge = _int8(net, x, calibration)
    edge.export(str(paths[0]))
    return [f"litert-torch {getattr(litert_torch, '__version__', '')}, "
            + ("int8 (litert-torch's PT2E quantizer, calibrated; int8 input, float32 output)"
               if calibration is not None else "float32")
            + f", fixed input shape {'x'.join(map(str, x.shape))}; instance norm and padded transposed convs "
            "exported decomposed"]


def _int8(net, x, calibration):  # pragma: no cover - needs litert-torch
    """litert-torch's static int8 flow (module docstring of :mod:`nas_prune.quantize`)."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from nas_prune.deploy_formats.decompose import decomposed_norm_type
    from nas_prune.quantize import end_convs, keep_float

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer = quantizer.set_module_type(decomposed_norm_type(), None)
    for t in keep_float(net, end_convs(net, x)):  # the 3-channel convolutions at either end stay float
        quantizer = quantizer.set_module_type(t, None)
    prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
    for i in range(calibration.shape[0]):
        prepared(calibration[i : i + 1].expand(x.shape[0], -1, -1, -1).contiguous())
    converted = convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(converted, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def runner(paths: list[Path], threads: int):  # pragma: no cover - needs ai-edge-litert
    """``x -> numpy output`` in the LiteRT interpreter; an int8 input is quantized with the file's
    own scale and zero point, an int8 output dequantized."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(paths[0]), num_threads=int(threads))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x):
        a = x.contiguous().numpy()
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            a = np.clip(np.round(a / scale) + zero, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], a)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y.copy()

    return run
