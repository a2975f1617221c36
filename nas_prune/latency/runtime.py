"""Where a generator runs, and how long one forward pass takes there.

Runtimes (``--runtime``):

``torch-cpu``
    Eager PyTorch on the CPU under ``torch.inference_mode``, with ``threads`` intra-op
    threads (``torch.set_num_threads``, restored afterwards).
``onnxruntime``
    The module exported to ONNX in memory (opset 17, the legacy TorchScript exporter,
    as ``nas-prune export``) and run by ONNX Runtime's CPU execution provider with
    ``threads`` intra-op threads, one inter-op thread, sequential execution and all
    graph optimisations. Needs the ``onnx`` extra.
``cuda``
    Eager PyTorch on the current CUDA device, synchronised around each timed pass.
``openvino``, ``ncnn``, ``executorch``, ``onnxruntime-int8``, ``executorch-int8``
    The module converted as ``nas-prune export --format`` converts it (int8: calibrated
    static quantization) and run in that runtime on the CPU (:mod:`nas_prune.latency.backends`).

A measurement (:meth:`Runtime.time`) runs ``warmup`` untimed passes (allocator,
kernel selection, ONNX Runtime's first-run set-up), then ``repeats`` timed ones; a
latency is the median of the timed passes in milliseconds. Latencies depend on the
machine and on its load: compare numbers measured on one machine, interleaved.

Every timing goes through two methods of :class:`Runtime`, :meth:`~Runtime.prepare`
(what one pass runs) and :meth:`~Runtime.clock`: tests subclass it with a deterministic
clock that a pass advances by a made-up cost, so nothing that checks a latency target
depends on the speed of the machine running the tests.
"""

from __future__ import annotations

import contextlib
import io
import math
import platform
import re
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

from nas_prune.latency.backends import CHANNEL_BLOCK, EXTRA_RUNTIMES

RUNTIMES = ("torch-cpu", "onnxruntime", "cuda", *EXTRA_RUNTIMES)
ONNX_OPSET = 17
_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency(value: str | float | int, *, option: str = "--target-latency") -> float:
    """``"40ms"`` / ``"0.04s"`` / ``"40000us"`` -> milliseconds (a positive, finite float).

    A bare number is refused: a latency budget without a unit is too easy to get
    wrong by a factor of 1000.

    Raises:
        NasPruneError: no unit, an unknown unit, or a value that is not > 0.
    """
    if isinstance(value, bool):
        raise NasPruneError(f"{option} {value!r}: expected a duration such as 40ms or 0.04s")
    if isinstance(value, (int, float)):
        raise NasPruneError(f"{option} {value!r}: give a unit, e.g. {value}ms or {value}s")
    text = str(value).strip()
    m = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ]*)", text)
    if not m:
        raise NasPruneError(f"{option} {text!r}: expected a duration such as 40ms or 0.04s")
    number, unit = float(m.group(1)), m.group(2).lower()
    if not unit:
        raise NasPruneError(f"{option} {text!r}: give a unit, e.g. {text}ms or {text}s")
    if unit not in _UNITS:
        raise NasPruneError(f"{option} {text!r}: unknown unit {m.group(2)!r}: use ms, s or us")
    ms = number * _UNITS[unit]
    if not math.isfinite(ms) or ms <= 0:
        raise NasPruneError(f"{option} {text!r}: must be a positive duration")
    return ms


