"""Distillation throughput: a CAT-like step against nas-prune's step (bf16, channels_last, compile).

On a CUDA machine (``results/gpu/check.sh`` runs it and puts the table in ``report.md``)::

    python results/gpu/bench_throughput.py --json runs/gpu-check/bench.json

At tiny sizes on a CPU (what the test suite runs, to keep the script working)::

    python results/gpu/bench_throughput.py --device cpu --tiny --json /tmp/bench.json

Setup: CAT's horse->zebra teacher shape (``search_spaces/cat_inception.yaml``: ngf 64, 9
inception blocks, kernel sizes 1/3/5, affine instance norm) with random weights and random
norm gammas; the student is nas-prune's one-step pruning of it to 2.6G MACs in the paper
convention (CAT's 2.6B student budget) with the sliced weights. Unaligned data (CycleGAN layout,
as horse->zebra): random 256x256 PNGs read from disk, resized to 286 and cropped to 256 (CAT's
defaults), ``--workers`` loader processes. PatchGAN ndf 64, LSGAN, lambda_recon 5, GCKA at
stem/block3/6/9 with weight 1.

Settings, each at batch 16 and at CAT's 20 per GPU:

- ``CAT-like``: CAT's step (distillers/base_inception_distiller.py + inception_distiller.py of
  snap-research/CAT, re-implemented): fp32, contiguous tensors, no compile, teacher under
  ``no_grad``, D step (fake then real), G step with LSGAN + L1 to the teacher + ``-KA`` per
  layer computed as CAT's ``utils.common.KA`` (``X X^T``, ``Y Y^T``, sum of products over the
  root of the product of squared sums). cuDNN autotuning on, as CAT's ``BaseModel`` sets it
  (CAT's trainer also sets ``cudnn.deterministic``, which can only slow it down; not copied).
  "fp32" is PyTorch's default fp32: cuDNN convolutions may use TF32 on Ampere and newer GPUs.
- ``ours ...``: ``nas_prune.distill``'s ``train_step`` (teacher under ``inference_mode`` in the
  AMP dtype, losses kept on the device) with bf16 autocast, then + channels_last, then
  + ``torch.compile`` (student, discriminator and teacher forward).

Measured per setting (CUDA events / synchronisation only here, never in the step):

- ``img/s``: steady-state images/s of the whole loop with the data loader, over ``--steps``
  steps after ``--warmup`` (warm-up includes compilation; its time is reported apart);
- ``img/s compute``: the same step on one batch already in pinned memory (no loader);
- ``teacher ms``: the teacher forward alone, as that setting runs it, per batch;
- ``loader img/s`` (per batch size): the loader alone, nothing else running.

The step is *loader-bound* when the loader alone delivers fewer images/s than the step can
consume (``img/s compute``); the teacher's share is ``teacher ms / step ms``. Peak memory is
``torch.cuda.max_memory_allocated`` (CUDA) or the process's peak resident set (CPU; it only grows).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SETTINGS = {
    "CAT-like fp32": None,
    "ours bf16": dict(amp="bf16"),
    "ours bf16 + channels_last": dict(amp="bf16", channels_last=True),
    "ours bf16 + channels_last + compile": dict(amp="bf16", channels_last=True, compile=True),
}
PAPER_STUDENT_MACS = 2.6e9  # CAT's horse->zebra student, paper convention, 256x256


def build_models(*, tiny: bool, size: int, seed: int = 0):
    """(teacher, student, info): the CAT teacher shape with random weights and its 2.6G student.

    ``tiny`` divides every width by 8 (ngf 8) and scales the target with the teacher's MACs.
    """
    from nas_prune.apply import build_student
    from nas_prune.arch import Block
    from nas_prune.importance import compute_importance
    from nas_prune.macs import count_macs
    from nas_prune.model import build_generator
    from nas_prune.plan import plan_for_target
    from nas_prune.space import load_space, shipped_spaces_dir

    full = load_space(shipped_spaces_dir() / "cat_inception.yaml").teacher_arch()
    t_arch = full
    if tiny:
        t_arch = full.with_widths(stem=[w // 8 for w in full.stem], head=[w // 8 for w in full.head],
                                  blocks=[Block(res=tuple(max(1, w // 8) for w in b.res), dw=tuple(max(1, w // 8) for w in b.dw))
                                          for b in full.blocks])
    torch.manual_seed(seed)
    teacher = build_generator(t_arch)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random gammas: a ranking for the pruning to follow
        for name, p in teacher.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.05)
    fraction = PAPER_STUDENT_MACS / count_macs(full, input_size=256, convention="paper")
    target = int(fraction * count_macs(t_arch, input_size=size, convention="paper"))
    _, scores = compute_importance("gamma", t_arch, teacher.state_dict())
    plan = plan_for_target(scores, t_arch, target_macs=target, convention="paper", input_size=size,
                           min_channels=2 if tiny else 16)
    student = build_student(plan, teacher.state_dict())
    info = {
        "teacher_macs_paper": count_macs(t_arch, input_size=size, convention="paper"),
        "student_macs_paper": count_macs(student.arch, input_size=size, convention="paper"),
        "target_macs_paper": target,
        "teacher_ngf": t_arch.stem[0],
        "student_stem": list(student.arch.stem),
    }
    return teacher.eval(), student.train(), info


def make_data(root: Path, *, size: int, n_train: int) -> Path:
    """Random RGB PNGs in the unaligned layout (trainA, trainB, testA, testB)."""
    rng = np.random.default_rng(0)
    for folder, n in (("trainA", n_train), ("trainB", n_train), ("testA", 2), ("testB", 2)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / folder / f"{i:04d}.png"
            if not path.exists():
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, compress_level=1)
    return root


def _ka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kernel alignment written as CAT's ``utils.common.KA`` computes it (uncentred, in the input dtype)."""
    xf, yf = x.view(x.size(0), -1), y.view(y.size(0), -1)
    kx, ky = xf @ xf.T, yf @ yf.T
    return (kx * ky).sum() / ((kx**2).sum() * (ky**2).sum()) ** 0.5


