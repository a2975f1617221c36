"""Train a teacher generator of the search space from scratch.

For users without a trained teacher. Two objectives:

- ``pix2pix`` (Isola et al., CVPR 2017), aligned data: conditional PatchGAN + L1 to the
  target (lambda_recon 100). This is the distillation loop of :mod:`nas_prune.distill`
  with no teacher and no distillation term, so data, logging, evaluation (PSNR/SSIM),
  checkpoints and exact resume are the same.
- ``cyclegan`` (Zhu et al., ICCV 2017), unaligned data: two generators
  ``G_A: A -> B`` and ``G_B: B -> A``, two unconditional PatchGANs, and::

      G: gan(D_B(G_A(a))) + gan(D_A(G_B(b)))
         + lambda_cycle * (|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1)
         + lambda_cycle * lambda_identity * (|G_A(b) - b|_1 + |G_B(a) - a|_1)
      D_B: d_loss(D_B(b), D_B(pool(G_A(a))))     D_A: d_loss(D_A(a), D_A(pool(G_B(b))))

  with CycleGAN's history pool of 50 generated images, lambda_cycle 10 and
  lambda_identity 0.5. Adam (2e-4, 0.5/0.999), constant then linearly decaying rate.

Weights start from N(0, 0.02) (convs) and N(1, 0.02) (norm gammas), pix2pix's
``init_type normal``. The run folder ends with ``teacher.safetensors`` (CAT layout, the
A->B generator; read by :func:`nas_prune.load.load_generator` and every command that
takes ``--teacher``) and, for CycleGAN, ``teacher_BtoA.safetensors``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from nas_prune import loop
from nas_prune.errors import NasPruneError
from nas_prune.runstate import RunStatus

__all__ = ["TeacherConfig", "TeacherResult", "train_teacher", "teacher_arch", "OBJECTIVES", "TEACHER_FILE"]

OBJECTIVES = ("pix2pix", "cyclegan")
TEACHER_FILE = "teacher.safetensors"
TEACHER_B_FILE = "teacher_BtoA.safetensors"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TeacherConfig:
    """Every option of teacher training (keyword-only; unknown keys are errors).

    Attributes:
        objective: ``pix2pix`` (aligned data) or ``cyclegan`` (unaligned data).
        space: search-space YAML of the teacher; None = the shipped
            ``cat_inception_pix2pix`` (pix2pix) or ``cat_inception`` (cyclegan).
        ngf / n_blocks / norm: override the space's base width, block count, norm.
        direction: ``AtoB`` or ``BtoA``.
        epochs / epochs_decay: constant-rate epochs, then linear decay to 0.
        max_steps: stop (with a checkpoint) after this many steps in total.
        batch_size: images per step (>= 2 for pix2pix, whose loop compares samples; 1 is
            CycleGAN's default).
        lr / beta1 / beta2: Adam settings of generators and discriminators.
        gan_mode: ``lsgan``, ``vanilla`` or ``hinge``; None = ``vanilla`` for pix2pix
            and ``lsgan`` for CycleGAN, as in their papers.
        lambda_recon: L1 weight of pix2pix.
        lambda_cycle / lambda_identity / pool_size: CycleGAN's weights and history pool.
        ndf / d_layers / d_norm: PatchGAN width, depth and norm (None = batch for
            pix2pix, instance for CycleGAN).
        load_size / crop_size / preprocess / flip: data transforms (:class:`nas_prune.data.TransformConfig`).
        workers / seed / device / progress: as in distillation.
        eval_every / save_every / log_every: steps between evaluations (pix2pix),
            checkpoints and log lines; 0 = once per epoch.
    """

    objective: str = "pix2pix"
    space: str | None = None
    ngf: int | None = None
    n_blocks: int | None = None
    norm: str | None = None
    direction: str = "AtoB"
    epochs: int = 100
    epochs_decay: int = 100
    max_steps: int | None = None
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gan_mode: str | None = None
    lambda_recon: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    ndf: int = 64
    d_layers: int = 3
    d_norm: str | None = None
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True
    workers: int = 4
    seed: int = 0
    device: str = "auto"
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 50
    progress: bool = True

    def __post_init__(self) -> None:
        from nas_prune.arch import NORMS
        from nas_prune.gan import GAN_MODES

        def check(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise NasPruneError(f"{name}: {msg}")

        check(self.objective in OBJECTIVES, "objective", f"{self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        loop.check_loop_fields(self)
        check(self.norm is None or self.norm in NORMS, "norm", f"{self.norm!r} is not one of {', '.join(NORMS)}")
        check(self.gan_mode is None or self.gan_mode in GAN_MODES, "gan_mode",
              f"{self.gan_mode!r} is not one of {', '.join(GAN_MODES)}")
        check(self.ngf is None or self.ngf >= 1, "ngf", "must be >= 1")
        check(self.n_blocks is None or self.n_blocks >= 0, "n_blocks", "must be >= 0")
        low = 2 if self.objective == "pix2pix" else 1
        check(self.batch_size >= low, "batch_size", f"must be >= {low} for {self.objective}")
        for name in ("lambda_recon", "lambda_cycle", "lambda_identity"):
            v = getattr(self, name)
            check(v >= 0 and math.isfinite(v), name, f"must be a finite number >= 0, got {v}")
        check(self.pool_size >= 0, "pool_size", "must be >= 0")

    @property
    def mode(self) -> str:
        """Dataset layout the objective needs."""
        return "aligned" if self.objective == "pix2pix" else "unaligned"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> "TeacherConfig":
        """Build from :meth:`to_dict` output; unknown keys are errors naming the key."""
        return loop.config_from_dict(cls, data, where=where)

    def replace(self, **changes: Any) -> "TeacherConfig":
        """A copy with ``changes`` applied (unknown names are errors)."""
        return loop.config_replace(self, changes, what="teacher-training")


@dataclass
class TeacherResult:
    """What :func:`train_teacher` returns.

    Attributes:
        out_dir: run folder.
        teacher: path of ``teacher.safetensors`` (the A->B generator).
        step: steps done in total; finished: the schedule ran to its end;
        interrupted: stopped by Ctrl-C, SIGTERM or SIGHUP (a checkpoint was written at the stop);
        signal: the number of that signal (:mod:`nas_prune.interrupt`), else None.
        metrics: last test evaluation (pix2pix: ``psnr`` / ``ssim``).
        seconds: wall time of this invocation.
    """

    out_dir: Path
    teacher: Path
    step: int
    finished: bool
    interrupted: bool
    metrics: dict[str, float]
    seconds: float
    signal: int | None = None


def teacher_arch(config: TeacherConfig):
    """The full-width :class:`~nas_prune.arch.Arch` the config trains (channels from the space)."""
    from dataclasses import replace as dc_replace

    from nas_prune.families import families, get_family
    from nas_prune.space import load_space, shipped_spaces_dir

    path = config.space
    if path is None:
        name = "cat_inception_pix2pix.yaml" if config.objective == "pix2pix" else "cat_inception.yaml"
        path = shipped_spaces_dir() / name
    space = load_space(path)
    family = get_family(space.family)
    if not family.trains_teachers:
        can = ", ".join(f.title for f in families() if f.trains_teachers)
        raise NasPruneError(f"{path}: train-teacher trains {can} generators, not {family.title} generators")
    changes: dict[str, Any] = {}
    for key in ("ngf", "n_blocks", "norm"):
        if getattr(config, key) is not None:
            changes[key] = getattr(config, key)
    space = dc_replace(space, **changes)
    if 4 * space.ngf // space.channels_reduction_factor < 1:
        raise NasPruneError(f"ngf: {space.ngf} leaves branches of width 0 with reduction factor {space.channels_reduction_factor}")
    return space.teacher_arch()


def init_normal_(model, *, std: float = 0.02, seed: int = 0):
    """pix2pix's ``normal`` init in place: conv weights N(0, std), norm gammas N(1, std), biases 0."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * std)
                m.bias.zero_()
    return model


def _save_generator(model, path: Path) -> None:
    from safetensors.torch import save_file

    from nas_prune.fileio import atomic_path

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "nas-prune-teacher", "layout": "cat"})


