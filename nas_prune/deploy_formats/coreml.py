"""Core ML (``.mlpackage``, an ML program) through coremltools.

The module is traced (``torch.jit.trace``) and converted with ``coremltools.convert`` to an
ML program (iOS 16 / macOS 13 or later) computing in float32; height and width are flexible
(``RangeDim`` from 4x the size multiple up to 2048), batch is the example's. Instance norm is
Core ML's own ``instance_norm`` op, so no decomposition is needed.

Core ML models run only on Apple platforms: ``MLModel.predict`` is not available on Linux,
so the exported file cannot be run and compared with PyTorch here. What is checked instead
(:func:`validate`), on the saved package read back: it is an ML program; its input and output
are named ``input`` / ``output``, float32, with the example's channels and the flexible size
range; every op of its program is one the converter emits for these generators
(:data:`KNOWN_OPS`); and its weights (the float ``const`` tensors with more than one element) hold as
many values as the generator has parameters and buffers that a forward pass reads. The report
says that the outputs were not compared.
"""

from __future__ import annotations

from pathlib import Path

from nas_prune.errors import NasPruneError

EXTRA = "coreml"
REQUIRES = ("coremltools",)
RUN_REQUIRES = ()
STATIC = False
KNOWN_OPS = frozenset({"add", "const", "conv", "conv_transpose", "crop", "instance_norm", "batch_norm", "pad",
                       "relu", "tanh", "mul", "sub", "real_div", "concat", "upsample_nearest_neighbor",
                       "leaky_relu", "sigmoid", "reshape", "transpose", "slice_by_index", "cast",
                       "upsample_bilinear", "resize_nearest_neighbor"})
MAX_SIDE = 2048


def outputs(out: Path) -> list[Path]:
    return [out / "generator.mlpackage" if out.is_dir() or not out.suffix else out.with_suffix(".mlpackage")]


def write(net, x, paths: list[Path], *, dynamic: bool, size_multiple: int = 4, **_) -> list[str]:
    import warnings

    import coremltools as ct
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x, check_trace=False)
        h, w = x.shape[2], x.shape[3]
        low = 4 * size_multiple
        dims = ((ct.RangeDim(min(low, h), max(MAX_SIDE, h), default=h), ct.RangeDim(min(low, w), max(MAX_SIDE, w),
                                                                                     default=w))
                if dynamic else (h, w))
        model = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=ct.Shape((x.shape[0], x.shape[1], *dims)))],
                           outputs=[ct.TensorType(name="output")], convert_to="mlprogram",
                           compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    model.save(str(paths[0]))
    return [f"coremltools {ct.__version__} ML program (iOS 16+), float32"]


def program_ops(spec) -> tuple[list[str], int]:
    """``(op types, number of weight values)`` of an ML program's main function."""
    from coremltools.proto import MIL_pb2

    floats = {MIL_pb2.DataType.FLOAT32, MIL_pb2.DataType.FLOAT16}
    ops: list[str] = []
    weights = 0
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops.append(op.type)
                if op.type == "const":
                    for out in op.outputs:
                        t = out.type.tensorType
                        n = 1
                        for d in t.dimensions:
                            n *= int(d.constant.size) if d.HasField("constant") else 0
                        if t.rank >= 1 and n > 1 and t.dataType in floats:
                            weights += n
    return ops, weights


def validate(paths: list[Path], net, x) -> list[str]:
    """Check the saved package's spec (module docstring); return what was checked.

    Raises:
        NasPruneError: naming the first thing that does not hold.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(paths[0]))
    if spec.WhichOneof("Type") != "mlProgram":
        raise NasPruneError(f"Core ML: {paths[0].name} is a {spec.WhichOneof('Type')}, not an ML program")
    ins, outs = list(spec.description.input), list(spec.description.output)
    if [i.name for i in ins] != ["input"] or [o.name for o in outs] != ["output"]:
        raise NasPruneError(f"Core ML: inputs {[i.name for i in ins]}, outputs {[o.name for o in outs]}; "
                            "expected input and output")
    arr = ins[0].type.multiArrayType
    if arr.dataType != ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
        raise NasPruneError("Core ML: the input is not float32")
    if list(arr.shape)[:2] != [x.shape[0], x.shape[1]]:
        raise NasPruneError(f"Core ML: input shape {list(arr.shape)} does not start with {list(x.shape[:2])}")
    ops, weights = program_ops(spec)
    unknown = sorted(set(ops) - KNOWN_OPS)
    if unknown:
        raise NasPruneError(f"Core ML: unexpected ops in the program: {', '.join(unknown)}")
    expected = sum(p.numel() for p in net.parameters() if p.numel() > 1)
    expected += sum(b.numel() for n, b in net.named_buffers() if b.numel() > 1 and "num_batches" not in n)
    if weights != expected:
        raise NasPruneError(f"Core ML: the program holds {weights:,} weight values, the generator {expected:,}")
    return [f"Core ML cannot run on Linux: {paths[0].name} was not run; its spec was validated "
            f"(ML program, input/output float32, {len(ops)} ops of {len(set(ops))} known types, "
            f"{weights:,} weight values = the generator's)"]
