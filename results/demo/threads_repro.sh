#!/usr/bin/env bash
# Does the torch thread count change the demo's numbers? Three short runs of the demo recipe
# (1 epoch of teacher training, 1 epoch of fine-tuning: 25 steps each): 1 thread, 2 threads,
# 1 thread again; writes results/demo/threads_repro.md. Not a timing benchmark: any load is fine.
#   bash results/demo/threads_repro.sh [WORK_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-/tmp/nas-prune-threads-repro}"
small=(--set train_teacher.epochs=1 --set train_teacher.epochs_decay=0 --set distill.epochs=1
       --set distill.epochs_decay=0 --set export=null)
mkdir -p "$work" && cd "$work"
for tag in t1a t2 t1b; do
  n=${tag:1:1}
  rm -rf "runs/$tag"
  nas-prune run demo --threads "$n" --set "run_dir=runs/$tag" "${small[@]}" > "log_$tag.txt" 2>&1
done
python - "$work" "$here/threads_repro.md" <<'PY'
import hashlib, json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = {"1 thread": "t1a", "2 threads": "t2", "1 thread, again": "t1b"}
def sha(p): return hashlib.sha256(p.read_bytes()).hexdigest()[:12]
lines = ["# Thread count and reproducibility of the demo", "",
         "Regenerate: `bash results/demo/threads_repro.sh` (three short runs of the demo recipe: 25 teacher steps",
         "and 25 fine-tuning steps per student; `--threads` pins the count).", "",
         "| run | teacher file (sha256) | " + " | ".join(f"{m} PSNR / SSIM" for m in
         ("teacher", "pruned", "no distillation", "distilled")) + " |", "|---|---|---|---|---|---|"]
for name, tag in runs.items():
    m = json.loads((work / "runs" / tag / "evaluate" / "metrics.json").read_text())["models"]
    cells = [f"{r['psnr']:.6f} / {r['ssim']:.6f}" for r in m.values()]
    lines.append(f"| {name} | {sha(work / 'runs' / tag / 'train_teacher' / 'teacher.safetensors')} | " + " | ".join(cells) + " |")
lines.append("")
out.write_text("\n".join(lines))
PY
echo "wrote $here/threads_repro.md"