def train_teacher(
    *,
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: TeacherConfig | None = None,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    **options: Any,
) -> TeacherResult:
    """Train a teacher on ``data`` and write ``out/teacher.safetensors``.

    Args:
        data: dataset folder: pix2pix layout (``train/``, ``test/``) for ``pix2pix``,
            CycleGAN layout (``trainA/`` ...) for ``cyclegan``.
        out: run folder (checkpoints, logs, samples, the teacher file).
        config: a :class:`TeacherConfig`; ``options`` override its fields.
        resume: continue the run in ``out`` from its checkpoint (same config,
            except schedule-length and logging fields).
        on_step: ``on_step(step, losses)`` after every step; raising KeyboardInterrupt
            in it stops like Ctrl-C (with a checkpoint).

    Raises:
        NasPruneError: bad option, data in the wrong layout, an existing run without
            ``resume``, a non-finite loss.
    """
    t0 = time.perf_counter()
    config = config or TeacherConfig()
    if options:
        config = config.replace(**options)
    out, data = Path(out), Path(data)
    from nas_prune.locks import hold

    with hold(out, command="train-teacher"):  # one writer per run folder (nas_prune.locks)
        return _train_teacher(config, data=data, out=out, resume=resume, on_step=on_step, t0=t0)


def _train_teacher(config: TeacherConfig, *, data: Path, out: Path, resume: bool, on_step, t0: float) -> TeacherResult:
    """:func:`train_teacher` with the run folder held."""
    loop.check_run_dir(out, resume=resume, inputs=[data],
                       files=["config.json", "log.jsonl", str(loop.CHECKPOINT), TEACHER_FILE, TEACHER_B_FILE],
                       adopt=["best_metrics.json", "samples/*", "best/*", "final/*", "tb/*"],
                       live=["log.jsonl", "tb/*"])
    from nas_prune.data import detect_layout

    layout = detect_layout(data) if data.is_dir() else None
    if layout is not None and layout != config.mode:
        want = "pix2pix" if layout == "aligned" else "cyclegan"
        folders = "train/, test/" if layout == "aligned" else "trainA/, trainB/"
        raise NasPruneError(f"{data} has the {layout} layout ({folders}) "
                            f"but --objective is {config.objective}; use --objective {want}")
    arch = teacher_arch(config)
    if config.objective == "pix2pix":
        return _train_pix2pix(arch, config, data=data, out=out, resume=resume, on_step=on_step, t0=t0)
    from nas_prune.outputs import snapshot, undo

    before = snapshot(out)
    try:
        return _CycleRun(arch, config, data=data, out=out, resume=resume, on_step=on_step).train(t0)
    except BaseException:
        if not resume and not (out / loop.CHECKPOINT).is_file():  # nothing to resume from: leave nothing
            undo(out, before=before)
        raise


