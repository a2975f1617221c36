"""Wall and CPU seconds of one demo-teacher training step for 1 and 2 torch threads, idle and beside a busy loop.

Regenerate (needs a quiet machine: it refuses a 1-minute load average of 1.5 or more unless --force):

    python results/demo/step_threads.py --steps 20 > results/demo/step_threads.md

The step is the demo recipe's teacher step (pix2pix, ngf 16, 9 inception blocks, batch norm,
PatchGAN ndf 16 with 3 layers, batch 16 at 64x64): D step, then G step with GAN + 100 x L1.
Each configuration runs in its own process (threads are set before the first op) after 3
warm-up steps; "busy" starts ``python -c "while True: pass"`` for the duration. The rows are
interleaved (idle 1, idle 2, busy 1, busy 2, repeated) and the table gives min / median / max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STEP = r"""
import json, sys, time
import torch, torch.nn.functional as F
from nas_prune.gan import GANLoss, PatchDiscriminator
from nas_prune.model import build_generator
from nas_prune.train_teacher import TeacherConfig, init_normal_, teacher_arch
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
arch = teacher_arch(TeacherConfig(objective="pix2pix", ngf=16, n_blocks=9))
g = init_normal_(build_generator(arch)).train()
d = PatchDiscriminator(arch.input_nc + arch.output_nc, ndf=16, n_layers=3, norm="batch").train()
og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
gan = GANLoss("vanilla")
a, b = torch.randn(16, arch.input_nc, 64, 64), torch.randn(16, arch.output_nc, 64, 64)
def step():
    fake = g(a)
    dl = gan.d_loss(d(torch.cat([a, b], 1)), d(torch.cat([a, fake.detach()], 1)))
    od.zero_grad(); dl.backward(); od.step()
    gl = gan.g_loss(d(torch.cat([a, fake], 1))) + 100 * F.l1_loss(fake, b)
    og.zero_grad(); gl.backward(); og.step()
for _ in range(3):
    step()
w0, c0 = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(json.dumps({"wall": (time.perf_counter() - w0) / steps, "cpu": (time.process_time() - c0) / steps}))
"""


def run(threads: int, steps: int, busy: bool) -> dict:
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", STEP, str(threads), str(steps)], check=True,
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--force", action="store_true", help="run even if the machine is busy (says so)")
    args = ap.parse_args()
    load = os.getloadavg()
    if load[0] >= 1.5 and not args.force:
        sys.exit(f"load average {load[0]:.2f} >= 1.5: not a quiet machine (--force to run anyway)")
    configs = [("idle", 1), ("idle", 2), ("busy", 1), ("busy", 2)]
    got: dict = {c: [] for c in configs}
    for _ in range(args.repeat):
        for scenario, threads in configs:
            got[(scenario, threads)].append(run(threads, args.steps, scenario == "busy"))
            time.sleep(2)
    end = os.getloadavg()
    print("| machine | torch threads | wall s per step (min / median / max) | CPU s per step (median) |")
    print("|---|---:|---|---:|")
    for (scenario, threads), rows in got.items():
        w = [r["wall"] for r in rows]
        c = statistics.median(r["cpu"] for r in rows)
        print(f"| {scenario} | {threads} | {min(w):.3f} / {statistics.median(w):.3f} / {max(w):.3f} | {c:.3f} |")
    print()
    print(f"{os.cpu_count()} cores; load average {load[0]:.2f} at the start, {end[0]:.2f} at the end; "
          f"{args.steps} steps after 3 warm-up steps, {args.repeat} interleaved repeats"
          f"{'; run with --force on a busy machine' if load[0] >= 1.5 else ''}.")


if __name__ == "__main__":
    main()
