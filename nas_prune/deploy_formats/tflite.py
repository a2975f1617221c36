"""LiteRT (``.tflite``) through litert-torch (formerly ai-edge-torch), checked with the LiteRT interpreter.

``litert_torch.convert(module, (x,))`` captures the module with ``torch.export`` at the
example's shape (fixed input shape, NCHW as PyTorch's) and lowers it to a TFLite flatbuffer.
LiteRT has no instance-norm op, so nas-prune converts
:mod:`~nas_prune.deploy_formats.decompose`'s equivalent form. The check runs the file in
``ai_edge_litert.interpreter.Interpreter`` on the CPU.

Installing: litert-torch 0.10 pulls xdsl 0.28, which pins ``typing-extensions<4.13``; that
downgrades pydantic (needs >= 4.14.1) and conflicts with coremltools' cattrs (>= 4.14) and
ExecuTorch's anyio (>= 4.16). Install it in an environment of its own
(``pip install 'nas-prune[tflite]'``), not beside the ``coreml`` and ``executorch`` extras.
"""

from __future__ import annotations

from pathlib import Path

EXTRA = "tflite"
REQUIRES = ("litert_torch",)
RUN_REQUIRES = ("ai_edge_litert.interpreter",)
STATIC = True
INSTALL_NOTE = (" in an environment of its own: litert-torch's xdsl pins typing-extensions<4.13, which "
                "conflicts with the coreml and executorch extras")


def outputs(out: Path) -> list[Path]:
    return [out / "generator.tflite" if out.is_dir() or not out.suffix else out]


def write(net, x, paths: list[Path], **_) -> list[str]:  # pragma: no cover - needs litert-torch
    import warnings

    import litert_torch
    import torch

    from nas_prune.deploy_formats.decompose import decompose_instance_norm

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        edge = litert_torch.convert(decompose_instance_norm(net), (x,))
    edge.export(str(paths[0]))
    return [f"litert-torch {getattr(litert_torch, '__version__', '')}, float32, fixed input shape "
            f"{'x'.join(map(str, x.shape))}; instance norm exported decomposed"]


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
