"""Real-image check: does GCKA distillation beat training the same pruned student without it?

Regenerate ``real_image_check.md`` / ``real_image_check.csv`` (about 30 min on 2 busy CPU cores)::

    python results/distill/real_image_check.py --size 32 --teacher-epochs 10 --student-epochs 4

Steps (all on the paired demo dataset of :func:`nas_prune.demo_data.make_demo_dataset`:
Canny edge map -> photo crop, 32x32 by default, train and test crops from disjoint parts of
scikit-image's bundled photos):

1. Train a small teacher of the CAT space (ngf 16, 6 blocks by default) from scratch with the
   training loop and no teacher (plain pix2pix: LSGAN + 100 * L1).
2. Prune it with nas-prune's one-step pruning (|gamma| importance, global threshold) to
   about a quarter of its MACs.
3. Fine-tune that pruned student (inherited weights) for the same steps and seeds
   twice: with GCKA (lambda_distill 1, default taps) and without distillation.
   Everything else (data order, augmentation, discriminator init) is identical per seed.
4. Report PSNR / SSIM to the real target on the test split, mean and std over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from nas_prune.arch import Arch, Block
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill

HERE = Path(__file__).resolve().parent


def teacher_arch(ngf: int, n_blocks: int) -> Arch:
    c, m = 4 * ngf, 4 * ngf // 6
    block = Block(res=(m, m, m), dw=(m, m, m))
    return Arch(input_nc=3, output_nc=3, stem=(ngf, 2 * ngf, c), blocks=(block,) * n_blocks, head=(2 * ngf, ngf))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/real_image_check"))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--teacher-epochs", type=int, default=10, help="constant + as many decay epochs")
    ap.add_argument("--student-epochs", type=int, default=4, help="constant + as many decay epochs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--macs-fraction", type=float, default=0.25)
    ap.add_argument("--min-channels", type=int, default=4, help="stem/head width floor of pruning")
    ap.add_argument("--lambda-distill", type=float, default=1.0)
    ap.add_argument("--centered", action="store_true", help="centred GCKA (CKA) instead of CAT's uncentred form")
    ap.add_argument("--task", default="edges", choices=["edges", "colorize"])
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--n-blocks", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = make_demo_dataset(args.out / "data", size=args.size, n_train=args.n_train, n_test=args.n_test, seed=0,
                             task=args.task)
    common = dict(mode="aligned", batch_size=args.batch_size, load_size=args.size + args.size // 8,
                  crop_size=args.size, workers=0, ndf=32, progress=False, log_every=20)

    # 1. teacher
    t_arch = teacher_arch(args.ngf, args.n_blocks)
    t_dir = args.out / "teacher"
    t0 = time.perf_counter()
    if (t_dir / "final" / "student.safetensors").is_file():
        from nas_prune.export import load_student

        teacher = load_student(t_dir / "final")
        t_metrics = json.loads((t_dir / "teacher_metrics.json").read_text())
    else:
        res = distill(teacher=None, student=t_arch, data=data, out=t_dir,
                      config=DistillConfig(**common, epochs=args.teacher_epochs, epochs_decay=args.teacher_epochs,
                                           distill={}, seed=0))
        teacher, t_metrics = res.student, res.metrics
        (t_dir / "teacher_metrics.json").write_text(json.dumps(t_metrics))
    t_time = time.perf_counter() - t0
    print(f"teacher: {t_metrics} ({t_time:.0f} s)")

    # 2. prune
    from nas_prune.apply import build_student
    from nas_prune.importance import compute_importance
    from nas_prune.macs import count_macs
    from nas_prune.plan import plan_for_target

    t_macs = count_macs(t_arch, input_size=args.size)
    crit, scores = compute_importance("gamma", t_arch, teacher.state_dict())
    plan = plan_for_target(scores, t_arch, target_macs=int(t_macs * args.macs_fraction), input_size=args.size,
                           min_channels=args.min_channels)
    s_arch = plan.student_arch()
    s_macs = count_macs(s_arch, input_size=args.size)
    print(f"teacher {t_arch.summary()} {t_macs/1e6:.1f}M MACs -> student {s_arch.summary()} {s_macs/1e6:.1f}M MACs")

    # 3. fine-tune with and without GCKA
    rows = []
    variants = {"gcka": {"gcka": args.lambda_distill}, "none": {}}
    options = {"gcka": {"centered": True}} if args.centered else {}
    for seed in args.seeds:
        for name, spec in variants.items():
            student = build_student(plan, teacher.state_dict())
            run_dir = args.out / f"student{args.tag}_{name}_seed{seed}"
            t1 = time.perf_counter()
            res = distill(teacher=teacher, student=student, data=data, out=run_dir,
                          config=DistillConfig(**common, epochs=args.student_epochs, epochs_decay=args.student_epochs,
                                               distill=spec, distill_options=options if spec else {}, seed=seed))
            rows.append({"variant": name, "seed": seed, "steps": res.step, "psnr": res.metrics["psnr"],
                         "ssim": res.metrics["ssim"], "psnr_teacher": res.metrics["psnr_teacher"],
                         "seconds": time.perf_counter() - t1})
            print(rows[-1], flush=True)

    # 4. report
    tag = args.tag
    with open(HERE / f"real_image_check{tag}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    def stat(variant: str, key: str) -> tuple[float, float]:
        vals = [r[key] for r in rows if r["variant"] == variant]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    cmd = "python results/distill/real_image_check.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("out", "centered", "tag", "threads"))
    cmd += " --centered" * args.centered + (f" --tag {tag}" if tag else "") + f" --out {args.out}"
    lines = [
        f"<!-- regenerate: {cmd} -->",
        "# GCKA distillation vs no distillation on real images (CPU)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Data: demo {'edges->photo' if args.task == 'edges' else 'grayscale->photo'} pairs, {args.size}x{args.size}, {args.n_train} train / {args.n_test} test "
        "(disjoint regions of scikit-image's photos).",
        f"Teacher: {t_arch.summary()}, {t_macs/1e6:.1f}M MACs (fvcore, {args.size}x{args.size}), trained from scratch "
        f"{2 * args.teacher_epochs} epochs; test PSNR {t_metrics['psnr']:.2f} dB, SSIM {t_metrics['ssim']:.4f}.",
        f"Student: one-step pruning ({crit} importance) to {s_arch.summary()}, {s_macs/1e6:.1f}M MACs "
        f"({s_macs / t_macs:.0%} of the teacher), weights inherited; fine-tuned {2 * args.student_epochs} epochs "
        f"({rows[0]['steps']} steps, batch {args.batch_size}), LSGAN + 100 * L1, "
        f"GCKA ({'centred' if args.centered else 'uncentred'}) lambda {args.lambda_distill} at the default taps.",
        "",
        "| variant | seeds | PSNR to real (dB) | SSIM to real | PSNR to teacher (dB) |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        p, s, q = stat(name, "psnr"), stat(name, "ssim"), stat(name, "psnr_teacher")
        lines.append(f"| {'GCKA' if name == 'gcka' else 'no distillation'} | {len(args.seeds)} | "
                     f"{p[0]:.3f} ± {p[1]:.3f} | {s[0]:.4f} ± {s[1]:.4f} | {q[0]:.3f} ± {q[1]:.3f} |")
    diffs = [next(r["psnr"] for r in rows if r["variant"] == "gcka" and r["seed"] == sd)
             - next(r["psnr"] for r in rows if r["variant"] == "none" and r["seed"] == sd) for sd in args.seeds]
    lines += ["", f"Per-seed PSNR gain of GCKA: {', '.join(f'{d:+.3f}' for d in diffs)} dB "
              f"(GCKA better on {sum(d > 0 for d in diffs)} of {len(diffs)} seeds).", ""]
    (HERE / f"real_image_check{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
