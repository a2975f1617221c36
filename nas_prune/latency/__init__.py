"""Latency on the runtime a student will be deployed to: measurement, tables, targets.

- :mod:`nas_prune.latency.runtime`: runtimes (``torch-cpu``, ``onnxruntime``, ``cuda``)
  and :func:`measure_latency`, the one timing routine nas-prune uses everywhere.
- :mod:`nas_prune.latency.table`: per-layer-shape latency tables cached on disk, and the
  calibrated, monotone predictor built from them.
- :mod:`nas_prune.latency.target`: one-step pruning to a latency target (with or without a
  MACs target), ``--round-to auto``, and the end-to-end check that shrinks the student
  until its measured latency meets the target.
"""

from nas_prune.latency.runtime import (
    RUNTIMES,
    Latency,
    Runtime,
    format_ms,
    measure_interleaved,
    measure_latency,
    parse_latency,
)

__all__ = [
    "RUNTIMES",
    "Latency",
    "Runtime",
    "format_ms",
    "measure_interleaved",
    "measure_latency",
    "parse_latency",
]
