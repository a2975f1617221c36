"""ExecuTorch (``.pte``) with the XNNPACK backend, ExecuTorch's CPU backend for phones.

The module is captured with ``torch.export`` at the example's shape (the ``.pte`` has a fixed
input shape: export one per resolution you ship), lowered with
``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` and serialised. XNNPACK
does not take instance norm (``_native_batch_norm_legit.no_stats``): left in, it runs in
ExecuTorch's portable kernels and cuts the graph into one XNNPACK call per stretch between
norms, so nas-prune exports :mod:`~nas_prune.deploy_formats.decompose`'s equivalent form, which
XNNPACK runs whole. Reflection padding stays in the portable kernels (XNNPACK has no
reflect mode). The check loads the file with ExecuTorch's runtime pybindings.

``quantize=int8`` (:mod:`nas_prune.quantize`): static post-training quantization with
XNNPACK's quantizer (per-channel symmetric int8 weights, int8 activations calibrated on images),
through ``torchao``'s PT2E flow, before lowering. The decomposed instance norms are left in float
(quantizing their mean, variance and rsqrt lost 4 dB of PSNR on a test student), and so are the
first and last convolutions (:func:`nas_prune.quantize.end_convs`).
"""

from __future__ import annotations

from pathlib import Path

EXTRA = "executorch"
REQUIRES = ("executorch.exir",)
RUN_REQUIRES = ("executorch.runtime",)
STATIC = True


def outputs(out: Path) -> list[Path]:
    return [out / "generator.pte" if out.is_dir() or not out.suffix else out]


def lower(net, x, *, calibration=None) -> bytes:
    """The ``.pte`` bytes of ``net`` at ``x``'s shape; int8 when ``calibration`` (images) is given."""
    import warnings

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from nas_prune.deploy_formats.decompose import decompose_instance_norm

    net = decompose_instance_norm(net)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(net, (x,))
        if calibration is not None:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            from nas_prune.deploy_formats.decompose import decomposed_norm_type

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            # instance norm's mean / variance / rsqrt stay float: quantized, they cost the tiny
            # test student 4 dB of PSNR (31.1 -> 34.9 dB to float32 when left in float)
            quantizer = quantizer.set_module_type(decomposed_norm_type(), None)
            from nas_prune.quantize import end_convs

            ends = set(end_convs(net, x))  # the 3-channel convolutions at either end stay float
            quantizer = quantizer.set_filter_function(lambda node: not _in_modules(node, ends))
            prepared = prepare_pt2e(ep.module(), quantizer)
            for i in range(calibration.shape[0]):
                prepared(calibration[i : i + 1].expand(x.shape[0], -1, -1, -1).contiguous())
            converted = convert_pt2e(prepared)
            ep = torch.export.export(converted, (x,))
        program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    return program.buffer


def _in_modules(node, names: set[str]) -> bool:
    """Whether an exported graph's ``node`` was traced inside one of the modules ``names``
    (dotted paths, as ``named_modules`` gives them)."""
    stack = node.meta.get("nn_module_stack") or {}
    for path, _type in stack.values():
        path = str(path)
        if path.startswith("L['self']."):  # the form older torch.export versions record
            path = path[len("L['self']."):]
        if path in names:
            return True
    return False


def write(net, x, paths: list[Path], *, calibration=None, **_) -> list[str]:
    import executorch

    paths[0].write_bytes(lower(net, x, calibration=calibration))
    return [f"ExecuTorch {getattr(executorch, '__version__', '')} XNNPACK".replace("  ", " ")
            + (", int8 (XNNPACK quantizer, calibrated)" if calibration is not None else ", float32")
            + f", fixed input shape {'x'.join(map(str, x.shape))}; instance norm exported decomposed"]


def method(pte: bytes | Path, threads: int):
    """A callable ``x (tensor) -> numpy array`` running ExecuTorch's ``forward`` method of a
    program (bytes or path). It holds the program's bytes: ExecuTorch reads them in place."""
    from executorch.runtime import Runtime

    _threads(threads)
    rt = Runtime.get()
    program = rt.load_program(pte if isinstance(pte, (bytes, bytearray)) else Path(pte))
    forward = program.load_method("forward")

    def run(x, _keep=(pte, program)):
        return forward.execute([x.contiguous()])[0].numpy()

    return run


def _threads(threads: int) -> None:
    """XNNPACK's thread pool size (ExecuTorch's default is one thread per core)."""
    try:
        from executorch.extension.pybindings import portable_lib

        setter = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        if setter is not None:
            setter(int(threads))
    except Exception:  # pragma: no cover - older pybindings: the default pool is used
        pass


def runner(paths: list[Path], threads: int):
    return method(paths[0], threads)
