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
behaviour so CAT's lambda_distill values carry over. Pass ``centered=True``
(``--distill-option gcka.centered=true`` on the CLI) for the centred form, which is
also invariant to adding a constant vector to every sample.

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
