"""Distillation fine-tuning of a pruned student from its teacher (CAT, CVPR 2021).

One step (:mod:`nas_prune.distill_step`) is a discriminator step, a generator step and a step of
each distillation term's own discriminator.

Optimisation follows pix2pix/CycleGAN and CAT: Adam (lr 2e-4, betas 0.5/0.999), a
constant learning rate for ``epochs`` epochs, then linear decay to 0 over
``epochs_decay`` epochs (updated every step). Everything a step depends on is in
the checkpoint (weights, optimiser states, AMP scaler, step, position in the epoch,
RNG states); data order and augmentation are functions of ``(seed, epoch, index)``;
so ``resume=True`` continues exactly.

Host synchronisation: a step never reads a loss on the host (:mod:`nas_prune.distill_step`).

The library entry point is :func:`distill`; ``nas-prune distill`` calls it. The config and result types live in
:mod:`nas_prune.distill_config`, teacher/student resolution and student folders in
:mod:`nas_prune.distill_io`, evaluation during training in :mod:`nas_prune.distill_eval`, checkpoints in
:mod:`nas_prune.distill_checkpoint`, AMP, DDP set-up, determinism and the finite-loss monitor in
:mod:`nas_prune.device`. Under DDP on several GPUs (NCCL) a SPADE student's batch norms are
``torch.nn.SyncBatchNorm``, as CAT's synchronized batch norm; with gloo or on CPU they stay per
process and the run says so in one line (:func:`nas_prune.device.sync_batch_norms`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from nas_prune import loop
from nas_prune.distill_config import (
    AMP_MODES,
    CHECKPOINT_VERSION,
    RESUMABLE_CHANGES,
    DistillConfig,
    DistillResult,
    read_run_config,
    run_config,
)
from nas_prune.distill_step import StepMixin
from nas_prune.distill_io import (Features, check_crop_size, data_fingerprint, open_tensorboard, resolve_models,
                                  save_student, setup_image_data)
from nas_prune.families import family_of
from nas_prune.errors import NasPruneError
from nas_prune.progress import TrainProgress, shown_losses
from nas_prune.runstate import RunStatus

__all__ = ["DistillConfig", "DistillResult", "distill", "open_run", "read_run_config", "AMP_MODES", "RESUMABLE_CHANGES"]

# ----------------------------------------------------------------------------- main


def distill(
    *,
    teacher: Any,
    student: Any,
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: DistillConfig | None = None,
    resume: bool = False,
    space: Any = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    label: str = "distill",
    status: tuple[str, list[str]] = ("distill", ["final"]),
    model: Any = None,
    **options: Any,
) -> DistillResult:
    """Fine-tune ``student`` by distilling from ``teacher`` on the dataset in ``data``.

    Args:
        teacher: checkpoint path (CAT or ResNet layout, see :mod:`nas_prune.load`), a
            ``LoadedGenerator`` or a :class:`~nas_prune.model.Generator`. None trains
            the student alone (plain pix2pix training; aligned data, no distillation).
        student: a student folder (``arch.json`` + ``student.safetensors``), a bare
            ``arch.json`` (fresh weights), an :class:`Arch`, or a Generator. A SPADE teacher
            checkpoint is built with the student's upsampling and activation (its shapes do
            not show them; :mod:`nas_prune.families.spade.load`).
        space: optional search space (YAML path, shipped name or space object) the teacher
            must belong to; it pins the settings shapes cannot show. A student whose settings
            differ from the space's is an error naming the field.
        data: dataset folder in the layout of ``config.mode``.
        out: run folder: ``checkpoints/last.pt``, ``final/`` and ``best/`` students,
            ``samples/*.png`` grids, ``log.jsonl``, ``config.json``, ``tb/`` (TensorBoard).
        config: a :class:`DistillConfig`; ``options`` override its fields, e.g.
            ``distill(..., epochs=5, distill={"gcka": 1.0, "crd": 1.0})``.
        resume: continue the run in ``out`` from ``checkpoints/last.pt``. The config
            must match the saved one except for fields in ``RESUMABLE_CHANGES``; with
            ``config=None`` the saved config is used (plus ``options``).
        on_step: called as ``on_step(step, losses)`` after every step (rank 0); ``losses``
            are 0-dim tensors on the training device (reading one, e.g. ``float(v)``, waits
            for the device); raising KeyboardInterrupt in it behaves like Ctrl-C.
        label: how the progress display names the run (:mod:`nas_prune.progress`).
        status: ``(command, outputs)`` recorded in ``status.json`` (:mod:`nas_prune.runstate`);
            ``final/`` is written only when the run is done.
        model: the user's generator code (:class:`nas_prune.load.UserModel`, ``--model``):
            a ``teacher`` path is its state dict; ``model.allow_changed_source`` lets a
            student whose source file changed be built.

    Returns:
        A :class:`DistillResult` with the final and best test metrics.

    Raises:
        NasPruneError: bad inputs (missing data, empty split, wrong layout for the
            mode, a student outside the teacher's space, ...) or a NaN/inf loss (the
            last good checkpoint is kept and named in the message).
    """
    from nas_prune.locks import hold

    out = Path(out)
    # one writer per run folder (nas_prune.locks): a second distill, or --resume, of it is refused
    from nas_prune.load import code_options, load_generator

    with hold(out, command=status[0], enabled=os.environ.get("RANK", "0") == "0"), code_options(model):
        if model is not None and model.spec is not None and isinstance(teacher, (str, os.PathLike)):
            teacher = load_generator(teacher, model=model)
        return _distill(teacher=teacher, student=student, data=data, out=out, config=config, resume=resume,
                        space=space, on_step=on_step, label=label, status=status, options=options)


def _distill(*, teacher, student, data, out: Path, config, resume: bool, space, on_step, label: str, status,
             options: dict) -> DistillResult:
    """:func:`distill` with the run folder held."""
    from nas_prune.outputs import snapshot, undo

    students = [f"{d}/{f}" for d in ("best", "final") for f in ("arch.json", "student.safetensors", "summary.md")]
    loop.check_run_dir(
        out, resume=resume, inputs=[x for x in (teacher, student, data) if isinstance(x, (str, os.PathLike))],
        files=["config.json", "log.jsonl", str(loop.CHECKPOINT), "best_metrics.json", *students],
        adopt=["samples/*", "tb/*"], live=["log.jsonl", "tb/*"],
    )
    config = run_config(out, config=config, options=options, resume=resume)
    if not resume:
        loop.check_fresh_run(out)
    before = snapshot(out)
    try:
        run = _Run(teacher=teacher, student=student, data=Path(data), out=out, config=config, resume=resume,
                   on_step=on_step, label=label, space=space)
        run.status = status
        return run.train()
    except BaseException:
        # a fresh run that stops with nothing to resume from leaves nothing behind (config.json,
        # status.json, tb/, log.jsonl): it removes what it wrote, and only that
        if not resume and not (out / loop.CHECKPOINT).is_file() and os.environ.get("RANK", "0") == "0":
            undo(out, before=before)
        raise


def open_run(*, teacher: Any, student: Any, data: str | os.PathLike, out: str | os.PathLike,
             config: DistillConfig | None = None, space: Any = None, **options: Any) -> "_Run":
    """A fresh run, set up (models, data, optimisers, ``config.json``) but not trained.

    Benchmarks and tests step it themselves with ``run.train_step(batch)`` (``batch`` as the
    data loader yields it: ``{"A", "B"}`` CPU tensors) and call ``run.cleanup()`` at the end.
    Arguments as :func:`distill`.
    """
    config = (config or DistillConfig())
    if options:
        config = config.replace(**options)
    out = Path(out)
    loop.check_fresh_run(out)
    return _Run(teacher=teacher, student=student, data=Path(data), out=out, config=config, resume=False, on_step=None,
                space=space)


class _Run(StepMixin):
    """One distillation run: ``setup``, ``train``, ``save_checkpoint``, ``cleanup``."""

    def __init__(self, *, teacher, student, data: Path, out: Path, config: DistillConfig, resume: bool, on_step,
                 label: str = "distill", space: Any = None):
        self.cfg = config
        self.label = label
        self.out = out
        self.resume = resume
        self.on_step = on_step
        self.setup(teacher, student, data, space)

    # -- setup -------------------------------------------------------------------------------
    def setup(self, teacher, student, data: Path, space: Any = None) -> None:
        import torch

        from nas_prune.gan import GANLoss, PatchDiscriminator, load_discriminator
        from nas_prune.kd import all_taps, build_terms

        cfg = self.cfg
        self.data = data
        self._setup_distributed()
        self.device = loop.pick_device(cfg.device, local_rank=self.local_rank, world=self.world)
        self.amp_dtype = self._pick_amp()
        from nas_prune.device import set_determinism, sync_batch_norms

        self.determinism = set_determinism(cfg.deterministic, self.device)

        if teacher is None and (cfg.distill or cfg.mode == "unaligned"):
            raise NasPruneError("a teacher is needed for distillation and for unaligned data")
        (t_model, self.teacher_arch, self.teacher_sha, s_model, self.student_had_weights,
         self.student_doc) = resolve_models(teacher, student, space=space, seed=cfg.seed)
        self.student_arch = s_model.arch
        if not self.student_had_weights and self.is_main:
            warnings.warn("the student has no weights: training starts from a fresh initialisation", loop.RunWarning, stacklevel=3)

        # objective: GauGAN's for SPADE students (nas_prune.gaugan.run), else pix2pix/CycleGAN's
        from nas_prune.gaugan import run as gaugan_run

        self.objective = gaugan_run.resolve_objective(cfg, self.student_arch)
        gaugan = self.objective == "gaugan"
        use_cuda = self.device.type == "cuda"
        if gaugan:
            gaugan_run.setup(self, data)
        else:
            setup_image_data(self, data, use_cuda)
        self.total_steps = (cfg.epochs + cfg.epochs_decay) * self.steps_per_epoch

        # models
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.teacher = t_model.to(self.device, memory_format=fmt).eval().requires_grad_(False) if t_model is not None else None
        self.student = s_model.to(self.device, memory_format=fmt).train()
        if self.distributed and family_of(self.student_arch).sync_batchnorm:  # CAT's sync BN (nas_prune.device)
            self.student, note = sync_batch_norms(self.student, world=self.world, device=self.device)
            if note and self.is_main:
                warnings.warn(note, loop.RunWarning, stacklevel=3)
        if not gaugan:
            in_d = (self.student_arch.input_nc if cfg.conditional else 0) + self.student_arch.output_nc
            if cfg.teacher_discriminator:
                self.disc = load_discriminator(cfg.teacher_discriminator, in_channels=in_d)
            else:
                self.disc = PatchDiscriminator(in_d, ndf=cfg.ndf, n_layers=cfg.d_layers or 3, norm=cfg.disc_norm)
            self.gan = GANLoss(cfg.gan_mode or "lsgan")
        self.disc = self.disc.to(self.device, memory_format=fmt).train()
        self.terms = build_terms(
            cfg.distill, teacher_arch=self.teacher_arch or self.student_arch, student_arch=self.student_arch,
            taps=cfg.distill_taps, options=cfg.distill_options,
        ) if cfg.distill else []
        for _, term in self.terms:
            term.to(self.device)
        self.taps = all_taps(self.terms)
        check_crop_size(cfg, self.student_arch, self.teacher_arch,
                        [self.disc, *(getattr(t, "discriminator", None) for _, t in self.terms)], self.device)

        # optimisers
        g_params = list(self.student.parameters()) + [p for _, t in self.terms for p in t.generator_parameters()]
        self.opt_g = gaugan_run.adam(self, g_params, role="g") if gaugan else loop.adam(g_params, cfg)
        self.opt_d = gaugan_run.adam(self, self.disc.parameters(), role="d") if gaugan else loop.adam(self.disc.parameters(), cfg)
        self.opt_terms = {
            i: loop.adam(list(t.discriminator_parameters()), cfg)
            for i, (_, t) in enumerate(self.terms) if t.has_discriminator()
        }
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # forward callables (DDP / compile)
        self.s_forward = Features.make(self.student, self.taps)
        self.t_forward = Features.make(self.teacher, self.taps) if self.teacher is not None else None
        self.d_forward = self.disc
        if self.distributed:
            self.s_forward = loop.ddp(self.s_forward, self.device, sync_buffers=True)
            self.d_forward = loop.ddp(self.disc, self.device, sync_buffers=False)
        if cfg.compile:
            self.s_forward = torch.compile(self.s_forward)
            self.d_forward = torch.compile(self.d_forward)
            if self.t_forward is not None:
                self.t_forward = torch.compile(self.t_forward)

        # bookkeeping
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.best_step = -1
        self.grid_batch = None
        # FID at evaluation: the extractor and weights of ``nas-prune evaluate`` (loaded now, so a
        # bad path fails before training)
        self.fid_net = None
        if cfg.inception and self.is_main and self.test_set is not None:
            from nas_prune.inception import load_inception

            self.fid_net = load_inception(cfg.inception, value_range=(-1.0, 1.0), device=self.device)
        if self.resume:
            self._load_checkpoint()
            if self.is_main:
                loop.append_log(self.out, {"resume": self.step, "determinism": self._determinism_info()})
        elif self.is_main:
            loop.check_fresh_run(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            from nas_prune.fileio import write_json

            write_json(self.out / "config.json", self._run_info())
        self.writer = open_tensorboard(self) if self.is_main else None
        from nas_prune.device import FiniteMonitor

        self.monitor = FiniteMonitor(self.device, start_step=self.step)

    def _determinism_info(self) -> dict:
        return {k: v for k, v in self.determinism.items() if k != "previous"}

    def _run_info(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "objective": self.objective,
            "teacher_arch": self.teacher_arch.to_dict() if self.teacher_arch else None,
            "teacher_sha256": self.teacher_sha,
            "data": data_fingerprint(self),
            "student_arch": self.student_arch.to_dict(),
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world,
            "determinism": self._determinism_info(),
        }

    def _setup_distributed(self) -> None:
        from nas_prune.device import setup_distributed

        self.world, self.rank, self.local_rank, self.distributed, self._own_pg = setup_distributed(
            self.cfg.dist_backend, device=self.cfg.device)
        self.is_main = self.rank == 0

    def _pick_amp(self):
        from nas_prune.device import amp_dtype

        return amp_dtype(self.cfg.amp, self.device)

    def check_finite(self) -> None:
        """Stop the run (NasPruneError) if a step since the start had a non-finite loss."""
        bad = self.monitor.first_bad(distributed=self.distributed)
        if bad is not None:
            self._nan_stop(*bad)

    # -- loop --------------------------------------------------------------------------------
    def train(self) -> DistillResult:
        cfg = self.cfg
        end = self.total_steps if cfg.max_steps is None else min(self.total_steps, cfg.max_steps)
        start_step = self.step
        images = 0
        t0 = time.perf_counter()
        progress = TrainProgress(
            label=self.label, total=end, start=self.step, steps_per_epoch=self.steps_per_epoch,
            enabled=cfg.progress and self.is_main, log_every=cfg.log_every, device_type=self.device.type,
            batch_size=cfg.batch_size, crop_size=cfg.crop_size, warn_slow=self.is_main)
        ka_taps = {t.name: len(t.taps) for _, t in self.terms if t.name == "gcka"}

        def after_step(batch, values):
            nonlocal images
            n = batch["A"].shape[0] * self.world
            images += n
            numbers = self._after_step(values, images, t0,
                                       show=progress.enabled and self.step in (start_step + 1, end))
            # the losses shown are those of the last step read on the host (log steps, the first and the
            # last); the progress display says which step they come from
            progress.update(self.step, images=n, shown=None if numbers is None else shown_losses(numbers, ka_taps=ka_taps))

        def end_of_epoch():
            self.check_finite()
            if cfg.eval_every == 0:
                self.evaluate()
            if cfg.save_every == 0:
                self.save_checkpoint()

        from nas_prune import interrupt

        status = RunStatus(self.out, *self.status, end_step=end, enabled=self.is_main)
        # SIGINT / SIGTERM / SIGHUP: stop after the current step, write the checkpoint there
        # (a signal during a checkpoint write lets it finish), then say "interrupted"
        with interrupt.deferred() as stop:
            try:
                status.write("running", self.step)
                with progress:
                    interrupted = loop.train_loop(self, end=end, step=self.train_step, after_step=after_step,
                                                  end_of_epoch=end_of_epoch, on_step=self.on_step if self.is_main else None,
                                                  stop=stop)
                self.check_finite()
                finished = self.step >= self.total_steps
                if not self.history or self.history[-1]["step"] != self.step:
                    self.evaluate()
                self.save_checkpoint()
                interrupted = interrupted or stop.requested  # a signal after the last step: no final/ yet
                finished = finished and not interrupted
                if self.is_main and not interrupted:  # an unfinished run has no final/ (nas_prune.runstate)
                    save_student(self.student, self.student_arch, self.out / "final", self.student_doc)
                status.write("interrupted" if interrupted else "done", self.step,
                             interrupt.signal_name(stop.signum) if interrupted else None)
            except BaseException as err:
                status.stopped(err, self.step)
                raise
            finally:
                self.cleanup()
        elapsed = time.perf_counter() - t0
        ips = images / elapsed if elapsed > 0 and self.step > start_step else 0.0
        student = None
        if self.is_main:
            import copy

            student = copy.deepcopy(self.student).to("cpu").eval()
        if interrupted and self.is_main:
            loop.warn_interrupted(self.step, self.out)
        return DistillResult(
            out_dir=self.out, step=self.step, finished=finished, interrupted=interrupted,
            metrics=dict(self.history[-1]) if self.history else {}, best_metrics=dict(self.best),
            best_step=self.best_step, history=list(self.history), images_per_second=ips, student=student,
            signal=stop.signum if interrupted else None,
        )

    def _after_step(self, values, images, t0, *, show: bool = False) -> dict[str, float] | None:
        """Checks, log, evaluation, checkpoint, grid due after this step; the losses as numbers
        when they were read on the host (log steps, or ``show``), else None."""
        cfg = self.cfg
        step = self.step
        log = self.is_main and step % cfg.log_every == 0
        evaluate = bool(cfg.eval_every) and step % cfg.eval_every == 0
        save = bool(cfg.save_every) and step % cfg.save_every == 0
        grid = bool(cfg.grid_every) and step % cfg.grid_every == 0
        if log or evaluate or save or grid or (self.distributed and step % cfg.log_every == 0):
            self.check_finite()  # every process checks at the same steps (an all-reduce under DDP)
        numbers = self.host_values(values) if (log or show) else None
        if log:
            elapsed = time.perf_counter() - t0
            self._log({"step": step, "epoch": step / self.steps_per_epoch, **numbers, "img_per_s": images / max(elapsed, 1e-9)})
            if self.writer is not None:
                for k, v in numbers.items():
                    self.writer.add_scalar(f"train/{k}", v, step)
        if evaluate:
            self.evaluate()
        if save:
            self.save_checkpoint()
        if grid:
            self.write_grid()
        return numbers

    def _nan_stop(self, step: int, values: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        where = f"at step {step} ({bad})" if step > 0 else "in another process"
        last = self.out / "checkpoints" / "last.pt"
        keep = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        self.cleanup()
        raise NasPruneError(
            f"loss is not finite {where}; stopped at step {self.step}, {keep}; "
            "try a lower --lr, --amp bf16 instead of fp16, or check the data"
        )

    def _log(self, rec: dict) -> None:
        loop.append_log(self.out, rec)

    # -- evaluation (nas_prune.distill_eval) -------------------------------------------------
    def evaluate(self) -> None:
        """PSNR / SSIM (and FID if configured) of the student on the test split; keep the best."""
        from nas_prune import distill_eval

        distill_eval.evaluate(self)

    def write_grid(self) -> None:
        """``samples/step_XXXXXXX.png``: rows of input | teacher | student | real."""
        from nas_prune import distill_eval

        distill_eval.write_grid(self)

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """``checkpoints/last.pt``: everything needed to continue exactly (rank 0 writes)."""
        from nas_prune import distill_checkpoint

        distill_checkpoint.save(self)

    def _load_checkpoint(self) -> None:
        from nas_prune import distill_checkpoint

        distill_checkpoint.load(self)

    def cleanup(self) -> None:
        from nas_prune.device import restore_determinism

        restore_determinism(getattr(self, "determinism", None))
        if getattr(self, "writer", None) is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if getattr(self, "_own_pg", False):
            import torch

            torch.distributed.destroy_process_group()
            self._own_pg = False