def cat_like_step(run, *, lambda_recon: float = 5.0, lambda_distill: float = 1.0):
    """CAT's distillation step (unaligned data) on the models and optimisers of ``run``."""
    import torch.nn.functional as F

    dev, teacher, student, disc, taps = run.device, run.teacher, run.student, run.disc, run.taps

    def lsgan(pred, real: bool):
        return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

    def step(batch):
        a, b = batch["A"].to(dev, non_blocking=True), batch["B"].to(dev, non_blocking=True)
        with torch.no_grad():
            t_out, t_feats = teacher.forward_with_features(a, taps)
        s_out, s_feats = student.forward_with_features(a, taps)
        disc.requires_grad_(True)
        run.opt_d.zero_grad()
        loss_d = (lsgan(disc(s_out.detach()), False) + lsgan(disc(b), True)) * 0.5
        loss_d.backward()
        run.opt_d.step()
        disc.requires_grad_(False)
        run.opt_g.zero_grad()
        recon = F.l1_loss(s_out, t_out) * lambda_recon
        g_gan = lsgan(disc(s_out), True)
        distill = sum(-_ka(s_feats[t], t_feats[t]) for t in taps) * lambda_distill
        (g_gan + recon + distill).backward()
        run.opt_g.step()
        return {"d": loss_d.detach(), "g": (g_gan + recon + distill).detach()}

    def teacher_only(x):
        with torch.no_grad():
            return teacher.forward_with_features(x, taps)

    return step, teacher_only


class Clock:
    """Wall time between two device synchronisations (the only ones of a measurement)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def batches_forever(run):
    """The run's loader epoch after epoch (as the training loop walks it)."""
    epoch = 0
    while True:
        run.sampler.epoch, run.sampler.start_batch = epoch, 0
        yield from run.loader
        epoch += 1


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure_setting(name, options, *, teacher, student, data, work, batch, args) -> dict:
    from nas_prune.distill import DistillConfig, open_run

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cfg = DistillConfig(mode="unaligned", batch_size=batch, load_size=args.load_size, crop_size=args.size,
                        workers=args.workers, device=args.device, ndf=args.ndf, progress=False, epochs=1000,
                        epochs_decay=0, **{"amp": "none", **(options or {})})
    out = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    out.rmdir()
    run = open_run(teacher=copy.deepcopy(teacher), student=copy.deepcopy(student), data=data, out=out, config=cfg)
    clock = Clock(device)
    try:
        if options is None:
            step, teacher_fwd = cat_like_step(run)
        else:
            def step(b):
                values = run.train_step(b)
                run.step += 1
                return values

            def teacher_fwd(x):
                return run.teacher_forward(run._prep(x))

        stream = batches_forever(run)
        t0 = clock.now()
        for _ in range(args.warmup):
            step(next(stream))
        warm_s = clock.now() - t0
        t0 = clock.now()
        for _ in range(args.steps):
            step(next(stream))
        loop_s = clock.now() - t0
        fixed = next(stream)
        if device.type == "cuda":
            fixed = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in fixed.items()}
        step(fixed)
        t0 = clock.now()
        for _ in range(args.steps):
            step(fixed)
        compute_s = clock.now() - t0
        x = fixed["A"].to(device)
        teacher_fwd(x)
        t0 = clock.now()
        for _ in range(args.steps):
            teacher_fwd(x)
        teacher_s = clock.now() - t0
        step_ms = 1000 * compute_s / args.steps
        return {
            "setting": name, "batch": batch, "img_per_s": batch * args.steps / loop_s,
            "img_per_s_compute": batch * args.steps / compute_s, "step_ms": step_ms,
            "teacher_ms": 1000 * teacher_s / args.steps, "teacher_share": teacher_s / compute_s,
            "warmup_s": warm_s, "peak_memory_gib": peak_memory_gib(device),
        }
    finally:
        run.cleanup()
        del run
        gc.collect()


