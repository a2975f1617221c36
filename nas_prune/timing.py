"""Round-robin timing of several models: the one loop every interleaved latency goes through.

Timing models one after the other in a single run lets a machine whose speed drifts (this
kind of shared CPU moves by 30% between runs) hit them all alike. Timing them strictly one pass
each per round measures something else, though: a runtime with its own worker threads per
model (ONNX Runtime's intra-op pool, OpenVINO's streams, XNNPACK's pool) leaves the previous
model's workers spinning for tens of milliseconds after its pass, on the cores the next model
needs. On a 2-core machine, ONNX Runtime's smallest student measured 39 ms round-robin beside
the teacher against 16 ms on its own; a 2.5G student 58 ms against 40 ms.

So, after switching to a model, :func:`round_robin` runs it untimed until ``settle_ms`` have
passed (at least one pass) and only then times one pass: every timed pass is a pass of a model
that has had the cores to itself, as when it is deployed alone, while the rounds still interleave.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

#: untimed running after each switch between models: longer than a runtime's idle worker
#: threads spin (ONNX Runtime's, measured: two 16 ms passes were needed, one was not enough)
SETTLE_MS = 50.0
#: a bound on those passes (a model of microseconds, or a clock that does not move)
MAX_SETTLE_PASSES = 50


def round_robin(
    runs: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    settle_ms: float = SETTLE_MS,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Each timed pass of each of ``runs`` (zero-argument callables), in milliseconds.

    ``warmup`` untimed passes of each first; then ``repeats`` rounds, one timed pass of each
    model per round, each preceded by untimed passes of that model adding up to ``settle_ms``
    (at least one, at most :data:`MAX_SETTLE_PASSES`) when more than one model is timed. ``clock`` returns seconds; ``sync`` waits
    for queued device work (CUDA).
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in runs}
    settle = len(runs) > 1
    for _ in range(repeats):
        for key, run in runs.items():
            if settle:
                start = clock()
                run()
                sync()
                passes = 1
                while (clock() - start) * 1000.0 < settle_ms and passes < MAX_SETTLE_PASSES:
                    run()
                    sync()
                    passes += 1
            t0 = clock()
            run()
            sync()
            samples[key].append((clock() - t0) * 1000.0)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of one model's passes (ms)."""
    return statistics.median(samples), min(samples), max(samples)
