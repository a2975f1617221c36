"""Ablation of the distillation methods on one pruned student (CPU-sized).

Regenerate the tables (measured on a 2-core machine shared with other jobs, load 2-14:
50 min of teacher training, then 33 runs of 2-14 min each, 218 min summed, about 2 h
with ``--jobs 2``; much less on free cores)::

    python results/ablation/run_ablation.py --work /tmp/nas-prune-ablation --jobs 2

Protocol (everything is produced by nas-prune itself, nothing is downloaded):

1. Data: :func:`nas_prune.demo_data.make_demo_dataset` (``--task colorize``:
   grayscale -> photo, 64x64, 200 train / 40 test pairs from scikit-image's bundled
   photos; train and test crops come from disjoint parts of each photo). The
   ``edges`` task is available too, but at this size and training budget its
   teacher reaches only ~10 dB PSNR (SSIM 0.23), too little knowledge to distil.
2. Teacher: a small CAT inception-residual generator (stem 16/32/48, 6 blocks with
   res and dw branches of width 8 for kernels 1/3/5, head 32/16) trained from
   scratch as pix2pix with :func:`nas_prune.distill.distill` (no teacher, no
   distillation; ``--teacher-steps`` steps).
3. Student: nas-prune's one-step pruning of that teacher (|gamma| importance,
   global threshold + fill, :func:`nas_prune.plan.plan_for_target`) to 1/4 of the
   teacher's fvcore MACs at 64x64, weights sliced from the teacher. The same
   student starts every run.
4. Fine-tuning: :func:`nas_prune.distill.distill` with the loop's defaults for paired
   data (LSGAN, lambda_gan 1, lambda_recon 100, Adam 2e-4) and one distillation
   setting per row (``METHODS``: each method's defaults at weight 1, and rows
   ``method@setting`` at a published weight, ``PUBLISHED``), ``--steps`` steps (half constant,
   half linear decay), batch 4, PatchGAN ndf 16 (also for AKDG's D_kd), seeds 0..N-1.
   The seed changes the discriminators' initialisation, the data order and flips,
   and the initialisation of the methods' own modules; the student always starts
   from the same pruned weights.
5. Metrics: PSNR (dB) and SSIM of the *final* student (not the best checkpoint:
   picking on the test split would leak it) against the real targets of the 40
   test pairs, mean and sample standard deviation over seeds. FID needs an
   Inception network; pass ``--inception`` (pytorch-fid's weights file) to add it.

Each process uses one thread (``torch.set_num_threads(1)``): on a busy 2-core
machine more threads per process made steps an order of magnitude slower.
Finished runs are cached as JSON in ``--work``, so an interrupted ablation resumes; the
cache folder carries ``METHODS_VERSION``, bumped whenever a method's defaults change, so
runs of older method code are never mixed in.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Row name -> (distillation weights, per-method options). Rows named ``method@setting`` use a
#: published weight where it differs from nas-prune's default of 1 (see ``PUBLISHED``).
METHODS: dict[str, tuple[dict[str, float], dict[str, dict]]] = {
    "none": ({}, {}),
    "mse": ({"mse": 1.0}, {}),
    "gcka": ({"gcka": 1.0}, {}),
    "gcka@cityscapes": ({"gcka": 2.0}, {}),
    "gcka@map2aerial": ({"gcka": 5.2}, {}),
    "crd": ({"crd": 1.0}, {}),
    "crd@pix2pix": ({"crd": 4.0}, {}),
    "akdg": ({"akdg": 1.0}, {"akdg": {"conditional": True}}),
    "akdg-uncond": ({"akdg": 1.0}, {"akdg": {"conditional": False}}),
    "ackd": ({"ackd": 1.0}, {}),
    "gcka+crd": ({"gcka": 1.0, "crd": 1.0}, {}),
}
#: Where each weight comes from (written under the table).
PUBLISHED = {
    "mse": "1: GAN Compression's pix2pix scripts (edges2shoes, cityscapes: lambda_distill 1 with lambda_recon 100, "
           "1 GPU), the same as the default row",
    "gcka@cityscapes": "2.0 = 4 GPUs x CAT's lambda_distill 0.5 (pix2pix cityscapes)",
    "gcka@map2aerial": "5.2 = 4 GPUs x CAT's lambda_distill 1.3 (pix2pix map->aerial)",
    "crd@pix2pix": "4 = the reference code's pix2pix setting (2.5 per granularity, summed over a batch of 4) "
                   "in nas-prune's batch-mean reduction",
    "akdg-uncond": "the paper's setting: D_kd sees output images only (unconditional), and the student adds the "
                   "distillation adversarial loss to its own (weight 1; no other weight is published)",
    "ackd": "no published weight is available; the default 1",
}
#: Method -> (row of nas-prune's defaults, rows of its published settings) for the summary table.
SUMMARY = {
    "mse": ("mse", ["mse"]),
    "gcka": ("gcka", ["gcka@cityscapes", "gcka@map2aerial"]),
    "crd": ("crd", ["crd@pix2pix"]),
    "akdg": ("akdg", ["akdg-uncond"]),
    "ackd": ("ackd", []),
}
#: Bump when a distillation method's defaults or training change (cached runs are keyed by it).
METHODS_VERSION = 2
SIZE = 64
BATCH = 4
NDF = 16
N_TRAIN, N_TEST = 200, 40


def _setup_torch() -> None:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def teacher_arch():
    from nas_prune.arch import Arch, Block

    return Arch(
        input_nc=3, output_nc=3, stem=(16, 32, 48),
        blocks=(Block(res=(8, 8, 8), dw=(8, 8, 8)),) * 6, head=(32, 16),
    )


def _schedule(steps: int) -> dict:
    """``epochs`` / ``epochs_decay`` so that the schedule ends exactly after ``steps`` steps."""
    per_epoch = N_TRAIN // BATCH
    if steps % (2 * per_epoch):
        raise SystemExit(f"--steps must be a multiple of {2 * per_epoch}")
    half = steps // per_epoch // 2
    return {"epochs": half, "epochs_decay": half}


def _common(fid: str | None) -> dict:
    return dict(
        batch_size=BATCH, workers=0, progress=False, load_size=SIZE, crop_size=SIZE, ndf=NDF,
        device="cpu", log_every=50, inception=fid,
    )


def evaluate(model, data: Path) -> dict[str, float]:
    """PSNR / SSIM of ``model`` on the test split (mean over the 40 images)."""
    import torch

    from nas_prune.data import TransformConfig, collate, open_dataset
    from nas_prune.metrics import psnr, ssim

    tf = TransformConfig(load_size=SIZE, crop_size=SIZE, preprocess="resize_and_crop", flip=False)
    test = open_dataset(data, mode="aligned", split="test", transform=tf)
    batch = collate([test[i] for i in range(len(test))])
    model = model.eval()
    with torch.no_grad():
        out = model(batch["A"])
    return {"psnr": float(psnr(out, batch["B"])), "ssim": float(ssim(out, batch["B"]))}


def prepare(work: Path, *, task: str, teacher_steps: int, fid: str | None) -> dict:
    """Dataset, trained teacher, pruned student (cached in ``work``)."""
    import torch
    from safetensors.torch import load_file, save_file

    from nas_prune.apply import build_student
    from nas_prune.demo_data import make_demo_dataset
    from nas_prune.distill import distill
    from nas_prune.importance import compute_importance
    from nas_prune.macs import count_macs
    from nas_prune.model import build_generator
    from nas_prune.plan import plan_for_target

    data = work / f"data_{task}"
    if not (data / "test").is_dir():
        make_demo_dataset(data, size=SIZE, n_train=N_TRAIN, n_test=N_TEST, seed=0, task=task)
    arch = teacher_arch()
    t_path = work / f"teacher_{task}_{teacher_steps}.safetensors"
    if not t_path.is_file():
        t0 = time.perf_counter()
        res = distill(
            teacher=None, student=arch, data=data, out=work / f"teacher_run_{task}", distill={}, seed=0,
            eval_every=teacher_steps, **_schedule(teacher_steps), **_common(fid),
        )
        save_file({k: v.contiguous() for k, v in res.student.state_dict().items()}, str(t_path))
        print(f"teacher trained: {teacher_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    teacher = build_generator(arch)
    teacher.load_state_dict(load_file(str(t_path)))
    state = teacher.state_dict()
    t_macs = count_macs(arch, input_size=SIZE, convention="fvcore")
    _, scores = compute_importance(None, arch, state)
    plan = plan_for_target(scores, arch, target_macs=t_macs // 4, input_size=SIZE, min_channels=8)
    student = build_student(plan, state)
    s_macs = count_macs(plan.student_arch(), input_size=SIZE, convention="fvcore")
    return {
        "data": data,
        "teacher": teacher,
        "student": student,
        "teacher_macs": t_macs,
        "student_macs": s_macs,
        "student_arch": plan.student_arch(),
        "teacher_metrics": evaluate(copy.deepcopy(teacher), data),
        "pruned_metrics": evaluate(copy.deepcopy(student), data),
    }


def _run_one(job: tuple) -> dict:
    """One fine-tuning run (in a worker process)."""
    work, task, method, seed, steps, teacher_steps, fid = job
    _setup_torch()
    work = Path(work)
    cache = work / f"runs_{task}_{teacher_steps}_v{METHODS_VERSION}" / f"{method}_seed{seed}_{steps}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    prep = prepare(work, task=task, teacher_steps=teacher_steps, fid=fid)
    from nas_prune.distill import distill
    from nas_prune.fileio import write_json

    spec, options = METHODS[method]
    options = copy.deepcopy(options)
    if "akdg" in spec:
        options.setdefault("akdg", {})["ndf"] = NDF
    t0 = time.perf_counter()
    res = distill(
        teacher=prep["teacher"], student=copy.deepcopy(prep["student"]), data=prep["data"],
        out=cache.parent / f"{method}_seed{seed}", distill=spec, distill_options=options,
        seed=seed, eval_every=steps, **_schedule(steps), **_common(fid),
    )
    metrics = evaluate(res.student, prep["data"])
    if "fid" in res.metrics:
        metrics["fid"] = res.metrics["fid"]
    row = {"method": method, "seed": seed, "steps": res.step, "seconds": time.perf_counter() - t0, **metrics}
    write_json(cache, row)
    print(f"{method:9s} seed {seed}: psnr {metrics['psnr']:.3f} ssim {metrics['ssim']:.4f} ({row['seconds']:.0f} s)", flush=True)
    return row


def write_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a results file of this folder, not a user's output)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _setting(method: str) -> str:
    """``"gcka 2"``, ``"akdg 1 (akdg.conditional=False)"``: a row's weights and options."""
    spec, options = METHODS[method]
    weights = ", ".join(f"{k} {v:g}" for k, v in spec.items()) or "-"
    opts = "; ".join(f"{k}.{o}={v}" for k, d in options.items() for o, v in d.items())
    return weights + (f" ({opts})" if opts else "")


