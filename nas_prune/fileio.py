"""File I/O: atomic writes, and bounded JSON / YAML reads.

**Writes.** Every file nas-prune produces is written to a temporary file in the target
folder and renamed over the destination (``os.replace`` is atomic on POSIX and
Windows when both paths are on the same file system). Each write is listed in the
folder's manifest of nas-prune's own files (:mod:`nas_prune.outputs`) before the
rename, and an existing file the manifest does not list is never replaced. A write that
fails (a full disk: ``ENOSPC``, a file-size limit: ``EFBIG``, permissions) is one error naming
the path, and the temporary file is removed: nothing half-written stays behind.

**Reads** are bounded (size, encoding, depth, YAML aliases): :mod:`nas_prune.readers`, whose
names are re-exported here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nas_prune.errors import NasPruneError
from nas_prune.readers import (  # noqa: F401  (public names of this module)
    MAX_DEPTH,
    MAX_JSON_BYTES,
    MAX_YAML_BYTES,
    MAX_YAML_NODES,
    InvalidSyntaxError,
    check_yaml_bounds,
    json_depth,
    loads_json,
    loads_yaml,
    read_json,
    read_text,
    read_yaml,
)

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file is removed if the body raises. The file is recorded in its
    folder's manifest (:func:`nas_prune.outputs.record`) just before the rename.

    Raises:
        NasPruneError: ``path`` is a file nas-prune did not write (it is left alone),
            or the folder cannot be written (disk full, permissions, a file in the way).
    """
    from nas_prune.outputs import check_replaceable, record

    path = Path(path)
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_failed(path, err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        check_replaceable(path)  # nothing took its place while the body ran
        record(path, content=tmp_path)
        os.replace(tmp_path, path)
    except OSError as err:
        raise write_failed(path, err) from None
    except NasPruneError:
        raise
    except Exception as err:  # torch.save (RuntimeError) and safetensors (SafetensorError) report failed writes so
        if not _write_failure(err):
            raise
        raise write_failed(path, err) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_failure(err: BaseException) -> bool:
    """True for the errors torch and safetensors raise when the file system refuses a write.

    ``torch.save`` says only ``unexpected pos N vs M`` or ``file write failed`` (the errno is
    lost); safetensors says ``I/O error: ... (os error 28)``.
    """
    text = str(err).lower()
    return any(s in text for s in ("file write failed", "no space left", "file too large", "unexpected pos",
                                   "disk quota", "i/o error", "os error"))


def _disk_full(folder: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _size_limited() -> bool:
    try:
        import resource
    except ImportError:  # Windows
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


def _why(err: BaseException, path: Path) -> str:
    """Why a write failed, in words that say what to do about a full disk."""
    code = getattr(err, "errno", None)
    text = str(err).lower()
    if not isinstance(err, OSError) and code is None:  # torch / safetensors: find the cause from the system
        if "os error 28" in text or _disk_full(path.parent):
            code = errno.ENOSPC
        elif "os error 27" in text or _size_limited():
            code = errno.EFBIG
    if code == errno.ENOSPC or "no space left" in text:
        return f"no space left on the device (free some space on the disk holding {path.parent}, or write elsewhere)"
    if code == errno.EDQUOT or "quota" in text:
        return "disk quota exceeded"
    if code == errno.EFBIG or "file too large" in text:
        return "file too large for this file system or the process's file-size limit (ulimit -f)"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split())[:200] or type(err).__name__


def write_failed(path: str | os.PathLike, err: BaseException) -> NasPruneError:
    """The one-line error for a write of ``path`` that the system refused (full disk, size limit, ...)."""
    return NasPruneError(f"cannot write {path}: {_why(err, Path(path))}")


@contextlib.contextmanager
def naming_failures(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` of the body (a full disk, ...) into one error naming ``path``."""
    try:
        yield
    except OSError as err:
        raise write_failed(path, err) from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_readable(obj: Any, indent: int = 2) -> str:
    """JSON with objects indented and lists of numbers/strings kept on one line.

    ``json.dumps(indent=2)`` puts every list element on its own line, which turns an
    ``arch.json`` with kept channel indices into a thousand-line file; this keeps one
    layer per line so architectures stay readable and diff well. ``json.loads`` of the
    result equals ``obj``.
    """

    def fmt(value: Any, depth: int) -> str:
        pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
        if isinstance(value, dict):
            if not value:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {fmt(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(value, (list, tuple)):
            if all(not isinstance(v, (dict, list, tuple)) for v in value):
                return json.dumps(list(value))
            return "[\n" + ",\n".join(f"{inner}{fmt(v, depth + 1)}" for v in value) + "\n" + pad + "]"
        return json.dumps(value)

    return fmt(obj, 0)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as readable JSON (see :func:`dumps_readable`) to ``path`` atomically."""
    write_text(path, dumps_readable(obj) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------- bounded reads
