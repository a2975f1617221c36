"""Configuration and result of a distillation run (:func:`nas_prune.distill.distill`).

:class:`DistillConfig` holds every option (validated when it is built, so recipes fail
at validation, not hours into a run); :class:`DistillResult` is what a run returns;
:func:`read_run_config` reads the config a run folder was started with (for resuming).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from nas_prune import loop
from nas_prune.errors import NasPruneError

__all__ = ["AMP_MODES", "DIST_BACKENDS", "CHECKPOINT_VERSION", "RESUMABLE_CHANGES", "DistillConfig", "DistillResult", "read_run_config"]

AMP_MODES = ("auto", "none", "bf16", "fp16")
DIST_BACKENDS = ("auto", "nccl", "gloo")
CHECKPOINT_VERSION = 1

# Fields that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "epochs_decay", "max_steps", "eval_every", "save_every", "log_every", "grid_every",
     "workers", "device", "compile", "progress", "inception", "segmenter", "deterministic", "dist_backend"}
)


@dataclass(frozen=True)
class DistillConfig:
    """Every option of a distillation run (keyword-only; unknown keys are errors).

    Attributes:
        objective: ``auto`` (GauGAN's for SPADE generators, else pix2pix/CycleGAN's),
            ``pix2pix`` (GAN + L1 + distillation, image folders) or ``gaugan`` (hinge GAN,
            feature matching, VGG, distillation; semantic-map data of
            :mod:`nas_prune.data_seg`; see :mod:`nas_prune.gaugan.run`).
        mode: ``aligned`` (pix2pix layout, paired) or ``unaligned`` (CycleGAN layout).
        direction: ``AtoB`` or ``BtoA``.
        epochs: epochs at the constant learning rate.
        epochs_decay: further epochs with the rate decaying linearly to 0.
        max_steps: stop (with a checkpoint) after this many steps in total; the
            schedule still follows ``epochs`` / ``epochs_decay``. None: run to the end.
        batch_size: images per step and per device (>= 2: GCKA compares samples).
        lr / beta1 / beta2: Adam settings of the student, the discriminator and
            the terms' own parameters.
        gan_mode: ``lsgan``, ``vanilla`` or ``hinge``; None = ``lsgan`` (pix2pix/CycleGAN,
            CAT) or ``hinge`` (GauGAN).
        lambda_gan: weight of the adversarial loss.
        lambda_recon: weight of the L1 loss; None = 100 for aligned data (pix2pix)
            and 5 for unaligned (CAT horse->zebra).
        distill: ``{method: weight}``; default ``{"gcka": 1.0}``; ``{}`` trains without
            distillation. GCKA's weight multiplies KA computed per device and averaged
            across DDP ranks: CAT's ``lambda_distill`` on its 4 GPUs is 4x this weight
            (see :mod:`nas_prune.kd.gcka`).
        distill_taps: feature layers of the distillation terms; None = each term's
            default (GCKA: stem and the blocks at 1/3, 2/3, 3/3 of the depth).
        distill_options: ``{method: {option: value}}``, e.g. ``{"gcka": {"centered": True}}``.
        ndf / d_layers: PatchGAN width and depth; d_layers None = 3 (pix2pix) or 4 (GauGAN).
        num_d: scales of GauGAN's multi-scale discriminator (2).
        lambda_feat / lambda_vgg: GauGAN's feature-matching and VGG19 loss weights (10, 10).
        vgg: path of torchvision's VGG19 weights (``vgg19-dcbb9e9d.pth``, read by
            :func:`nas_prune.gaugan.vgg.load_vgg19`); needed by GauGAN's objective when
            ``lambda_vgg > 0``.
        ttur: GauGAN's two time-scale update rule (Adam betas (0, 0.9), generator lr
            ``lr / 2``, discriminator ``2 lr``; ``beta1`` / ``beta2`` are then unused);
            None = on for GauGAN's objective, off for pix2pix's.
        segmenter: path of the DRN-D-105 segmenter weights (``drn-d-105_ms_cityscapes.pth``,
            :func:`nas_prune.segmenter.load_segmenter`): mIoU at each evaluation of a GauGAN run.
        d_norm: discriminator norm; None = ``batch`` (aligned, as pix2pix) or
            ``instance`` (unaligned, as CycleGAN).
        teacher_discriminator: path of a teacher discriminator to start from.
        load_size / crop_size / preprocess / flip: data transforms (see
            :class:`nas_prune.data.TransformConfig`); eval images are resized to ``crop_size``.
        amp: ``auto`` (bf16 on a CUDA device that supports it, else none), ``none``,
            ``bf16`` or ``fp16`` (CUDA only, with a gradient scaler).
        channels_last: run the networks in channels-last memory format.
        compile: ``torch.compile`` the student, the discriminator and the teacher's forward.
        deterministic: bit-reproducible CUDA training (an exact ``resume`` on a GPU):
            deterministic algorithms, cuDNN autotuning off, ``CUBLAS_WORKSPACE_CONFIG``
            (see :func:`nas_prune.device.set_determinism`; recorded in ``config.json``).
            Slower; off by default, when cuDNN autotuning is on for CUDA runs. CPU runs
            are deterministic either way.
        dist_backend: process-group backend under ``torchrun``: ``auto`` (NCCL with CUDA,
            gloo on CPU), ``nccl`` or ``gloo`` (e.g. several processes sharing one GPU,
            which NCCL refuses).
        workers: data-loader worker processes (0 loads in the main process; capped
            at the CPU count).
        seed: seed of initialisation, data order, augmentation and dropout.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``, ...
        eval_every: evaluate on the test split every this many steps (0 = at the
            end of every epoch); the best student is kept.
        save_every: checkpoint every this many steps (0 = at the end of every epoch).
        log_every: log losses every this many steps.
        grid_every: write an image grid every this many steps (0 = with each evaluation).
        grid_images: rows of the grid (input | teacher | student | real).
        inception: path of the FID Inception weights (pytorch-fid's
            ``pt_inception-2015-12-05-6726825d.pth``, read by
            :func:`nas_prune.inception.load_inception`, as ``nas-prune evaluate --inception``)
            to compute FID at each evaluation; None skips FID.
        progress: show a rich progress bar.
    """

    objective: str = "auto"
    mode: str = "aligned"
    direction: str = "AtoB"
    epochs: int = 100
    epochs_decay: int = 100
    max_steps: int | None = None
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gan_mode: str | None = None
    lambda_gan: float = 1.0
    lambda_recon: float | None = None
    distill: Mapping[str, float] = field(default_factory=lambda: {"gcka": 1.0})
    distill_taps: tuple[str, ...] | None = None
    distill_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ndf: int = 64
    d_layers: int | None = None
    num_d: int = 2
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg: str | None = None
    ttur: bool | None = None
    segmenter: str | None = None
    d_norm: str | None = None
    teacher_discriminator: str | None = None
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    dist_backend: str = "auto"
    workers: int = 4
    seed: int = 0
    device: str = "auto"
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 50
    grid_every: int = 0
    grid_images: int = 4
    inception: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from nas_prune.data import MODES
        from nas_prune.gan import GAN_MODES

        def check(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise NasPruneError(f"{name}: {msg}")

        loop.check_loop_fields(self)
        check(self.mode in MODES, "mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        from nas_prune.gaugan.run import OBJECTIVES

        check(self.objective in OBJECTIVES, "objective", f"{self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        check(self.gan_mode is None or self.gan_mode in GAN_MODES, "gan_mode", f"{self.gan_mode!r} is not one of {', '.join(GAN_MODES)}")
        check(self.amp in AMP_MODES, "amp", f"{self.amp!r} is not one of {', '.join(AMP_MODES)}")
        check(self.dist_backend in DIST_BACKENDS, "dist_backend",
              f"{self.dist_backend!r} is not one of {', '.join(DIST_BACKENDS)}")
        check(self.batch_size >= 2, "batch_size", f"must be >= 2 (GCKA and BatchNorm compare samples), got {self.batch_size}")
        for name in ("lambda_gan", "lambda_recon", "lambda_feat", "lambda_vgg"):
            v = getattr(self, name)
            check(v is None or (v >= 0 and math.isfinite(v)), name, f"must be a finite number >= 0, got {v}")
        check(isinstance(self.distill, Mapping), "distill", "expected a mapping {method: weight}")
        check(self.ndf >= 1 and (self.d_layers is None or self.d_layers >= 1), "ndf", "ndf and d_layers must be >= 1")
        check(self.num_d >= 1, "num_d", f"must be >= 1, got {self.num_d}")
        check(self.grid_images >= 1, "grid_images", "must be >= 1")
        # Method names, weights and options are checked here, so a recipe fails at validation.
        from nas_prune.kd import base as kd_base

        for name, weight in dict(self.distill).items():
            cls = kd_base.term_class(name)
            check(isinstance(weight, (int, float)) and weight >= 0, f"distill.{name}", f"weight must be a number >= 0, got {weight!r}")
            kd_base.check_options(cls, name, dict(self.distill_options).get(name, {}))
        for name in dict(self.distill_options):
            check(name in self.distill, f"distill_options.{name}", f"options for a method not in distill ({', '.join(self.distill) or 'none'})")
        if self.distill_taps is not None:
            object.__setattr__(self, "distill_taps", tuple(self.distill_taps))
        object.__setattr__(self, "distill", dict(self.distill))
        object.__setattr__(self, "distill_options", {k: dict(v) for k, v in dict(self.distill_options).items()})

    @property
    def recon_weight(self) -> float:
        """``lambda_recon`` with its mode-dependent default filled in."""
        if self.lambda_recon is not None:
            return float(self.lambda_recon)
        return 100.0 if self.mode == "aligned" else 5.0

    @property
    def conditional(self) -> bool:
        """The discriminator sees ``cat(A, B)`` (pix2pix) for aligned data."""
        return self.mode == "aligned"

    @property
    def disc_norm(self) -> str:
        return self.d_norm or ("batch" if self.mode == "aligned" else "instance")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        if d["distill_taps"] is not None:
            d["distill_taps"] = list(d["distill_taps"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> "DistillConfig":
        """Build from :meth:`to_dict` output; unknown keys are errors naming the key."""
        data = dict(data)
        if "fid_inception" in data and "inception" not in data:
            # runs written before the option took evaluate's name and weights format
            if data.pop("fid_inception") is not None:
                raise NasPruneError(f"{where}: fid_inception: replaced by inception (the FID Inception weights "
                                    "pt_inception-2015-12-05-6726825d.pth, as for nas-prune evaluate)")
        if data.get("distill_taps") is not None:
            data["distill_taps"] = tuple(data["distill_taps"])
        return loop.config_from_dict(cls, data, where=where)

    def replace(self, **changes: Any) -> "DistillConfig":
        """A copy with ``changes`` applied (unknown names are errors)."""
        return loop.config_replace(self, changes, what="distillation")


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        out_dir: the run folder.
        step: steps completed in total (including those before a resume).
        finished: the schedule ran to its end (not stopped by ``max_steps`` or Ctrl-C).
        interrupted: stopped by Ctrl-C, SIGTERM or SIGHUP (a checkpoint was written at the stop).
        signal: the number of the signal that stopped it (:mod:`nas_prune.interrupt`), else None.
        metrics: last evaluation on the test split: ``psnr`` / ``ssim`` (dB / [0,1],
            to the real target; aligned data), ``psnr_teacher`` / ``ssim_teacher``
            (to the teacher's output), ``fid`` when an Inception extractor was given.
        best_metrics / best_step: the kept best evaluation (highest PSNR for aligned
            data, lowest FID when computed, else the last).
        history: every evaluation, ``[{"step": ..., **metrics}]``.
        images_per_second: training throughput of this invocation (all devices).
        student: the final student (on CPU, eval mode); None on non-zero ranks.
    """

    out_dir: Path
    step: int
    finished: bool
    interrupted: bool
    metrics: dict[str, float]
    best_metrics: dict[str, float]
    best_step: int
    history: list[dict[str, float]]
    images_per_second: float
    student: Any = None
    signal: int | None = None


def read_run_config(out_dir: str | os.PathLike) -> DistillConfig:
    """The config of the run in ``out_dir`` (from its ``config.json``), for resuming."""
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        raise NasPruneError(f"nothing to resume: {path} not found")
    from nas_prune.fileio import read_json

    data = read_json(path, what="run config")
    if not isinstance(data, dict):
        raise NasPruneError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return DistillConfig.from_dict(data.get("config", {}), where=str(path))



def run_config(out: Path, *, config: DistillConfig | None, options: dict, resume: bool) -> DistillConfig:
    """The config a run in ``out`` trains with: ``config`` (default: the saved one when resuming, else the
    defaults) with ``options`` applied.

    Raises:
        NasPruneError: when resuming, a field outside ``RESUMABLE_CHANGES`` differs from the saved run's.
    """
    if resume and config is None:
        config = read_run_config(out)
    config = config or DistillConfig()
    if options:
        config = config.replace(**options)
    if resume:
        saved = read_run_config(out)
        for f in fields(DistillConfig):
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name):
                raise NasPruneError(
                    f"resume: {f.name} is {getattr(config, f.name)!r}, the run in {out} used {getattr(saved, f.name)!r}"
                )
    return config
