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
:func:`nas_prune.kd.base.default_feature_taps`), which are GAN Compression's layers
too for a 9-block ResNet generator (``model.9``, ``.12``, ``.15``, ``.18``: the stem
and blocks 3, 6, 9). The teacher's and the student's feature maps at one tap must
have the same spatial size, which holds for any student of the teacher's space.

Weights: GAN Compression's code sums the per-GPU MSE values under ``DataParallel``
(as CAT does for KA, see :mod:`nas_prune.kd.gcka`), but its published distillation
scripts run on one GPU, so its ``lambda_distill`` carries over unchanged: 1 for
pix2pix edges2shoes and cityscapes (with ``lambda_recon`` 100), 0.01 for map2sat and
CycleGAN horse2zebra (with ``lambda_recon`` 10). Here the MSE is computed per device
and averaged across DDP ranks.

Where this departs from the source: nothing at the defaults. ``loss="l1"`` and
``"smooth_l1"`` are extra options (the paper uses the squared error); the per-device
mean averaged across ranks replaces the per-GPU sum (the same for one device).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.kd.base import FeatureTerm, KDBatch, register_term, student_adapter, tap_channels

__all__ = ["MSE", "tap_channels", "feature_loss", "LOSSES"]

#: Per-element losses a feature term can use, by name.
LOSSES = ("mse", "l1", "smooth_l1")


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
class MSE(FeatureTerm):
    """``sum_taps mean((adapter_t(S_t) - T_t)^2)`` with one learned 1x1 conv per tap.

    Args:
        teacher_arch / student_arch / taps: see :class:`~nas_prune.kd.base.FeatureTerm`
            (empty taps: CAT's layers).
        loss: ``"mse"`` (GAN Compression, default), ``"l1"`` or ``"smooth_l1"``.

    Attributes:
        adapters: ``ModuleDict`` tap -> ``Conv2d(C_s, C_t, 1)`` (with bias,
            :func:`~nas_prune.kd.base.student_adapter`).
    """

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        loss: str = "mse",
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)
        self.loss = check_loss_option("mse", loss)
        self.adapters = nn.ModuleDict({tap: student_adapter(teacher_arch, student_arch, tap) for tap in self.taps})

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