def measure_loader(*, data, work, batch, args) -> float:
    """Images/s of the data loader alone (the same loader a run builds)."""
    from nas_prune.distill import DistillConfig
    from nas_prune.loop import train_data

    cfg = DistillConfig(mode="unaligned", batch_size=batch, load_size=args.load_size, crop_size=args.size,
                        workers=args.workers, progress=False)
    _, _, sampler, loader = train_data(cfg, data, mode="unaligned", input_nc=3, output_nc=3, pin_memory=args.device != "cpu")

    class R:
        pass

    r = R()
    r.sampler, r.loader = sampler, loader
    stream = batches_forever(r)
    for _ in range(max(1, args.warmup)):
        next(stream)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        next(stream)
    return batch * args.steps / (time.perf_counter() - t0)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="ngf 8 teacher, 32x32 images, batches 2 and 4 (CPU smoke run)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes per GPU [20 16; tiny: 4 2]")
    ap.add_argument("--size", type=int, default=None, help="crop side [256; tiny 32]")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement [20; tiny 2]")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (compilation, autotuning) [5; tiny 1]")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data-loader processes")
    ap.add_argument("--settings", nargs="+", default=None, help=f"subset of: {'; '.join(SETTINGS)}")
    ap.add_argument("--budget-s", type=float, default=None, help="skip the settings left when this many seconds have passed")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and runs [a temporary folder]")
    ap.add_argument("--json", type=Path, required=True, help="write the results here")
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.batches = args.batches or ([4, 2] if tiny else [20, 16])
    args.size = args.size or (32 if tiny else 256)
    args.load_size = args.size if tiny else 286
    args.steps = args.steps or (2 if tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 5)
    args.ndf = 8 if tiny else 64
    if args.settings is None:
        # inductor compiles C++ for minutes on a small CPU: the compile setting is a GPU measurement
        args.settings = [s for s in SETTINGS if not (args.device == "cpu" and "compile" in s)]
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting {unknown[0]!r}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here (use --device cpu --tiny for a smoke run)")
    warnings.simplefilter("ignore", UserWarning)
    start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="nas-prune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work / "data", size=args.size, n_train=8 * max(args.batches))
    teacher, student, info = build_models(tiny=args.tiny, size=args.size)
    rows, loader, skipped = [], {}, []
    took: dict[bool, float] = {}  # longest time a setting took, by "compiles"
    for batch in args.batches:
        loader[batch] = measure_loader(data=data, work=work, batch=batch, args=args)
        for name in args.settings:
            compiles = "compile" in name
            # a setting not yet seen is guessed from the others (compiling one: 150 s on a GPU)
            expect = took.get(compiles, 150.0 if compiles and args.device != "cpu" else took.get(False, 0.0))
            if args.budget_s is not None and time.perf_counter() - start + expect > args.budget_s:
                skipped.append({"setting": name, "batch": batch,
                                "why": f"it would pass the time budget of {args.budget_s:.0f} s"})
                continue
            t0 = time.perf_counter()
            row = measure_setting(name, SETTINGS[name], teacher=teacher, student=student, data=data, work=work,
                                  batch=batch, args=args)
            took[compiles] = max(took.get(compiles, 0.0), time.perf_counter() - t0)
            rows.append(row)
            print(f"batch {batch} {name}: {row['img_per_s']:.1f} img/s ({row['img_per_s_compute']:.1f} compute), "
                  f"teacher {row['teacher_share']:.0%}, {row['peak_memory_gib']:.2f} GiB", flush=True)
    result = {
        "device": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else platform.processor() or "cpu",
        "device_type": "cuda" if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if args.device.startswith("cuda") else None,
        "python": platform.python_version(), "size": args.size, "load_size": args.load_size, "steps": args.steps,
        "warmup": args.warmup, "workers": args.workers, "tiny": args.tiny, "models": info,
        "loader_img_per_s": {str(k): v for k, v in loader.items()}, "rows": rows, "skipped": skipped,
        "seconds": time.perf_counter() - start,
        "command": "python results/gpu/bench_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.json)
    return result


if __name__ == "__main__":
    main()
