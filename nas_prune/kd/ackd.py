"""ACKD: accumulation knowledge distillation (Gao & Long, "Accumulation Knowledge
Distillation for Conditional GAN Compression", ICCV 2023 workshops,
doi:10.1109/ICCVW60793.2023.00140).

A single deep teacher feature is a narrow view of what the teacher knows. ACKD
*accumulates* the teacher's features of several shallow stages, combines the
accumulation with the deep-stage feature, and uses the result as the target of
the student's corresponding deep stage:

    A      = sum over shallow taps i of  align_i(resize(T_i))          (C_t channels)
    ACK-A  = out( softmax(q(T_deep) k(A)^T / sqrt(width)) v(A) )      cross attention:
                                                                       query from the deep
                                                                       stage, key/value from A
    ACK-F  = fuse(A)                                                   conv block
    K      = ACK-A and/or ACK-F                                        accumulated knowledge
    target = T_deep (residual) + K
    loss   = mse(adapter(S_deep), target)                              the student's term

``align_i`` is a learned 1x1 conv to the deep tap's teacher channel count
``C_t`` and ``resize`` is bilinear interpolation (area pooling when shrinking)
to the deep tap's resolution; ``adapter`` is a learned 1x1 conv from the
student's channel count to ``C_t``. Attention runs over the ``h*w`` positions of
the deep feature (tokens); ``q``, ``k`` project to ``width`` channels, ``v`` and
``out`` keep ``C_t``. The residual from the deep-stage feature is the
component whose removal the paper's ACK-F ablation shows to hurt (FID 18.47 ->
19.63 in self-distillation, 22.10 -> 23.67 at 82.5x compression, edges->shoes).

**How the accumulation modules are trained.** No public code exists for the paper
(searched by title, authors and the module names), and nas-prune could not confirm
from the paper what trains ``align``, ACK-A and ACK-F. Training them on the
student's own loss, as nas-prune did before, lets them *reshape the target* instead
of the student learning it: optimising only the term's parameters against a random,
fixed student feature that carries no teacher information lowered that loss from
9.7 to 1.3 in 300 Adam steps. So the target is kept out of the student's reach:

- the student's loss sees the target as a constant (stop-gradient): only the student
  and its ``adapter`` (:meth:`generator_parameters`) learn from it;
- the accumulation modules learn in their own optimiser step
  (:meth:`discriminator_parameters` / :meth:`discriminator_loss`, run by the training
  loop after each generator step) on a teacher-only objective: ``K`` must reconstruct
  the teacher's deep stage, ``loss(K, T_deep)``. ``K`` can only draw its values from
  the shallow accumulation (ACK-A's values and ACK-F's input are ``A``; the deep
  feature only chooses where ACK-A reads), so it learns to express the deep stage in
  terms of the accumulated shallow knowledge, which is the knowledge the method adds
  to the target. Nothing the student does can move it, and it cannot shrink toward
  the student.

With the residual on, ``target = T_deep + K`` starts at ``T_deep`` (``K`` starts at 0)
and moves toward ``T_deep`` plus its reconstruction from the shallow stages; the
adapter absorbs the change of scale. With ``residual=False`` the target is ``K``
alone, the deep stage as the shallow stages see it.

Where this departs from the paper or fills what it leaves open, and why:

- **Training of the accumulation modules**: their own reconstruction step with the
  target held constant to the student (above), because training them on the
  student's loss lets them lower it without the student.
- **Stages**: the term's taps, in forward order; the deepest is the deep stage,
  all others are accumulated. The default taps are CAT's distillation layers
  (``stem, block3, block6, block9`` for 9 blocks), so the stem and blocks 3 and 6
  are accumulated into the target of block 9. ``up1`` may be used too (it is
  resized and aligned like the others). The paper's stages are those of its own
  generators; CAT's layers make ACKD comparable with GCKA and MSE on the same taps.
- **Which combinations**: ``mode="af"`` (default) adds both ACK-A and ACK-F to the
  residual; ``"a"`` or ``"f"`` use one (both modules are the paper's, so both are on
  by default; the single-module variants are for ablations).
- **Attention width**: ``width=64`` for queries and keys, one head; ``kv_pool``
  average-pools keys/values by that factor to bound the ``(hw)^2`` attention
  memory on large images (1: off, the default). Not given in what could be
  checked of the paper; one small head keeps the term cheap next to the generator.
- **Fusion block** (ACK-F): conv3x3 - ReLU - conv3x3 at ``C_t`` channels, the
  smallest residual conv block (its layers are not given in what could be checked).
- **Loss**: ``loss="mse"`` (default), ``"l1"`` or ``"smooth_l1"``, for both the
  student's term and the modules' reconstruction (MSE as the paper's feature loss;
  the others are extra options).
- **Initialisation**: with the residual on, the last layer of ACK-A (``out``)
  and of ACK-F start at zero, so the target starts as ``T_deep`` exactly (the
  term begins as GAN Compression's adapter MSE on the deep stage).
- **Weight**: the paper's loss weight could not be confirmed (no public code), so
  none is reproduced: ``--lambda-ackd`` defaults to 1, as every other term.

The teacher itself is never updated (its features are detached here, so no gradient
reaches it even if the caller forgot ``no_grad``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.kd.base import FeatureTerm, KDBatch, register_term, student_adapter, tap_channels
from nas_prune.kd.mse import check_loss_option, feature_loss
from nas_prune.model import tap_names

__all__ = ["ACKD", "CrossAttention", "FusionBlock", "resize_to"]

MODES = ("a", "f", "af")


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, h, w)`` to ``size``: bilinear when growing, area pooling when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class CrossAttention(nn.Module):
    """Single-head cross attention between two feature maps of the same size.

    ``out(softmax(q(query) k(kv)^T / sqrt(width)) v(kv))`` over spatial positions.

    Args:
        channels: channels of both inputs and of the output.
        width: query/key channels.
        kv_pool: average-pool factor applied to ``kv`` before keys/values (1: none).
        zero_init: start ``out`` at zero (the module then outputs 0).

    Shapes: ``query``, ``kv`` ``(N, channels, h, w)`` -> ``(N, channels, h, w)``.
    """

    def __init__(self, channels: int, *, width: int = 64, kv_pool: int = 1, zero_init: bool = True):
        super().__init__()
        self.width, self.kv_pool = width, kv_pool
        self.q = nn.Conv2d(channels, width, 1)
        self.k = nn.Conv2d(channels, width, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        n, _, h, w = query.shape
        if self.kv_pool > 1:
            kv = F.avg_pool2d(kv, self.kv_pool, ceil_mode=True)
        q = self.q(query).flatten(2).transpose(1, 2)  # (N, hw, width)
        k = self.k(kv).flatten(2).transpose(1, 2)  # (N, hw', width)
        v = self.v(kv).flatten(2).transpose(1, 2)  # (N, hw', C)
        attn = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.width))
        return self.out(attn.transpose(1, 2).reshape(n, -1, h, w))


class FusionBlock(nn.Module):
    """ACK-F's conv block: conv3x3 - ReLU - conv3x3 (``channels`` -> ``channels``), same size.

    Args:
        channels: input/output channels.
        zero_init: start the last conv at zero (the block then outputs 0).
    """

    def __init__(self, channels: int, *, zero_init: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )
        if zero_init:
            nn.init.zeros_(self.body[2].weight)
            nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _int_option(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NasPruneError(f"distillation option ackd.{name}: expected an integer >= 1, got {value!r}")
    return value


@register_term("ackd")
class ACKD(FeatureTerm):
    """Accumulated shallow teacher knowledge + deep teacher feature as the deep student target.

    The student and ``adapter`` learn from :meth:`forward` (target held constant); the
    accumulation modules (``align``, ``attention``, ``fusion``) learn from
    :meth:`discriminator_loss` in their own optimiser step (see the module docstring).

    Args:
        teacher_arch / student_arch: see :class:`DistillTerm`.
        taps: at least two taps; the deepest (in forward order) is the deep stage,
            the others are accumulated. Empty means CAT's layers
            (:func:`~nas_prune.kd.base.default_feature_taps` of the teacher).
        mode: ``"af"`` (ACK-A and ACK-F, default), ``"a"`` or ``"f"``.
        width: query/key width of ACK-A's attention (64).
        kv_pool: pool keys/values by this factor (1: off).
        residual: add the deep-stage teacher feature to the target (True).
        loss: ``"mse"`` (default), ``"l1"`` or ``"smooth_l1"`` between the adapted
            student feature and the target, and between ``K`` and the deep feature.

    Attributes:
        deep: the deep-stage tap; ``shallow``: the accumulated taps.
    """

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        mode: str = "af",
        width: int = 64,
        kv_pool: int = 1,
        residual: bool = True,
        loss: str = "mse",
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)
        order = {t: i for i, t in enumerate(tap_names(teacher_arch))}
        self.taps = tuple(sorted(dict.fromkeys(self.taps), key=order.__getitem__))
        if len(self.taps) < 2:
            raise NasPruneError(
                f"ACKD needs at least two feature layers (shallow stages and a deep stage), got {list(self.taps)}"
            )
        if mode not in MODES:
            raise NasPruneError(f"distillation option ackd.mode: {mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(residual, bool):
            raise NasPruneError(f"distillation option ackd.residual: expected true or false, got {residual!r}")
        self.mode, self.residual = mode, residual
        self.width, self.kv_pool = _int_option("width", width), _int_option("kv_pool", kv_pool)
        self.loss = check_loss_option("ackd", loss)
        self.deep, self.shallow = self.taps[-1], self.taps[:-1]
        c_t = tap_channels(teacher_arch, self.deep)
        self.align = nn.ModuleDict({t: nn.Conv2d(tap_channels(teacher_arch, t), c_t, 1) for t in self.shallow})
        self.attention = (
            CrossAttention(c_t, width=self.width, kv_pool=self.kv_pool, zero_init=residual) if "a" in mode else None
        )
        self.fusion = FusionBlock(c_t, zero_init=residual) if "f" in mode else None
        self.adapter = student_adapter(teacher_arch, student_arch, self.deep)

    def accumulate(self, t_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """``A = sum_i align_i(resize(T_i))``: ``(N, C_t, h, w)`` at the deep tap's size."""
        size = tuple(t_feats[self.deep].shape[-2:])
        total = None
        for tap in self.shallow:
            a = self.align[tap](resize_to(_plain(t_feats[tap]), size))
            total = a if total is None else total + a
        return total

    def knowledge(self, t_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """``K``: ACK-A and/or ACK-F of the accumulation, ``(N, C_t, h, w)``."""
        deep = _plain(t_feats[self.deep])
        acc = self.accumulate(t_feats)
        total = None
        if self.attention is not None:
            total = self.attention(deep, acc)
        if self.fusion is not None:
            f = self.fusion(acc)
            total = f if total is None else total + f
        return total

    def target(self, t_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's target for the deep stage, ``T_deep + K`` (``K`` alone without the residual); no gradient."""
        with torch.no_grad():
            k = self.knowledge(t_feats)
            return t_feats[self.deep].detach() + k if self.residual else k

    def forward(self, batch: KDBatch) -> torch.Tensor:
        """The student's loss: ``loss(adapter(S_deep), target)``, the target held constant."""
        return feature_loss(self.adapter(batch.s_feats[self.deep]), self.target(batch.t_feats), self.loss)

    def discriminator_loss(self, batch: KDBatch) -> torch.Tensor:
        """The accumulation modules' own loss: ``loss(K, T_deep)``, teacher features only."""
        deep = _plain(batch.t_feats[self.deep])
        return feature_loss(self.knowledge(batch.t_feats), deep, self.loss)

    def generator_parameters(self):
        return iter(self.adapter.parameters())

    def discriminator_parameters(self):
        modules = [self.align, self.attention, self.fusion]
        return iter([p for m in modules if m is not None for p in m.parameters()])

    def extra_repr(self) -> str:
        return (
            f"shallow={list(self.shallow)}, deep={self.deep!r}, mode={self.mode!r}, width={self.width}, "
            f"kv_pool={self.kv_pool}, residual={self.residual}, loss={self.loss!r}"
        )


def _plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` detached, and copied out of inference mode so that autograd may save it."""
    x = x.detach()
    return x.clone() if x.is_inference() else x
