"""Read checkpoint files safely into flat ``{key: tensor}`` dicts.

``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` files are read with ``torch.load(weights_only=True)``
(pickled Python objects are refused, never unpickled) and ``.safetensors`` with safetensors.
Wrapped dicts are unwrapped (``{"state_dict": ...}``, ``{"G": ...}``, ``{"netG_A": ...}``, ...),
as are DataParallel ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes. What the
tensors mean is the generator families' business (:mod:`nas_prune.load`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "G", "netG", "netG_A", "G_A", "generator",
    "model", "net", "params", "params_ema", "ema",
)
_PREFIXES = ("module.", "_orig_mod.")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tensors(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (unwrapped, prefixes stripped).

    Raises:
        NasPruneError: missing file, unreadable file, pickled objects, no tensors.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise NasPruneError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise NasPruneError(f"checkpoint is not a file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise NasPruneError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            text = str(err)
            if "Unsupported global" in text or "Unsupported class" in text:
                found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
                what = f" ({found.group(1)})" if found else ""
                raise NasPruneError(
                    f"{path}: refused to load pickled Python objects{what}; save the generator's "
                    "state_dict (torch.save(model.state_dict(), path)) or use .safetensors"
                ) from None
            raise NasPruneError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise NasPruneError(f"{path}: not a PyTorch checkpoint ({first})") from None
    return _unwrap(raw, path)


def _unwrap(raw: Any, path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    obj = raw
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise NasPruneError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:5])
        raise NasPruneError(f"{path}: no tensors found (top-level keys: {keys or 'none'})")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def check_finite(tensors: Mapping[str, "torch.Tensor"], path: Path) -> None:
    """Raise NasPruneError naming the tensors that hold NaN or infinite values (first three).

    Kept for callers; :func:`nas_prune.tensor_checks.check_weights` checks layouts and dtypes too.
    """
    from nas_prune.tensor_checks import check_finite as finite

    finite(tensors, path)
