"""ONNX files: writing one from a generator, running one, and what an export returns.

Shared by :mod:`nas_prune.deploy` (ONNX and TorchScript) and :mod:`nas_prune.deploy_formats`
(the phone runtimes, several of which start from ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch

from nas_prune.errors import NasPruneError


@dataclass
class ExportResult:
    """What :func:`export_generator` returns.

    Attributes:
        path: the written file.
        format: ``onnx`` or ``torchscript``.
        input_size: ``(H, W)`` the model was exported and first checked at.
        max_abs_diff: largest ``|exported - pytorch|`` over all checked inputs (None if unchecked).
        checked: ``[(N, H, W), ...]`` input shapes that were compared.
        seconds: export + check time.
        file_bytes: size of the file.
        notes: what loading a checkpoint assumed (e.g. a SPADE teacher's upsampling without ``space``),
            and what the converter did (versions, precision, fixed shapes).
        files: every written file (more than ``path`` for two-file formats: ncnn, OpenVINO).
        quantized: for ``quantize="int8"``, :meth:`nas_prune.quantize.Int8Report.to_json`.
    """

    path: Path
    format: str
    input_size: tuple[int, int]
    max_abs_diff: float | None
    checked: list[tuple[int, int, int]] = field(default_factory=list)
    seconds: float = 0.0
    file_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    quantized: dict | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "input_size": list(self.input_size),
                "max_abs_diff": self.max_abs_diff, "checked": [list(c) for c in self.checked],
                "seconds": round(self.seconds, 3), "file_bytes": self.file_bytes,
                **({"notes": list(self.notes)} if self.notes else {}),
                **({"files": [str(f) for f in self.files]} if len(self.files) > 1 else {}),
                **({"quantized": self.quantized} if self.quantized else {})}


def onnx_export(model, x, path: Path, *, opset: int, dynamic: bool) -> None:
    """``torch.onnx.export`` without the exporter's warnings.

    They are about its own internals (constant folding of Slice, instance norm exported
    with input statistics, which is what InstanceNorm without running stats computes,
    the TorchScript exporter's deprecation) and a user cannot act on them; whether the
    file is right is checked by running it against PyTorch afterwards.
    """
    import warnings

    import torch

    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamic_axes=axes if dynamic else None, dynamo=False)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise NasPruneError(f"ONNX export needs the onnx extra: pip install 'nas-prune[onnx]' ({err})") from None


def run_onnx(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - depends on the environment
        raise NasPruneError("checking the ONNX file needs onnxruntime: pip install 'nas-prune[onnx]'") from None
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # the command's --threads, not every core
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x):
        return session.run(None, {name: x.numpy()})[0]

    return run




def compare_outputs(net, run, inputs, *, format: str) -> tuple[float, list[tuple[int, int, int]]]:
    """``(max |exported - pytorch|, [(N, H, W) compared])`` of ``run`` (an exported model's
    forward, numpy out) against ``net`` on each of ``inputs``.

    Raises:
        NasPruneError: an output of another shape than PyTorch's.
    """
    import torch

    worst, checked = 0.0, []
    for xi in inputs:
        with torch.no_grad():
            ref = net(xi).numpy()
        got = run(xi)
        if got.shape != ref.shape:
            raise NasPruneError(f"exported {format} model returns shape {got.shape}, PyTorch {ref.shape}")
        worst = max(worst, float(abs(got - ref).max()))
        checked.append((xi.shape[0], xi.shape[2], xi.shape[3]))
    return worst, checked


def ort_runner(model_bytes: bytes, example: "torch.Tensor", threads: int) -> Callable[[], object]:
    """A timed pass of an ONNX model on ONNX Runtime's CPU provider: ``threads`` intra-op threads,
    one inter-op thread, sequential execution, every graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example.numpy()}

    def run():
        return session.run(None, feed)

    return run
