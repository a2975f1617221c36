"""The ``module`` family against the shipped families on the same networks, through ``--model``.

    python results/any_generator/crosscheck.py [--out results/any_generator/crosscheck.md]

For the classic 9-block ResNet generator (``resnet_9blocks``, the inception family) and pix2pix's
U-Net (``unet_256``, the U-Net family): one teacher with random weights (seed 0; batch-norm
gammas spread in [0.1, 1.6]), saved as a plain state dict, is searched twice to half its fvcore
MACs at 256x256 with ``--min-channels 16``: by its shipped family (``nas-prune search --teacher
W.pth``) and by the module family (``nas-prune search --teacher W.pth --model
results/any_generator/shipped_nets.py:NAME``), through the same library call the CLI makes.
Reported: teacher MACs in both conventions (must be equal), student MACs, gap, search seconds,
params, and the kept widths side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

NETS = Path(__file__).resolve().parent / "shipped_nets.py"
CASES = [("resnet_9blocks", "resnet_9blocks"), ("unet_256", "unet_256")]


def teacher_file(space: str, folder: Path) -> Path:
    from nas_prune.model import build_generator
    from nas_prune.profile import resolve_arch

    torch.manual_seed(0)
    net = build_generator(resolve_arch(space)[0]).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    path = folder / f"{space}.pth"
    torch.save(net.state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from nas_prune.load import load_generator, user_model
    from nas_prune.macs import count_macs
    from nas_prune.search import search

    torch.set_num_threads(1)
    la0 = os.getloadavg()
    lines = ["<!-- python results/any_generator/crosscheck.py --out results/any_generator/crosscheck.md -->",
             "Target: half the teacher's fvcore MACs at 256x256, --min-channels 16; torch CPU, 1 thread.", "",
             "| network | searched by | teacher MACs fvcore | teacher MACs paper | student MACs fvcore | gap | "
             "search, s | params student | kept widths |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for space, factory in CASES:
            w = teacher_file(space, Path(tmp))
            model = user_model(f"{NETS}:{factory}", None, input_size=256)
            shipped_arch = load_generator(w).arch
            module_arch = load_generator(w, model=model).arch
            tm = {c: (count_macs(shipped_arch, input_size=256, convention=c),
                      count_macs(module_arch, input_size=256, convention=c)) for c in ("fvcore", "paper")}
            target = tm["fvcore"][0] // 2
            same = all(a == b for a, b in tm.values())
            notes.append(f"{space}: teacher MACs shipped family vs module family: fvcore {tm['fvcore'][0]:,} vs "
                         f"{tm['fvcore'][1]:,}, paper {tm['paper'][0]:,} vs {tm['paper'][1]:,}: "
                         f"{'equal' if same else 'DIFFERENT'}")
            for label, extra in (("shipped family", {}), ("module family (--model)", {"model": model})):
                t0 = time.perf_counter()
                res = search(teacher=w, target_macs=target, input_size=256, min_channels=16, write=False, **extra)
                secs = time.perf_counter() - t0
                widths = ", ".join(f"{k}={v}" for k, v in res.plan.widths.items())
                lines.append(f"| {space} | {label} | {res.teacher_macs['fvcore']:,} | {res.teacher_macs['paper']:,} | "
                             f"{res.macs['fvcore']:,} | {(target - res.macs['fvcore']) / target * 100:.2f}% | "
                             f"{secs:.1f} | {res.params:,} | {widths} |")
                print(lines[-1], flush=True)
    la1 = os.getloadavg()
    text = "\n".join(lines + ["", *notes, "",
                              f"load average (1/5/15 min) at the start {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, "
                              f"at the end {la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}; the machine was shared "
                              "with other jobs: the seconds are indicative only."]) + "\n"
    print(text)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
