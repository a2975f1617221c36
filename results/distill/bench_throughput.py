"""Training throughput of ``distill`` on a GPU: fp32 vs bf16 + channels_last (and more).

Regenerate ``throughput.md`` on a CUDA machine::

    python results/distill/bench_throughput.py --out runs/bench_throughput

Setup: CAT's horse->zebra teacher shape (ngf 64, 9 inception blocks, kernel sizes
1/3/5, instance norm) with random weights, a student with every width halved (about a
quarter of the teacher's MACs), 256x256 crops, batch 16, GCKA at the default taps,
PatchGAN ndf 64, aligned random-image data (read from disk with 8 workers). Images/s
are measured by wall clock over steps ``--warmup``..``--steps`` (after warm-up, so
``--compile`` times exclude compilation) and include the teacher forward pass, the
discriminator step and the generator step.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas_prune.arch import Block
from nas_prune.distill import DistillConfig, distill
from nas_prune.model import build_generator
from nas_prune.space import load_space, shipped_spaces_dir

HERE = Path(__file__).resolve().parent

VARIANTS = {
    "fp32": dict(amp="none", channels_last=False),
    "bf16": dict(amp="bf16", channels_last=False),
    "bf16 + channels_last": dict(amp="bf16", channels_last=True),
    "bf16 + channels_last + compile": dict(amp="bf16", channels_last=True, compile=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_throughput"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    warnings.simplefilter("ignore", UserWarning)

    data = args.out / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8 * args.batch_size), ("test", 16)):
        (data / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = data / split / f"{i}.png"
            if not path.exists():
                Image.fromarray(rng.integers(0, 256, (args.size, 2 * args.size, 3), dtype=np.uint8)).save(path)

    t_arch = load_space(shipped_spaces_dir() / "cat_inception.yaml").teacher_arch()
    s_arch = t_arch.with_widths(
        stem=[w // 2 for w in t_arch.stem], head=[w // 2 for w in t_arch.head],
        blocks=[Block(res=tuple(w // 2 for w in b.res), dw=tuple(w // 2 for w in b.dw)) for b in t_arch.blocks],
    )
    torch.manual_seed(0)
    teacher = build_generator(t_arch).eval()
    rows = []
    for name in args.variants:
        stamps: dict[int, float] = {}

        def on_step(step, losses):
            torch.cuda.synchronize()
            stamps[step] = time.perf_counter()

        cfg = DistillConfig(mode="aligned", batch_size=args.batch_size, load_size=args.size, crop_size=args.size,
                            epochs=1000, epochs_decay=0, max_steps=args.steps, workers=8, progress=False,
                            eval_every=10**9, save_every=10**9, grid_every=0, log_every=10**9, **VARIANTS[name])
        out = args.out / name.replace(" + ", "_")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        torch.cuda.reset_peak_memory_stats()
        distill(teacher=teacher, student=s_arch, data=data, out=out, config=cfg, on_step=on_step)
        n = args.steps - args.warmup
        ips = n * args.batch_size / (stamps[args.steps] - stamps[args.warmup])
        rows.append((name, ips, torch.cuda.max_memory_allocated() / 2**30))
        print(f"{name}: {ips:.1f} images/s", flush=True)

    base = rows[0][1]
    lines = [
        "<!-- regenerate: python results/distill/bench_throughput.py -->",
        "# Distillation throughput on GPU",
        "",
        f"Device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {platform.python_version()}. "
        f"Batch {args.batch_size}, {args.size}x{args.size}, steps {args.warmup}..{args.steps}.",
        "",
        "| variant | images/s | speed-up | peak memory (GiB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {v:.1f} | {v / base:.2f}x | {m:.1f} |" for n, v, m in rows]
    (HERE / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
