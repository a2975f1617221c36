"""Distillation with GauGAN's objective: the parts of a :class:`nas_prune.distill._Run` that differ.

A run takes this objective when ``objective`` is ``gaugan``, or ``auto`` (the default) and the
student is a SPADE generator (:mod:`nas_prune.families.spade`): SPADE generators read semantic maps, so
the pix2pix/CycleGAN objective and image folders do not apply to them. Per step, with ``s``
the semantic map of the batch (one-hot labels + instance edges, :func:`nas_prune.data_seg.to_semantics`)
and ``x`` the real photo (CAT's ``SPADEDistiller``, GauGAN's losses of :mod:`nas_prune.gaugan.losses`)::

    teacher:  t_out, t_feats = T(s)                       (eval mode, no grad)
    student:  s_out, s_feats = S(s)
    G step:   S minimises lambda_gan L_gan(D) + lambda_feat L_feat(D) + lambda_vgg L_vgg
                          + sum_w w * term(KDBatch)       (CAT: GCKA at head_0, G_middle_1, up_1)
    D step:   D minimises L_D on [cat(s, s_out.detach()); cat(s, x)]
    term D:   terms with their own discriminator take an Adam step on it

Defaults are CAT's GauGAN distillation (``scripts/gaugan/cityscapes/train_inception_student_*.sh``
and the options they inherit): hinge loss, lambda_gan 1, lambda_feat 10, lambda_vgg 10, a
2-scale discriminator with 4 layers and ndf 64, TTUR (Adam betas (0, 0.9), generator lr
``lr / 2``, discriminator lr ``2 lr``, lr 2e-4), constant then linear decay.

Departures from CAT's code, and why:

* The D step scores the fake of this step's single student forward (detached). CAT runs the
  updated student again under ``no_grad`` for it; reusing the fake saves a forward pass, and
  the student's batch-norm running statistics are updated once per step instead of twice.
* The learning rate decays every step (nas-prune's schedule) rather than once per epoch.
* CAT trains on 2 GPUs with ``DataParallel`` and batch 16: each GPU computes the whole loss on
  its 8 samples (GCKA included) and the two totals are averaged, under synchronised batch norm.
  One device with batch 16 computes GCKA over the 16 samples instead; ``torchrun`` on 2 GPUs with
  batch 8 each reproduces CAT's per-GPU GCKA (the batch norm then sees 8 samples per device).
  Either way the GCKA weight is CAT's ``lambda_distill`` as is (0.5): CAT's SPADE distiller
  averages per-GPU losses, unlike its pix2pix/CycleGAN distiller, which sums per-GPU KA.
"""

from __future__ import annotations

from pathlib import Path

from nas_prune import loop
from nas_prune.errors import NasPruneError

__all__ = ["OBJECTIVES", "CAT_SPADE_TAPS", "resolve_objective", "setup", "train_step", "evaluate", "write_grid"]

OBJECTIVES = ("auto", "pix2pix", "gaugan")
#: The layers CAT's SPADE distiller aligns (its ``mapping_layers``).
CAT_SPADE_TAPS = ("head_0", "G_middle_1", "up_1")
#: TTUR learning-rate factors of the generator and the discriminator (GauGAN, CAT).
TTUR_LR = (0.5, 2.0)
TTUR_BETAS = (0.0, 0.9)


def resolve_objective(cfg, student_arch) -> str:
    """``pix2pix`` or ``gaugan`` for this run; a SPADE student needs ``gaugan``, others ``pix2pix``.

    Raises:
        NasPruneError: an objective that does not fit the generator, or options of the other objective.
    """
    from nas_prune.families import data_kind, family_of

    spade = data_kind(student_arch) == "semantic"
    objective = cfg.objective if cfg.objective != "auto" else family_of(student_arch).default_objective
    if objective == "gaugan" and not spade:
        raise NasPruneError("objective gaugan needs a SPADE generator (semantic-map input); this student is not one")
    if objective == "pix2pix" and spade:
        raise NasPruneError("a SPADE generator reads semantic maps: use objective gaugan (or auto)")
    if objective == "gaugan":
        if cfg.lambda_recon is not None:
            raise NasPruneError("lambda_recon: GauGAN's objective has no L1 term (its reconstruction terms are "
                                "lambda_feat and lambda_vgg)")
        if cfg.mode != "aligned":
            raise NasPruneError("mode: semantic maps and photos are paired; GauGAN's objective needs mode aligned")
    return objective


