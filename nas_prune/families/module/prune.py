"""Structural pruning of a traced module with explicit indices, its JSON record, and rebuilding.

The record (``family: module``) holds what rebuilds the student from the user's code alone:
the import spec, its args, the source file's SHA-256, the input size of the trace, the
``keep`` list and the kept root-channel indices of every pruned group. :func:`rebuild` builds
the teacher-shaped module from the code (fresh weights: no teacher weights, no pickles),
traces it and cuts the same channels; the student's weights then load from its own file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT = "nas-prune-module-record"
VERSION = 1


def prune_module(
    module: "torch.nn.Module",
    kept: Mapping[str, Sequence[int]],
    *,
    example_input: "torch.Tensor",
    keep: Sequence[str] = (),
    trace=None,
    spec: str | None = None,
    args: Mapping[str, Any] | None = None,
    source_sha256: str | None = None,
    _probe: bool = True,
) -> tuple["torch.nn.Module", dict]:
    """Cut ``module`` in place to the kept channels and return it with its record.

    Args:
        module: the module to prune (modified in place).
        kept: group id -> kept root-channel indices (whole units; groups not named stay whole).
        example_input: the input the groups were traced with (``[1, C, H, W]``).
        keep: module paths never pruned (as given to :func:`.trace.trace_groups`).
        trace: a trace of ``module`` made with the same input (traced here if None).
        spec, args, source_sha256: provenance written into the record.

    Returns:
        ``(module, record)``; the record is JSON-able (:data:`FORMAT`, version 1).

    Raises:
        NasPruneError: an unknown or unprunable group, indices outside the group, a partial
            unit, or no channel left in a group.
    """
    from nas_prune.families.module.cut import cut_module
    from nas_prune.families.module.trace import trace_groups

    if trace is None:
        trace = trace_groups(module, example_input, keep=keep, probe=_probe)
    module, kept_roots = cut_module(module, kept, example_input=example_input, trace=trace)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "family": "module",
        "model": spec,
        "args": dict(args or {}),
        "source_sha256": source_sha256,
        "input_size": list(example_input.shape),
        "keep": list(keep),
        "kept": {g.id: sorted(kept_roots[g.id]) if g.id in kept_roots else sorted(r for u in g.units for r in u)
                 for g in trace.groups.values() if g.prunable},
        "groups": {
            g.id: {"channels": sum(len(u) for u in g.units),
                   "kept": len(kept_roots[g.id]) if g.id in kept_roots else sum(len(u) for u in g.units),
                   "criterion": g.criterion, "prunable": g.prunable, **({"reason": g.reason} if g.reason else {})}
            for g in trace.groups.values()
        },
    }
    return module, record


def check_record(record: Mapping[str, Any]) -> None:
    """Raise a one-line error naming the first bad field of a record."""
    if not isinstance(record, Mapping):
        raise NasPruneError("module record: not a JSON object")
    if record.get("format") != FORMAT:
        raise NasPruneError(f"module record: format {record.get('format')!r} is not {FORMAT!r}")
    if record.get("version") != VERSION:
        raise NasPruneError(f"module record: version {record.get('version')!r} is not supported (expected {VERSION})")
    for key, kind in (("model", str), ("args", dict), ("input_size", list), ("kept", dict), ("keep", list)):
        if not isinstance(record.get(key), kind):
            raise NasPruneError(f"module record: field {key!r} must be a {kind.__name__}")
    size = record["input_size"]
    if len(size) < 3 or not all(isinstance(v, int) and v > 0 for v in size):
        raise NasPruneError(f"module record: field 'input_size' {size} is not a shape like [1, 3, 256, 256]")
    for gid, idxs in record["kept"].items():
        if not isinstance(idxs, list) or not all(isinstance(i, int) for i in idxs):
            raise NasPruneError(f"module record: kept[{gid!r}] must be a list of channel indices")


def rebuild(
    record: Mapping[str, Any],
    *,
    source_check: bool = True,
    allow_changed_source: bool = False,
    cwd: str | os.PathLike | None = None,
) -> "torch.nn.Module":
    """Build the pruned student from its record and the user's code (random weights).

    Raises:
        NasPruneError: a bad record, the code cannot be imported, or its source file changed
            since the record was written (both hashes named) and ``allow_changed_source`` is False.
    """
    import torch

    from nas_prune.families.module.spec import load_model_spec

    check_record(record)
    module, _, sha = load_model_spec(record["model"], args=record["args"], cwd=cwd)
    old = record.get("source_sha256")
    if source_check and old and sha != old and not allow_changed_source:
        raise NasPruneError(
            f"the source of {record['model']} changed since the student was made "
            f"(sha256 {old[:16]}... then, {sha[:16]}... now); pass --allow-changed-source to rebuild anyway"
        )
    x = torch.zeros(record["input_size"])
    pruned, _ = prune_module(module, record["kept"], example_input=x, keep=record["keep"])
    return pruned.eval()


def default_taps(trace, *, fractions: Sequence[float] = (0.25, 0.5, 0.75)) -> list[str]:
    """Top-level children whose outputs lie nearest ``fractions`` of the cumulative MACs.

    Children are taken below single-child wrappers (``self.model = nn.Sequential(...)``);
    the last child (the image) and children whose output is not a 4-D feature map are never
    taps. Returns module paths, in run order, no repeats.
    """
    profile = [(n, c) for n, c, is_map in trace.taps_profile[:-1] if is_map]
    total = trace.macs.teacher["fvcore"] if trace.macs is not None else 0
    if not profile or total <= 0:
        return []
    taps = []
    for f in fractions:
        name = min(profile, key=lambda nc: abs(nc[1] / total - f))[0]
        if name not in taps:
            taps.append(name)
    order = [n for n, _ in profile]
    return sorted(taps, key=order.index)