def _deltas(rows: list[dict], method: str) -> list[str]:
    """Paired differences to the ``none`` run of the same seed, mean +- std: PSNR and SSIM cells."""
    base = {r["seed"]: r for r in rows if r["method"] == "none"}
    rs = [r for r in rows if r["method"] == method and r["seed"] in base]
    if not rs:
        return ["-", "-"]
    cells = []
    for key, fmt in (("psnr", "{:+.3f} +- {:.3f}"), ("ssim", "{:+.4f} +- {:.4f}")):
        cells.append(fmt.format(*_mean_std([r[key] - base[r["seed"]][key] for r in rs])))
    return cells


def write_tables(rows: list[dict], prep: dict, args, elapsed: float) -> None:
    from nas_prune.macs import format_macs

    cmd = "python results/ablation/run_ablation.py " + " ".join(sys.argv[1:])
    with open(HERE / "ablation_runs.csv.tmp", "w", newline="", encoding="utf-8") as fh:
        fh.write(f"# {cmd}\n")
        w = csv.DictWriter(fh, fieldnames=["method", "seed", "steps", "psnr", "ssim", "fid", "seconds"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "fid": r.get("fid", "")})
    os.replace(HERE / "ablation_runs.csv.tmp", HERE / "ablation_runs.csv")

    has_fid = all("fid" in r for r in rows)
    lines = [
        "# Distillation ablation on the demo dataset",
        "",
        "Regenerate with:",
        "",
        "```",
        cmd,
        "```",
        "",
        "Teacher: CAT inception-residual generator, stem 16/32/48, 6 blocks (res and dw branches, k 1/3/5), "
        f"{format_macs(prep['teacher_macs'], 'fvcore')} at {SIZE}x{SIZE}, trained {args.teacher_steps} steps. "
        f"Student: one-step pruning to 1/4 of the teacher's MACs: {prep['student_arch'].summary()}, "
        f"{format_macs(prep['student_macs'], 'fvcore')}. Fine-tuning: {args.steps} steps, batch {BATCH}, "
        f"lambda_recon 100, lambda_gan 1, each row's distillation weights and options as in its `setting` column "
        f"(a method's other options at their defaults; `method@setting` rows and `akdg-uncond`: published settings, "
        f"below), seeds {', '.join(map(str, args.seeds))}. "
        f"Test split: {N_TEST} pairs ({args.task} demo task, {SIZE}x{SIZE}). Fine-tuning runs took "
        f"{sum(r['seconds'] for r in rows) / 60:.1f} min of wall time summed over runs "
        f"({args.jobs} processes in parallel, 1 thread each).",
        "",
        f"Reference: teacher PSNR {prep['teacher_metrics']['psnr']:.3f} dB / SSIM {prep['teacher_metrics']['ssim']:.4f}; "
        f"pruned student before fine-tuning PSNR {prep['pruned_metrics']['psnr']:.3f} dB / "
        f"SSIM {prep['pruned_metrics']['ssim']:.4f}.",
        "",
        "Mean and sample std over seeds. The delta columns compare each run with the `none` run of the same",
        "seed (same discriminator initialisation, data order and flips), mean +- std of the paired differences.",
        "s/run is wall time on a machine shared with other jobs, not a speed measurement.",
        "",
        "| method | setting | PSNR (dB) mean | PSNR std | SSIM mean | SSIM std |" + (" FID mean | FID std |" if has_fid else "")
        + " dPSNR vs none | dSSIM vs none | runs | s/run |",
        "|---|---|---|---|---|---|" + ("---|---|" if has_fid else "") + "---|---|---|---|",
    ]
    for method in args.methods:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        pm, ps = _mean_std([r["psnr"] for r in rs])
        sm, ss = _mean_std([r["ssim"] for r in rs])
        cells = [method, _setting(method), f"{pm:.3f}", f"{ps:.3f}", f"{sm:.4f}", f"{ss:.4f}"]
        if has_fid:
            fm, fs = _mean_std([r["fid"] for r in rs])
            cells += [f"{fm:.2f}", f"{fs:.2f}"]
        cells += _deltas(rows, method) if method != "none" else ["", ""]
        cells += [str(len(rs)), f"{statistics.fmean(r['seconds'] for r in rs):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Defaults against published settings: each method at nas-prune's defaults (weight 1) and at the",
        "published setting of its source (paired deltas vs `none` as above; `-`: not run or none published).",
        "",
        "| method | defaults | dPSNR vs none | dSSIM vs none | published setting | dPSNR vs none | dSSIM vs none |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (default, published) in SUMMARY.items():
        for i, pub in enumerate(published or [None]):
            cells = [name, _setting(default), *_deltas(rows, default)] if i == 0 else ["", "", "", ""]
            if pub is None:
                cells += ["none published", "-", "-"]
            else:
                cells += [f"`{pub}`: {_setting(pub)}" + (" (= defaults)" if pub == default else ""), *_deltas(rows, pub)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Published weights (as nas-prune's weights mean them):", ""]
    lines += [f"- `{name}`: {note}" for name, note in PUBLISHED.items()]
    if not has_fid:
        lines += ["", "FID: not computed (no local Inception weights were given; pass `--inception`)."]
    lines += ["", "Per-run numbers: `ablation_runs.csv`.", ""]
    write_file(HERE / "ablation.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nas-prune-ablation"))
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps per run (multiple of 100)")
    parser.add_argument("--teacher-steps", type=int, default=2000)
    parser.add_argument("--task", default="colorize", choices=["colorize", "edges"], help="demo dataset task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--inception", default=None, help="FID Inception weights, pt_inception-2015-12-05-6726825d.pth (optional)")
    args = parser.parse_args()
    _setup_torch()
    args.work.mkdir(parents=True, exist_ok=True)
    _schedule(args.steps)
    t0 = time.perf_counter()
    prep = prepare(args.work, task=args.task, teacher_steps=args.teacher_steps, fid=args.inception)
    print(f"teacher {prep['teacher_metrics']}, pruned {prep['pruned_metrics']}, "
          f"MACs {prep['teacher_macs']:,} -> {prep['student_macs']:,}", flush=True)
    jobs = [(str(args.work), args.task, m, s, args.steps, args.teacher_steps, args.inception) for s in args.seeds for m in args.methods]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(_run_one, jobs, chunksize=1)
    else:
        rows = [_run_one(j) for j in jobs]
    write_tables(rows, prep, args, time.perf_counter() - t0)
    print((HERE / "ablation.md").read_text())


if __name__ == "__main__":
    main()
