"""Atomic file writes: a half-written output is never left behind.

Every file nas-prune produces is written to a temporary file in the target
folder and renamed over the destination (``os.replace`` is atomic on POSIX and
Windows when both paths are on the same file system). Each write is listed in the
folder's manifest of nas-prune's own files (:mod:`nas_prune.outputs`) before the
rename, and an existing file the manifest does not list is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nas_prune.errors import NasPruneError


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
        raise NasPruneError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        check_replaceable(path)  # nothing took its place while the body ran
        record(path, content=tmp_path)
        os.replace(tmp_path, path)
    except OSError as err:
        raise NasPruneError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
