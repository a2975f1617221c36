"""``nas-prune export``: a student (or any generator) to ONNX, TorchScript or a phone format, checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import CHANGED_SOURCE_HELP, MODEL_ARGS_HELP, MODEL_HELP, MODEL_PANEL, user_model, THREADS_HELP, console, torch_threads, user_errors


@app.command("export", short_help="Export a generator (ONNX, TorchScript, phone formats, int8), checked.")
def export_cli(
    model: Path = typer.Argument(..., metavar="MODEL", help="Student folder (arch.json + student.safetensors), distill final/, or checkpoint."),
    out: Path = typer.Option(..., "--out", help="Output file (.onnx / .pt / .tflite / .pte / .ncnn.param / .xml / .mlpackage) or folder."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space of a checkpoint MODEL: a YAML file or a shipped name (cat_spade_cityscapes); sets a SPADE teacher's upsampling and activation, which its tensors do not show."),
    format: str = typer.Option("onnx", "--format", help="onnx, torchscript, tflite (LiteRT), executorch (XNNPACK), ncnn (pnnx), openvino (from ONNX) or coreml; each phone format is an extra: pip install 'nas-prune[deploy]'."),
    input_size: str = typer.Option("256", "--input-size", help="Example input: N or HxW, divisible by 4 (SPADE: by 2^n, e.g. 64; input is the semantic map)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch of the example input."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    dynamic: bool = typer.Option(True, "--dynamic/--static", help="ONNX with dynamic batch, height and width."),
    check: bool = typer.Option(True, "--check/--no-check", help="Run the file (onnxruntime / torch.jit) and compare with PyTorch."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest accepted max abs difference (outputs in [-1, 1])."),
    quantize: Optional[str] = typer.Option(None, "--quantize", metavar="int8", help="Static int8 quantization calibrated on --calib-data images: onnx (ONNX Runtime) or executorch (XNNPACK). Reports PSNR to float32 and the speed-up."),
    quant_format: str = typer.Option("qoperator", "--quant-format", metavar="qoperator|qdq", help="Layout of an int8 ONNX file: qoperator (QLinearConv; fastest on ONNX Runtime's CPU provider) or qdq (QuantizeLinear/DequantizeLinear pairs, for NPU toolchains)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="Folder of calibration images for --quantize (default: crops of scikit-image's sample photos)."),
    calib_images: int = typer.Option(16, "--calib-images", help="Images to calibrate on (as many again held out for the PSNR)."),
    threads: str = typer.Option("auto", "--threads", metavar="N|auto", help=THREADS_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    code: Optional[str] = typer.Option(None, "--model", metavar="SPEC", help=MODEL_HELP, rich_help_panel=MODEL_PANEL),
    model_args: Optional[str] = typer.Option(None, "--model-args", metavar="JSON", help=MODEL_ARGS_HELP, rich_help_panel=MODEL_PANEL),
    allow_changed_source: bool = typer.Option(False, "--allow-changed-source", help=CHANGED_SOURCE_HELP, rich_help_panel=MODEL_PANEL),
) -> None:
    """Export MODEL and report the max abs difference of the exported file's outputs to PyTorch's."""
    with user_errors():
        from nas_prune.deploy import export_generator

        with torch_threads(threads, quiet=as_json):
            res = export_generator(model, out=out, format=format, input_size=input_size, batch_size=batch_size,
                                   opset=opset, dynamic=dynamic, check=check, atol=atol,
                                   space=str(space) if space is not None else None, quantize=quantize,
                                   calib_data=calib_data, calib_images=calib_images, quant_format=quant_format,
                                   user_model=user_model(code, model_args, allow_changed_source, input_size))
    if as_json:
        typer.echo(json.dumps(res.to_json(), indent=2))
        return
    c = console()
    also = f" + {', '.join(f.name for f in res.files[1:])}" if len(res.files) > 1 else ""
    c.print(f"wrote {res.path}{also} ({res.format}{', int8' if res.quantized else ''}, "
            f"{res.file_bytes / 1024:.0f} KiB) in {res.seconds:.1f} s", highlight=False)
    if res.max_abs_diff is not None:
        shapes = ", ".join("x".join(map(str, s)) for s in res.checked)
        c.print(f"max |{res.format} - pytorch| = {res.max_abs_diff:.2e} (inputs N x H x W: {shapes})", highlight=False)
    for note in res.notes:
        c.print(f"note: {note}", highlight=False, markup=False)
