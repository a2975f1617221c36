"""Primitives that families share with the core: conventions, costs, layers, checks.

Everything here is family-independent and imports nothing of nas-prune but
:mod:`nas_prune.errors`, so a family package and the core modules can both use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

CONVENTIONS = ("fvcore", "paper")


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer of a generator.

    Attributes:
        name: module path in the built generator (``features.3.res_ops.0.1.0``).
        stage: ``stem``, ``block1`` .. ``blockN`` or ``head`` (SPADE: ``fc``, the block names, ``out``).
        kind: ``conv``, ``dwconv``, ``convT`` or ``norm`` (SPADE also ``resize``, ``mul``, ``act``).
        macs: MACs in the requested convention for one image.
        params: learnable parameters of the layer.
    """

    name: str
    stage: str
    kind: str
    macs: int
    params: int


def check_convention(convention: str) -> str:
    """Return ``convention`` or raise a one-line error listing the valid ones."""
    if convention not in CONVENTIONS:
        raise NasPruneError(f"unknown MACs convention {convention!r}: choose fvcore or paper")
    return convention


def parse_input_size(value: int | str | tuple[int, int]) -> tuple[int, int]:
    """``256`` / ``"256"`` -> (256, 256); ``"256x128"`` -> (256, 128) as (H, W).

    Raises:
        NasPruneError: unparsable, non-positive, or not divisible by 4 (the two
            stride-2 stages and the two ConvTransposes need it to give back H x W).
    """
    if isinstance(value, tuple):
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", str(value))
        if not m:
            raise NasPruneError(f"input size {value!r}: expected N or HxW, e.g. 256 or 256x512")
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
    if h <= 0 or w <= 0 or h % 4 or w % 4:
        raise NasPruneError(f"input size {h}x{w}: height and width must be positive and divisible by 4")
    return h, w


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}


def parse_macs(value: str | int | float) -> int:
    """Parse a MACs budget: ``2.6G``, ``2.6B`` (= G, as papers write it), ``2600M``, ``2.6e9``.

    Raises:
        NasPruneError: unparsable or not positive, or typed without a unit and far below any
            generator (``2.6``: "did you mean 2.6G?").
    """
    unit = ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([kKmMgGbBtT]?)\s*", str(value))
        if not m:
            raise NasPruneError(f"MACs value {value!r}: expected a number like 2.6G, 2.6B, 2600M or 2.6e9")
        unit = m.group(2)
        number = float(m.group(1)) * _SUFFIX[unit.upper()]
    if not math.isfinite(number):
        raise NasPruneError(f"MACs value {value!r}: not a finite number")
    if number <= 0:
        raise NasPruneError(f"MACs value {value!r}: must be positive")
    if not unit and number < 1e4 and not isinstance(value, int):  # typed by a person (text, 2.6): a unit left out
        raise NasPruneError(f"MACs value {value!r} has no unit and is {number:g} MACs, far below any generator; "
                            f"did you mean {str(value).strip()}G?")
    return int(round(number))


