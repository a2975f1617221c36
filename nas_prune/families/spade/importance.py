"""Channel importance for inception SPADE generators (see :mod:`nas_prune.importance`).

Every layer CAT thresholds (:mod:`nas_prune.families.spade.plan`) is followed by an affine batch
norm, so ``gamma`` is CAT's criterion as published: ``|gamma|`` of ``fc_norm`` for
``stream.0`` and of ``B[.spade].{res,dw}_ops.i.0.norm`` for the branches. ``l1`` scores the
same layers by the L1 norm of the producing conv's filters (``fc``, each branch's first
conv), each layer scaled to mean 1.

The stream segments after a learned shortcut (``stream.1`` ..) are not thresholded (their
width follows ``stream.0``); they only need a ranking to choose which channels the student
keeps. CAT has none (it re-initialises the student). Their channels are made by a sum of
convs with no norm after it, so both criteria rank them by what reads them: the L1 norm of
every weight that reads the channel (the next block's branch first convs and shortcut conv,
or ``conv_img`` for the last segment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.spade.arch import SpadeArch
from nas_prune.families.spade.plan import spade_prunable_layers, stream_segments

if TYPE_CHECKING:  # pragma: no cover
    import torch

_KIND_KEYS = {"res": "res_ops", "dw": "dw_ops", "spade_res": "spade.res_ops", "spade_dw": "spade.dw_ops"}


def branch_prefix(arch: SpadeArch, block: int, kind: str, slot: int) -> str:
    """``B.res_ops.i`` / ``B.spade.dw_ops.i``: ``i`` counts the existing branches before slot ``slot``."""
    widths = arch.blocks[block].widths(kind)
    i = sum(1 for w in widths[:slot] if w > 0)
    return f"{arch.block_names[block]}.{_KIND_KEYS[kind]}.{i}"


def _tensor(state_dict: Mapping[str, "torch.Tensor"], key: str) -> "torch.Tensor":
    if key not in state_dict:
        raise NasPruneError(f"teacher weights: missing {key}")
    return state_dict[key].detach().float()


def _mean_one(values: "torch.Tensor") -> "torch.Tensor":
    mean = values.mean()
    return values / mean if float(mean) > 0 else values


def _reader_l1(arch: SpadeArch, state_dict: Mapping[str, "torch.Tensor"], segment: list[int]) -> "torch.Tensor":
    """Per channel of a stream segment: L1 norm of every weight that reads it."""
    last = segment[-1]  # the segment's channels are read by block `last` (or conv_img)
    if last == arch.n_blocks:
        return _tensor(state_dict, "conv_img.weight").abs().sum(dim=(0, 2, 3))
    name, block = arch.block_names[last], arch.blocks[last]
    total = None
    keys = [f"{name}.shortcut.1.conv.weight"] if arch.fin(last) != arch.fout(last) else []
    for kind in ("res", "dw"):
        for j, w in enumerate(block.widths(kind)):
            if w:
                keys.append(f"{branch_prefix(arch, last, kind, j)}.0.conv.weight")
    for key in keys:
        value = _tensor(state_dict, key).abs().sum(dim=(0, 2, 3))
        total = value if total is None else total + value
    if total is None:  # nothing reads the segment but the next block's identity: keep the order
        import torch

        return torch.zeros(arch.stream[last])
    return total


def spade_importance(
    criterion: str, arch: SpadeArch, state_dict: Mapping[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """``{layer: scores}`` for every layer of :func:`~nas_prune.families.spade.plan.spade_prunable_layers`.

    Args:
        criterion: ``gamma`` or ``l1`` (``activation`` needs semantic-map inputs: refused).
    """
    if criterion not in ("gamma", "l1"):
        raise NasPruneError(
            f"importance {criterion}: not available for SPADE generators (it needs semantic-map calibration "
            "inputs); use gamma (CAT's) or l1"
        )
    segments = stream_segments(arch)
    out = {}
    for layer in spade_prunable_layers(arch):
        if layer.follows is not None:
            out[layer.name] = _reader_l1(arch, state_dict, segments[layer.index])
            continue
        if layer.kind == "stream":
            conv, norm = "fc", "fc_norm"
        else:
            p = branch_prefix(arch, layer.block, layer.kind, layer.index)
            conv, norm = f"{p}.0.conv", f"{p}.0.norm"
        if criterion == "gamma":
            out[layer.name] = _tensor(state_dict, f"{norm}.weight").abs()
        else:
            out[layer.name] = _mean_one(_tensor(state_dict, f"{conv}.weight").abs().flatten(1).sum(dim=1))
    return out
