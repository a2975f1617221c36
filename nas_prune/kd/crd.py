"""CRD: content relationship distillation (You et al., "Exploring Content
Relationships for Distilling Efficient GANs", arXiv 2212.11091, 2022; reference
code github.com/TheKernelZ/CRD, also published as CRD-Official/CRD).

Instead of matching teacher and student outputs pixel by pixel, CRD slices each
output image into pieces of several granularities and asks the student to
reproduce the *relations among the pieces of one image*:

- granularities: **row strips** and **column strips** one pixel thick (global
  information; 256 of each at 256x256) and square **patches** (local; 32x32 at
  256x256, so 64 per image);
- relations within one image and one granularity, the slices being vectors
  ``v_1..v_S`` (C*W, C*H or C*p*p values each), as in relational KD (Park et al.,
  CVPR 2019):

  * distance ``d_ij = ||v_i - v_j|| / mean_{i != j} ||v_i - v_j||``;
  * angle: ``cos(i, j, k) = <e_ij, e_kj>`` with ``e_ij = (v_i - v_j) / ||v_i - v_j||``
    (vertex ``j``; 0 when ``i = j`` or ``k = j``, or when two slices coincide);

- per image and granularity: smooth-L1 (beta 1) between the teacher's and the
  student's relations, averaged over all ``S^2`` pairs and all ``S^3`` triples (the
  degenerate ones are 0 on both sides), ``w_dist * L_dist + w_angle * L_angle`` with
  ``w_dist = 1``, ``w_angle = 2``;
- loss: ``sum_g w_g * reduce_over_images(...)`` with ``w_g`` = 2.5 for each of rows,
  columns and patches by default.

Both relations are invariant to a global scale and shift of an image: the student is
asked for structure, not for pixel values (the loop's reconstruction term does that).
With the defaults, on the same images, this term equals the reference code's
row / column terms and its CycleGAN patch term to float precision
(``tests/test_kd_crd.py`` holds numbers measured from the reference code).

**Batch reduction and weights.** The reference code *sums* the per-image losses over
the batch (pix2pix, batch 4, weight 2.5 per granularity) or uses batch 1 (CycleGAN,
weight 25 per granularity). Here the per-image losses are **averaged**
(``reduction="mean"``, the default) so that a weight means the same thing at any
batch size and on any number of DDP ranks (each rank averages its images, DDP
averages the ranks: the mean over the global batch), like every other loss of the
training loop. The published settings in this reduction:

- pix2pix (batch 4, 2.5 per granularity, summed): ``--lambda-crd 4`` with the
  default granularity weights (4 x 2.5 = 10 per granularity on the image mean);
- CycleGAN (batch 1, 25 per granularity): ``--lambda-crd 10``.

``reduction="sum"`` (``--distill-option crd.reduction=sum``) sums over the images as
the reference code does; the papers' weights then apply unchanged at their batch
sizes, but the strength grows with the batch (and, under DDP, depends on the per-rank
batch).

**Computation.** Angles are computed from the Gram matrix of the slices,
``<v_i - v_j, v_k - v_j> = G_ik - G_ij - G_jk + G_jj``, never materialising the
``S^2 x D`` difference vectors of the reference code (``S = 256`` strips of 768 values
at 256x256 would take 200 MB per image and the ``S^3`` products on top). The ``S^3``
cosines are produced in chunks of vertices, and the loss's gradient in the student's
Gram matrix is accumulated in the same pass from its closed form (nothing of size
``S^3`` is stored or recomputed), so memory is bounded by one chunk (about ``2^22``
triples on an accelerator) whatever ``S``; work is ``O(S^2 D + S^3)`` per image. The Gram matrices and the four-term sums are taken in
float64 (slices are centred on their mean slice first), because the Gram form cancels
large terms when two slices are close; the cosines and the loss are float32.

Where this departs from the published method and code, and why:

- **Patch relations per image.** The reference pix2pix code relates, for ``k`` in
  ``range(batch_size)``, the 3 colour channels of patch ``k`` (row-major) of image 0
  with each other (``rkd(s[k], t[k])`` on one ``3 x 32 x 32`` patch), so it never
  relates patches at all, and ignores images 1..N-1. That is a bug against the
  paper's description; here each image's own 64 patches are related, which is what
  the reference CycleGAN code does (batch 1: the 64 patches of the image).
- **Batch mean instead of sum** by default (above), with ``reduction="sum"``
  available.
- **Patch size at other resolutions.** The paper and code fix 32x32 patches at
  256x256; when ``patch_size`` is not given it scales as ``max(1, min(H, W) // 8)``
  (32 at 256, 8 at 64, 4 at 32) so every image keeps 64 patches. Pixels that do not
  fill a whole patch at the bottom / right border are left out (as ``F.unfold`` does
  in the reference code).
- **Other student losses of the reference code are not part of this term.** The
  reference training scripts add VGG style (Gram) and perceptual losses to the
  student's objective (inherited from their code base, needing VGG weights) and a
  GAN loss against an **online teacher discriminator**, a teacher discriminator that
  keeps updating while it is co-trained with the teacher generator and is frozen
  while it judges the student. nas-prune distils from a frozen, pre-trained teacher,
  so there is no teacher training for such a discriminator to follow; asking for it
  (``online_teacher_discriminator=True``) is an error rather than a silent imitation.
  The training loop's own GAN discriminator may start from the teacher's.
- **Coinciding slices.** The reference code clamps squared distances at ``1e-12``
  before the square root, so two identical slices are ``1e-6`` apart there and 0
  here; identical slices span no angle in both (cosine 0). Here slices closer than
  ``1e-5`` of their norm count as coinciding (the Gram form cannot resolve less).
- **Reading of the released code.** Its row and column calls hand transposed
  (non-contiguous) images to ``RKDLoss``, whose ``.view`` PyTorch rejects; the
  comparison above made them contiguous, the only reading that runs.
- A granularity needs at least 3 slices (with 2 the normalised distance is constant
  and no angle exists); fewer is an error naming the option to change.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.kd.base import DistillTerm, KDBatch, register_term

__all__ = [
    "CRD",
    "GRANULARITIES",
    "REDUCTIONS",
    "slice_image",
    "distance_relation",
    "angle_relation",
    "distance_loss",
    "angle_loss",
    "relation_loss",
    "default_patch_size",
]

GRANULARITIES = ("rows", "columns", "patches")
REDUCTIONS = ("mean", "sum")
_EPS = 1e-12
#: Squared distances below this fraction of ``||v_i||^2 + ||v_j||^2`` (centred) count as 0.
_COINCIDE = 1e-10
#: Triples per chunk of the angle loss (N * vertices * S * S), bounding its memory.
_CHUNK_TRIPLES = 1 << 22
_CHUNK_TRIPLES_CPU = 1 << 18


def default_patch_size(height: int, width: int) -> int:
    """Patch side for an image: 32 at 256x256, scaled as ``max(1, min(H, W) // 8)``."""
    return max(1, min(height, width) // 8)


def slice_image(x: torch.Tensor, granularity: str, size: int) -> torch.Tensor:
    """Cut images into slices of one granularity, each flattened to a vector.

    Args:
        x: ``(N, C, H, W)`` images.
        granularity: ``"rows"`` (strips ``size`` pixels tall, full width),
            ``"columns"`` (``size`` wide, full height) or ``"patches"``
            (``size`` x ``size`` squares, row-major order).
        size: strip thickness / patch side in pixels; incomplete slices at the
            bottom / right border are dropped.

    Returns:
        ``(N, S, D)``: S slices of D values per image.
    """
    n, c, h, w = x.shape
    if granularity == "rows":
        k = h // size
        return x[:, :, : k * size].reshape(n, c, k, size, w).permute(0, 2, 1, 3, 4).reshape(n, k, -1)
    if granularity == "columns":
        k = w // size
        return x[..., : k * size].reshape(n, c, h, k, size).permute(0, 3, 1, 2, 4).reshape(n, k, -1)
    if granularity == "patches":
        return F.unfold(x, kernel_size=size, stride=size).transpose(1, 2)
    raise ValueError(f"unknown granularity {granularity!r}")


def _gram(v: torch.Tensor) -> torch.Tensor:
    """Float64 Gram matrix ``(N, S, S)`` of slices ``(N, S, D)`` centred on their mean slice."""
    v = v.double()
    v = v - v.mean(dim=1, keepdim=True)
    return v @ v.transpose(1, 2)


def _sq_distances(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared pairwise distances ``(N, S, S)`` from a Gram matrix, and where they are not 0."""
    diag = torch.diagonal(g, dim1=1, dim2=2)
    total = diag[:, :, None] + diag[:, None, :]
    d2 = (total - 2.0 * g).clamp_min(0.0)
    return d2, d2 > _COINCIDE * total


def distance_relation(v: torch.Tensor) -> torch.Tensor:
    """Pairwise distances of slices, normalised by their mean over ``i != j``.

    Args:
        v: ``(N, S, D)`` slices of N images, S >= 2.

    Returns:
        ``(N, S, S)`` float32; the diagonal is 0; the off-diagonal mean of each image
        is 1 (0 everywhere if all slices of an image coincide).
    """
    s = v.shape[1]
    d2, apart = _sq_distances(_gram(v))
    # sqrt has an infinite derivative at 0: take it only where the distance is positive.
    d = torch.where(apart, d2.clamp_min(_EPS).sqrt(), torch.zeros_like(d2))
    mean = d.sum(dim=(1, 2), keepdim=True) / (s * (s - 1))
    return (d / mean.clamp_min(_EPS)).float()


def _cosines(g: torch.Tensor, j0: int, j1: int, diag: torch.Tensor | None = None, *, raw: bool = False):
    """``cos[n, j, i, k]`` for vertices ``j0 <= j < j1`` from a float64 Gram matrix: ``(N, j1-j0, S, S)`` float32.

    With ``raw=True`` returns ``(unclamped cosines, inv)`` where ``inv[n, j, i]`` is
    ``1 / ||v_i - v_j||`` (float64; 0 for ``i = j`` and coinciding slices).
    """
    if diag is None:
        diag = torch.diagonal(g, dim1=1, dim2=2)  # (N, S): G_ii
    gj = g[:, j0:j1, :]  # (N, c, S): G_ji
    gjj = diag[:, j0:j1]  # (N, c)
    # <v_i - v_j, v_k - v_j> = G_ik - G_ij - G_jk + G_jj, laid out as [n, j, i, k]
    dot = g[:, None, :, :] - gj[:, :, :, None] - gj[:, :, None, :] + gjj[:, :, None, None]
    total = diag[:, None, :] + gjj[:, :, None]  # ||v_i||^2 + ||v_j||^2, [n, j, i]
    d2 = (total - 2.0 * gj).clamp_min(0.0)
    apart = d2 > _COINCIDE * total  # i != j and v_i, v_j do not coincide
    inv = torch.where(apart, d2.clamp_min(_EPS).rsqrt(), torch.zeros_like(d2))
    inv32 = inv.float()
    cos = dot.float() * inv32[:, :, :, None] * inv32[:, :, None, :]
    return (cos, inv) if raw else cos.clamp(-1.0, 1.0)


def angle_relation(v: torch.Tensor) -> torch.Tensor:
    """Cosines of the angles of every triple of slices, all at once (``O(S^3)`` memory).

    ``cos[n, j, i, k]`` is the cosine of the angle at vertex ``v_j`` between
    ``v_i - v_j`` and ``v_k - v_j``; 0 when ``i = j``, ``k = j`` or the slices
    coincide. For inspection and tests; :func:`angle_loss` computes the same values
    in chunks.

    Args:
        v: ``(N, S, D)`` slices.

    Returns:
        ``(N, S, S, S)`` float32, indexed ``[n, j, i, k]`` (vertex first).
    """
    return _cosines(_gram(v), 0, v.shape[1])


def distance_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Per-image distance loss: smooth-L1 mean over all ``S x S`` pairs (the diagonal is 0 on both sides).

    Args:
        teacher: ``(N, S, D_t)`` teacher slices (no gradient is taken through them).
        student: ``(N, S, D_s)`` student slices.

    Returns:
        ``(N,)`` float32.
    """
    with torch.no_grad():
        dt = distance_relation(teacher.detach())
    ds = distance_relation(student)
    return F.smooth_l1_loss(ds, dt, beta=1.0, reduction="none").mean(dim=(1, 2))


def _chunk_size(n: int, s: int, device: torch.device) -> int:
    """Vertices per chunk: about 2^18 triples on CPU (cache-sized), 2^22 on accelerators."""
    triples = _CHUNK_TRIPLES if device.type != "cpu" else _CHUNK_TRIPLES_CPU
    return max(1, triples // max(1, n * s * s))


def _angle_forward(gt: torch.Tensor, gs: torch.Tensor, chunk: int, with_grad: bool):
    """Sum over all triples of ``smooth_l1(cos_s, cos_t)`` per image, and its gradient in ``G_s``.

    The gradient is assembled chunk by chunk from the closed form below, so the
    ``S^3`` cosines are never stored and never recomputed. With ``dot_ik`` and
    ``inv_i = 1 / ||v_i - v_j||`` at vertex ``j`` and ``r_ik`` the derivative of the
    loss in ``cos_ik``: ``P_ik = r_ik inv_i inv_k`` flows to ``G_ik`` (+), ``G_ji``
    and ``G_jk`` (-) and ``G_jj`` (+); ``dL/dinv_i = (sum_k r_ik cos_ik + sum_k
    r_ki cos_ki) / inv_i`` flows through ``inv_i = (G_ii + G_jj - 2 G_ji)^(-1/2)``.

    Returns:
        ``(loss (N,) float64, grad (N, S, S) float64 or None)``.
    """
    n, s, _ = gs.shape
    diag_t = torch.diagonal(gt, dim1=1, dim2=2)
    diag_s = torch.diagonal(gs, dim1=1, dim2=2)
    loss = gs.new_zeros(n)
    grad = torch.zeros_like(gs) if with_grad else None
    rows = torch.arange(s, device=gs.device)
    for j0 in range(0, s, chunk):
        j1 = min(s, j0 + chunk)
        ct = _cosines(gt, j0, j1, diag_t)
        raw, inv = _cosines(gs, j0, j1, diag_s, raw=True)
        cs = raw.clamp(-1.0, 1.0)
        diff = cs - ct
        adiff = diff.abs()
        loss += torch.where(adiff < 1.0, 0.5 * diff * diff, adiff - 0.5).sum(dim=(1, 2, 3)).double()
        if not with_grad:
            continue
        r = diff.clamp(-1.0, 1.0) * ((raw >= -1.0) & (raw <= 1.0))  # d smooth_l1 / d raw cosine
        inv32 = inv.float()
        p = r * inv32[:, :, :, None] * inv32[:, :, None, :]  # dL / d dot, [n, j, i, k]
        q = r * raw  # dL / d inv_i * inv_i, before summing over the other end
        grad += p.sum(dim=1).double()  # G_ik
        p_rows, p_cols = p.sum(dim=3).double(), p.sum(dim=2).double()  # [n, j, i], [n, j, k]
        grad[:, j0:j1, :] -= p_rows + p_cols  # G_ji, G_jk
        p_all = p_rows.sum(dim=2)  # [n, j]
        # through inv_i: d inv_i / d d2_i = -inv_i^3 / 2, d2_i = G_ii + G_jj - 2 G_ji
        # dL/dinv_i = Q_i / inv_i with Q_i = sum_k q_ik + sum_k q_ki, so dL/dd2_i = -Q_i inv_i^2 / 2
        dd2 = -0.5 * (q.sum(dim=3) + q.sum(dim=2)).double() * inv * inv  # [n, j, i]
        grad[:, rows, rows] += dd2.sum(dim=1)  # G_ii
        grad[:, j0:j1, :] += -2.0 * dd2  # G_ji
        jj = rows[j0:j1]
        grad[:, jj, jj] += p_all + dd2.sum(dim=2)  # G_jj
    return loss, grad


class _AngleLoss(torch.autograd.Function):
    """Per-image sum of the angle loss over all triples, differentiable in the student's Gram matrix."""

    @staticmethod
    def forward(ctx, gt: torch.Tensor, gs: torch.Tensor, chunk: int) -> torch.Tensor:
        loss, grad = _angle_forward(gt, gs, chunk, with_grad=gs.requires_grad)
        ctx.save_for_backward(grad if grad is not None else gs.new_zeros(0))
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return None, grad * grad_out[:, None, None], None


def angle_loss(teacher: torch.Tensor, student: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Per-image angle loss: smooth-L1 mean over all ``S^3`` triples, from Gram matrices.

    Memory is bounded by one chunk of vertices: the loss and its gradient in the
    student's Gram matrix are accumulated chunk by chunk in the forward pass.

    Args:
        teacher: ``(N, S, D_t)`` teacher slices (no gradient is taken through them).
        student: ``(N, S, D_s)`` student slices.
        chunk: vertices per chunk; None picks about ``2^18`` (CPU) or ``2^22`` triples.

    Returns:
        ``(N,)`` float32.
    """
    n, s = student.shape[:2]
    with torch.no_grad():
        gt = _gram(teacher.detach())
    gs = _gram(student)
    step = chunk or _chunk_size(n, s, student.device)
    return (_AngleLoss.apply(gt, gs, step) / float(s) ** 3).float()


def relation_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    *,
    distance_weight: float = 1.0,
    angle_weight: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``w_dist * L_dist + w_angle * L_angle`` for slices of one granularity, reduced over images.

    Args:
        teacher: ``(N, S, D_t)`` teacher slices.
        student: ``(N, S, D_s)`` student slices (same N and S).
        distance_weight / angle_weight: the paper's 1 and 2 by default.
        reduction: ``"mean"`` or ``"sum"`` of the per-image losses.

    Returns:
        Scalar float32 tensor.
    """
    if teacher.shape[:2] != student.shape[:2]:
        raise ValueError(f"relation_loss: teacher {tuple(teacher.shape)} vs student {tuple(student.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"relation_loss: unknown reduction {reduction!r}")
    per_image = student.new_zeros(student.shape[0], dtype=torch.float32)
    if distance_weight:
        per_image = per_image + distance_weight * distance_loss(teacher, student)
    if angle_weight:
        per_image = per_image + angle_weight * angle_loss(teacher, student)
    return per_image.mean() if reduction == "mean" else per_image.sum()


def _positive(name: str, value: object, *, allow_none: bool = False, integer: bool = False) -> object:
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    else:
        ok = ok and float(value) >= 0.0 and float(value) != float("inf")
    if not ok:
        want = "an integer >= 1" if integer else "a finite number >= 0"
        raise NasPruneError(f"distillation option crd.{name}: expected {want}, got {value!r}")
    return value if integer else float(value)


@register_term("crd")
class CRD(DistillTerm):
    """Content relationship distillation on the output images (no learnable parameters).

    Args:
        teacher_arch / student_arch: see :class:`DistillTerm`.
        taps: ignored; CRD reads only the outputs (``t_out``, ``s_out``).
        patch_size: patch side in pixels; None scales with the image (32 at 256x256,
            see :func:`default_patch_size`).
        strip_size: row / column strip thickness in pixels (1, the published value).
        distance_weight: weight of the distance relation (1).
        angle_weight: weight of the angle relation (2).
        rows / columns / patches: weight of each granularity (2.5 each); 0 leaves
            a granularity out.
        reduction: ``"mean"`` (default) or ``"sum"`` of the per-image losses over the
            batch; see the module docstring for the published weights in each.
        online_teacher_discriminator: the paper's co-trained teacher discriminator;
            only meaningful when the teacher generator is trained too, which
            nas-prune does not do, so True is an error (see the module docstring).
    """

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        patch_size: int | None = None,
        strip_size: int = 1,
        distance_weight: float = 1.0,
        angle_weight: float = 2.0,
        rows: float = 2.5,
        columns: float = 2.5,
        patches: float = 2.5,
        reduction: str = "mean",
        online_teacher_discriminator: bool = False,
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=())
        if online_teacher_discriminator:
            raise NasPruneError(
                "distillation option crd.online_teacher_discriminator: applies only when the teacher "
                "generator is trained in the same run; nas-prune distils from a frozen teacher"
            )
        if reduction not in REDUCTIONS:
            raise NasPruneError(f"distillation option crd.reduction: {reduction!r} is not one of {', '.join(REDUCTIONS)}")
        self.patch_size = _positive("patch_size", patch_size, allow_none=True, integer=True)
        self.strip_size = _positive("strip_size", strip_size, integer=True)
        self.distance_weight = _positive("distance_weight", distance_weight)
        self.angle_weight = _positive("angle_weight", angle_weight)
        self.weights = {g: _positive(g, w) for g, w in zip(GRANULARITIES, (rows, columns, patches))}
        self.reduction = reduction

    def sizes(self, height: int, width: int) -> dict[str, int]:
        """Slice size of each granularity for ``height`` x ``width`` images."""
        patch = self.patch_size or default_patch_size(height, width)
        return {"rows": self.strip_size, "columns": self.strip_size, "patches": patch}

    def forward(self, batch: KDBatch) -> torch.Tensor:
        t_out = batch.t_out.detach()
        s_out = batch.s_out
        _, _, h, w = s_out.shape
        sizes = self.sizes(h, w)
        total = None
        with torch.autocast(device_type=s_out.device.type, enabled=False):
            t_img, s_img = t_out.float(), s_out.float()
            for g in GRANULARITIES:
                weight = self.weights[g]
                if not weight:
                    continue
                t = slice_image(t_img, g, sizes[g])
                if t.shape[1] < 3:
                    option = "patch_size" if g == "patches" else "strip_size"
                    raise NasPruneError(
                        f"distillation option crd.{option}: {sizes[g]} px gives {t.shape[1]} {g} "
                        f"on {h}x{w} images; CRD needs at least 3"
                    )
                value = weight * relation_loss(
                    t,
                    slice_image(s_img, g, sizes[g]),
                    distance_weight=self.distance_weight,
                    angle_weight=self.angle_weight,
                    reduction=self.reduction,
                )
                total = value if total is None else total + value
        if total is None:
            return s_out.sum() * 0.0
        return total

    def extra_repr(self) -> str:
        w = ", ".join(f"{g}={v}" for g, v in self.weights.items())
        return (
            f"patch_size={self.patch_size or 'auto'}, strip_size={self.strip_size}, "
            f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}, {w}, "
            f"reduction={self.reduction!r}"
        )
