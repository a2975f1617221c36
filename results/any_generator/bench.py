"""One-step pruning of arbitrary generator classes through the ``module`` family: one row each.

    python results/any_generator/bench.py [--size 128] [--repeats 15] [--out results/any_generator/bench.md]
    python results/any_generator/bench.py --tiny     # smoke test (32x32, a few seconds)

Generators: the test zoo of ``tests/module_nets.py`` at bench widths (U-Net with concat skips,
CycleGAN-like ResNet, RRDB dense blocks, inverted residuals with PixelShuffle, group/instance
norms, a blur-buffer anti-aliased net), each imported through a ``FILE.py:NAME`` spec as a user
would, with random weights and spread norm gammas (seed 0; no trained teachers on this machine).
Plus the shipped family's classic 9-block ResNet (``nas_prune.model.build_generator`` of the
``resnet_9blocks`` space) traced as any module, whose teacher MACs must equal the shipped
analytic count (both conventions), as a cross-check.

Per generator: the target is half the teacher's fvcore MACs at the bench size. Columns: MACs of
teacher and student (fvcore, the student's checked against ``FlopCountAnalysis``), the gap under
the target, trace time (one Torch-Pruning + tape forward) and threshold-search time, params,
zero-shot PSNR of the student's output to the teacher's on crops of scikit-image's sample photos
(outputs clamped to [-1, 1], peak 2; for random teachers this says how much of the teacher's
function the slice keeps, not image quality), and the torch-CPU speed-up at one thread: teacher
and student timed in alternation (``--repeats`` rounds), median with min/max. The load average
at the start and end and the cores other processes kept busy are reported with the table.
The last column runs the same search through the command's path (``nas-prune search --teacher
W.pth --model tests/module_nets.py:NAME --model-args ... --min-channels 1``: load, the family
protocol, the core's threshold search, slicing, the fvcore check): ``same`` when its student has
the engine's widths and its fvcore check passed, and the command's seconds end to end.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nas_prune.families.module import (  # noqa: E402
    load_model_spec,
    measure_macs,
    prune_module,
    select_channels,
    trace_groups,
)
from nas_prune.threads import cpu_sample, others_busy  # noqa: E402

NETS = ROOT / "tests" / "module_nets.py"
ZOO = [
    ("UNetSmall", {"ngf": 32}),
    ("ResnetSmall", {"ngf": 32, "n_blocks": 4}),
    ("RRDBSmall", {"nf": 32, "gc": 16}),
    ("MobileSmall", {"c": 32}),
    ("NormZoo", {"c": 32}),
    ("BlurNet", {"c": 32}),
]


def spread_gammas(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 1.5 + 0.1)
            if getattr(m, "running_var", None) is not None:
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def photos(size: int, n: int = 6) -> torch.Tensor:
    """``n`` centre crops of scikit-image's sample photos, ``[n, 3, size, size]`` in [-1, 1]."""
    import numpy as np
    from skimage import data, transform

    images = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry(),
              np.stack([data.camera()] * 3, -1)][:n]
    out = []
    for img in images:
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        crop = transform.resize(crop, (size, size), anti_aliasing=True)
        out.append(torch.from_numpy(crop).permute(2, 0, 1).float() * 2 - 1)
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def timed(net, x, repeats: int, other, xs):
    """Alternate ``net`` and ``other`` ``repeats`` times; (times of net, times of other), seconds."""
    a, b = [], []
    with torch.no_grad():
        net(x), other(xs)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter(); net(x); a.append(time.perf_counter() - t)
            t = time.perf_counter(); other(xs); b.append(time.perf_counter() - t)
    return a, b


def spread(v: list[float]) -> str:
    """``min / median / max`` in milliseconds."""
    return f"{min(v) * 1e3:.1f} / {statistics.median(v) * 1e3:.1f} / {max(v) * 1e3:.1f}"


def teachers(size: int, *, shipped_resnet: bool = True):
    """``(label, teacher module, input side, shipped MACs or None, (spec, args) or None)``."""
    for name, kwargs in ZOO:
        net, spec, sha = load_model_spec(f"{NETS}:{name}", args=kwargs)
        torch.manual_seed(0)
        for p in net.parameters():
            if p.dim() > 1:
                torch.nn.init.kaiming_uniform_(p, a=0.2)
        yield f"{name} {kwargs}", spread_gammas(net), size, None, (f"{NETS}:{name}", kwargs)
    if not shipped_resnet:
        return
    from nas_prune.macs import count_macs
    from nas_prune.model import build_generator
    from nas_prune.profile import resolve_arch

    arch = resolve_arch("resnet_9blocks")[0]
    torch.manual_seed(0)
    net = build_generator(arch).eval()
    shipped = {c: count_macs(arch, input_size=256, convention=c) for c in ("fvcore", "paper")}
    yield "resnet_9blocks (shipped family's module, ngf 64)", spread_gammas(net), 256, shipped, None