def _train_pix2pix(arch, config: TeacherConfig, *, data: Path, out: Path, resume: bool, on_step, t0: float) -> TeacherResult:
    from nas_prune.distill import DistillConfig, distill
    from nas_prune.model import build_generator

    shared = {f.name for f in fields(DistillConfig)} & set(config.to_dict())
    skip = {"gan_mode", "lambda_recon", "d_norm"}
    dcfg = DistillConfig(
        mode="aligned", distill={}, gan_mode=config.gan_mode or "vanilla", lambda_recon=config.lambda_recon,
        d_norm=config.d_norm or "batch", **{k: getattr(config, k) for k in shared - skip},
    )
    student = init_normal_(build_generator(arch), seed=config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the student has no weights")
        res = distill(teacher=None, student=student, data=data, out=out, config=dcfg, resume=resume, on_step=on_step,
                      label="train-teacher", status=("train-teacher", [TEACHER_FILE, "final"]))
    teacher_path = out / TEACHER_FILE
    if not res.interrupted:  # an unfinished run leaves no teacher file (nas_prune.runstate)
        _save_generator(res.student, teacher_path)
    return TeacherResult(out_dir=out, teacher=teacher_path, step=res.step, finished=res.finished,
                         interrupted=res.interrupted, metrics=dict(res.metrics), seconds=time.perf_counter() - t0,
                         signal=res.signal)


class _ImagePool:
    """CycleGAN's history of generated images: with probability 1/2 a new image is swapped
    for a stored one, so discriminators also see older generator outputs."""

    def __init__(self, size: int, seed: int):
        import torch

        self.size = size
        self.images: list = []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, batch):
        import torch

        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() < 0.5:
                j = int(torch.randint(0, self.size, (1,), generator=self.gen))
                old = self.images[j].clone()
                self.images[j] = img.clone()
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state(self) -> dict:
        import torch

        return {"images": torch.cat(self.images) if self.images else torch.zeros(0), "gen": self.gen.get_state()}

    def load(self, state: dict) -> None:
        self.images = [t.unsqueeze(0) for t in state["images"]] if state["images"].numel() else []
        self.gen.set_state(state["gen"])


