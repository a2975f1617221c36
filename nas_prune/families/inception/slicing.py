"""Slice an inception-residual teacher's weights by a prune plan into its student.

Every tensor of the teacher's state dict (CAT layout, :mod:`nas_prune.families.inception.model`) that the
student keeps is indexed along its channel dims by the kept indices:

========================================  =====================================
tensor                                    sliced by
========================================  =====================================
stem conv ``I`` weight ``[out, in]``      ``stem.I`` (out), ``stem.I-1`` (in)
branch first conv / dw 1x1 ``[m, C]``     branch (out), ``stem.2`` (in)
depthwise conv ``[m, 1]``                 branch (out)
branch last conv ``[C, m]``               ``stem.2`` (out), branch (in)
block norm ``pw_bn``                      ``stem.2``
ConvTranspose ``I`` ``[in, out]``         ``stem.2`` / ``head.0`` (in), ``head.I`` (out)
final conv ``[out_nc, h1]``               ``head.1`` (in)
norms (gamma, beta, running stats)        the channels of the conv they follow
========================================  =====================================

Biases follow the output channels; ``num_batches_tracked`` is copied. Dropped
branches and the norms of blocks that became the identity are left out. Kept
indices are ascending, so a plan that keeps everything reproduces the teacher
tensor for tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import ByModule, branch_modules, map_tensors
from nas_prune.families.inception.arch import Arch

if TYPE_CHECKING:  # pragma: no cover
    import torch


def slice_state_dict(
    plan, teacher_state_dict: Mapping[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """The student's state dict (CAT layout) for ``plan.student_arch()``.

    Args:
        plan: kept channel indices per prunable layer of ``plan.teacher``.
        teacher_state_dict: the teacher's tensors (CAT layout, as ``load_generator``
            returns them). Tensors are copied, never shared with the teacher.

    Raises:
        NasPruneError: a tensor the plan needs is missing from the teacher's weights.
    """
    t: Arch = plan.teacher
    k = plan.kept
    sd = ByModule(teacher_state_dict)
    out: dict[str, torch.Tensor] = {}
    norms = t.affine or t.norm == "batch"  # do the norms hold tensors?

    s0, s1, c = k["stem.0"], k["stem.1"], k["stem.2"]
    map_tensors(out, sd, "down_sampling.1", "down_sampling.1", rows=s0)
    map_tensors(out, sd, "down_sampling.2", "down_sampling.2", rows=s0, required=norms)
    map_tensors(out, sd, "down_sampling.4", "down_sampling.4", rows=s1, cols=s0)
    map_tensors(out, sd, "down_sampling.5", "down_sampling.5", rows=s1, required=norms)
    map_tensors(out, sd, "down_sampling.7", "down_sampling.7", rows=c, cols=s1)
    map_tensors(out, sd, "down_sampling.8", "down_sampling.8", rows=c, required=norms)

    for n, block in enumerate(t.blocks):
        any_branch = False
        for ti, si, m in branch_modules(block.res, k, f"blocks.{n}.res"):
            src, dst = f"features.{n}.res_ops.{ti}", f"features.{n}.res_ops.{si}"
            map_tensors(out, sd, f"{src}.1.0", f"{dst}.1.0", rows=m, cols=c)
            map_tensors(out, sd, f"{src}.1.1", f"{dst}.1.1", rows=m, required=norms)
            map_tensors(out, sd, f"{src}.4", f"{dst}.4", rows=c, cols=m)
            any_branch = True
        for ti, si, m in branch_modules(block.dw, k, f"blocks.{n}.dw"):
            src, dst = f"features.{n}.dw_ops.{ti}", f"features.{n}.dw_ops.{si}"
            map_tensors(out, sd, f"{src}.0.0", f"{dst}.0.0", rows=m, cols=c)
            map_tensors(out, sd, f"{src}.0.1", f"{dst}.0.1", rows=m, required=norms)
            map_tensors(out, sd, f"{src}.2.0", f"{dst}.2.0", rows=m)  # depthwise: [m, 1, k, k]
            map_tensors(out, sd, f"{src}.2.1", f"{dst}.2.1", rows=m, required=norms)
            map_tensors(out, sd, f"{src}.4", f"{dst}.4", rows=c, cols=m)
            any_branch = True
        if any_branch:
            map_tensors(out, sd, f"features.{n}.pw_bn", f"features.{n}.pw_bn", rows=c, required=norms)

    h0, h1 = k["head.0"], k["head.1"]
    # ConvTranspose2d weights are [in, out, k, k]: rows are inputs, cols outputs.
    map_convt(out, teacher_state_dict, "up_sampling.0", rows=c, cols=h0)
    map_tensors(out, sd, "up_sampling.1", "up_sampling.1", rows=h0, required=norms)
    map_convt(out, teacher_state_dict, "up_sampling.3", rows=h0, cols=h1)
    map_tensors(out, sd, "up_sampling.4", "up_sampling.4", rows=h1, required=norms)
    map_tensors(out, sd, "up_sampling.7", "up_sampling.7", cols=h1)
    return out


def map_convt(out: dict, sd: Mapping, key: str, *, rows, cols) -> None:
    """Copy a ConvTranspose2d (weight ``[in, out, k, k]``): inputs by ``rows``, outputs and bias by ``cols``."""
    import torch

    for leaf in ("weight", "bias"):
        name = f"{key}.{leaf}"
        if name not in sd:
            if leaf == "weight":
                raise NasPruneError(f"teacher weights: missing {name}")
            continue
        value = sd[name]
        if leaf == "weight":
            value = value.index_select(0, torch.as_tensor(rows, dtype=torch.long))
            value = value.index_select(1, torch.as_tensor(cols, dtype=torch.long))
        else:
            value = value.index_select(0, torch.as_tensor(cols, dtype=torch.long))
        out[name] = value.clone().contiguous()
