"""CRD: content relationship distillation (You et al., "Exploring Content
Relationships for Distilling Efficient GANs", arXiv 2212.11091, 2022).

Instead of matching teacher and student outputs pixel by pixel, CRD slices each
output image into pieces of several granularities and asks the student to
reproduce the *relations among the pieces of one image*:

- granularities: **row strips** (global, horizontal), **column strips** (global,
  vertical) and square **patches** (local);
- relations, within one image and one granularity, the slices being vectors
  ``v_1..v_S`` (C*size*W, C*H*size or C*size*size values each):

  * distance: ``d_ij = ||v_i - v_j||_2 / mean_{i != j} ||v_i - v_j||_2``
    (normalised by the mean pairwise distance of that image);
  * angle: for every triple ``(i, j, k)`` with vertex ``j``,
    ``cos(i, j, k) = <e_ij, e_kj>`` with ``e_ij = (v_i - v_j) / ||v_i - v_j||``.

- loss: smooth-L1 (beta 1) between the teacher's and the student's relation
  tensors, averaged over valid pairs / triples and over the batch, combined as

    L = sum over granularities g of  w_g * (w_dist * L_dist^g + w_angle * L_angle^g)

  with ``w_dist = 1``, ``w_angle = 2`` and ``w_g = 2.5`` by default (the paper's
  weights). Both relations are invariant to a global scale and a global shift of
  an image, so the student is asked for structure, not for exact pixel values
  (the loop's reconstruction term does that).

Choices made here (the paper fixes the 256x256 setting only):

- ``patch_size`` 32 at 256x256; when not given, it scales with the image as
  ``max(1, min(H, W) // 8)`` (32 at 256, 8 at 64, 4 at 32), so every image has
  8 row strips, 8 column strips and 64 patches. Strips are ``strip_size`` pixels
  thick, equal to the patch size unless given. Rows / columns that do not fill a
  whole strip or patch at the bottom / right border are left out.
- Angles are computed from the Gram matrix of the slices (no ``S^3 x D`` tensor):
  ``<v_i - v_j, v_k - v_j> = G_ik - G_ij - G_jk + G_jj``; triples whose vertex
  coincides with an end point are left out. Slices are centred on their mean
  first (relations are shift invariant) for numerical accuracy. Work is
  ``O(S^2 D + S^3)`` per image, with S = 64 at the defaults.
- A granularity needs at least 3 slices (with 2, the normalised distance is
  constant and no angle exists); fewer is an error naming the option to change.

The paper's **online teacher discriminator** (a teacher discriminator that keeps
updating while it is co-trained with the teacher generator, and is frozen while it
judges the student) only applies when the teacher generator is itself trained in
the same run. nas-prune distils from a frozen, pre-trained teacher, so there is no
teacher training for that discriminator to follow; asking for it
(``online_teacher_discriminator=True``) is an error rather than a silent imitation.
The frozen-teacher-discriminator half of that idea is the training loop's business
(its GAN discriminator can start from the teacher's).
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
    "slice_image",
    "distance_relation",
    "angle_relation",
    "relation_loss",
    "default_patch_size",
]

GRANULARITIES = ("rows", "columns", "patches")
_EPS = 1e-12


def default_patch_size(height: int, width: int) -> int:
    """Patch / strip size for an image: 32 at 256x256, scaled as ``max(1, min(H, W) // 8)``."""
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
    """Gram matrix ``(N, S, S)`` of slices ``(N, S, D)`` centred on their mean slice."""
    v = v - v.mean(dim=1, keepdim=True)
    return v @ v.transpose(1, 2)


def _sq_distances(g: torch.Tensor) -> torch.Tensor:
    """Squared pairwise distances ``(N, S, S)`` from a Gram matrix, clamped at 0."""
    diag = torch.diagonal(g, dim1=1, dim2=2)
    return (diag[:, :, None] + diag[:, None, :] - 2.0 * g).clamp_min(0.0)


def distance_relation(v: torch.Tensor) -> torch.Tensor:
    """Pairwise distances of slices, normalised by their mean over ``i != j``.

    Args:
        v: ``(N, S, D)`` slices of N images, S >= 2.

    Returns:
        ``(N, S, S)``; the diagonal is 0; the off-diagonal mean of each image is 1
        (0 everywhere if all slices of an image are equal).
    """
    s = v.shape[1]
    off = ~torch.eye(s, dtype=torch.bool, device=v.device)
    d2 = _sq_distances(_gram(v))
    # sqrt has an infinite derivative at 0: take it only where the distance is positive.
    d = torch.where(off & (d2 > _EPS), d2.clamp_min(_EPS).sqrt(), torch.zeros_like(d2))
    mean = d.sum(dim=(1, 2), keepdim=True) / (s * (s - 1))
    return d / mean.clamp_min(_EPS)


def angle_relation(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines of the angles formed by every triple of slices.

    ``cos[n, i, j, k]`` is the cosine of the angle at vertex ``v_j`` between
    ``v_i - v_j`` and ``v_k - v_j``.

    Args:
        v: ``(N, S, D)`` slices.

    Returns:
        ``(cos, valid)``: ``cos`` is ``(N, S, S, S)``; ``valid`` ``(S, S, S)`` bool
        marks triples with ``i != j`` and ``k != j`` (the others are set to 0, as
        are angles at a vertex that coincides with an end point in one image).
    """
    s = v.shape[1]
    g = _gram(v)
    d2 = _sq_distances(g)
    gjj = torch.diagonal(g, dim1=1, dim2=2)
    # <v_i - v_j, v_k - v_j> = G_ik - G_ij - G_jk + G_jj, laid out as [n, i, j, k]
    dot = g[:, :, None, :] - g[:, :, :, None] - g[:, None, :, :] + gjj[:, None, :, None]
    norm = d2.clamp_min(_EPS).sqrt()  # [n, i, j] = ||v_i - v_j||
    denom = norm[:, :, :, None] * norm.transpose(1, 2)[:, None, :, :]  # ||v_i - v_j|| * ||v_k - v_j||
    eye = torch.eye(s, dtype=torch.bool, device=v.device)
    valid = ~(eye[:, :, None] | eye[None, :, :])  # i != j and j != k
    # Coinciding slices (e.g. two flat patches) span no angle: their cosine is 0.
    apart = d2 > _EPS  # [n, i, j]: v_i and v_j do not coincide
    defined = valid & apart[:, :, :, None] & apart.transpose(1, 2)[:, None, :, :]
    cos = torch.where(defined, dot / torch.where(defined, denom, torch.ones_like(denom)), torch.zeros_like(dot))
    return cos.clamp(-1.0, 1.0), valid


def relation_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    *,
    distance_weight: float = 1.0,
    angle_weight: float = 2.0,
) -> torch.Tensor:
    """``w_dist * L_dist + w_angle * L_angle`` for slices of one granularity.

    Args:
        teacher: ``(N, S, D_t)`` teacher slices.
        student: ``(N, S, D_s)`` student slices (same N and S).
        distance_weight / angle_weight: the paper's 1 and 2 by default.

    Returns:
        Scalar: smooth-L1 means over valid pairs / triples and the batch.
    """
    if teacher.shape[:2] != student.shape[:2]:
        raise ValueError(f"relation_loss: teacher {tuple(teacher.shape)} vs student {tuple(student.shape)}")
    s = teacher.shape[1]
    total = teacher.new_zeros(())
    if distance_weight:
        dt, ds = distance_relation(teacher), distance_relation(student)
        off = ~torch.eye(s, dtype=torch.bool, device=teacher.device)
        total = total + distance_weight * F.smooth_l1_loss(ds[:, off], dt[:, off], beta=1.0)
    if angle_weight:
        at, valid = angle_relation(teacher)
        as_, _ = angle_relation(student)
        total = total + angle_weight * F.smooth_l1_loss(as_[:, valid], at[:, valid], beta=1.0)
    return total


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
        strip_size: row / column strip thickness; None uses the patch size.
        distance_weight: weight of the distance relation (1).
        angle_weight: weight of the angle relation (2).
        rows / columns / patches: weight of each granularity (2.5 each); 0 leaves
            a granularity out.
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
        strip_size: int | None = None,
        distance_weight: float = 1.0,
        angle_weight: float = 2.0,
        rows: float = 2.5,
        columns: float = 2.5,
        patches: float = 2.5,
        online_teacher_discriminator: bool = False,
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=())
        if online_teacher_discriminator:
            raise NasPruneError(
                "distillation option crd.online_teacher_discriminator: applies only when the teacher "
                "generator is trained in the same run; nas-prune distils from a frozen teacher"
            )
        self.patch_size = _positive("patch_size", patch_size, allow_none=True, integer=True)
        self.strip_size = _positive("strip_size", strip_size, allow_none=True, integer=True)
        self.distance_weight = _positive("distance_weight", distance_weight)
        self.angle_weight = _positive("angle_weight", angle_weight)
        self.weights = {g: _positive(g, w) for g, w in zip(GRANULARITIES, (rows, columns, patches))}

    def sizes(self, height: int, width: int) -> dict[str, int]:
        """Slice size of each granularity for ``height`` x ``width`` images."""
        patch = self.patch_size or default_patch_size(height, width)
        strip = self.strip_size or patch
        return {"rows": strip, "columns": strip, "patches": patch}

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
                    option = "patch_size" if g == "patches" or self.strip_size is None else "strip_size"
                    raise NasPruneError(
                        f"distillation option crd.{option}: {sizes[g]} px gives {t.shape[1]} {g} "
                        f"on {h}x{w} images; CRD needs at least 3"
                    )
                value = weight * relation_loss(
                    t,
                    slice_image(s_img, g, sizes[g]),
                    distance_weight=self.distance_weight,
                    angle_weight=self.angle_weight,
                )
                total = value if total is None else total + value
        if total is None:
            return s_out.sum() * 0.0
        return total

    def extra_repr(self) -> str:
        w = ", ".join(f"{g}={v}" for g, v in self.weights.items())
        return (
            f"patch_size={self.patch_size or 'auto'}, strip_size={self.strip_size or 'auto'}, "
            f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}, {w}"
        )
