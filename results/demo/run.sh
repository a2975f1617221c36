#!/usr/bin/env bash
# Regenerate this folder:  bash results/demo/run.sh
# Runs the demo recipe from scratch and copies its report, image grid and numbers here.
set -euo pipefail
echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg); torch threads: ${OMP_NUM_THREADS:-default}"
cd "$(dirname "$0")/../.."
rm -rf runs/demo
start=$(date +%s.%N)
python - <<'PY'
import resource, time
from nas_prune.recipe_run import run_recipe
t0 = time.time()
run_recipe("demo")
ru = resource.getrusage(resource.RUSAGE_SELF)
print(f"wall_s={time.time() - t0:.1f} cpu_s={ru.ru_utime + ru.ru_stime:.1f}")
PY
end=$(date +%s.%N)
echo "total wall seconds (including Python start-up): $(echo "$end - $start" | bc)"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
cp runs/demo/report/report.md runs/demo/report/grid.png runs/demo/evaluate/metrics.json runs/demo/timings.json \
   runs/demo/export/export.json results/demo/
