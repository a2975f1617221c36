"""Export a generator for deployment: ONNX (checked with onnxruntime), TorchScript, or a phone
format (tflite, executorch, ncnn, openvino, coreml: :mod:`nas_prune.deploy_formats`), in float32
or int8 (``quantize="int8"``: :mod:`nas_prune.quantize`).

The exported file takes ``(N, input_nc, H, W)`` images in [-1, 1] and returns
``(N, output_nc, H, W)`` in [-1, 1]; a SPADE generator takes the semantic map
``(N, label_nc, H, W)`` (one-hot labels, then the instance-edge channel; 36 channels for
cityscapes). ONNX files have dynamic batch, height and width (H and W must stay multiples
of 4, of ``2 ** n_upsampling`` for SPADE generators); TorchScript files are traced, which is exact for
these generators since their forward pass has no data-dependent control flow.

Every export is checked: the file is loaded back (onnxruntime on CPU for ONNX,
``torch.jit.load`` for TorchScript), run on seeded random inputs at the export size
and at a second size, and compared with the PyTorch model; the largest absolute
difference is reported and a difference above ``atol`` is an error. Phone formats are run in
their own runtimes the same way (Core ML, which runs only on Apple platforms, has its spec
validated instead); an int8 file is compared by PSNR to the float32 generator.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_prune.deploy_formats import PHONE_FORMATS
from nas_prune.onnx_io import ExportResult  # noqa: F401  (public name of this module)
from nas_prune.onnx_io import compare_outputs
from nas_prune.onnx_io import onnx_export as _onnx_export
from nas_prune.onnx_io import run_onnx as _run_onnx
from nas_prune.errors import NasPruneError

__all__ = ["FORMATS", "ExportResult", "export_generator"]

FORMATS = ("onnx", "torchscript", *PHONE_FORMATS)
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def _trace(model, x):
    """``torch.jit.trace`` without its TracerWarnings: they say shape checks inside instance
    norm become constants of the trace, which a user cannot act on; whether the trace holds
    at other sizes is checked afterwards on a second input of another batch and size."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(model, x, check_trace=False)