def setup(run, data: Path) -> None:
    """Data, discriminator, losses and optimiser settings of a GauGAN run (sets attributes of ``run``)."""
    from nas_prune import data as dmod
    from nas_prune.data_seg import open_seg_dataset
    from nas_prune.distill_io import open_test_split
    from nas_prune.gaugan.discriminator import MultiscaleDiscriminator, load_multiscale_discriminator
    from nas_prune.gaugan.vgg import VGGLoss, load_vgg19

    cfg, arch = run.cfg, run.student_arch
    tf = dmod.TransformConfig(load_size=cfg.load_size, crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip)
    train_set = open_seg_dataset(data, split="train", label_nc=arch.label_nc, transform=tf, seed=cfg.seed)
    h, w = train_set[0]["A"].shape[-2:]
    m = arch.size_multiple
    if h % m or w % m:
        raise NasPruneError(f"{data}: training maps come out {w}x{h} (preprocess {cfg.preprocess}, crop_size "
                            f"{cfg.crop_size}); this SPADE generator needs sides that are multiples of {m}")
    run.n_labels, run.layout = train_set.n_labels, train_set.layout
    run.train_set, run.steps_per_epoch, run.sampler, run.loader = loop.train_data(
        cfg, data, mode=cfg.mode, rank=run.rank, world=run.world, pin_memory=run.device.type == "cuda",
        input_nc=arch.label_nc, output_nc=arch.output_nc, dataset=train_set)
    run.test_set = open_test_split(run, data, lambda: open_seg_dataset(
        data, split="test", label_nc=arch.label_nc, transform=tf, seed=cfg.seed))

    in_d = arch.label_nc + arch.output_nc
    if cfg.teacher_discriminator:
        disc = load_multiscale_discriminator(cfg.teacher_discriminator, in_channels=in_d)
    else:
        disc = MultiscaleDiscriminator(in_d, ndf=cfg.ndf, n_layers=cfg.d_layers or 4, num_d=cfg.num_d)
    run.disc = disc
    run.gan_mode = cfg.gan_mode or "hinge"
    run.vgg_loss = None
    if cfg.lambda_vgg > 0:
        run.vgg_loss = VGGLoss(load_vgg19(cfg.vgg, device=run.device))
    run.segmenter = None
    if cfg.segmenter and run.is_main and run.test_set is not None:
        from nas_prune.segmenter import load_segmenter

        run.segmenter = load_segmenter(cfg.segmenter, device=run.device)
    run.ttur = cfg.ttur is not False


def adam(run, params, *, role: str):
    """Adam of the generator (``role="g"``) or discriminator (``"d"``); TTUR sets betas and lr factors."""
    import torch

    cfg = run.cfg
    if not run.ttur:
        return loop.adam(params, cfg)
    scale = TTUR_LR[0] if role == "g" else TTUR_LR[1]
    opt = torch.optim.Adam(params, lr=cfg.lr * scale, betas=TTUR_BETAS)
    for group in opt.param_groups:
        group["lr_scale"] = scale
    return opt


def semantics(run, batch):
    """The generator input of ``batch`` on the run's device (channels-last if configured)."""
    import torch

    from nas_prune.data_seg import to_semantics

    sem = to_semantics(batch, n_labels=run.n_labels, device=run.device)
    return sem.contiguous(memory_format=torch.channels_last) if run.cfg.channels_last else sem


