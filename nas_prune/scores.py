"""How good is a candidate student: fidelity to its teacher, and latency.

These scores rank the candidates of an Optuna study (:mod:`nas_prune.study`); they
are cheap proxies for the quality after full distillation, not a replacement for it.

Fidelity (:class:`FidelityProbe`)
    The teacher and the student run on the same calibration images ``(N, C, H, W)``
    in [-1, 1]; the teacher's outputs and features are computed once.

    - ``psnr``: PSNR in dB of the student's output against the teacher's output
      (:func:`nas_prune.metrics.psnr`, images mapped to [0, 1]), mean over images.
      This is the study's ``quality`` objective by default: it is what a user sees.
    - ``gcka``: mean over taps of the kernel alignment of teacher and student
      features (:func:`nas_prune.kd.gcka.kernel_alignment`, uncentred like the
      distillation term, at :func:`~nas_prune.kd.base.default_feature_taps`: the stem
      and the blocks at 1/3, 2/3, 3/3 of the depth, as CAT distils). In [0, 1].
      Reported next to PSNR; ``quality_metric="gcka"`` makes it the objective.

Score specs (:func:`parse_score`)
    ``zero-shot``: the sliced student as it is (weights inherited from the teacher).
    ``finetune:STEPS``: :func:`finetune` first, a short distillation on calibration
    images *other than* the ones fidelity is measured on: Adam (lr 2e-4, betas
    0.5/0.999 as pix2pix and CAT), loss ``5 * L1(student out, teacher out) -
    sum_taps KA`` (CAT's unpaired lambda_recon 5 and lambda_distill 1, the latter
    per GPU: CAT sums four GPUs' KA, see :mod:`nas_prune.kd.gcka`; no GAN term,
    a few hundred steps cannot train a discriminator). Fidelity is reported
    every ``STEPS // 4`` steps so a study can stop bad trials early (trial pruning).

Calibration images
    :func:`nas_prune.calibration.calibration_images` (``--calib-data``; without a
    folder, crops of scikit-image's sample photos, else noise).

Latency (:func:`measure_latency`, from :mod:`nas_prune.latency.runtime`)
    Median wall time in milliseconds of ``repeats`` forward passes of one batch on
    the device that runs the trial (or on a named runtime: ``torch-cpu``,
    ``onnxruntime``, ``cuda``), after ``warmup`` passes; on CPU with a fixed number of
    threads, on CUDA synchronised around each pass. The same routine times students
    for ``search --target-latency`` and ``profile --latency``. It depends on the
    machine and on its load: compare latencies measured on the same machine only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.latency.runtime import Latency, measure_latency

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ScoreSpec",
    "parse_score",
    "Fidelity",
    "FidelityProbe",
    "Latency",
    "finetune",
    "measure_latency",
    "QUALITY_METRICS",
]

SCORE_KINDS = ("zero-shot", "finetune")
QUALITY_METRICS = ("psnr", "gcka")


@dataclass(frozen=True)
class ScoreSpec:
    """A parsed ``--score``: ``kind`` is ``zero-shot`` or ``finetune``; ``steps`` > 0 for finetune."""

    kind: str
    steps: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind == "zero-shot" else f"finetune:{self.steps}"


def parse_score(text: str) -> ScoreSpec:
    """Parse ``zero-shot`` or ``finetune:STEPS`` (STEPS an integer >= 1).

    Raises:
        NasPruneError: anything else, naming the accepted forms.
    """
    value = str(text).strip()
    if value == "zero-shot":
        return ScoreSpec("zero-shot")
    kind, sep, steps = value.partition(":")
    if kind == "finetune":
        if not sep or not steps.strip().isdigit() or int(steps) < 1:
            raise NasPruneError(f"--score {value!r}: expected finetune:STEPS with STEPS an integer >= 1")
        return ScoreSpec("finetune", int(steps))
    raise NasPruneError(f"--score {value!r}: choose zero-shot or finetune:STEPS")


@dataclass(frozen=True)
class Fidelity:
    """Fidelity of a student to its teacher on calibration images.

    Attributes:
        psnr: dB, student output vs teacher output (higher is closer).
        gcka: mean kernel alignment over ``per_tap`` (in [0, 1], 1 = aligned).
        per_tap: kernel alignment per feature tap.
    """

    psnr: float
    gcka: float
    per_tap: dict[str, float] = field(default_factory=dict)

    def value(self, metric: str = "psnr") -> float:
        """The number a study optimises: ``psnr`` or ``gcka``."""
        return self.psnr if metric == "psnr" else self.gcka


class FidelityProbe:
    """Teacher outputs and features on fixed images; scores any student of that teacher.

    Args:
        teacher: the teacher generator (:class:`nas_prune.model.Generator`); used in
            eval mode, never modified.
        images: calibration images ``(N, input_nc, H, W)`` in [-1, 1], N >= 2 (GCKA
            compares samples); H, W divisible by 4.
        taps: feature taps; default :func:`~nas_prune.kd.base.default_feature_taps`.
        batch_size: images per forward pass (memory only; results do not depend on it
            for instance-norm generators).
        device: where teacher and students run; default the teacher's device.
    """

    def __init__(
        self,
        teacher,
        images: "torch.Tensor",
        *,
        taps: Sequence[str] | None = None,
        batch_size: int = 8,
        device: "str | torch.device | None" = None,
    ):
        import torch

        from nas_prune.kd.base import default_feature_taps
        from nas_prune.model import check_taps

        if images.dim() != 4 or images.shape[0] < 2:
            raise NasPruneError(
                f"calibration images: expected a batch (N, C, H, W) with N >= 2, got {tuple(images.shape)}"
            )
        if images.shape[-1] % 4 or images.shape[-2] % 4:
            raise NasPruneError(
                f"calibration images: height and width must be divisible by 4, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        self.teacher = teacher
        self.arch: Arch = teacher.arch
        self.taps = tuple(taps) if taps else default_feature_taps(self.arch)
        check_taps(self.arch, self.taps)
        self.device = torch.device(device) if device is not None else next(teacher.parameters()).device
        self.batch_size = max(1, int(batch_size))
        self.images = images.float().to(self.device)
        was_training = teacher.training
        teacher.eval()
        try:
            self.t_out, self.t_feats = self._run(teacher)
        finally:
            teacher.train(was_training)

    def with_images(self, images: "torch.Tensor") -> "FidelityProbe":
        """A probe of the same teacher, taps and device on other images."""
        return FidelityProbe(self.teacher, images, taps=self.taps, batch_size=self.batch_size, device=self.device)

    def _run(self, model) -> tuple["torch.Tensor", dict[str, "torch.Tensor"]]:
        import torch

        outs, feats = [], {t: [] for t in self.taps}
        with torch.no_grad():
            for start in range(0, len(self.images), self.batch_size):
                out, f = model.forward_with_features(self.images[start : start + self.batch_size], self.taps)
                outs.append(out)
                for t in self.taps:
                    feats[t].append(f[t])
        return torch.cat(outs), {t: torch.cat(v) for t, v in feats.items()}

    def score(self, student) -> Fidelity:
        """Fidelity of ``student`` (evaluated in eval mode on the probe's device, then restored)."""
        from nas_prune.kd.gcka import kernel_alignment
        from nas_prune.metrics import psnr

        was_training = student.training
        student.eval()
        try:
            s_out, s_feats = self._run(student)
        finally:
            student.train(was_training)
        per_tap = {t: float(kernel_alignment(self.t_feats[t], s_feats[t])) for t in self.taps}
        return Fidelity(
            psnr=psnr(s_out, self.t_out),
            gcka=sum(per_tap.values()) / len(per_tap),
            per_tap=per_tap,
        )


def finetune(
    student,
    probe: FidelityProbe,
    *,
    steps: int,
    train_images: "torch.Tensor | None" = None,
    batch_size: int = 4,
    lr: float = 2e-4,
    lambda_recon: float = 5.0,
    lambda_distill: float = 1.0,
    report_every: int | None = None,
    on_report: Callable[[int, Fidelity], bool] | None = None,
    seed: int = 0,
) -> tuple[Fidelity, int]:
    """Distil ``student`` from the probe's teacher for ``steps`` steps, then score it.

    The teacher's outputs and features on ``train_images`` are computed once
    (:meth:`FidelityProbe.with_images`); each step takes a random batch of them. The loss is ``lambda_recon * L1(s_out, t_out)
    - lambda_distill * sum_taps KA`` at the probe's taps.

    Args:
        student: trained in place (train mode during the steps, eval mode after).
        probe: scores the student on its own images; the teacher is ``probe.teacher``.
        steps: optimiser steps (>= 1).
        train_images: ``(M, C, H, W)``, M >= 2; None trains on the probe's own images
            (the score is then measured on the images it was tuned on).
        batch_size: images per step (>= 2 for GCKA; capped at M).
        report_every: score every this many steps (default ``max(1, steps // 4)``).
        on_report: ``on_report(step, fidelity) -> stop``; return True to stop early
            (an Optuna trial being pruned).
        seed: seed of the batch order.

    Returns:
        ``(fidelity after the last step run, steps run)``.
    """
    import torch

    from nas_prune.kd.gcka import kernel_alignment

    if steps < 1:
        raise NasPruneError(f"finetune steps must be >= 1, got {steps}")
    teacher_probe = probe if train_images is None else probe.with_images(train_images)
    images, t_out, t_feats = teacher_probe.images, teacher_probe.t_out, teacher_probe.t_feats
    n = images.shape[0]
    bs = max(2, min(batch_size, n))
    every = report_every or max(1, steps // 4)
    g = torch.Generator().manual_seed(seed)
    student.to(probe.device).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr, betas=(0.5, 0.999))
    fidelity = None
    step = 0
    for step in range(1, steps + 1):
        idx = torch.randperm(n, generator=g)[:bs].to(probe.device)
        s_out, s_feats = student.forward_with_features(images[idx], probe.taps)
        loss = lambda_recon * (s_out - t_out[idx]).abs().mean()
        if lambda_distill:
            ka = sum(kernel_alignment(t_feats[t][idx], s_feats[t]) for t in probe.taps)
            loss = loss - lambda_distill * ka
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            fidelity = probe.score(student)
            if on_report is not None and on_report(step, fidelity) and step < steps:
                break
    student.eval()
    return fidelity, step
