"""CAT's inception SPADE teacher (cityscapes, ngf 64) at 256x512: counts, and one-step pruning
to CAT's budgets (30G and 5.6G MACs, paper convention).

Run from the repository root (about 10 min on a 2-core CPU, most of it the traced counts of the
full teacher):

    python results/spade/run_spade.py            # writes results/spade/README.md and spade.csv

Teacher: the shipped space ``cat_spade_cityscapes`` (num_upsampling_layers
``more``, as CAT's scripts run it) with seeded random weights (convs ~ 1/sqrt(fan-in), norm gammas
1 +- 0.3). It is not a trained model: the widths chosen from random gammas are not what a trained
teacher gives, but MACs and parameter counts depend only on the widths. No timing is reported.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SPACE = "cat_spade_cityscapes"  # shipped space, by name
SIZE = "256x512"
COMMAND = "python results/spade/run_spade.py"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from nas_prune.macs import count_macs, count_params, format_macs, measure_macs
    from nas_prune.model import build_generator
    from nas_prune.search import search
    from nas_prune.space import load_space
    from nas_prune.families.spade import cat_teacher_arch
    from nas_prune.families.spade.model import seeded_weights_

    torch.set_num_threads(2)
    rows = []
    lines = [f"<!-- {COMMAND} -->", "# CAT's inception SPADE generator (cityscapes, ngf 64) at 256x512", "",
             f"Regenerate: `{COMMAND}` (the script's docstring describes the teacher).", "",
             "## Teacher counts: analytic vs traced", "",
             "| num_upsampling_layers | params | fvcore analytic | fvcore traced | paper analytic | torchprofile traced |",
             "|---|---:|---:|---:|---:|---:|"]
    for mode in ("normal", "more"):
        arch = cat_teacher_arch(ngf=64, num_upsampling_layers=mode)
        model = build_generator(arch).eval()
        fa, pa = (count_macs(arch, input_size=SIZE, convention=c) for c in ("fvcore", "paper"))
        fm, pm = (measure_macs(model, input_size=SIZE, convention=c) for c in ("fvcore", "paper"))
        lines.append(f"| {mode} | {count_params(arch):,} | {fa:,} | {fm:,} | {pa:,} | {pm:,} |")
        rows.append({"what": f"teacher-{mode}", "params": count_params(arch), "fvcore": fa, "paper": pa,
                     "fvcore_traced": fm, "paper_traced": pm})
        print(lines[-1], flush=True)
    lines += ["", "The issue's figures for CAT's class (55,592,325 params; fvcore 117,198,406,272; torchprofile "
              "117,079,377,664) are the `normal` row; CAT's GauGAN scripts run the default `more`.", "",
              "## One-step pruning to CAT's budgets (paper convention, gamma, fill on, min channels 16)", "",
              "| target | reached (paper) | under target | fvcore (checked on a traced pass) | params | stream | blocks without branches |",
              "|---|---:|---:|---:|---:|---|---:|"]
    space = load_space(SPACE)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "best_net_G.pth"
        torch.save(seeded_weights_(build_generator(space.teacher_arch()), 0).state_dict(), teacher)
        for target in ("30G", "5.6G"):
            res = search(teacher=teacher, target_macs=target, convention="paper", input_size=SIZE, space=SPACE,
                         write=False)
            s = res.student_arch
            gap = (res.target_macs - res.reached) / res.target_macs
            idle = sum(b.is_identity for b in s.blocks)
            lines.append(f"| {target} | {res.reached:,} | {gap:.3%} | {res.measured_fvcore:,} | {res.params:,} | "
                         f"{'/'.join(map(str, s.stream))} | {idle} |")
            rows.append({"what": f"student-{target}", "params": res.params, "fvcore": res.macs["fvcore"],
                         "paper": res.reached, "fvcore_traced": res.measured_fvcore, "paper_traced": ""})
            print(lines[-1], flush=True)
            if target == "30G":
                lines_30 = [f"| {name} | {s.describe_block(i)} |" for i, name in enumerate(s.block_names)]
    lines += ["", f"Widths of the 30G student ({format_macs(rows[-2]['paper'], 'paper')}):", "",
              "| block | widths |", "|---|---|", *lines_30, ""]
    (HERE / "README.md").write_text("\n".join(lines), encoding="utf-8")
    with open(HERE / "spade.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
