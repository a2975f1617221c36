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


def write(net, x, paths: list[Path], **_) -> list[str]:  # pragma: no cover - needs litert-torch
    import warnings

    import litert_torch
    import torch

    from nas_prune.deploy_formats.decompose import decompose_conv_transpose, decompose_instance_norm

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        edge = litert_torch.convert(decompose_conv_transpose(decompose_instance_norm(net)), (x,))
    edge.export(str(paths[0]))
    return [f"litert-torch {getattr(litert_torch, '__version__', '')}, float32, fixed input shape "
            f"{'x'.join(map(str, x.shape))}; instance norm and padded transposed convs exported decomposed"]


def runner(paths: list[Path], threads: int):  # pragma: no cover - needs ai-edge-litert
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(paths[0]), num_threads=int(threads))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x):
        interp.set_tensor(inp["index"], x.contiguous().numpy())
        interp.invoke()
        return interp.get_tensor(out["index"]).copy()

    return run
