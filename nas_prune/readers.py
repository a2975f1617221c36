"""Bounded JSON / YAML reads: every file nas-prune reads goes through here.

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

import json
import os
import re
from pathlib import Path
from typing import Any

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
