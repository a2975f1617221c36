"""The ``module`` family's architecture: the JSON record a student is rebuilt from.

A :class:`ModuleArch` is not a list of widths of a known network: it names the user's code
(the import spec and its JSON args), pins it (the SHA-256 of the source file), and says how
it was cut (the input shape of the trace, the ``--keep`` modules, and the kept root-channel
indices of every prunable group, teacher indices, ascending). The teacher itself is the
arch that keeps every channel. :meth:`ModuleArch.record` is the engine's record
(:func:`nas_prune.families.module.prune.rebuild` reads it), so the student is rebuilt from
``arch.json`` and the code alone: no teacher weights, no pickled modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_fields

_FIELDS = {"family", "model", "args", "source_sha256", "input_size", "keep", "kept"}


@dataclass(frozen=True)
class ModuleArch:
    """A generator of the user's code, cut to kept channels.

    Attributes:
        model: normalised import spec (``/abs/path/nets.py:NAME`` or ``package.module:NAME``).
        args_json: the keyword arguments of ``NAME`` as canonical JSON (``args`` gives the dict).
        source_sha256: hex SHA-256 of the source file when the arch was made.
        input_size: ``(1, C, H, W)`` the channel groups were traced with.
        keep: module paths whose channels are never pruned.
        kept: ``((group id, kept root-channel indices), ...)`` for every prunable group.
        allow_changed_source: build even when the source file's hash differs (a run
            option, not part of the architecture: never written, never compared).
    """

    family: ClassVar[str] = "module"

    model: str
    args_json: str
    source_sha256: str
    input_size: tuple[int, ...]
    keep: tuple[str, ...]
    kept: tuple[tuple[str, tuple[int, ...]], ...]
    allow_changed_source: bool = field(default=False, compare=False, repr=False)

    @property
    def args(self) -> dict[str, Any]:
        return json.loads(self.args_json)

    @property
    def kept_dict(self) -> dict[str, list[int]]:
        return {g: list(idx) for g, idx in self.kept}

    @property
    def widths(self) -> dict[str, int]:
        """``{group id: kept channels}``."""
        return {g: len(idx) for g, idx in self.kept}

    @property
    def input_nc(self) -> int:
        return int(self.input_size[1])

    @property
    def output_nc(self) -> int:
        """Channels of the (first) output, from the trace of the teacher-shaped module."""
        from nas_prune.families.module.teacher import trace_of

        shape = trace_of(self).output_shape
        first = shape[0] if shape and isinstance(shape[0], tuple) else shape
        return int(first[1])

    def record(self) -> dict[str, Any]:
        """The engine's record (:data:`nas_prune.families.module.prune.FORMAT`)."""
        from nas_prune.families.module.prune import FORMAT, VERSION

        return {"format": FORMAT, "version": VERSION, "family": "module", "model": self.model,
                "args": self.args, "source_sha256": self.source_sha256, "input_size": list(self.input_size),
                "keep": list(self.keep), "kept": self.kept_dict}

    def to_dict(self) -> dict[str, Any]:
        return {"family": "module", "model": self.model, "args": self.args, "source_sha256": self.source_sha256,
                "input_size": list(self.input_size), "keep": list(self.keep), "kept": self.kept_dict}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "arch") -> "ModuleArch":
        """Validate an ``arch`` section (``family: module``).

        Raises:
            NasPruneError: the first bad, missing or unknown field, named (``arch.kept.body.0:out``).
        """
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{where}: expected an object, got {type(data).__name__}")
        check_fields(data, where, _FIELDS, _FIELDS - {"family", "keep"})
        if data.get("family", "module") != "module":
            raise NasPruneError(f"{where}.family: expected 'module', got {data['family']!r}")
        model = data["model"]
        if not isinstance(model, str) or ":" not in model:
            raise NasPruneError(f"{where}.model: expected an import spec FILE.py:NAME or package.module:NAME")
        args = data["args"]
        if not isinstance(args, Mapping):
            raise NasPruneError(f"{where}.args: expected an object of keyword arguments")
        try:
            args_json = json.dumps(dict(args), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise NasPruneError(f"{where}.args: not JSON values ({err})") from None
        sha = data["source_sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise NasPruneError(f"{where}.source_sha256: expected 64 lowercase hex digits")
        size = data["input_size"]
        if (not isinstance(size, (list, tuple)) or len(size) != 4 or size[0] != 1
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise NasPruneError(f"{where}.input_size: expected [1, C, H, W] of positive integers, got {size!r}")
        keep = data.get("keep", [])
        if not isinstance(keep, (list, tuple)) or not all(isinstance(k, str) for k in keep):
            raise NasPruneError(f"{where}.keep: expected a list of module paths")
        kept = data["kept"]
        if not isinstance(kept, Mapping):
            raise NasPruneError(f"{where}.kept: expected an object of group id -> kept channel indices")
        items = []
        for gid, idx in kept.items():
            if (not isinstance(idx, (list, tuple)) or not idx
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)):
                raise NasPruneError(f"{where}.kept.{gid}: expected a non-empty list of channel indices")
            if any(b <= a for a, b in zip(idx, idx[1:])):
                raise NasPruneError(f"{where}.kept.{gid}: indices must be strictly increasing")
            items.append((str(gid), tuple(idx)))
        return cls(model=model, args_json=args_json, source_sha256=sha, input_size=tuple(size),
                   keep=tuple(keep), kept=tuple(items))

    def summary(self) -> str:
        w = self.widths
        name = self.model.rpartition("/")[2]
        return f"{name} | {len(w)} prunable groups | {sum(w.values())} kept channels"

    def with_kept(self, kept: Mapping[str, Any]) -> "ModuleArch":
        """The same code and trace, other kept indices (group order kept)."""
        return ModuleArch(self.model, self.args_json, self.source_sha256, self.input_size, self.keep,
                          tuple((g, tuple(int(i) for i in kept[g])) for g, _ in self.kept),
                          self.allow_changed_source)

    def code_key(self) -> tuple:
        """What the teacher module depends on (everything but the kept indices)."""
        return (self.model, self.args_json, self.source_sha256, self.keep)


def module_fits_within(student: ModuleArch, teacher: ModuleArch) -> str | None:
    """Why ``student`` is not a sub-network of ``teacher`` (other code, group or channel), or None."""
    if student.model != teacher.model:
        return f"made from {student.model}, the teacher from {teacher.model}"
    if student.args_json != teacher.args_json:
        return f"args {student.args_json} differ from the teacher's {teacher.args_json}"
    if student.keep != teacher.keep:
        return f"--keep {list(student.keep)} differs from the teacher's {list(teacher.keep)}"
    t = dict(teacher.kept)
    for gid, idx in student.kept:
        if gid not in t:
            return f"group {gid} is not a prunable group of the teacher"
        if not set(idx) <= set(t[gid]):
            return f"group {gid} keeps channels the teacher does not have"
    return None
