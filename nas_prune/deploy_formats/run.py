"""Write a phone-format (or int8) export into a staging folder, run it in its own runtime, compare
with PyTorch, then move it into place: the part of :func:`nas_prune.deploy.export_generator`
that is not ONNX or TorchScript in float32."""

from __future__ import annotations

import time
from pathlib import Path

from nas_prune.errors import NasPruneError


def export_checked(net, x, x2, *, outs: list[Path], format: str, opset: int, dynamic: bool, check: bool,
                   atol: float, quantize: str | None, calib_data, calib_images: int, size_multiple: int,
                   notes: list[str], t0: float, quant_format: str = "qoperator"):
    """See :func:`nas_prune.deploy.export_generator`; ``x`` is the example input, ``x2`` the
    second checked input (another batch and size; formats with fixed shapes get a second input
    of ``x``'s shape instead)."""
    import torch

    from nas_prune.onnx_io import ExportResult, compare_outputs
    from nas_prune.onnx_io import onnx_export as _onnx_export
    from nas_prune.onnx_io import run_onnx as _run_onnx
    from nas_prune.deploy_formats import PHONE_FORMATS, converter, file_bytes, staged_outputs

    mod = converter(format) if format in PHONE_FORMATS else None
    calib = held = None
    if quantize is not None:
        from nas_prune.quantize import calibration_sets

        calib, held, desc = calibration_sets(net.arch, source=calib_data, n=calib_images, size=tuple(x.shape[2:]))
        notes.append(f"int8 calibrated on {desc}")
    threads = torch.get_num_threads()
    checked: list[tuple[int, int, int]] = []
    worst: float | None = None
    quant = None
    with staged_outputs(outs) as tmp:
        with torch.no_grad():
            if format == "onnx":  # int8 ONNX: float32 file first, then quantized from it
                from nas_prune.quantize import onnx_int8_bytes

                fp32 = tmp[0].with_name("fp32.onnx")
                _onnx_export(net, x, fp32, opset=opset, dynamic=dynamic)
                kept = onnx_int8_bytes(fp32, tmp[0], calib, quant_format=quant_format)
                notes.append(f"ONNX Runtime {'QDQ' if quant_format == 'qdq' else 'QOperator'}: int8 weights per "
                             "channel, uint8 activations (min/max calibration); float32: the first and last "
                             f"convolutions ({', '.join(kept)})")
            else:
                notes.extend(mod.write(net, x, tmp, dynamic=dynamic, opset=opset, example2=x2,
                                       size_multiple=size_multiple, calibration=calib))
        if check and format == "coreml":
            notes.extend(mod.validate(tmp, net, x))
        elif check:
            run = _run_onnx(tmp[0]) if format == "onnx" else mod.runner(tmp, threads)
            static = mod is not None and mod.STATIC
            second = x2 if dynamic and not static else torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
            inputs = [x, second]
            worst, seen = compare_outputs(net, run, inputs, format=format)
            checked.extend(seen)
            if quantize is None and not worst <= atol:
                raise NasPruneError(
                    f"exported {format} model differs from PyTorch by {worst:.3g} (> atol {atol:g}); file not written"
                )
            if quantize is not None:
                quant = _int8_report(net, run, x, calib, held, notes, format=format, fp32_path=tmp[0].with_name("fp32.onnx"),
                                     threads=threads)
    return ExportResult(path=outs[0], format=format, input_size=(int(x.shape[2]), int(x.shape[3])),
                        max_abs_diff=worst, checked=checked, seconds=time.perf_counter() - t0,
                        file_bytes=file_bytes(outs), notes=notes, files=list(outs),
                        quantized=None if quant is None else quant.to_json())


def _int8_report(net, run, x, calib, held, notes, *, format: str, fp32_path: Path, threads: int):
    """PSNR to float32 on held-out images (else the calibration ones), and the measured speed-up."""
    from nas_prune.onnx_io import run_onnx as _run_onnx
    from nas_prune.quantize import MIN_PSNR_DB, Int8Report, psnr_to_fp32, time_pair

    images = held if held is not None else calib
    which = (f"{images.shape[0]} held-out images" if held is not None
             else f"the {images.shape[0]} calibration images (no more images to hold out)")
    db = psnr_to_fp32(net, run, images, x.shape[0])
    if db < MIN_PSNR_DB:
        raise NasPruneError(f"int8 {format} model: PSNR {db:.1f} dB to the float32 generator "
                            f"(< {MIN_PSNR_DB:g} dB); file not written")
    if format == "onnx":
        fp32_run = _run_onnx(fp32_path)
    elif format == "tflite":
        from nas_prune.deploy_formats import tflite

        fp32_file = fp32_path.with_name("fp32.tflite")
        tflite.write(net, x, [fp32_file])
        fp32_run = tflite.runner([fp32_file], threads)
    else:
        from nas_prune.deploy_formats.executorch_xnnpack import lower, method

        fp32_run = method(lower(net, x), threads)
    times, busy = time_pair({"fp32": fp32_run, "int8": run}, x)
    rep = Int8Report(psnr_db=db, psnr_images=which, calibration=next((n for n in notes if n.startswith("int8 calibrated")), ""), fp32_ms=times["fp32"],
                     int8_ms=times["int8"], busy_cores=busy)
    notes.append(rep.summary())
    return rep
