"""Cost of the CRD term at the published setting: ms per step and peak memory.

One "step" is the CRD term's forward and backward pass on a teacher / student output
pair of ``--batch`` images of ``--size`` x ``--size`` pixels (the generator's own cost
is not included). Configurations:

- ``published``: the defaults (1-pixel row and column strips, 256 of each at 256x256,
  32x32 patches), angles in the Gram form (``nas_prune.kd.crd``);
- ``thick-strips``: strips as thick as a patch (8 strips at 256x256), the slicing
  nas-prune used before it followed the published code;
- ``explicit`` (``--explicit``): the same loss as ``published`` computed the way
  relational KD code writes it, materialising the ``S x S x D`` difference vectors and
  the ``S^3`` cosines per image (written here for the comparison; it is not used by
  nas-prune).

Timings are interleaved (one step of each configuration per round, ``--repeats``
rounds after one warm-up) and reported as min / median / max with the 1-minute load
average before and after. Only run for timings on a quiet machine (1-minute load below
1.5 on CPU).

Peak memory, in a fresh process per configuration after one warm-up step: on CUDA
``torch.cuda.max_memory_allocated`` during one step minus the memory allocated before
it; on CPU the peak of the bytes held by tensors created during one step, tracked
tensor by tensor (``torch.distributed._tools.mem_tracker.MemTracker``), which repeats
from run to run (the process's resident set size does not: it varies with the C
allocator's reuse of freed pages). ``--memory-only`` measures peak memory alone
(no timing), so it can run on a busy machine.

    python results/ablation/crd_cost.py --device cpu --threads 2 --explicit
    python results/ablation/crd_cost.py --device cuda --explicit
    python results/ablation/crd_cost.py --memory-only --explicit --out results/ablation/crd_memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("published", "thick-strips", "explicit")


def _explicit_loss(t_img, s_img, patch: int):
    """CRD with materialised difference vectors (relational KD's formulation), summed granularities, batch mean."""
    import torch
    import torch.nn.functional as F

    from nas_prune.kd.crd import slice_image

    def rkd(vs, vt):
        def dist(v):
            d = torch.cdist(v, v)
            return d / (d.sum() / (v.shape[0] * (v.shape[0] - 1)))

        def ang(v):
            e = F.normalize(v[None, :, :] - v[:, None, :], p=2, dim=2)
            return torch.bmm(e, e.transpose(1, 2))

        with torch.no_grad():
            dt, at = dist(vt), ang(vt)
        return F.smooth_l1_loss(dist(vs), dt) + 2.0 * F.smooth_l1_loss(ang(vs), at)

    total = 0.0
    for g, size in (("rows", 1), ("columns", 1), ("patches", patch)):
        t, s = slice_image(t_img, g, size), slice_image(s_img, g, size)
        total = total + 2.5 * sum(rkd(s[n], t[n]) for n in range(t.shape[0])) / t.shape[0]
    return total


def _make(config: str, batch: int, size: int, device: str):
    """Inputs and a one-step callable for ``config``."""
    import torch

    from nas_prune.kd import KDBatch
    from nas_prune.kd.crd import CRD

    g = torch.Generator().manual_seed(0)
    t = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    s = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device).requires_grad_(True)
    if config == "explicit":
        def step():
            _explicit_loss(t, s, max(1, size // 8)).backward()
            s.grad = None
    else:
        strip = 1 if config == "published" else max(1, size // 8)
        term = CRD(teacher_arch=None, student_arch=None, strip_size=strip)

        def step():
            term(KDBatch(real_a=t, real_b=None, t_out=t, s_out=s)).backward()
            s.grad = None
    return step


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_child(config: str, args) -> int:
    """Peak memory growth (bytes) of one step of ``config``, in this process (called in a child)."""
    import torch

    torch.set_num_threads(args.threads)
    step = _make(config, args.batch, args.size, args.device)
    if args.device.startswith("cuda"):
        step()  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.distributed._tools.mem_tracker import MemTracker

    step()  # warm-up
    tracker = MemTracker()
    with tracker:
        step()
    return int(sum(snap.get("Total", 0) for snap in tracker.get_tracker_snapshot("peak").values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--explicit", action="store_true", help="also run the materialised (explicit) form")
    parser.add_argument("--memory-only", action="store_true", help="peak memory only, no timing (for a busy machine)")
    parser.add_argument("--out", type=Path, default=HERE / "crd_cost.md")
    parser.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        print(json.dumps({"peak": _peak_child(args.peak_child, args)}))
        return

    import torch

    torch.set_num_threads(args.threads)
    configs = [c for c in CONFIGS if c != "explicit" or args.explicit]
    times: dict[str, list[float]] = {c: [] for c in configs}
    load_before = os.getloadavg()
    if not args.memory_only:
        steps = {c: _make(c, args.batch, args.size, args.device) for c in configs}
        for c in configs:  # warm-up
            steps[c]()
        for _ in range(args.repeats):
            for c in configs:
                _sync(args.device)
                t0 = time.perf_counter()
                steps[c]()
                _sync(args.device)
                times[c].append((time.perf_counter() - t0) * 1000)
        del steps
    load_after = os.getloadavg()
    peaks = {}
    for c in configs:
        cmd = [sys.executable, __file__, "--peak-child", c, "--device", args.device, "--batch", str(args.batch),
               "--size", str(args.size), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[c] = json.loads(out.strip().splitlines()[-1])["peak"]

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    cmd = "python results/ablation/crd_cost.py " + " ".join(sys.argv[1:])
    memory = ("CUDA max_memory_allocated during one step" if args.device.startswith("cuda")
              else "peak bytes of the tensors created during one step (MemTracker)")
    lines = [
        f"# CRD term: {'peak memory' if args.memory_only else 'cost'} per step at batch {args.batch}, "
        f"{args.size}x{args.size}",
        "",
        f"Regenerate: `{cmd}`",
        "",
        f"Device: {device}; torch {torch.__version__}. Forward + backward of the term only. Peak memory: {memory}.",
    ]
    if not args.memory_only:
        lines[-1] += (
            f" Load average (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, "
            f"after: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}. "
            f"{args.repeats} interleaved rounds after one warm-up."
        )
    head = "| configuration | strips per image |" + ("" if args.memory_only else " ms/step min | median | max |")
    lines += ["", head + " peak memory (MiB) |", "|---|---|" + ("" if args.memory_only else "---|---|---|") + "---|"]
    for c in configs:
        strips = args.size if c != "thick-strips" else args.size // max(1, args.size // 8)
        cells = [c, f"{strips} + {strips}"]
        if not args.memory_only:
            ts = times[c]
            cells += [f"{min(ts):.1f}", f"{statistics.median(ts):.1f}", f"{max(ts):.1f}"]
        cells.append(f"{peaks[c] / 2**20:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    text = "\n".join(lines)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, args.out)
    print(text)


if __name__ == "__main__":
    main()
