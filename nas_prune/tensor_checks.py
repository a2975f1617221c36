"""Checks on the tensors of a weights file before anything uses them as weights.

Every reader of a checkpoint whose tensors become a network's weights (teachers,
students, discriminators, VGG / Inception / segmenter weights) calls
:func:`check_weights` on the flat ``{key: tensor}`` dict it read. It refuses, naming the
first offending tensors:

* tensors that are not plain dense ones: sparse (COO, CSR, ...), quantized, nested, or on
  the ``meta`` device (no values at all). Later steps would otherwise fail deep inside
  torch (``NotImplementedError`` from a sparse kernel) or prune meaningless values;
* integer, bool or complex tensors where weights must be floating point. An ``int64``
  ``.pth`` or a safetensors header declaring ``I32`` for what are float bytes loads
  without complaint and ``load_state_dict`` casts it silently, so the student would get
  weights like {-1, 0, 1} or 1e9. The one integer buffer of torch's layers,
  batch norm's ``num_batches_tracked``, is allowed (and must be integer or float);
* NaN or infinite values (:func:`check_finite`).

Floating point includes half, bfloat16 and the float8 types; float8 has no ``isfinite``
kernel on CPU, so it is checked as float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["check_weights", "check_layout", "check_dtypes", "check_finite", "nested_tensors", "INTEGER_KEYS"]

#: Key endings of the tensors that are integer in a valid state dict (batch norm's step counter).
INTEGER_KEYS = ("num_batches_tracked",)

_LISTED = 3  # offending tensors named in a message


def _listed(bad: list[str]) -> str:
    more = f" (+{len(bad) - _LISTED} more tensors)" if len(bad) > _LISTED else ""
    return ", ".join(bad[:_LISTED]) + more


def _kind(value: "torch.Tensor") -> str | None:
    """What makes ``value`` not a plain dense tensor, or None."""
    import torch

    if value.is_nested:
        return "nested"
    if value.layout != torch.strided:
        return str(value.layout).removeprefix("torch.").replace("_", " ")  # "sparse coo", "sparse csr"
    if value.is_quantized:
        return f"quantized ({str(value.dtype).removeprefix('torch.')})"
    if value.device.type == "meta":
        return "meta-device (no values stored)"
    return None


def check_layout(tensors: Mapping[str, "torch.Tensor"], path: str | Path) -> None:
    """Raise NasPruneError naming the tensors that are sparse, quantized, nested or on ``meta``."""
    bad = [f"{key} ({kind})" for key, value in tensors.items() if (kind := _kind(value)) is not None]
    if bad:
        raise NasPruneError(f"{path}: not dense tensors: {_listed(bad)}; weights must be plain dense tensors "
                            "(save them with tensor.to_dense() / tensor.dequantize(), on a real device)")


def check_dtypes(tensors: Mapping[str, "torch.Tensor"], path: str | Path) -> None:
    """Raise NasPruneError naming the tensors that are not floating point (except :data:`INTEGER_KEYS`)."""
    import torch

    bad = []
    for key, value in tensors.items():
        if value.is_floating_point():
            continue
        if key.endswith(INTEGER_KEYS) and not value.is_complex() and value.dtype != torch.bool:
            continue
        bad.append(f"{key} ({str(value.dtype).removeprefix('torch.')})")
    if bad:
        raise NasPruneError(f"{path}: weights must be floating point, found {_listed(bad)}; the file holds integers "
                            "or its header declares the wrong dtype (export the weights as float32)")


def check_finite(tensors: Mapping[str, "torch.Tensor"], path: str | Path) -> None:
    """Raise NasPruneError naming the tensors that hold NaN or infinite values (first three)."""
    import torch

    bad = []
    for key, value in tensors.items():
        if not value.is_floating_point():
            continue
        if value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            value = value.float()  # float8: no isfinite kernel
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad.append(f"{key} ({int((~finite).sum())} of {value.numel()} values)")
    if bad:
        raise NasPruneError(f"{path}: non-finite weights (NaN or inf) in {_listed(bad)}; "
                            "the checkpoint is corrupt or was saved after a diverged training step")


def check_weights(tensors: Mapping[str, "torch.Tensor"], path: str | Path) -> None:
    """Layout, then dtype, then finiteness (module docstring); raises NasPruneError on the first failure."""
    check_layout(tensors, path)
    check_dtypes(tensors, path)
    check_finite(tensors, path)


def nested_tensors(obj: object, *, limit: int = 100_000) -> dict[str, "torch.Tensor"]:
    """The tensors inside nested dicts / lists / tuples (a training checkpoint), keyed by dotted path.

    Walks with an explicit stack (no recursion), visiting at most ``limit`` containers and values.
    """
    import torch

    found: dict[str, torch.Tensor] = {}
    stack: list[tuple[str, object]] = [("", obj)]
    seen = 0
    while stack and seen < limit:
        key, value = stack.pop()
        seen += 1
        if isinstance(value, torch.Tensor):
            found[key or "<root>"] = value
        elif isinstance(value, Mapping):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{key}.{i}" if key else str(i), v) for i, v in enumerate(value))
    return found
