"""Import the user's generator (``nets.py:NAME`` or ``package.module:NAME``) and load its weights.

nas-prune *executes* the user's code: importing ``nets.py`` runs it, as ``python nets.py``
would. The weights file is still loaded safely (``torch.load(weights_only=True)`` or
safetensors): a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while the body runs (so the user's sibling imports work)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _import_file(path: Path) -> Any:
    """Import ``path`` as a module named after its content (one module object per source version)."""
    digest = sha256_file(path)[:16]
    name = f"nas_prune_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NasPruneError(f"--model {path}: cannot be imported as a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and relative lookups need the module registered
    try:
        with _on_sys_path(str(path.parent)):
            spec.loader.exec_module(mod)
    except BaseException as err:  # the user's code: any failure is reported in one line
        sys.modules.pop(name, None)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise NasPruneError(f"--model {path}: importing it failed: {_one_line(err)}") from None
    return mod


def _resolve(spec: str, cwd: Path) -> tuple[Any, str, Path]:
    """``spec`` -> (imported module, normalised spec, source file)."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise NasPruneError(f"--model {spec!r}: expected FILE.py:NAME or package.module:NAME")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        path = (path if path.is_absolute() else cwd / path).resolve()
        if not path.is_file():
            raise NasPruneError(f"--model {spec!r}: no such file {path}")
        return _import_file(path), f"{path}:{name}", path
    try:
        with _on_sys_path(str(cwd)):
            mod = importlib.import_module(where)
    except ModuleNotFoundError as err:
        raise NasPruneError(f"--model {spec!r}: cannot import {where!r} ({_one_line(err)})") from None
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            raise
        raise NasPruneError(f"--model {spec!r}: importing {where!r} failed: {_one_line(err)}") from None
    source = getattr(mod, "__file__", None)
    if not source:
        raise NasPruneError(f"--model {spec!r}: module {where!r} has no source file to hash")
    return mod, f"{where}:{name}", Path(source).resolve()


def load_model_spec(
    spec: str, *, args: Mapping[str, Any] | None = None, cwd: str | os.PathLike | None = None
) -> tuple["torch.nn.Module", str, str]:
    """Build the user's generator from an import spec.

    Args:
        spec: ``nets.py:NAME`` (a file, relative to ``cwd``) or ``package.module:NAME``
            (importable from ``cwd`` or the installed packages). ``NAME`` is a class or a
            function returning an ``nn.Module`` (a ``define_G``-style factory); dotted names
            (``Outer.Inner``) reach nested attributes.
        args: keyword arguments for ``NAME``; must be JSON values (they are recorded in
            arch.json). Arguments JSON cannot express (a norm-layer class) stay at the
            defaults of ``NAME``'s signature.
        cwd: folder relative paths and top-level packages are resolved from (default: the
            current directory).

    Returns:
        ``(module, normalised spec, sha256 of the source file)``; the module is in eval
        mode. The normalised spec of a file names its absolute path.

    Raises:
        NasPruneError: the name cannot be imported, is not callable, the args do not fit its
            signature or are not JSON, building raised, or the result is not an ``nn.Module``.
    """
    import torch

    cwd = Path(cwd or os.getcwd()).resolve()
    args = dict(args or {})
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise NasPruneError(f"--model-args: not JSON values ({err})") from None
    mod, normalised, source = _resolve(spec, cwd)
    _, _, name = spec.rpartition(":")
    obj: Any = mod
    for part in name.split("."):
        if not hasattr(obj, part):
            raise NasPruneError(f"--model {spec!r}: {part!r} is not defined in {normalised.rpartition(':')[0]}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise NasPruneError(f"--model {spec!r}: {name} is a {type(obj).__name__}, not a class or function")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**args)
        except TypeError as err:
            raise NasPruneError(f"--model-args do not fit {name}{signature}: {err}") from None
    try:
        module = obj(**args)
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            raise
        raise NasPruneError(f"--model {spec!r}: {name}(**{args}) failed: {_one_line(err)}") from None
    if not isinstance(module, torch.nn.Module):
        raise NasPruneError(f"--model {spec!r}: {name}(...) returned a {type(module).__name__}, not an nn.Module")
    module.eval()
    return module, normalised, sha256_file(source)


#: Keys under which training frameworks nest a generator's state dict.
_WRAPPERS = ("state_dict", "params_ema", "params", "model", "generator", "netG", "G")


def read_state_dict(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Tensors of a checkpoint, loaded safely; unwraps ``{"state_dict": ...}``-style
    nesting and ``module.`` prefixes (DataParallel/DDP).

    Raises:
        NasPruneError: missing file, a pickle that needs code to load, or no tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - a corrupt file is the user's input
            raise NasPruneError(f"weights {path}: not a readable safetensors file ({_one_line(err)})") from None
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise NasPruneError(
                f"weights {path}: not a plain state dict (safe loading refused it: {_one_line(err)})"
            ) from None
    for _ in range(3):
        if isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping):
        raise NasPruneError(f"weights {path}: holds a {type(sd).__name__}, not a state dict")
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise NasPruneError(f"weights {path}: no tensors found")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    from nas_prune.tensor_checks import check_weights

    check_weights(tensors, path)  # dense, floating point, finite: as every loaded checkpoint
    return tensors


def load_weights(module: "torch.nn.Module", path: str | os.PathLike, *, first: int = 3) -> None:
    """Load a checkpoint into ``module`` (strict: every key and shape must match).

    Raises:
        NasPruneError: keys or shapes differ; the message lists the first ``first`` missing,
            unexpected and mis-shaped keys.
    """
    sd = read_state_dict(path)
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - first} more)" if len(items) > first else ""
                parts.append(f"{label} {len(items)}: {', '.join(items[:first])}{more}")
        raise NasPruneError(f"weights {path} do not fit the built module: {'; '.join(parts)}")
    module.load_state_dict({k: sd[k] for k in own}, strict=True)
