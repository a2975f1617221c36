"""pix2pix's unet_256 (ngf 64) teacher: params and MACs, and one-step students at 5G, 2.6G
and 1G MACs (paper convention): MACs reached, gap under the target, zero-shot PSNR to the
teacher, torch-CPU latency speed-up.

Regenerate ``unet.md`` / ``unet.csv`` next to this file (a few minutes on a 2-core CPU)::

    python results/unet/bench_unet.py

Smoke test (an ngf-8 unet_128 teacher at 128x128, floor 4, targets 1/2, 1/4, 1/8 of it; writes only to --out)::

    python results/unet/bench_unet.py --tiny --out /tmp/unet-bench

Teacher: the shipped space ``unet_256`` (8 levels, batch norm, dropout) with pix2pix's own
initialisation (``init_type normal``: conv weights N(0, 0.02²), biases 0, batch-norm gamma
N(1, 0.02²), beta 0) from seed 0, then |gamma| ~ U(0, 1) from the same generator (as in
results/search: random gammas give the global threshold something to rank; they are not a
trained model), then the batch-norm running statistics set by averaging over 16 crops of
scikit-image's sample photos (train-mode passes with ``momentum=None``), so that eval-mode
outputs are those of a network whose activations stay at unit scale. Saved to a checkpoint
file; each student is ``nas_prune.search.search(teacher=<file>, target_macs=..., convention="paper",
write=False)``, exactly as ``nas-prune search`` runs.

Zero-shot PSNR: teacher vs student outputs (eval mode, no fine-tuning) on 8 other photo
crops, ``nas_prune.metrics.psnr`` on [-1, 1] images. Latency: 1x3x256x256 on torch-cpu,
``nas_prune.latency.runtime.measure_interleaved`` (round-robin: one pass of each model per
round, so background load hits all alike), median / min / max per model. The machine is
shared with other work; the load average at the start and the end and the cores other
processes kept busy are written next to the timings.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nas_prune.calibration import calibration_images  # noqa: E402
from nas_prune.families import get_family  # noqa: E402
from nas_prune.families.common import format_macs  # noqa: E402
from nas_prune.families.unet.arch import teacher_arch  # noqa: E402
from nas_prune.latency.runtime import Runtime, measure_interleaved  # noqa: E402
from nas_prune.metrics import psnr  # noqa: E402
from nas_prune.search import search  # noqa: E402
from nas_prune.threads import cpu_sample, others_busy  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
FAM = get_family("unet")


def make_teacher(arch, size: int) -> dict:
    """pix2pix init, |gamma| ~ U(0, 1), running statistics averaged over photo crops (module docstring)."""
    torch.manual_seed(SEED)
    model = FAM.build(arch)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.02, generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02, generator=g)
                m.bias.zero_()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration passes
        calib, _, _ = calibration_images(arch, n_images=16, input_size=(size, size), seed=1)
        model.train()
        for i in range(0, len(calib), 4):
            model(calib[i:i + 4])
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval().state_dict()


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="ngf-8 unet_128 at 128x128 (smoke test)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    min_channels = 4 if args.tiny else 16  # 16: CAT's floor, search's default
    if args.tiny:
        arch, size = teacher_arch(ngf=8, num_downs=7), 128
    else:
        arch, size = FAM.space_from_dict(
            __import__("yaml").safe_load((ROOT / "search_spaces" / "unet_256.yaml").read_text()),
            source="unet_256").teacher_arch(), 256
    t_macs = {c: sum(x.macs for x in FAM.layer_costs(arch, (size, size), c)) for c in ("fvcore", "paper")}
    targets = ({"1/2": t_macs["paper"] // 2, "1/4": t_macs["paper"] // 4, "1/8": t_macs["paper"] // 8} if args.tiny
               else {"5G": 5_000_000_000, "2.6G": 2_600_000_000, "1G": 1_000_000_000})
    la_start, sample = loadavg(), cpu_sample()
    t_sd = make_teacher(arch, size)
    teacher = FAM.build(arch)
    teacher.load_state_dict(t_sd)
    teacher.eval()
    test, _, _ = calibration_images(arch, n_images=8, input_size=(size, size), seed=2)
    with torch.no_grad():
        y_t = teacher(test)
    rows = [{"model": "teacher", "target_paper": "", "paper_macs": t_macs["paper"], "fvcore_macs": t_macs["fvcore"],
             "params": FAM.count_params(arch), "gap_pct": "", "psnr_db": "", "widths": FAM.describe(arch)}]
    models = {"teacher": teacher}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet_teacher.safetensors"
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in t_sd.items()}, str(path))
        for name, target in targets.items():
            t0 = time.perf_counter()
            res = search(teacher=path, target_macs=target, convention="paper", input_size=size,
                         min_channels=min_channels, write=False)
            took = time.perf_counter() - t0
            student = FAM.build(res.student_arch)
            student.load_state_dict(res.state_dict, strict=True)
            student.eval()
            with torch.no_grad():
                y_s = student(test)
            reached = res.macs["paper"]
            assert reached <= target, (name, reached, target)
            rows.append({"model": f"student {name}", "target_paper": target, "paper_macs": reached,
                         "fvcore_macs": res.macs["fvcore"], "params": res.params, "gap_macs": target - reached,
                         "gap_pct": f"{100 * (target - reached) / target:.4f}", "psnr_db": f"{psnr(y_s, y_t):.2f}",
                         "widths": FAM.describe(res.student_arch), "search_s": f"{took:.2f}"})
            models[f"student {name}"] = student
    rt = Runtime("torch-cpu", threads=args.threads)
    lat = measure_interleaved(models, rt, (1, arch.input_nc, size, size), warmup=2, repeats=args.repeats)
    others = others_busy(sample)
    la_end = loadavg()
    base = lat["teacher"].median_ms
    base_min = min(lat["teacher"].samples_ms)
    for r in rows:
        s = lat[r["model"]].samples_ms
        r.update(latency_median_ms=f"{lat[r['model']].median_ms:.1f}", latency_min_ms=f"{min(s):.1f}",
                 latency_max_ms=f"{max(s):.1f}", speedup=f"{base / lat[r['model']].median_ms:.2f}",
                 speedup_min=f"{base_min / min(s):.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    fields = ["model", "target_paper", "paper_macs", "fvcore_macs", "params", "gap_macs", "gap_pct", "psnr_db",
              "latency_median_ms", "latency_min_ms", "latency_max_ms", "speedup", "speedup_min", "search_s", "widths"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    fmt = lambda la: "unknown" if la is None else " / ".join(f"{x:.2f}" for x in la)  # noqa: E731
    md = [f"# {'ngf-8 unet_128 (smoke test)' if args.tiny else 'pix2pix unet_256, ngf 64'}: one-step students",
          "", f"Command: `python results/unet/bench_unet.py{' --tiny' if args.tiny else ''}`; input {size}x{size}; "
          f"every level keeps >= {min_channels} channels; torch {torch.__version__} CPU, {args.threads} threads; latency: {args.repeats} interleaved rounds "
          f"(batch 1), median (min-max).", "",
          f"Load average (1/5/15 min) at the start: {fmt(la_start)}; at the end: {fmt(la_end)}; other processes kept "
          f"{'an unknown number of' if others is None else f'{others:.2f}'} cores busy on average. The machine is "
          "shared with other work: the latencies are indicative, the MACs and PSNR exact.", "",
          "| model | target (paper) | MACs paper | MACs fvcore | params | gap under target | zero-shot PSNR to teacher | "
          "latency ms, median (min-max) | speed-up (medians) | speed-up (minima) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = format_macs(r["target_paper"]) if r["target_paper"] != "" else ""
        gap = f"{r['gap_macs']:,} MACs ({float(r['gap_pct']):.4f}%)" if r["gap_pct"] != "" else ""
        ps = f"{r['psnr_db']} dB" if r["psnr_db"] != "" else ""
        md.append(f"| {r['model']} | {tgt} | {format_macs(r['paper_macs'])} | {format_macs(r['fvcore_macs'])} | "
                  f"{r['params'] / 1e6:.3f}M | {gap} | {ps} | {r['latency_median_ms']} ({r['latency_min_ms']}-"
                  f"{r['latency_max_ms']}) | {r['speedup']}x | {r['speedup_min']}x |")
    md += ["", "Widths (down / up per level):", ""] + [f"- {r['model']}: {r['widths']}" for r in rows]
    for name, text in (("unet.csv", buf.getvalue()), ("unet.md", "\n".join(md) + "\n")):
        tmp = args.out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(args.out / name)
    print("\n".join(md))


if __name__ == "__main__":
    main()
