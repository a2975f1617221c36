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
    """Trace ``net`` and run the ``pnnx`` converter on the trace (its executable, as
    ``pnnx.export`` does, without importing the Python module pnnx generates beside it)."""
    import subprocess
    import warnings

    import pnnx
    import torch

    from nas_prune.errors import NasPruneError

    work = paths[0].parent
    trace = work / "pnnx_trace.pt"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x[:1], check_trace=False).save(str(trace))
    shape = lambda t: "[" + ",".join(map(str, t.shape)) + "]f32"  # noqa: E731
    cmd = [pnnx.EXEC_PATH, str(trace), f"inputshape={shape(x[:1])}", "device=cpu", "optlevel=2",
           f"ncnnparam={paths[0]}", f"ncnnbin={paths[1]}", f"pnnxparam={work / 'p.pnnx.param'}",
           f"pnnxbin={work / 'p.pnnx.bin'}", f"pnnxpy={work / 'p_pnnx.py'}", f"pnnxonnx={work / 'p.pnnx.onnx'}",
           f"ncnnpy={work / 'p_ncnn.py'}"]
    if dynamic and example2 is not None:
        cmd.insert(3, f"inputshape2={shape(example2[:1])}")
    if not fp16:
        cmd.append("fp16=0")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if done.returncode != 0 or not paths[0].exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise NasPruneError(f"pnnx could not convert the generator ({tail[0][:200]})")
    version = getattr(pnnx, "__version__", "")
    return [f"pnnx {version}".strip() + f", {'float16' if fp16 else 'float32'} weights"
            + ("" if dynamic and example2 is not None else ", fixed input size")]


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
