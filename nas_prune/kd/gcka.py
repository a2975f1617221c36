"""GCKA: global kernel alignment between teacher and student features (CAT, CVPR 2021).

For one tap, each sample's feature map is flattened to a vector, giving
``X`` (N x C_t*h*w) for the teacher and ``Y`` (N x C_s*h*w) for the student. The
alignment of their batch Gram matrices is

    KA(X, Y) = <K_X, K_Y>_F / (||K_X||_F ||K_Y||_F),    K_X = X X^T,  K_Y = Y Y^T

(N x N), optionally with both Gram matrices centred as ``H K H``,
``H = I - 11^T / N`` (the CKA of Kornblith et al., ICML 2019). KA is in [0, 1] for
the uncentred form and in [-1, 1] centred; it is 1 when ``Y`` is ``X`` up to an
orthogonal transform and an isotropic scale. Because only N x N matrices are
compared, teacher and student may have any channel counts: no adapter layers.
The term's loss is ``-sum over taps of KA``, so its minimum is ``-len(taps)``.

Default form: **uncentred**. CAT's paper names the method "global centred kernel
alignment", but the authors' released code computes the uncentred alignment above,
and the published students were trained with it; nas-prune follows the released
behaviour. Pass ``centered=True`` (``--distill-option gcka.centered=true`` on the
CLI) for the centred form, which is also invariant to adding a constant vector to
every sample.

**What the weight means.** The weight (``--lambda-distill``) multiplies
``-sum_taps KA`` where KA is computed on each device's share of the batch and, under
DDP, averaged across ranks, like every other loss of the training loop (batch means).
CAT's CycleGAN and pix2pix scripts (``distillers/inception_distiller.py``) instead
compute KA on each GPU's share under ``DataParallel``, gather the per-GPU values and
*sum* them, while their GAN and L1 losses are batch means; so CAT's
``lambda_distill`` weighs ``#GPUs`` alignments and equals ``#GPUs x lambda_distill``
here. CAT's GauGAN distiller (``models/modules/spade_modules/``) computes the whole
generator loss, KA included, per GPU and *averages* it over the GPUs
(``losses['loss_G'].mean()``), so there CAT's ``lambda_distill`` is the weight here.
From CAT's published training scripts (``scripts/*/train_inception_student_*.sh``):

====================================  =====  ===============  ===============  ===========
CAT script                            GPUs   batch (per GPU)  lambda_distill   weight here
====================================  =====  ===============  ===============  ===========
cycle_gan/horse2zebra  2.6B           4      80 (20)          1.0              4.0
cycle_gan/zebra2horse  2.6B           4      80 (20)          0.1              0.4
pix2pix/map2sat        4.6B           4      80 (20)          1.3              5.2
pix2pix/cityscapes     5.6B           4      80 (20)          0.5              2.0
gaugan/cityscapes      5.6B and 30B   2      16 (8)           0.5              0.5 (mean)
====================================  =====  ===============  ===============  ===========

(GauGAN's taps in CAT are ``head_0``, ``G_middle_1`` and ``up_1`` of the SPADE
generator.) The shipped recipes that follow CAT use the right-hand column.

Where this departs from CAT's code, and why:

- **KA over the device's whole share of the batch.** CAT's KA sees 20 samples per GPU
  (batch 80 on 4 GPUs); a recipe run on one device computes one KA over 80 samples, a
  different (same-range) quantity. The weight conversion above keeps the strength;
  to reproduce CAT's exact loss run 4 ranks with ``--batch-size 20`` under ``torchrun``
  (nas-prune averages the 4 per-rank KAs, times ``4 x lambda_distill``: CAT's sum).
- **Weight convention** (above): per-device KA averaged across ranks rather than summed
  over GPUs, so that a weight does not change with the number of devices.
- **Taps for other depths**: CAT distils at the stem and blocks 3, 6, 9 of its 9-block
  generators; other depths use the blocks at 1/3, 2/3 and 3/3 of the depth
  (:func:`~nas_prune.kd.base.default_feature_taps`).
- **Float32**: KA is computed in float32 (float64 if an input is) with autocast off;
  CAT trains in float32 throughout.

A batch of one sample carries no relation to align (the uncentred KA is
identically 1, the centred one undefined), so the term raises an error for N < 2;
the training loop drops incomplete last batches for that reason.
"""

from __future__ import annotations

from typing import Sequence

import torch

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.kd.base import FeatureTerm, KDBatch, default_feature_taps, register_term

__all__ = ["GCKA", "kernel_alignment", "default_gcka_taps"]

#: The layers CAT distils at (the default of every feature term, kept under this name too).
default_gcka_taps = default_feature_taps

_EPS = 1e-12


def kernel_alignment(x: torch.Tensor, y: torch.Tensor, *, centered: bool = False) -> torch.Tensor:
    """Kernel alignment of the batch Gram matrices of ``x`` and ``y``.

    Args:
        x: ``(N, ...)`` features of one model; each sample is flattened.
        y: ``(N, ...)`` features of another model; per-sample sizes may differ from ``x``.
        centered: centre both Gram matrices with ``H = I - 11^T/N`` (CKA) first.

    Returns:
        Scalar tensor: 1 for identical (up to orthogonal transform and isotropic
        scale) inputs; differentiable in both arguments. Computed in float32 (or
        float64 if an input is float64), also under autocast.

    Raises:
        NasPruneError: the batch sizes differ or are smaller than 2.
    """
    if x.shape[0] != y.shape[0]:
        raise NasPruneError(f"GCKA: batch sizes differ ({x.shape[0]} vs {y.shape[0]})")
    n = x.shape[0]
    if n < 2:
        raise NasPruneError(f"GCKA needs at least 2 samples per batch (per device), got {n}")
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = x.reshape(n, -1).to(dtype)
        yf = y.reshape(n, -1).to(dtype)
        kx = xf @ xf.T
        ky = yf @ yf.T
        if centered:
            kx = _center(kx)
            ky = _center(ky)
        num = (kx * ky).sum()
        den = torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)
        return num / den.clamp_min(_EPS)


def _center(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/N``: subtract row and column means, add back the grand mean."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


@register_term("gcka")
class GCKA(FeatureTerm):
    """``-sum_taps KA(teacher features, student features)``; no learnable parameters.

    Args:
        teacher_arch / student_arch / taps: see :class:`~nas_prune.kd.base.FeatureTerm`
            (empty taps: CAT's layers).
        centered: use centred Gram matrices (CKA); default False, see the module docstring.
    """

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        centered: bool = False,
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)
        if not isinstance(centered, bool):
            raise NasPruneError(f"distillation option gcka.centered: expected true or false, got {centered!r}")
        self.centered = centered

    def forward(self, batch: KDBatch) -> torch.Tensor:
        total = None
        for tap in self.taps:
            ka = kernel_alignment(batch.t_feats[tap], batch.s_feats[tap], centered=self.centered)
            total = ka if total is None else total + ka
        return -total

    def alignments(self, batch: KDBatch) -> dict[str, float]:
        """KA per tap as plain floats (for logging)."""
        with torch.no_grad():
            return {
                tap: float(kernel_alignment(batch.t_feats[tap], batch.s_feats[tap], centered=self.centered))
                for tap in self.taps
            }

    def extra_repr(self) -> str:
        return f"taps={list(self.taps)}, centered={self.centered}"
