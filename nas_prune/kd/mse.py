"""MSE feature distillation through learned 1x1 adapters (GAN Compression, CVPR 2020).

GAN Compression (Li et al., CVPR 2020, Eq. 3) distils intermediate activations by
mapping each student feature map to the teacher's channel count with a learned
1x1 convolution ``f_t`` and penalising the squared error:

    L = sum over taps t of  mean( (f_t(S_t) - T_t)^2 )

with ``S_t`` ``(N, C_s, h, w)`` and ``T_t`` ``(N, C_t, h, w)``. The adapters are
trained together with the student (they are the term's
:meth:`~nas_prune.kd.base.DistillTerm.generator_parameters`) and thrown away after
training. The sum over taps (not a mean) follows the paper and matches the GCKA
term, so one ``lambda`` means the same per layer for both.

Taps default to CAT's layers (stem and the blocks at 1/3, 2/3, 3/3 of the depth,
:func:`nas_prune.kd.gcka.default_gcka_taps`). The teacher's and the student's
feature maps at one tap must have the same spatial size, which holds for any
student of the teacher's space.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.kd.base import DistillTerm, KDBatch, register_term
from nas_prune.kd.gcka import default_gcka_taps
from nas_prune.model import check_taps

__all__ = ["MSE", "tap_channels", "feature_loss", "LOSSES"]

#: Per-element losses a feature term can use, by name.
LOSSES = ("mse", "l1", "smooth_l1")


def tap_channels(arch: Arch, tap: str) -> int:
    """Channel count of the activation at ``tap`` (see ``Generator.forward_with_features``).

    ``stem`` and every ``blockN`` carry the residual stream (``arch.stem[2]``
    channels, 1/4 of the input resolution); ``up1`` has ``arch.head[0]`` channels
    at 1/2 resolution.
    """
    check_taps(arch, (tap,))
    return arch.head[0] if tap == "up1" else arch.stream


def tap_stride(tap: str) -> int:
    """Down-sampling factor of ``tap`` relative to the input image (4, or 2 for ``up1``)."""
    return 2 if tap == "up1" else 4


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean per-element loss between two tensors of the same shape.

    Args:
        pred: student-side tensor (with gradient).
        target: teacher-side tensor.
        kind: ``"mse"``, ``"l1"`` or ``"smooth_l1"`` (Huber with beta 1).

    Returns:
        Scalar tensor, computed in float32 (autocast disabled) for stability.
    """
    if pred.shape != target.shape:
        raise ValueError(f"feature_loss: shapes differ {tuple(pred.shape)} vs {tuple(target.shape)}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t = pred.float(), target.float()
        if kind == "mse":
            return F.mse_loss(p, t)
        if kind == "l1":
            return F.l1_loss(p, t)
        if kind == "smooth_l1":
            return F.smooth_l1_loss(p, t, beta=1.0)
    raise ValueError(f"unknown feature loss {kind!r}")


def check_loss_option(term: str, value: object) -> str:
    """Validate a ``loss`` option naming one of :data:`LOSSES`."""
    if value not in LOSSES:
        raise NasPruneError(
            f"distillation option {term}.loss: {value!r} is not one of {', '.join(LOSSES)}"
        )
    return str(value)


@register_term("mse")
class MSE(DistillTerm):
    """``sum_taps mean((adapter_t(S_t) - T_t)^2)`` with one learned 1x1 conv per tap.

    Args:
        teacher_arch / student_arch / taps: see :class:`DistillTerm`; empty taps means
            CAT's layers (:func:`~nas_prune.kd.gcka.default_gcka_taps` of the teacher).
        loss: ``"mse"`` (GAN Compression, default), ``"l1"`` or ``"smooth_l1"``.

    Attributes:
        adapters: ``ModuleDict`` tap -> ``Conv2d(C_s, C_t, 1)`` (with bias).
    """

    default_taps = staticmethod(default_gcka_taps)

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        loss: str = "mse",
    ):
        taps = tuple(taps) or default_gcka_taps(teacher_arch)
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)
        check_taps(teacher_arch, self.taps)
        check_taps(student_arch, self.taps)
        self.loss = check_loss_option("mse", loss)
        self.adapters = nn.ModuleDict(
            {
                tap: nn.Conv2d(tap_channels(student_arch, tap), tap_channels(teacher_arch, tap), 1)
                for tap in self.taps
            }
        )

    def forward(self, batch: KDBatch) -> torch.Tensor:
        total = None
        for tap in self.taps:
            t = batch.t_feats[tap].detach()
            s = self.adapters[tap](batch.s_feats[tap])
            value = feature_loss(s, t, self.loss)
            total = value if total is None else total + value
        return total

    def generator_parameters(self):
        return iter(self.adapters.parameters())

    def extra_repr(self) -> str:
        return f"taps={list(self.taps)}, loss={self.loss!r}"