def format_ms(ms: float) -> str:
    """``12.3456`` -> ``"12.3 ms"`` (three significant digits below 100 ms)."""
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency.

    Attributes:
        median_ms: median over ``samples_ms``.
        samples_ms: each timed pass, in milliseconds.
        device: e.g. ``cpu (AMD EPYC, 2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``.
        input_shape: ``(N, C, H, W)`` of the timed batch.
        runtime: one of :data:`RUNTIMES`.
        threads: CPU threads used (None on CUDA).
        warmup: untimed passes before the timed ones.
    """

    median_ms: float
    samples_ms: tuple[float, ...]
    device: str
    input_shape: tuple[int, int, int, int]
    runtime: str = "torch-cpu"
    threads: int | None = None
    warmup: int = 0

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    def to_json(self) -> dict:
        """JSON-ready summary (median, min, max, runs, warm-up; samples rounded to µs)."""
        return {
            "runtime": self.runtime, "device": self.device, "threads": self.threads,
            "input_shape": list(self.input_shape), "median_ms": round(self.median_ms, 4),
            "min_ms": round(self.min_ms, 4), "max_ms": round(self.max_ms, 4),
            "runs": len(self.samples_ms), "warmup": self.warmup,
        }


class Runtime:
    """A place to run generators and time them (see the module docstring).

    Args:
        name: one of :data:`RUNTIMES`.
        threads: CPU intra-op threads; None = torch's current setting. Ignored by ``cuda``
            (recorded as None).
        batch: images per timed pass (>= 1).

    Raises:
        NasPruneError: unknown runtime, bad threads/batch, CUDA unavailable, or
            onnxruntime missing (naming the ``onnx`` extra).
    """

    def __init__(self, name: str = "torch-cpu", *, threads: int | None = None, batch: int = 1):
        import torch

        if name not in RUNTIMES:
            raise NasPruneError(f"unknown runtime {name!r}: choose {', '.join(RUNTIMES)}")
        if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
            raise NasPruneError(f"--threads must be >= 1, got {threads}")
        if batch < 1:
            raise NasPruneError(f"--batch must be >= 1, got {batch}")
        if name == "cuda" and not torch.cuda.is_available():
            raise NasPruneError(
                f"runtime cuda: CUDA is not available here (torch {torch.__version__}"
                f"{', built without CUDA' if torch.version.cuda is None else ', no GPU found'}); "
                "use --runtime torch-cpu or onnxruntime"
            )
        if name == "onnxruntime":
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
            except ImportError:
                raise NasPruneError(
                    "runtime onnxruntime needs the onnx extra: pip install 'nas-prune[onnx]'"
                ) from None
        if name in EXTRA_RUNTIMES:
            from nas_prune.latency.backends import missing

            absent, extra = missing(name)
            if absent:
                raise NasPruneError(f"runtime {name} needs the {extra} extra ({', '.join(absent)} not installed): "
                                    f"pip install 'nas-prune[{extra}]'")
        self.name = name
        # Channels the runtime's conv kernels process together (nas_prune.latency.table.effective_width):
        # MLAS, ONNX Runtime's CPU library, and oneDNN under eager PyTorch on the CPU block them by 8.
        self.channel_block = 8 if name in ("onnxruntime", "torch-cpu") else CHANNEL_BLOCK.get(name, 1)
        self.batch = int(batch)
        self.threads = None if name == "cuda" else int(threads or torch.get_num_threads())

    # ------------------------------------------------------------------ description
    def device(self) -> str:
        """What the latencies were measured on, e.g. ``cpu (AMD EPYC, 2 threads)``."""
        if self.name == "cuda":
            import torch

            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
        return f"cpu ({cpu_name()}, {self.threads} threads)"

    def versions(self) -> dict[str, str]:
        """Library versions a latency depends on (part of the latency-table cache key)."""
        import torch

        out = {"torch": torch.__version__}
        if self.name == "onnxruntime":
            import onnx
            import onnxruntime

            out.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
        if self.name == "cuda":
            out.update(cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
        if self.name in EXTRA_RUNTIMES:
            from nas_prune.latency.backends import versions

            out.update(versions(self.name))
        return out

    def describe(self) -> dict:
        """``{"runtime", "device", "threads", "batch"}`` as recorded in ``arch.json``."""
        return {"runtime": self.name, "device": self.device(), "threads": self.threads, "batch": self.batch}

    # ------------------------------------------------------------------ running
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Thread setting for the duration of a measurement (torch's is restored after)."""
        import torch

        before = torch.get_num_threads()
        if self.name != "cuda":
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prepare(self, module, example: "torch.Tensor") -> Callable[[], object]:
        """A zero-argument callable that runs ``module`` on ``example`` once on this runtime."""
        import torch

        module = module.eval()
        if self.name == "onnxruntime":
            return _ort_runner(module, example, self.threads)
        if self.name in EXTRA_RUNTIMES:
            from nas_prune.latency.backends import runner

            return runner(self.name, module, example, self.threads)
        device = torch.device("cuda" if self.name == "cuda" else "cpu")
        module = module.to(device)
        x = example.to(device)

        def run():
            with torch.inference_mode():
                return module(x)

        return run

    def clock(self) -> float:
        """Seconds from an arbitrary origin (``time.perf_counter``)."""
        return time.perf_counter()

    def busy_cores(self) -> float | None:
        """Cores other processes keep busy now (:func:`nas_prune.threads.busy_cores`; sampled)."""
        from nas_prune.threads import busy_cores

        return busy_cores()

    def load_meter(self) -> Callable[[], float | None]:
        """Starts a load reading; calling the result gives the cores other processes kept busy
        since (this process's threads excluded; None without ``/proc``)."""
        from nas_prune.threads import cpu_sample, others_busy

        start = cpu_sample()
        return lambda: others_busy(start)

    def sync(self) -> None:
        if self.name == "cuda":
            import torch

            torch.cuda.synchronize()

    def time(self, module, input_shape: Sequence[int], *, warmup: int = 2, repeats: int = 10,
             min_total_ms: float = 0.0, max_repeats: int | None = None) -> list[float]:
        """Time ``module`` on seeded noise of ``input_shape``; return each timed pass in ms.

        Runs ``warmup`` untimed passes, then at least ``repeats`` timed ones, continuing
        (up to ``max_repeats``) until the timed passes add up to ``min_total_ms``, so that
        sub-millisecond layers get enough samples for a stable median.
        """
        import torch

        if repeats < 1:
            raise NasPruneError(f"latency repeats must be >= 1, got {repeats}")
        g = torch.Generator().manual_seed(0)
        x = torch.rand(*input_shape, generator=g).mul_(2).sub_(1)
        with self.session():
            run = self.prepare(module, x)
            for _ in range(warmup):
                run()
            self.sync()
            samples: list[float] = []
            limit = max(repeats, max_repeats or repeats)
            while len(samples) < repeats or (sum(samples) < min_total_ms and len(samples) < limit):
                t0 = self.clock()
                run()
                self.sync()
                samples.append((self.clock() - t0) * 1000.0)
        return samples

    def latency(self, samples: Sequence[float], input_shape: Sequence[int], warmup: int) -> Latency:
        return Latency(statistics.median(samples), tuple(samples), self.device(), tuple(input_shape),
                       self.name, self.threads, warmup)


def _ort_runner(module, example: "torch.Tensor", threads: int) -> Callable[[], object]:
    import torch

    buf = io.BytesIO()
    with torch.no_grad(), warnings_quiet():
        torch.onnx.export(module, (example,), buf, input_names=["input"], output_names=["output"],
                          opset_version=ONNX_OPSET, dynamo=False)
    from nas_prune.onnx_io import ort_runner

    return ort_runner(buf.getvalue(), example, threads)


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def resolve_runtime(runtime: "str | Runtime | None", *, threads: int | None = None, batch: int = 1,
                    device: "str | torch.device | None" = None) -> Runtime:
    """A :class:`Runtime` from a name (or one given), ``torch-cpu``/``cuda`` from ``device`` if None."""
    if isinstance(runtime, Runtime):
        return runtime
    if runtime is None:
        runtime = "cuda" if device is not None and str(device).startswith("cuda") else "torch-cpu"
    return Runtime(runtime, threads=threads, batch=batch)


def measure_latency(
    model,
    *,
    input_size: tuple[int, int] = (256, 256),
    batch_size: int = 1,
    device: "str | torch.device | None" = None,
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 10,
    runtime: "str | Runtime | None" = None,
) -> Latency:
    """Median forward time of ``model`` (a generator with ``.arch``) on one batch of noise.

    Every latency nas-prune reports goes through here: ``search --target-latency``'s
    end-to-end check, ``profile --latency`` and the Optuna study's latency objective.

    Args:
        input_size: ``(H, W)``.
        batch_size: images per pass (ignored when ``runtime`` is a :class:`Runtime`: its batch).
        device: ``cpu`` / ``cuda``; picks the runtime when ``runtime`` is None
            (default the model's device).
        threads: CPU threads while timing; default torch's current setting.
        warmup: untimed passes first.
        repeats: timed passes (>= 1).
        runtime: a name of :data:`RUNTIMES` or a :class:`Runtime`.
    """
    if repeats < 1:
        raise NasPruneError(f"latency repeats must be >= 1, got {repeats}")
    if device is None and runtime is None:
        device = next(model.parameters()).device
    from nas_prune.model import input_channels

    rt = resolve_runtime(runtime, threads=threads, batch=batch_size, device=device)
    H, W = input_size
    shape = (rt.batch, input_channels(model.arch), H, W)
    samples = rt.time(model, shape, warmup=warmup, repeats=repeats)
    return rt.latency(samples, shape, warmup)


def measure_interleaved(models: dict[str, object], rt: Runtime, input_shape: Sequence[int], *,
                        warmup: int = 2, repeats: int = 20) -> dict[str, Latency]:
    """Time several models round-robin (one timed pass of each per round, each after the
    settling passes of :func:`nas_prune.timing.round_robin`), so that background load drifting
    over time hits all of them alike. ``input_shape`` is ``(N, C, H, W)``."""
    import torch

    from nas_prune.timing import round_robin

    g = torch.Generator().manual_seed(0)
    x = torch.rand(*input_shape, generator=g).mul_(2).sub_(1)
    with rt.session():
        runs = {k: rt.prepare(m, x) for k, m in models.items()}
        samples = round_robin(runs, repeats=repeats, warmup=warmup, clock=rt.clock, sync=rt.sync)
    return {k: rt.latency(v, input_shape, warmup) for k, v in samples.items()}
