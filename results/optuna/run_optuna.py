"""One-step solution vs Optuna candidates on CAT's 9-block ngf 64 teacher at 2.6G MACs (paper).

Regenerate (about 15 min on 2 busy CPU cores):

    python results/optuna/run_optuna.py --work /tmp/nas-prune-optuna --trials 20 --rounds 5

Writes results/optuna/results.md, results/optuna/trials.csv and results/optuna/pareto.png.

What the teacher is: the architecture of CAT's horse->zebra teacher
(the shipped space cat_inception) with seeded random weights: convs keep PyTorch's
default init, every norm's gamma is drawn from |N(0, 1)| and beta from N(0, 0.1).
No trained CAT teacher can be downloaded here and training one on 2 CPU cores is out
of reach, so the fidelity numbers say how much of *this* teacher's function a
student keeps, not how good an image translator it is. Fidelity is measured at
64x64 on 8 crops of scikit-image's sample photos (the study's fallback
calibration set); MACs and latency are at 256x256.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_teacher(path: Path, seed: int = 0) -> None:
    from nas_prune.model import build_generator
    from nas_prune.space import load_space

    torch.manual_seed(seed)
    arch = load_space("cat_inception").teacher_arch()
    model = build_generator(arch)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) and module.affine:
                module.weight.copy_(torch.randn(module.weight.shape, generator=g).abs())
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    torch.save(model.state_dict(), path)


def interleaved_latency(models: dict, *, rounds: int, threads: int, size: int) -> dict[str, list[float]]:
    """Alternate the models round by round so that load changes hit both alike."""
    from nas_prune.scores import measure_latency

    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            lat = measure_latency(model, input_size=(size, size), threads=threads, warmup=1, repeats=3)
            samples[name].extend(lat.samples_ms)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nas-prune-optuna"))
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import optuna

    from nas_prune.export import load_student
    from nas_prune.study import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / "cat_ngf64_random.pth"
    if not teacher.exists():
        make_teacher(teacher)
    t0 = time.time()
    common = dict(teacher=teacher, target_macs="2.6G", convention="paper", input_size=256,
                  score="zero-shot", objectives="quality,latency", score_size=64, calib_images=8,
                  latency_threads=2, latency_repeats=3, device="cpu", seed=0, out=args.work / "study",
                  study_name="cat-ngf64-2.6G-paper")
    result = run_study(trials=args.trials, log=lambda line: print(f"{time.time() - t0:7.1f}s {line}", flush=True),
                       **common)
    study_s = time.time() - t0
    one = result.one_step
    faster_no_worse = [r for r in result.front if r.quality >= one.quality and r.latency_ms < one.latency_ms
                       and r.number != one.number]
    if faster_no_worse:
        chosen = min(faster_no_worse, key=lambda r: r.latency_ms)
        why = "fastest front member with PSNR >= the one-step solution's"
    else:
        chosen = max(result.front, key=lambda r: r.quality)
        why = "no front member is both faster and no worse; best PSNR shown"
    pick = result.front.index(chosen)
    picked = run_study(trials=args.trials, pick=pick, **common)  # exports the chosen one
    one_dir = args.work / "one_step"
    if one_dir.exists():
        shutil.rmtree(one_dir)
    one_pick = None
    if one in picked.front:
        one_pick = picked.front.index(one)
    from nas_prune.search import search

    search(teacher=teacher, target_macs="2.6G", convention="paper", input_size=256, out=one_dir, force=True)
    models = {"one-step": load_student(one_dir), "optuna": load_student(picked.student_dir)}
    lat = interleaved_latency(models, rounds=args.rounds, threads=2, size=256)
    lat1 = interleaved_latency(models, rounds=max(3, args.rounds // 2), threads=1, size=256)

    def q(values, p):
        s = sorted(values)
        return s[min(len(s) - 1, int(p * len(s)))]

    rows = []
    for name, rec, model in (("one-step (trial %d)" % one.number, one, models["one-step"]),
                             ("Optuna (trial %d)" % chosen.number, chosen, models["optuna"])):
        key = "one-step" if rec is one else "optuna"
        widths = rec.summary.replace("|", "\\|")
        rows.append(
            f"| {name} | {rec.macs / 1e9:.3f}G | {rec.params_count:,} | {rec.psnr:.2f} | {rec.gcka:.4f} | "
            f"{statistics.median(lat[key]):.0f} ({q(lat[key], .25):.0f}-{q(lat[key], .75):.0f}) | "
            f"{statistics.median(lat1[key]):.0f} | {rec.latency_ms:.0f} | {widths} |"
        )
    shutil.copyfile(picked.plot, HERE / "pareto.png")
    shutil.copyfile(picked.out / "trials.csv", HERE / "trials.csv")
    n_front = len(picked.front)
    import os

    load_line = "Load average (1/5/15 min) at the end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text = f"""# Optuna search vs one-step pruning: CAT 9-block ngf 64 teacher, 2.6G MACs (paper)

Regenerate: `python results/optuna/run_optuna.py --work /tmp/nas-prune-optuna --trials {args.trials} --rounds {args.rounds}`
(study {study_s / 60:.1f} min on a 2-core CPU; the command prints every trial; reading: README.md).

Setup: teacher = CAT's inception teacher architecture (the shipped space `cat_inception`,
{result.export.teacher_macs['paper'] / 1e9:.2f}G MACs paper convention at 256x256) with **random weights**
(default conv init, gammas |N(0,1)|, betas N(0,0.1); see the script's docstring for why).
Target 2.6G MACs (paper convention, 256x256), importance `gamma`, fill pass on.
Study: `--score zero-shot --objectives quality,latency`, {args.trials} trials (NSGA-II), 12 multipliers
(stem, stream, head, res/dw per kernel size, early/middle/late) log-uniform in [0.5, 2].
Fidelity = PSNR of student output vs teacher output (and mean GCKA at stem/block3/block6/block9) on
8 crops of scikit-image sample photos at 64x64. Latency = median forward time of one 256x256 image on
CPU, torch threads fixed; during the study 3 repeats per trial (after 2 warm-up passes), for this table both students
re-timed interleaved ({args.rounds} rounds x 3 repeats at 2 threads, median and quartiles;
{max(3, args.rounds // 2)} rounds at 1 thread). {load_line}; compare the two rows of one
column (the students were timed interleaved, so background load hits both alike).

| student | MACs (paper) | params | PSNR to teacher (dB) | GCKA | latency 2 thr, ms (IQR) | latency 1 thr, ms | latency in study, ms | widths |
|---|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

Chosen Optuna candidate: {why} (front index {pick} of {n_front}).
Pareto front over {sum(r.state == 'COMPLETE' for r in picked.trials)} complete trials: `pareto.png`
(star = one-step solution, ring = the candidate above); every trial: `trials.csv`.

![Pareto front](pareto.png)
"""
    (HERE / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