def format_macs(macs: int | float, convention: str | None = None) -> str:
    """``2_601_234_567`` -> ``"2.601G"`` (+ ``" MACs (fvcore)"`` when a convention is given)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            text = f"{macs / scale:.3f}{unit}"
            break
    else:
        text = f"{int(macs)}"
    return f"{text} MACs ({convention})" if convention else text



def norm_cost(norm: str, affine: bool, numel: int, convention: str) -> int:
    """MACs charged for a norm over ``numel`` elements.

    fvcore (eval mode): instance norm 5 per element with affine parameters and 4
    without; batch norm 2 and 1. Paper convention (torchprofile): affine norms 1 per
    element, affine-free norms 0.
    """
    if convention == "paper":
        return numel if affine else 0
    if norm == "instance":
        return numel * (5 if affine else 4)
    return numel * (2 if affine else 1)


def conv_params(cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a ``k x k`` conv (or ConvTranspose) from ``cin`` to ``cout`` channels."""
    return cout * (cin // groups) * k * k + (cout if bias else 0)


#: Layer kinds that keep at least ``min_channels`` channels unless a layer says otherwise.
FLOOR_KINDS = ("stem", "head", "stream", "level")


@dataclass(frozen=True)
class PrunableLayer:
    """A layer whose output channels are pruned (a set of channels one threshold cuts).

    Attributes:
        name: the family's name for it, e.g. ``stem.I``, ``blocks.N.res.J``, ``blocks.N.dw.J``,
            ``head.I`` (inception), ``down.I`` / ``up.I`` (U-Net).
        kind: the family's kind, e.g. ``stem``, ``res``, ``dw``, ``head``, ``level``.
        width: the teacher's width (number of channels, >= 1).
        index: stem/head position ``I``, or the kernel-size slot ``J`` for branches.
        block: block index ``N`` for branches, None for stem/head.
        unit: the width is kept a multiple of this (SPADE ``stream.0``; 1 elsewhere).
        follows: a layer whose width is set from this one's (SPADE ``stream.K`` follow
            ``stream.0``) instead of by the threshold; None for thresholded layers.
        floor: whether the ``min_channels`` floor applies; None: by ``kind`` (:data:`FLOOR_KINDS`).
    """

    name: str
    kind: str
    width: int
    index: int
    block: int | None = None
    unit: int = 1
    follows: str | None = None
    floor: bool | None = None

    @property
    def has_floor(self) -> bool:
        """Whether the layer keeps ``min_channels`` (``floor``; by default stem, head, stream and
        level layers do, branches may reach 0)."""
        return self.kind in FLOOR_KINDS if self.floor is None else self.floor


def check_fields(data: Mapping[str, Any], where: str, known: set[str], required: set[str]) -> None:
    """Raise ``<where>.<field>: unknown field`` / ``missing field`` for the first offender."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise NasPruneError(f"{where}.{unknown[0]}: unknown field")
    missing = sorted(required - set(data))
    if missing:
        raise NasPruneError(f"{where}.{missing[0]}: missing field")


def int_list(where: str, key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """``value`` as a tuple of ints (of ``length`` items), or an error naming ``<where>.<key>``."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise NasPruneError(f"{where}.{key}: expected a list of integers")
    if length is not None and len(value) != length:
        raise NasPruneError(f"{where}.{key}: expected {length} values, got {len(value)}")
    return tuple(value)


def read_fields(
    data: Mapping[str, Any], fields: Mapping[str, tuple[Any, Any]], source: str
) -> dict[str, Any]:
    """Every field of ``fields`` (``{name: (type, default or ...)}``) read from ``data``, type-checked.

    Raises:
        NasPruneError: ``<source>: <key>: unknown key`` / ``missing required key`` / ``expected <type>``.
    """
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NasPruneError(f"{source}: {unknown[0]}: unknown key (known keys: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for key, (typ, default) in fields.items():
        if key not in data:
            if default is ...:
                raise NasPruneError(f"{source}: {key}: missing required key")
            values[key] = default
            continue
        value = data[key]
        bad_bool = isinstance(value, bool) and typ is not bool
        if bad_bool or not isinstance(value, typ):
            if isinstance(typ, type):
                want = typ.__name__
            else:
                want = "list or null" if type(None) in typ else "number"
            raise NasPruneError(f"{source}: {key}: expected {want}, got {value!r}")
        values[key] = value
    return values


def missing_blocks_error(path: Path, names: list[str], layout: str) -> NasPruneError:
    """The error for blocks that left no tensor in a checkpoint whose layout always has some."""
    listed = ", ".join(f"{n}.*" for n in names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return NasPruneError(
        f"{path}: missing keys: {listed} (no tensor at all for {'this block' if len(names) == 1 else 'these blocks'}); "
        f"a {layout} checkpoint keeps tensors for every block, so the file is incomplete (a student whose blocks "
        "have no branch loads from its folder: arch.json + student.safetensors)"
    )


def missing_branch_keys(tensors: Mapping[str, "torch.Tensor"], path: Path, patterns) -> None:
    r"""Every branch with a tensor has the one that gives its width, and branches are numbered 0, 1, ...

    Args:
        patterns: ``(prefix regex with groups (owner, index), width-key suffix)`` pairs, e.g.
            ``(r"(features\.\d+\.res_ops)\.(\d+)\.", "1.0.weight")``.
    """
    missing: list[str] = []
    for prefix, suffix in patterns:
        seen: dict[str, set[int]] = {}
        for key in tensors:
            m = re.match(prefix, key)
            if m:
                seen.setdefault(m.group(1), set()).add(int(m.group(2)))
        for owner, indices in seen.items():
            for i in range(max(indices) + 1):
                key = f"{owner}.{i}.{suffix}"
                if key not in tensors:
                    missing.append(key)
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise NasPruneError(f"{path}: checkpoint is incomplete: missing keys: {', '.join(missing[:3])}{more}")


def check_state(
    expected: Mapping[str, "torch.Tensor"], state: Mapping[str, "torch.Tensor"], path: Path | str,
    *, what: str = "checkpoint does not match its inferred architecture",
) -> dict[str, "torch.Tensor"]:
    """``state`` in ``expected``'s key order and dtypes, or an error listing the mismatches.

    ``what`` opens the message after ``path``.

    Raises:
        NasPruneError: missing keys, unexpected keys, or shape mismatches (first three of each).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:3])}" + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
        raise NasPruneError(f"{path}: {what}: {'; '.join(parts)}")
    return {k: state[k].to(v.dtype) for k, v in expected.items()}


NORM_VECTORS = ("weight", "bias", "running_mean", "running_var")


class ByModule(dict):
    """``{module path: [(leaf name, tensor), ...]}`` of a state dict (``a.b.weight`` -> ``a.b``)."""

    def __init__(self, sd: Mapping):
        super().__init__()
        for key, value in sd.items():
            module, _, leaf = key.rpartition(".")
            self.setdefault(module, []).append((leaf, value))


def map_tensors(out: dict, sd: Mapping, src: str, dst: str, rows=None, cols=None, required=True) -> None:
    """Copy every ``src.*`` tensor to ``dst.*``: dim 0 by ``rows``, dim 1 of weights by ``cols``.

    ``sd`` is the teacher's state dict, or its :class:`ByModule` index (no scan of every
    key per call). ``required=False`` for norms that hold no tensors (affine-free instance norm).
    """
    import torch

    found = False
    if isinstance(sd, ByModule):
        tensors = sd.get(src, ())
    else:
        n = len(src) + 1
        tensors = [(k[n:], v) for k, v in sd.items() if k.startswith(src + ".") and "." not in k[n:]]
    for leaf, value in tensors:
        found = True
        t = value
        if leaf == "num_batches_tracked":
            out[f"{dst}.{leaf}"] = t.clone()
            continue
        if rows is not None and t.ndim >= 1:
            t = t.index_select(0, torch.as_tensor(rows, dtype=torch.long))
        if cols is not None and leaf == "weight" and t.ndim >= 2:
            t = t.index_select(1, torch.as_tensor(cols, dtype=torch.long))
        out[f"{dst}.{leaf}"] = t.clone().contiguous() if t is value else t.contiguous()  # never shared
    if not found and required:
        raise NasPruneError(f"teacher weights: no tensors under {src}")


def branch_modules(widths: Sequence[int], kept: Mapping[str, Sequence[int]], prefix: str):
    """Yield ``(teacher module index, student module index, kept indices)`` per kept branch."""
    ti = si = 0
    for j, w in enumerate(widths):
        if w == 0:
            continue
        idx = kept[f"{prefix}.{j}"]
        if idx:
            yield ti, si, idx
            si += 1
        ti += 1
