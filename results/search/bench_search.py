"""Benchmark one-step pruning: search time vs a CAT-like baseline, and CPU latency of students.

Regenerate the tables next to this file (about 15-25 min on a 2-core CPU)::

    python results/search/bench_search.py --part all

Teacher: the 9-block ngf 64 CAT inception teacher (the shipped space cat_inception) with
random weights and |gamma| ~ U(0, 1) from a fixed seed. Random gammas are fine for timing;
they are not a trained model, so the widths chosen here say nothing about a real teacher.

Part 1 (search_time.md / .csv): for each target and convention,
  * ours: ``plan_for_target`` (bisection over the sorted |gamma| values with the analytic
    MACs formula, then the fill pass) + building the student with sliced weights + the
    fvcore check on a real forward pass, ``fast`` (traced at 32x32, scaled exactly) and
    ``full`` (traced at 256x256). Median of --repeats runs.
  * baseline (written here, like CAT's search): bisect a float threshold in
    [0, max |gamma|]; at every step rebuild the student module from the widths the
    threshold gives and count its MACs on a real 256x256 forward pass (fvcore for the
    fvcore convention, torchprofile, CAT's profiler, for the paper convention); stop when
    the bracket is narrower than 1e-6 * max |gamma|; keep the best student under the
    target. One run per row (it is slow).
Part 2 (latency.md / .csv): median wall time of a 1x3x256x256 forward pass with
``torch.set_num_threads(2)``, teacher and students at each budget, without and with
``--round-to 8 / 16``. Models are timed round-robin (one pass of each per round) so that
background load hits all of them alike.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nas_prune.apply import build_student, verify_macs  # noqa: E402
from nas_prune.importance import compute_importance  # noqa: E402
from nas_prune.load import LoadedGenerator  # noqa: E402
from nas_prune.macs import count_macs, format_macs, measure_macs  # noqa: E402
from nas_prune.model import build_generator  # noqa: E402
from nas_prune.plan import arch_from_widths, plan_for_target, prunable_layers  # noqa: E402
from nas_prune.space import load_space  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = {"1G": 1_000_000_000, "2.6G": 2_600_000_000, "5.6G": 5_600_000_000}
SEED = 0


def make_teacher() -> LoadedGenerator:
    arch = load_space("cat_inception").teacher_arch()
    torch.manual_seed(SEED)
    model = build_generator(arch).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.InstanceNorm2d) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return LoadedGenerator(arch=arch, state_dict=model.state_dict(), layout="cat", sha256="", path=Path("bench"))


def ours(teacher: LoadedGenerator, scores, target: int, convention: str, full: bool) -> tuple[float, int]:
    """Seconds and reached MACs for plan + sliced student + fvcore check."""
    start = time.perf_counter()
    plan = plan_for_target(scores, teacher.arch, target_macs=target, convention=convention)
    student = build_student(plan, teacher.state_dict)
    arch = plan.student_arch()
    verify_macs(student, input_size=256, expected_fvcore=count_macs(arch), full=full)
    seconds = time.perf_counter() - start
    return seconds, count_macs(arch, convention=convention)


def baseline(teacher: LoadedGenerator, scores, target: int, convention: str) -> tuple[float, int, int]:
    """CAT-like float bisection with a real profiled forward pass per step.

    Returns:
        (seconds, reached MACs in ``convention``, steps).
    """
    layers = prunable_layers(teacher.arch)

    def widths_at(t: float) -> dict[str, int]:
        out = {}
        for layer in layers:
            floor = min(16, layer.width) if layer.has_floor else 0
            out[layer.name] = max(int((scores[layer.name] > t).sum()), floor)
        return out

    start = time.perf_counter()
    lo, hi = 0.0, max(float(s.max()) for s in scores.values())
    eps = 1e-6 * hi
    best = None
    steps = 0
    while hi - lo > eps:
        mid = (lo + hi) / 2
        model = build_generator(arch_from_widths(teacher.arch, widths_at(mid))).eval()
        macs = measure_macs(model, input_size=256, convention=convention)
        steps += 1
        if macs <= target:
            hi, best = mid, macs
        else:
            lo = mid
    if best is None:
        model = build_generator(arch_from_widths(teacher.arch, widths_at(hi))).eval()
        best = measure_macs(model, input_size=256, convention=convention)
        steps += 1
    return time.perf_counter() - start, best, steps


def load_note() -> str:
    try:
        return "load average (1/5/15 min) at the end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def part_time(teacher, scores, repeats: int) -> None:
    rows = []
    for convention in ("paper", "fvcore"):
        for name, target in TARGETS.items():
            fast = [ours(teacher, scores, target, convention, full=False) for _ in range(repeats)]
            full = [ours(teacher, scores, target, convention, full=True) for _ in range(max(1, repeats // 2))]
            b_s, b_macs, steps = baseline(teacher, scores, target, convention)
            o_s = statistics.median(s for s, _ in fast)
            f_s = statistics.median(s for s, _ in full)
            o_macs = fast[0][1]
            row = {
                "convention": convention,
                "target": name,
                "ours_s_fast_check": round(o_s, 3),
                "ours_s_full_check": round(f_s, 3),
                "ours_reached": o_macs,
                "ours_gap_pct": round(100 * (target - o_macs) / target, 4),
                "baseline_s": round(b_s, 2),
                "baseline_steps": steps,
                "baseline_reached": b_macs,
                "baseline_gap_pct": round(100 * (target - b_macs) / target, 4),
                "speedup_fast": round(b_s / o_s, 1),
                "speedup_full": round(b_s / f_s, 1),
            }
            print(row, flush=True)
            rows.append(row)
    write_csv(HERE / "search_time.csv", rows)
    lines = [
        "<!-- python results/search/bench_search.py --part time -->",
        "# Search time: nas-prune vs a CAT-like baseline",
        "",
        "Command: `python results/search/bench_search.py --part time`",
        "",
        f"9-block ngf 64 CAT teacher, random |gamma| (seed {SEED}), input 256x256, torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPU cores, torch {torch.__version__}. "
        f"Ours: median of {repeats} runs (full check: {max(1, repeats // 2)}); baseline: one run. "
        "Times include the final fvcore check on a real forward pass of the built student "
        "(fast = traced at 32x32 and scaled exactly by 64; full = traced at 256x256). "
        "Gap = (target - reached) / target.",
        "",
        "| convention | target | ours, s (fast check) | ours, s (full check) | ours gap | baseline, s | steps | baseline gap | speed-up (fast) | speed-up (full) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['convention']} | {r['target']} | {r['ours_s_fast_check']:.3f} | {r['ours_s_full_check']:.3f} | "
            f"{r['ours_gap_pct']:.3f}% | {r['baseline_s']:.1f} | {r['baseline_steps']} | {r['baseline_gap_pct']:.3f}% | "
            f"{r['speedup_fast']:.0f}x | {r['speedup_full']:.1f}x |"
        )
    lines += ["", load_note(), ""]
    (HERE / "search_time.md").write_text("\n".join(lines))


def part_latency(teacher, scores, repeats: int) -> None:
    torch.set_num_threads(2)
    models = {"teacher": (teacher.build(), teacher.arch, None, None)}
    for name, target in TARGETS.items():
        for round_to in (None, 8, 16):
            plan = plan_for_target(scores, teacher.arch, target_macs=target, convention="paper", round_to=round_to)
            models[f"{name} paper" + (f", round-to {round_to}" if round_to else "")] = (
                build_student(plan, teacher.state_dict), plan.student_arch(), target, round_to)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    times = {k: [] for k in models}
    with torch.inference_mode():
        for model, *_ in models.values():  # warm-up
            model(x)
        for _ in range(repeats):
            for key, (model, *_) in models.items():
                start = time.perf_counter()
                model(x)
                times[key].append(time.perf_counter() - start)
    t_ms = statistics.median(times["teacher"]) * 1e3
    rows = []
    for key, (model, arch, target, round_to) in models.items():
        ms = statistics.median(times[key]) * 1e3
        rows.append({
            "model": key,
            "macs_paper": count_macs(arch, convention="paper"),
            "macs_fvcore": count_macs(arch),
            "params": sum(p.numel() for p in model.parameters()),
            "stem": "/".join(map(str, arch.stem)),
            "head": "/".join(map(str, arch.head)),
            "identity_blocks": sum(b.is_identity for b in arch.blocks),
            "median_ms": round(ms, 1),
            "min_ms": round(min(times[key]) * 1e3, 1),
            "speedup": round(t_ms / ms, 2),
            "macs_ratio": round(count_macs(teacher.arch, convention="paper") / count_macs(arch, convention="paper"), 2),
        })
        print(rows[-1], flush=True)
    write_csv(HERE / "latency.csv", rows)
    lines = [
        "<!-- python results/search/bench_search.py --part latency -->",
        "# CPU latency of the teacher and its students",
        "",
        "Command: `python results/search/bench_search.py --part latency`",
        "",
        f"One 1x3x256x256 forward pass, `torch.set_num_threads(2)`, inference mode, median of {repeats} "
        f"round-robin rounds after one warm-up, {os.cpu_count()} CPU cores, torch {torch.__version__}. "
        f"Students pruned (paper convention targets) from the 9-block ngf 64 CAT teacher with random "
        f"|gamma| (seed {SEED}); random weights are fine for timing.",
        "",
        "| model | MACs (paper) | MACs (fvcore) | params | stem | head | identity blocks | median ms | min ms | MACs ratio | speed-up |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {format_macs(r['macs_paper'])} | {format_macs(r['macs_fvcore'])} | {r['params']:,} | "
            f"{r['stem']} | {r['head']} | {r['identity_blocks']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r['macs_ratio']:.2f}x | {r['speedup']:.2f}x |"
        )
    lines += ["", load_note(), ""]
    (HERE / "latency.md").write_text("\n".join(lines))


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["time", "latency", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="runs of ours per row / latency rounds")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    teacher = make_teacher()
    _, scores = compute_importance("gamma", teacher.arch, teacher.state_dict)
    if args.part in ("time", "all"):
        part_time(teacher, scores, args.repeats)
    if args.part in ("latency", "all"):
        part_latency(teacher, scores, max(args.repeats, 7))


if __name__ == "__main__":
    main()