def opset_range() -> tuple[int, int]:
    """The ONNX opsets this torch exports (TorchScript-based exporter)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MIN_OPSET), int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        return 7, 20


def _check_onnx(*, opset: int, check: bool) -> None:
    """Fail before any work when ONNX export cannot run: opset out of range, onnx extra missing."""
    import torch

    low, high = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise NasPruneError(f"--opset {opset}: torch {torch.__version__.split('+')[0]} exports ONNX opsets "
                            f"{low} to {high} (default 17)")
    missing = []
    for name in ("onnx", "onnxruntime") if check else ("onnx",):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise NasPruneError(f"ONNX export needs the onnx extra ({', '.join(missing)} not installed): "
                            "pip install 'nas-prune[onnx]', or use --format torchscript")


def _run_torchscript(path: Path):
    import torch

    loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x):
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _example(arch, batch: int, size: tuple[int, int], g):
    """A seeded example input as the generator sees them (the family's: images in [-1, 1],
    or one-hot label maps with an edge channel for semantic-map generators)."""
    from nas_prune.families import family_of

    return family_of(arch).example_input(arch, size, batch=batch, generator=g)


def export_generator(
    model: Any,
    *,
    out: str | os.PathLike,
    format: str = "onnx",
    input_size: int | str | tuple[int, int] = 256,
    batch_size: int = 1,
    opset: int = 17,
    dynamic: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
    space: Any = None,
    quantize: str | None = None,
    calib_data: str | os.PathLike | None = None,
    calib_images: int = 16,
    quant_format: str = "qoperator",
    user_model: Any = None,
) -> ExportResult:
    """Write ``model`` as ONNX or TorchScript to ``out`` and check it against PyTorch.

    Args:
        model: a :class:`~nas_prune.model.Generator`, or any path
            :func:`nas_prune.evaluate.open_generator` reads (student folder, checkpoint).
        out: output file; a folder gets ``generator.onnx`` / ``generator.pt`` inside.
        format: ``onnx`` or ``torchscript``.
        input_size: ``H``, ``"HxW"`` or ``(H, W)`` of the example input (multiple of 4).
        batch_size: batch of the example input.
        opset: ONNX opset.
        dynamic: ONNX with dynamic batch / height / width (also checked at a second size).
        check: load the file back and compare outputs.
        atol: largest accepted absolute difference (outputs are in [-1, 1]).
        space: search space (YAML path or shipped name) of a checkpoint ``model``: it gives a
            SPADE teacher the settings its shapes cannot show (upsampling, activation).
        quantize: None (float32) or ``"int8"``: static quantization calibrated on images
            (``onnx``: ONNX Runtime; ``executorch``: XNNPACK's quantizer); see :mod:`nas_prune.quantize`.
        calib_data: folder of calibration images for ``quantize`` (default: crops of
            scikit-image's sample photos, :func:`nas_prune.calibration.calibration_images`).
        calib_images: images to calibrate on (as many again, when the folder has them, to measure PSNR).
        quant_format: layout of an int8 ONNX file: ``qoperator`` (QLinearConv, fastest on ONNX
            Runtime's CPU provider) or ``qdq`` (QuantizeLinear/DequantizeLinear pairs, for NPU toolchains).
        user_model: the user's generator code (:class:`nas_prune.load.UserModel`, ``--model``)
            a checkpoint ``model`` is the state dict of.

    Raises:
        NasPruneError: bad format or size, or exported outputs that differ by more than ``atol``
            (the file is removed then).
    """
    import torch

    from nas_prune.macs import parse_input_size

    if format not in FORMATS:
        raise NasPruneError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise NasPruneError(f"batch_size must be >= 1, got {batch_size}")
    size = parse_input_size(input_size)
    if quantize is not None:
        from nas_prune.quantize import check_quantize

        check_quantize(quantize, format=format, calib_images=calib_images, quant_format=quant_format)
    elif quant_format != "qoperator":
        raise NasPruneError(f"--quant-format {quant_format} is a layout of int8 files: add --quantize int8")
    if format == "onnx" or format == "openvino":
        _check_onnx(opset=opset, check=check and format == "onnx")
    if format in PHONE_FORMATS:
        from nas_prune.deploy_formats import check_available, output_paths

        check_available(format, run=check)
    t0 = time.perf_counter()
    out = Path(out)
    folder = out.is_dir() or not out.suffix  # an output folder: held by one writer at a time
    if format in PHONE_FORMATS:
        outs = output_paths(format, out)
        out = outs[0]
    else:
        if folder:
            out = out / f"generator{_SUFFIX[format]}"
        outs = [out]
    from nas_prune.load import code_options
    from nas_prune.locks import hold

    with hold(out.parent, command="export", enabled=folder), code_options(user_model):  # one writer per folder
        return _export_checked(model, out=out, outs=outs, format=format, size=size, batch_size=batch_size,
                               opset=opset, dynamic=dynamic, check=check, atol=atol, seed=seed, space=space,
                               t0=t0, quantize=quantize, calib_data=calib_data, calib_images=calib_images,
                               quant_format=quant_format, user_model=user_model)


def _export_checked(model: Any, *, out: Path, outs: list[Path], format: str, size: tuple[int, int],
                    batch_size: int, opset: int, dynamic: bool, check: bool, atol: float, seed: int, space: Any,
                    t0: float, quantize: str | None, calib_data, calib_images: int,
                    quant_format: str = "qoperator", user_model: Any = None) -> ExportResult:
    """:func:`export_generator` after its option checks, the output folder held."""
    import io

    import torch

    from nas_prune.evaluate import open_generator
    from nas_prune.fileio import atomic_path, naming_failures
    from nas_prune.model import Generator, check_forward_memory, check_input_size
    from nas_prune.outputs import check_out_files

    is_module = isinstance(model, (Generator, torch.nn.Module))
    check_out_files([o for o in outs if o.suffix != ".mlpackage"], inputs=[] if is_module else [model])
    notes: list[str] = []
    net = model if is_module else open_generator(model, space=space, notes=notes, model=user_model)
    net = net.to("cpu").eval()
    from nas_prune.model import size_multiple

    check_input_size(net.arch, size)
    step = size_multiple(net.arch)
    # the larger of the two checked inputs
    check_forward_memory(net.arch, (size[0] + 2 * step, size[1] + 4 * step), batch=batch_size + 1)
    g = torch.Generator().manual_seed(seed)
    x = _example(net.arch, batch_size, size, g)
    if format in PHONE_FORMATS or quantize is not None:
        from nas_prune.deploy_formats.run import export_checked

        x2 = _example(net.arch, batch_size + 1, (size[0] + 2 * step, size[1] + 4 * step), g)
        return export_checked(net, x, x2, outs=outs, format=format, opset=opset, dynamic=dynamic, check=check,
                              atol=atol, quantize=quantize, calib_data=calib_data, calib_images=calib_images,
                              quant_format=quant_format, size_multiple=step, notes=notes, t0=t0)

    checked: list[tuple[int, int, int]] = []
    worst: float | None = None
    with atomic_path(out) as tmp:
        with torch.no_grad():
            if format == "onnx":
                _onnx_export(net, x, tmp, opset=opset, dynamic=dynamic)
            else:
                traced = _trace(net, x)
                # serialised in memory, then written: torch.jit.save straight to a file aborts the
                # process (C++ terminate, SIGABRT) when the disk refuses a write, leaving the temporary
                buffer = io.BytesIO()
                torch.jit.save(traced, buffer)
                with naming_failures(out):
                    tmp.write_bytes(buffer.getvalue())
        if check:
            run = _run_onnx(tmp) if format == "onnx" else _run_torchscript(tmp)
            inputs = [x]
            if dynamic or format == "torchscript":
                h2, w2 = size[0] + 2 * step, size[1] + 4 * step
                inputs.append(_example(net.arch, batch_size + 1, (h2, w2), g))
            worst, seen = compare_outputs(net, run, inputs, format=format)
            checked.extend(seen)
            if not worst <= atol:
                raise NasPruneError(
                    f"exported {format} model differs from PyTorch by {worst:.3g} (> atol {atol:g}); file not written"
                )
    return ExportResult(path=out, format=format, input_size=size, max_abs_diff=worst, checked=checked,
                        seconds=time.perf_counter() - t0, file_bytes=out.stat().st_size, notes=notes)
