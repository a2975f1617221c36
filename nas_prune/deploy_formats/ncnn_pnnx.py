"""ncnn (``.ncnn.param`` + ``.ncnn.bin``) through pnnx, ncnn's PyTorch converter.

``pnnx.export`` traces the module and converts it; a second example of another height and
width makes the ncnn graph take any size (``[1, C, ?, ?]``). pnnx stores weights in float16
unless told otherwise; nas-prune writes float32 (``fp16=False``) so that the check against
PyTorch measures the conversion, not the rounding (ncnn casts to fp16 at load time on devices
that want it). The check runs ncnn on the CPU with its float16/bfloat16 storage and arithmetic
switched off, for the same reason. ncnn runs one image at a time (a ``Mat`` is C x H x W):
a batch is checked image by image. Instance norm is ncnn's own ``InstanceNorm`` layer.
pnnx also writes intermediate files (its own graph, a TorchScript trace, Python scripts): they
stay in the temporary folder and are removed.
"""

from __future__ import annotations

from pathlib import Path

EXTRA = "ncnn"
REQUIRES = ("pnnx",)
RUN_REQUIRES = ("ncnn",)
STATIC = False


def outputs(out: Path) -> list[Path]:
    if out.is_dir() or not out.suffix:
        param = out / "generator.ncnn.param"
    else:
        param = out if out.name.endswith(".param") else out.with_suffix(".param")
    return [param, param.with_suffix(".bin")]


def write(net, x, paths: list[Path], *, dynamic: bool, example2=None, fp16: bool = False, **_) -> list[str]:
    import contextlib
    import io
    import os

    import pnnx

    work = paths[0].parent
    kw = {"inputs2": (example2[:1],)} if dynamic and example2 is not None else {}
    # pnnx prints its passes on stdout and stderr (C++): kept quiet, its errors raise
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()):
        fd_out, fd_err = os.dup(1), os.dup(2)
        try:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            pnnx.export(net, str(work / "pnnx_trace.pt"), (x[:1],), ncnnparam=str(paths[0]),
                        ncnnbin=str(paths[1]), fp16=fp16, check_trace=False, **kw)
        finally:
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            os.close(fd_out)
            os.close(fd_err)
    return [f"pnnx {getattr(pnnx, '__version__', '')}".strip() + f", {'float16' if fp16 else 'float32'} weights"
            + ("" if kw else ", fixed input size")]


def load(paths: list[Path], threads: int):
    """An ``ncnn.Net`` of the files, float32 throughout, ``threads`` threads."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = int(threads)
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                 "use_bf16_packed"):
        if hasattr(net.opt, flag):
            setattr(net.opt, flag, False)
    if net.load_param(str(paths[0])) != 0 or net.load_model(str(paths[1])) != 0:
        from nas_prune.errors import NasPruneError

        raise NasPruneError(f"ncnn cannot load {paths[0]}")
    return net


def runner(paths: list[Path], threads: int):
    import ncnn
    import numpy as np

    net = load(paths, threads)

    def run(x):
        outs = []
        for i in range(x.shape[0]):
            with net.create_extractor() as ex:
                ex.input("in0", ncnn.Mat(x[i : i + 1].contiguous().numpy(), batch_index=0).clone())
                _, out = ex.extract("out0")
                outs.append(np.array(out.numpy(batch_index=0)))
        return np.concatenate(outs, axis=0)

    return run
