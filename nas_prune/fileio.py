"""File I/O: atomic writes, and bounded JSON / YAML reads.

**Writes.** Every file nas-prune produces is written to a temporary file in the target
folder and renamed over the destination (``os.replace`` is atomic on POSIX and
Windows when both paths are on the same file system). Each write is listed in the
folder's manifest of nas-prune's own files (:mod:`nas_prune.outputs`) before the
rename, and an existing file the manifest does not list is never replaced. A write that
fails (a full disk: ``ENOSPC``, a file-size limit: ``EFBIG``, permissions) is one error naming
the path, and the temporary file is removed: nothing half-written stays behind.

**Reads.** Every JSON and YAML file nas-prune reads (recipes, search spaces, ``arch.json``,
``config.json``, ``status.json``, ``stage.json``, manifests, latency tables) goes through
:func:`read_json` / :func:`read_yaml`, which bound what a hostile or broken file can do:

* size: at most ``max_bytes`` are read (:data:`MAX_JSON_BYTES`, :data:`MAX_YAML_BYTES`), so
  ``/dev/zero`` or a 10 GB file is an error, not an out-of-memory;
* encoding: bytes that are not UTF-8 (random bytes, a checkpoint given as a recipe) are named
  with the byte and its offset, not a ``UnicodeDecodeError``; a UTF-8 byte-order mark is allowed;
* nesting: at most ``max_depth`` (:data:`MAX_DEPTH`) levels of lists / mappings, counted
  without recursion before parsing (Python's parsers recurse, and ``[[[[...]]]]`` deep enough
  ends in ``RecursionError``);
* YAML aliases: the document expanded (every alias counted as the nodes it stands for) has
  at most ``max_nodes`` nodes (:data:`MAX_YAML_NODES`), so a "billion laughs" file is refused
  before anything walks it;
* syntax: an error with the line (YAML) or line and column (JSON), raised as
  :class:`InvalidSyntaxError` (a :class:`NasPruneError`) so callers that accept plain text
  (``--set KEY=VALUE``) can tell bad syntax from a refused document.
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

#: Largest JSON file read (nas-prune's own are kilobytes; an arch.json of a big teacher ~100 KB).
MAX_JSON_BYTES = 16 * 2**20
#: Largest YAML file read (recipes and search spaces are a few KB; YAML is parsed in Python).
MAX_YAML_BYTES = 2**20
#: Deepest nesting of lists / mappings accepted (nas-prune's files nest 5 levels at most).
MAX_DEPTH = 64
#: Most nodes a YAML document may expand to through its aliases.
MAX_YAML_NODES = 200_000


class InvalidSyntaxError(NasPruneError):
    """A JSON / YAML document that does not parse (the message gives the line)."""


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


def read_text(path: str | os.PathLike, *, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped), at most ``max_bytes`` long.

    Raises:
        NasPruneError: missing or unreadable file, too large, or not UTF-8 (byte and offset named).
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block, /dev/zero never end
        raise NasPruneError(f"{path} is not a regular file (a device, FIFO or socket); give {_a(what)} as a file")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise NasPruneError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise NasPruneError(f"{path} is a folder, not {_a(what)}") from None
    except OSError as err:
        raise NasPruneError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(raw) > max_bytes:
        raise NasPruneError(f"{path}: larger than {max_bytes:,} bytes, too large for {_a(what)}; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NasPruneError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                            f"is it {_a(what)}?") from None
    return text.removeprefix("\ufeff")


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets inside strings ignored), without recursion."""
    import numpy as np

    bare = _JSON_STRING.sub("", text)
    codes = np.frombuffer(bare.encode("utf-8"), dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int64)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max()) if steps.size else 0


def _too_deep(source: str, depth: int | None, max_depth: int) -> NasPruneError:
    found = f"{depth} levels deep, more than the {max_depth} accepted" if depth is not None else (
        f"more than {max_depth} levels deep")
    return NasPruneError(f"{source}: lists / mappings nested {found}; is it the right file?")


def loads_json(text: str, *, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` with the nesting bounded (module docstring); ``source`` names it in errors.

    Raises:
        NasPruneError: too deeply nested; InvalidSyntaxError: not valid JSON.
    """
    depth = json_depth(text)
    if depth > max_depth:
        raise _too_deep(source, depth, max_depth)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidSyntaxError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise _too_deep(source, None, max_depth) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise InvalidSyntaxError(f"{source}: not valid JSON ({err})") from None


def read_json(path: str | os.PathLike, *, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Parse the JSON file ``path``, bounded in size, encoding and depth (module docstring).

    Raises:
        NasPruneError: missing, unreadable, too large, not UTF-8, too deep, or not valid JSON
            (:class:`InvalidSyntaxError`); the message names ``path``.
    """
    return loads_json(read_text(path, what=what, max_bytes=max_bytes), source=str(path), max_depth=max_depth)


def _yaml_error(source: str, err: Exception) -> InvalidSyntaxError:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    return InvalidSyntaxError(f"{source}: not valid YAML{where}: {problem}")


def check_yaml_bounds(text: str, *, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> None:
    """Walk the YAML event stream of ``text`` (no recursion) and bound its depth and alias expansion.

    Raises:
        NasPruneError: too deep, or too many nodes once aliases are expanded;
            InvalidSyntaxError: not valid YAML.
    """
    import yaml

    stack: list[tuple[str | None, int]] = []
    sizes: dict[str, int] = {}
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                nodes += 1
                stack.append((event.anchor, nodes))
                if len(stack) > max_depth:
                    raise _too_deep(source, None, max_depth)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, start = stack.pop()
                if anchor is not None:
                    sizes[anchor] = nodes - start + 1
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                nodes += sizes.get(event.anchor, 1)
            if nodes > max_nodes:
                raise NasPruneError(f"{source}: expands to more than {max_nodes:,} values through its aliases "
                                    "(&anchor / *alias); is it the right file?")
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None


def loads_yaml(text: str, *, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> Any:
    """``yaml.safe_load(text)`` after :func:`check_yaml_bounds`; ``source`` names it in errors.

    Raises:
        NasPruneError: too deep or too large once expanded; InvalidSyntaxError: not valid YAML
            (line named), including tags that would construct Python objects.
    """
    import yaml

    check_yaml_bounds(text, source=source, max_depth=max_depth, max_nodes=max_nodes)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None
    except RecursionError:
        raise _too_deep(source, None, max_depth) from None


def read_yaml(path: str | os.PathLike, *, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES,
              max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse the YAML file ``path`` (safe loader), bounded in size, encoding, depth and aliases.

    Raises:
        NasPruneError: missing, unreadable, too large, not UTF-8, too deep, too many nodes, or
            not valid YAML (:class:`InvalidSyntaxError`); the message names ``path``.
    """
    text = read_text(path, what=what, max_bytes=max_bytes)
    return loads_yaml(text, source=str(path), max_depth=max_depth, max_nodes=max_nodes)
