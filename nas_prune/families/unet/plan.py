"""Prunable layers of a U-Net, their coupling through the skips, and weight slicing.

Prunable layers (all kind ``level``, so the ``min_channels`` floor applies to each):

* ``down.I`` (I = 0 .. n-1): the output channels of level I's down conv;
* ``up.I`` (I = 1 .. n-1): the output channels of level I's ConvTranspose. Level 0's
  ConvTranspose writes the image: ``output_nc`` is fixed, as is ``input_nc``.

Where each layer's kept teacher indices are used (``D_I`` = kept of ``down.I``,
``U_I`` = kept of ``up.I``; level I's ConvTranspose input is ``cat([x_{I+1}, up_{I+1}])``)::

    D_I  rows of conv I (and its bias), down norm I,
         columns of conv I+1 (the next level reads x_{I+1}),
         the first half of convT I's input channels (the skip of level I+1 carries x_{I+1});
         at the innermost level D_{n-1} is all of convT n-1's input
    U_I  output channels of convT I (and its bias), up norm I,
         the second half of convT I-1's input channels, offset by the teacher's down[I-1]

so the two halves of a concatenation keep their own indices and no two layers are tied:
each width is set by the global threshold alone. ConvTranspose weights are
``[in, out, k, k]``: dim 0 is the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families.common import ByModule, PrunableLayer, map_tensors
from nas_prune.families.unet.arch import UnetArch
from nas_prune.families.unet.model import module_keys

if TYPE_CHECKING:  # pragma: no cover
    import torch


def layer_names(arch: UnetArch) -> list[str]:
    """``down.0 .. down.{n-1}, up.1 .. up.{n-1}``."""
    n = arch.num_downs
    return [f"down.{i}" for i in range(n)] + [f"up.{i}" for i in range(1, n)]


def prunable_layers(arch: UnetArch) -> list[PrunableLayer]:
    """Every prunable layer in forward order: the down convs outside in, then the
    ConvTransposes inside out (module docstring)."""
    n = arch.num_downs
    layers = [PrunableLayer(f"down.{i}", "level", arch.down[i], i) for i in range(n)]
    layers += [PrunableLayer(f"up.{i}", "level", arch.up[i - 1], i) for i in reversed(range(1, n))]
    return layers


def arch_from_widths(teacher: UnetArch, widths: Mapping[str, int]) -> UnetArch:
    """The student of ``teacher`` with ``widths`` (every ``down.I`` and ``up.I``).

    Raises:
        NasPruneError: a missing or unknown layer, or a width outside 1 .. the teacher's.
    """
    names = layer_names(teacher)
    unknown = sorted(set(widths) - set(names))
    if unknown:
        raise NasPruneError(f"widths: unknown layer {unknown[0]!r} (a U-Net has {names[0]} .. {names[-1]})")
    missing = [k for k in names if k not in widths]
    if missing:
        raise NasPruneError(f"widths: missing layer {missing[0]!r}")
    n = teacher.num_downs
    for layer in prunable_layers(teacher):
        w = widths[layer.name]
        if not isinstance(w, int) or w < 1 or w > layer.width:
            raise NasPruneError(f"widths: {layer.name} = {w!r}, expected 1 .. {layer.width} (a U-Net level "
                                "cannot vanish: its skip and its up path need channels)")
    return teacher.with_widths([widths[f"down.{i}"] for i in range(n)], [widths[f"up.{i}"] for i in range(1, n)])


def student_widths(student: UnetArch, teacher: UnetArch | None = None) -> dict[str, int]:
    """``{layer: width}`` of ``student`` (the inverse of :func:`arch_from_widths`)."""
    out = {f"down.{i}": w for i, w in enumerate(student.down)}
    out.update({f"up.{i}": w for i, w in enumerate(student.up, start=1)})
    return out


def _kept(plan: Any, name: str, width: int) -> list[int]:
    idx = list(plan.kept[name])
    if not idx or idx != sorted(set(idx)) or idx[0] < 0 or idx[-1] >= width:
        raise NasPruneError(f"plan: {name}: expected ascending channel indices in 0 .. {width - 1}, "
                            f"got {len(idx)} indices")
    return idx


def _convT(out: dict, sd: ByModule, src: str, dst: str, rows: Sequence[int], cols: Sequence[int]) -> None:
    """Slice a ConvTranspose: weight ``[in, out, k, k]`` by input ``rows`` and output ``cols``, bias by ``cols``."""
    import torch

    tensors = dict(sd.get(src, ()))
    if "weight" not in tensors:
        raise NasPruneError(f"teacher weights: no tensors under {src}")
    r = torch.as_tensor(rows, dtype=torch.long)
    c = torch.as_tensor(cols, dtype=torch.long)
    out[f"{dst}.weight"] = tensors["weight"].index_select(0, r).index_select(1, c).contiguous()
    if "bias" in tensors:
        out[f"{dst}.bias"] = tensors["bias"].index_select(0, c).contiguous()


def slice_state_dict(plan: Any, teacher_sd: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The student's weights: the teacher's (pix2pix layout) cut to ``plan.kept``.

    ``plan`` has ``.teacher`` (a :class:`UnetArch`) and ``.kept`` (``{layer: ascending teacher
    indices}`` for every layer of :func:`prunable_layers`). The result loads strictly into
    ``build_unet(student)``; norms keep their running statistics (and ``num_batches_tracked``).
    """
    t: UnetArch = plan.teacher
    n = t.num_downs
    kept_down = [_kept(plan, f"down.{i}", t.down[i]) for i in range(n)]
    kept_up = [list(range(t.output_nc))] + [_kept(plan, f"up.{i}", t.up[i - 1]) for i in range(1, n)]
    sd = ByModule(teacher_sd)
    out: dict = {}
    for i in range(n):
        keys = module_keys(t, i)
        cols = list(range(t.input_nc)) if i == 0 else kept_down[i - 1]
        map_tensors(out, sd, keys["conv"], keys["conv"], rows=kept_down[i], cols=cols)
        if keys["down_norm"]:
            map_tensors(out, sd, keys["down_norm"], keys["down_norm"], rows=kept_down[i], required=False)
        rows = list(kept_down[i])
        if i < n - 1:
            rows += [t.down[i] + j for j in kept_up[i + 1]]
        _convT(out, sd, keys["convT"], keys["convT"], rows, kept_up[i])
        if keys["up_norm"]:
            map_tensors(out, sd, keys["up_norm"], keys["up_norm"], rows=kept_up[i], required=False)
    order = {k: j for j, k in enumerate(teacher_sd)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))  # the teacher's key order


def masked_teacher_state(plan: Any, teacher_sd: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The teacher's weights with every pruned channel's consumer weights zeroed.

    Every norm here is per channel, so in eval mode the teacher with these weights computes
    exactly what the sliced student computes (up to float summation order): the pruned
    channels still exist but nothing reads them. Used to check :func:`slice_state_dict`.
    """
    t: UnetArch = plan.teacher
    n = t.num_downs
    out = {k: v.clone() for k, v in teacher_sd.items()}
    for i in range(n):
        keys = module_keys(t, i)
        drop_d = sorted(set(range(t.down[i])) - set(plan.kept[f"down.{i}"]))
        if i < n - 1:
            nxt = module_keys(t, i + 1)["conv"]
            out[f"{nxt}.weight"][:, drop_d] = 0
        out[f"{keys['convT']}.weight"][drop_d] = 0
        if i > 0:
            drop_u = sorted(set(range(t.up[i - 1])) - set(plan.kept[f"up.{i}"]))
            parent = module_keys(t, i - 1)["convT"]
            out[f"{parent}.weight"][[t.down[i - 1] + j for j in drop_u]] = 0
    return out