class _CycleRun:
    """CycleGAN training of two generators of the space (``setup``, ``train``, ``save_checkpoint``)."""

    RESUMABLE = frozenset({"epochs", "epochs_decay", "max_steps", "save_every", "log_every", "eval_every",
                           "workers", "device", "progress"})

    def __init__(self, arch, cfg: TeacherConfig, *, data: Path, out: Path, resume: bool, on_step):
        import torch

        from nas_prune.gan import GANLoss, PatchDiscriminator
        from nas_prune.model import build_generator

        self.cfg, self.out, self.on_step, self.arch = cfg, out, on_step, arch
        if arch.input_nc != arch.output_nc and cfg.lambda_identity > 0:
            raise NasPruneError("lambda_identity: the identity loss needs as many input as output channels; set it to 0")
        self.device = loop.pick_device(cfg.device)
        self.train_set, self.steps_per_epoch, self.sampler, self.loader = loop.train_data(
            cfg, data, mode="unaligned", input_nc=arch.input_nc, output_nc=arch.output_nc)
        self.total_steps = (cfg.epochs + cfg.epochs_decay) * self.steps_per_epoch
        torch.manual_seed(cfg.seed)
        self.g_a = init_normal_(build_generator(arch), seed=cfg.seed).to(self.device).train()
        self.g_b = init_normal_(build_generator(arch), seed=cfg.seed + 1).to(self.device).train()
        d_norm = cfg.d_norm or "instance"
        self.d_a = PatchDiscriminator(arch.input_nc, ndf=cfg.ndf, n_layers=cfg.d_layers, norm=d_norm).to(self.device)
        self.d_b = PatchDiscriminator(arch.output_nc, ndf=cfg.ndf, n_layers=cfg.d_layers, norm=d_norm).to(self.device)
        from nas_prune.distill_io import check_crop_size

        check_crop_size(cfg, arch, None, [self.d_a, self.d_b], self.device)
        init_normal_(self.d_a, seed=cfg.seed + 2)
        init_normal_(self.d_b, seed=cfg.seed + 3)
        self.gan = GANLoss(cfg.gan_mode or "lsgan")
        self.opt_g = loop.adam([*self.g_a.parameters(), *self.g_b.parameters()], cfg)
        self.opt_d = loop.adam([*self.d_a.parameters(), *self.d_b.parameters()], cfg)
        self.pool_a, self.pool_b = _ImagePool(cfg.pool_size, cfg.seed), _ImagePool(cfg.pool_size, cfg.seed + 1)
        self.step = 0
        if resume:
            self._load()
        else:
            loop.check_fresh_run(out)
            from nas_prune.fileio import write_json

            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", {"config": cfg.to_dict(), "arch": arch.to_dict(),
                                             "steps_per_epoch": self.steps_per_epoch})

    def _load(self) -> None:
        if not (self.out / loop.CHECKPOINT).is_file():
            raise NasPruneError(f"nothing to resume: {self.out / loop.CHECKPOINT} not found")
        from nas_prune.fileio import read_json

        doc = read_json(self.out / "config.json", what="run config")
        saved = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(saved, dict):
            raise NasPruneError(f"{self.out / 'config.json'}: no config object; is it a train-teacher run folder?")
        for key, value in self.cfg.to_dict().items():
            if key not in self.RESUMABLE and saved.get(key) != value:
                raise NasPruneError(f"resume: {key} is {value!r}, the run in {self.out} used {saved.get(key)!r}")
        state = loop.load_checkpoint(self.out, version=CHECKPOINT_VERSION)
        for name in ("g_a", "g_b", "d_a", "d_b", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        self.pool_a.load(state["pool_a"])
        self.pool_b.load(state["pool_b"])
        loop.set_rng_state(state)
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        state = {"version": CHECKPOINT_VERSION, "step": self.step, **loop.rng_state(),
                 "pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}
        for name in ("g_a", "g_b", "d_a", "d_b", "opt_g", "opt_d"):
            state[name] = getattr(self, name).state_dict()
        loop.atomic_torch_save(state, self.out / loop.CHECKPOINT)

    def train_step(self, batch: dict) -> dict[str, float]:
        import torch.nn.functional as F

        cfg = self.cfg
        a, b = batch["A"].to(self.device), batch["B"].to(self.device)
        lr = loop.set_lr(cfg, step=self.step, steps_per_epoch=self.steps_per_epoch, optimizers=(self.opt_g, self.opt_d))
        fake_b, fake_a = self.g_a(a), self.g_b(b)
        rec_a, rec_b = self.g_b(fake_b), self.g_a(fake_a)
        self.d_a.requires_grad_(False)
        self.d_b.requires_grad_(False)
        g_gan = self.gan.g_loss(self.d_b(fake_b)) + self.gan.g_loss(self.d_a(fake_a))
        cycle = F.l1_loss(rec_a, a) + F.l1_loss(rec_b, b)
        loss = g_gan + cfg.lambda_cycle * cycle
        idt = None
        if cfg.lambda_identity > 0:
            idt = F.l1_loss(self.g_a(b), b) + F.l1_loss(self.g_b(a), a)
            loss = loss + cfg.lambda_cycle * cfg.lambda_identity * idt
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.d_a.requires_grad_(True)
        self.d_b.requires_grad_(True)
        d_b = self.gan.d_loss(self.d_b(b), self.d_b(self.pool_b.query(fake_b)))
        d_a = self.gan.d_loss(self.d_a(a), self.d_a(self.pool_a.query(fake_a)))
        self.opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        self.opt_d.step()
        values = {"g_gan": g_gan.item(), "cycle": cycle.item(), "d_a": d_a.item(), "d_b": d_b.item(), "lr": lr}
        if idt is not None:
            values["idt"] = idt.item()
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NasPruneError(f"loss is not finite at step {self.step + 1} ({bad[0]}={values[bad[0]]}); "
                                f"the last good checkpoint is in {self.out / 'checkpoints'}; try a lower --lr")
        return values

    def train(self, t0: float) -> TeacherResult:
        cfg = self.cfg
        end = self.total_steps if cfg.max_steps is None else min(self.total_steps, cfg.max_steps)

        def after_step(batch, values):
            if self.step % cfg.log_every == 0:
                loop.append_log(self.out, {"step": self.step, **values})
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint()

        def end_of_epoch():
            if cfg.save_every == 0:
                self.save_checkpoint()

        from nas_prune.progress import TrainProgress, shown_losses

        progress = TrainProgress(label="train-teacher", total=end, start=self.step, steps_per_epoch=self.steps_per_epoch,
                                 enabled=cfg.progress, log_every=cfg.log_every, device_type=self.device.type,
                                 batch_size=cfg.batch_size, crop_size=cfg.crop_size)

        def after_step_shown(batch, values):
            after_step(batch, values)
            progress.update(self.step, images=2 * batch["A"].shape[0], shown=shown_losses(values))

        from nas_prune import interrupt

        status = RunStatus(self.out, "train-teacher", [TEACHER_FILE, TEACHER_B_FILE], end_step=end)
        with interrupt.deferred() as stop:  # a signal stops after the current step, with a checkpoint
            try:
                status.write("running", self.step)
                with progress:
                    interrupted = loop.train_loop(self, end=end, step=self.train_step, after_step=after_step_shown,
                                                  end_of_epoch=end_of_epoch, on_step=self.on_step, stop=stop)
                self.save_checkpoint()
                interrupted = interrupted or stop.requested
                teacher = self.out / TEACHER_FILE
                if not interrupted:  # an unfinished run leaves no teacher files (nas_prune.runstate)
                    _save_generator(self.g_a, teacher)
                    _save_generator(self.g_b, self.out / TEACHER_B_FILE)
                status.write("interrupted" if interrupted else "done", self.step,
                             interrupt.signal_name(stop.signum) if interrupted else None)
            except BaseException as err:
                status.stopped(err, self.step)
                raise
        if interrupted:
            loop.warn_interrupted(self.step, self.out)
        return TeacherResult(out_dir=self.out, teacher=teacher, step=self.step,
                             finished=self.step >= self.total_steps and not interrupted,
                             interrupted=interrupted, metrics={}, seconds=time.perf_counter() - t0,
                             signal=stop.signum if interrupted else None)