def train_step(run, batch: dict) -> dict:
    """One GauGAN step: generator, then discriminator, then the terms' discriminators (module docstring).

    Like the pix2pix step (:meth:`nas_prune.distill._Run.train_step`): the teacher runs under
    ``inference_mode``, the losses stay on the device as 0-dim tensors (returned detached and
    folded into ``run.monitor``), nothing waits for the device.
    """
    from nas_prune.gaugan.losses import discriminate, feature_matching_loss, gan_d_loss, gan_g_loss
    from nas_prune.kd import KDBatch

    cfg = run.cfg
    sem, real = semantics(run, batch), run._prep(batch["B"])
    run.lr = loop.set_lr(cfg, step=run.step, steps_per_epoch=run.steps_per_epoch,
                         optimizers=(run.opt_g, run.opt_d, *run.opt_terms.values()))
    if run.terms:
        t_out, t_feats = run.teacher_forward(sem)
    with run._autocast():
        s_out, s_feats = run.s_forward(sem)
    if not run.terms:
        t_out, t_feats = s_out.detach(), {}

    # generator step
    run.disc.requires_grad_(False)
    with run._autocast():
        pred_fake, pred_real = discriminate(run.d_forward, sem, s_out, real)
        losses = {"g_gan": gan_g_loss(pred_fake, run.gan_mode)}
        if cfg.lambda_feat:
            losses["g_feat"] = feature_matching_loss(pred_fake, pred_real)
        if run.vgg_loss is not None:
            losses["g_vgg"] = run.vgg_loss(s_out, real)
    total = cfg.lambda_gan * losses["g_gan"] + cfg.lambda_feat * losses.get("g_feat", 0.0)
    total = total + cfg.lambda_vgg * losses.get("g_vgg", 0.0)
    kd = KDBatch(real_a=sem, real_b=real, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)
    total = run._add_terms(kd, losses, total)
    losses["g_total"] = total
    run.opt_g.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    run._allreduce_grads([p for _, t in run.terms for p in t.generator_parameters()])
    run.scaler.step(run.opt_g)

    # discriminator step, on the same (detached) fake
    run.disc.requires_grad_(True)
    with run._autocast():
        pred_fake, pred_real = discriminate(run.d_forward, sem, s_out.detach(), real)
        d_fake, d_real = gan_d_loss(pred_fake, pred_real, run.gan_mode)
        d_loss = d_fake + d_real
    losses.update(d=d_loss, d_fake=d_fake, d_real=d_real)
    run.opt_d.zero_grad(set_to_none=True)
    run.scaler.scale(d_loss).backward()
    run.scaler.step(run.opt_d)

    run._term_discriminator_steps(kd, losses)
    run.scaler.update()
    values = {k: v.detach() for k, v in losses.items()}
    run.monitor.update(values)
    return values


# ----------------------------------------------------------------------------- evaluation


def evaluate(run) -> dict[str, float] | None:
    """FID (with ``inception``), mIoU (with ``segmenter``) and PSNR to the teacher of the student on the test split."""
    import numpy as np
    import torch

    from nas_prune.data import collate
    from nas_prune.gaugan.scores import SemanticScores

    if not run.is_main or run.test_set is None:
        return None
    run.student.eval()
    scores = SemanticScores(dataset=run.test_set, fid_net=run.fid_net, segmenter=run.segmenter)
    loader = torch.utils.data.DataLoader(run.test_set, batch_size=run.cfg.batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate, generator=torch.Generator())
    with torch.no_grad():
        for batch in loader:
            sem, real = semantics(run, batch), run._prep(batch["B"])
            with run._autocast():
                fake = run.student(sem).float()
                ref = run.teacher(sem).float() if run.teacher is not None else None
            scores.add(batch["index"].tolist(), fake, real=real, reference=ref)
    run.student.train()
    names = {"psnr_ref": "psnr_teacher", "ssim_ref": "ssim_teacher"}
    return {names.get(k, k): v for k, v in scores.result().items() if not np.isnan(v)}


def colorize(labels, n_labels: int):
    """``(N, 1, H, W)`` label ids -> ``(N, 3, H, W)`` colours in [-1, 1] (a fixed palette) for image grids."""
    import numpy as np
    import torch

    palette = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(max(n_labels, 1), 3)).astype(np.float32))
    idx = labels[:, 0].long().clamp(0, palette.shape[0] - 1).cpu()
    return (palette[idx].permute(0, 3, 1, 2) / 127.5 - 1.0).to(labels.device)


def write_grid(run) -> None:
    """``samples/step_XXXXXXX.png``: rows of label map | teacher | student | real photo."""
    import torch

    from nas_prune.data import collate
    from nas_prune.distill_io import to_uint8_grid

    if not run.is_main:
        return
    if run.grid_batch is None:
        source = run.test_set if run.test_set is not None else run.train_set
        n = min(run.cfg.grid_images, len(source))
        run.grid_batch = collate([source[i] if run.test_set is not None else source[(0, i)] for i in range(n)])
    sem = semantics(run, run.grid_batch)
    run.student.eval()
    with torch.no_grad():
        s = run.student(sem)
        t = run.teacher(sem) if run.teacher is not None else None
    run.student.train()
    labels = colorize(run.grid_batch["A"], run.n_labels)
    rows = []
    for i in range(s.shape[0]):
        rows.append([labels[i], *([t[i]] if t is not None else []), s[i], run.grid_batch["B"][i]])
    folder = run.out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    to_uint8_grid(rows, folder / f"step_{run.step:07d}.png")