def via_command(teacher, code, size: int, target: int, kept_counts: dict) -> str:
    """``nas-prune search --teacher W.pth --model SPEC --model-args ARGS --min-channels 1`` (the library
    call the command makes, nothing written): ``same`` when it keeps the engine's widths and MACs, and its seconds."""
    import json
    import tempfile

    from nas_prune.load import user_model
    from nas_prune.search import search

    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "G.pth"
        torch.save(teacher.state_dict(), w)
        t0 = time.perf_counter()
        res = search(teacher=w, model=user_model(code[0], json.dumps(code[1]), input_size=size), target_macs=target,
                     input_size=size, min_channels=1, write=False)
        secs = time.perf_counter() - t0
    same = res.plan.widths == kept_counts and res.measured_fvcore == res.macs["fvcore"]
    return f"{'same' if same else 'DIFFERENT'}, {secs:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 32x32, 2 repeats, no 256x256 ResNet")
    args = ap.parse_args()
    if args.tiny:
        args.size, args.repeats = 32, 2
    torch.set_num_threads(1)
    la0, sample = os.getloadavg(), cpu_sample()
    rows, notes = [], []
    for label, teacher, size, shipped, code in teachers(args.size, shipped_resnet=not args.tiny):
        x = torch.zeros(1, 3, size, size)
        t0 = time.perf_counter()
        trace = trace_groups(copy.deepcopy(teacher), x)
        t1 = time.perf_counter()
        target = trace.macs.teacher["fvcore"] // 2
        sel = select_channels(trace, target_macs=target)
        t2 = time.perf_counter()
        student, _ = prune_module(trace.module, sel.kept, example_input=x, trace=trace)
        student.eval()
        measured = measure_macs(student, x)
        assert measured == sel.macs, (label, measured, sel.macs)
        if shipped is not None:
            ok = shipped == trace.macs.teacher
            notes.append(f"{label}: teacher MACs traced as a module {trace.macs.teacher} vs the shipped "
                         f"family's analytic count {shipped}: {'equal' if ok else 'DIFFERENT'}")
        imgs = photos(size) if size == args.size else photos(size, 2)
        with torch.no_grad():
            p = statistics.mean(psnr(student(im[None]), teacher(im[None])) for im in imgs)
        tt, ts = timed(teacher, x, args.repeats if size == args.size else max(3, args.repeats // 3), student, x)
        whole = [g for g in trace.groups.values() if not g.prunable]
        command = "-" if code is None else via_command(
            teacher, code, size, target, {g: len(v) for g, v in sel.kept.items()})
        rows.append([
            label, f"{trace.macs.teacher['fvcore'] / 1e6:.1f}M", f"{sel.macs / 1e6:.1f}M",
            f"{(target - sel.macs) / target * 100:.2f}%", f"{t1 - t0:.2f}", f"{(t2 - t1) * 1e3:.1f}",
            f"{sum(q.numel() for q in teacher.parameters()):,}", f"{sum(q.numel() for q in student.parameters()):,}",
            f"{p:.1f}", spread(tt), spread(ts), f"{statistics.median(tt) / statistics.median(ts):.2f}x",
            f"{len(trace.prunable)}/{len(trace.groups)} ({', '.join(sorted({g.reason for g in whole}))})", command,
        ])
        print(" | ".join(rows[-1]), flush=True)
    others = others_busy(sample)
    la1 = os.getloadavg()
    head = ["generator", "teacher MACs (fvcore)", "student MACs", "gap under target", "trace, s",
            "search, ms", "params teacher", "params student", "PSNR to teacher, dB",
            "teacher ms (min / median / max)", "student ms (min / median / max)", "speed-up", "groups prunable (left whole: why)",
            "`search --model`: student, s"]
    lines = [
        f"<!-- python results/any_generator/bench.py --size {args.size} --repeats {args.repeats}"
        f"{' --tiny' if args.tiny else ''} -->",
        f"Input {args.size}x{args.size} (resnet_9blocks: 256x256); target = half the teacher's fvcore MACs; "
        "torch CPU, 1 thread.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *notes, "",
              f"load average (1/5/15 min) at the start: {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}; at the end: "
              f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}; other processes kept "
              f"{'an unknown number of' if others is None else f'{others:.2f}'} cores busy during the run. "
              "The machine was shared with other jobs: the timings (trace, search, ms columns, speed-up) "
              "are indicative only."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
