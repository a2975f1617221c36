#!/usr/bin/env bash
# Measure the README's main job from a fresh clone, on an idle machine and beside a busy loop,
# and refresh this folder with the idle run's report, grid and numbers.
#
#   bash results/demo/measure.sh                 # idle, busy (one run each)
#   REPEAT=2 bash results/demo/measure.sh        # idle, busy, idle, busy
#   SCENARIOS="busy" bash results/demo/measure.sh
#
# Each run: git clone of this repository's HEAD into a new folder, a new virtual environment,
# then the README's main command verbatim (the first line of README.md that starts with
# "pip install torch", i.e. install + `nas-prune run demo`) under /usr/bin/time. "busy" starts
# `python -c "while True: pass"` just before the command and stops it just after.
# Timing needs a quiet machine: the script stops if the 1-minute load average is 1.5 or more
# (FORCE=1 runs anyway and timing.md says so), and before each run it waits (up to 5 min) for
# the load average to fall below 1.5 again after the previous one.
# Writes results/demo/timing.csv and timing.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"
work="${WORK:-/tmp/nas-prune-measure}"
python="${PYTHON:-python3}"
scenarios="${SCENARIOS:-idle busy}"
repeat="${REPEAT:-1}"
cmd="${CMD:-$(grep -m1 '^pip install torch' "$repo/README.md")}"  # CMD: only to test this script small
case "$cmd" in *"nas-prune run "*) ;; *) echo "README's main command not found (got: $cmd)" >&2; exit 2;; esac
load1="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$load1" 'BEGIN { exit !(l >= 1.5) }' && [ "${FORCE:-0}" != 1 ]; then
    echo "load average $load1 >= 1.5: timings would measure the other jobs; rerun on a quiet machine (FORCE=1 to override)" >&2
    exit 3
fi
mkdir -p "$work"
csv="$here/timing.csv"
echo "scenario,run,wall_s,user_s,sys_s,cpu_s,max_rss_mib,run_wall_s,threads,load1_start,load1_end,cores,commit" > "$csv.tmp"
commit="$(git -C "$repo" rev-parse --short HEAD)"
echo "command: $cmd"
echo "commit $commit, $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$repeat"); do
  for s in $scenarios; do
    dir="$work/$s-$r"
    rm -rf "$dir"
    git clone -q "$repo" "$dir/clone"
    "$python" -m venv "$dir/venv"
    # the 1-minute load average lags: after a busy run, wait (up to 5 min) until it is below 1.5 again
    for _ in $(seq 1 60); do
      [ "${FORCE:-0}" = 1 ] && break
      awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN { exit !(l < 1.5) }' && break
      sleep 5
    done
    start_load="$(cut -d' ' -f1 /proc/loadavg)"
    busy_pid=""
    if [ "$s" = busy ]; then
      "$python" -c "while True: pass" &
      busy_pid=$!
    fi
    # the README's command verbatim, in the fresh clone, with the fresh venv first on PATH
    ( cd "$dir/clone" && PATH="$dir/venv/bin:$PATH" VIRTUAL_ENV="$dir/venv" \
        /usr/bin/time -f "%e %U %S %M" -o "$dir/time.txt" bash -c "$cmd" ) > "$dir/log.txt" 2>&1 || {
      [ -n "$busy_pid" ] && kill "$busy_pid"; echo "run $s-$r failed, see $dir/log.txt" >&2; exit 1; }
    [ -n "$busy_pid" ] && kill "$busy_pid"
    end_load="$(cut -d' ' -f1 /proc/loadavg)"
    read -r wall user sys rss < "$dir/time.txt"
    run_wall="$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['total_seconds_this_invocation'])" "$dir/clone/runs/demo/timings.json")"
    threads="$("$python" - "$dir/clone/runs/demo" <<'PY'
import json, sys
from pathlib import Path
parts = []
for stage in ("train_teacher", "distill", "baseline"):
    st = json.loads((Path(sys.argv[1]) / stage / "stage.json").read_text())
    t = st.get("threads") or {}
    parts.append(f"{stage}={t.get('threads')}" + "".join(f">{c['threads']}" for c in t.get("changes", [])))
print(" ".join(parts))
PY
)"
    cpu="$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')"
    rss_mib="$(awk -v k="$rss" 'BEGIN { printf "%.0f", k / 1024 }')"
    echo "$s,$r,$wall,$user,$sys,$cpu,$rss_mib,$run_wall,$threads,$start_load,$end_load,$(nproc),$commit" >> "$csv.tmp"
    echo "$s run $r: ${wall} s wall for the whole command (nas-prune run: ${run_wall} s), ${cpu} CPU s, threads $threads, load $start_load -> $end_load"
    if [ "$s" = idle ] && [ "$r" = 1 ]; then
      cp "$dir/clone/runs/demo/report/report.md" "$dir/clone/runs/demo/report/grid.png" \
         "$dir/clone/runs/demo/evaluate/metrics.json" "$dir/clone/runs/demo/timings.json" \
         "$dir/clone/runs/demo/export/export.json" "$here/"
    fi
  done
done
mv "$csv.tmp" "$csv"
"$python" - "$csv" "$here/timing.md" "$cmd" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
out = ["# The README's main job: wall and CPU time", "",
       "Regenerate: `bash results/demo/measure.sh` (a fresh clone and virtual environment per run; see the script).", "",
       f"Command, verbatim from README.md: `{sys.argv[3]}`", "",
       "| scenario | runs | wall s, whole command (min / median / max) | wall s, `nas-prune run` | CPU s | torch threads | load avg at start |",
       "|---|---:|---|---|---:|---|---|"]
for s in dict.fromkeys(r["scenario"] for r in rows):
    rs = [r for r in rows if r["scenario"] == s]
    w = [float(r["wall_s"]) for r in rs]
    rw = [float(r["run_wall_s"]) for r in rs]
    c = [float(r["cpu_s"]) for r in rs]
    out.append(f"| {s} | {len(rs)} | {min(w):.0f} / {statistics.median(w):.0f} / {max(w):.0f} | "
               f"{statistics.median(rw):.0f} | {statistics.median(c):.0f} | {rs[0]['threads']} | "
               f"{', '.join(r['load1_start'] for r in rs)} |")
out += ["", f"{rows[0]['cores']} cores, commit {rows[0]['commit']}. \"busy\": `python -c \"while True: pass\"` ran "
        "beside the command. The whole command includes `pip install` (from the local cache when warm); "
        "`nas-prune run` is the job itself (timings.json). CPU s: user + system of everything the command ran.", ""]
busy = [f"{r['scenario']} run {r['run']} ({r['load1_start']})" for r in rows if float(r["load1_start"]) >= 1.5]
if busy:
    out += ["**Not a benchmark**: the machine was already loaded (1-minute load average at the start of "
            + ", ".join(busy) + "; the script was forced with FORCE=1).", ""]
open(sys.argv[2], "w").write("\n".join(out))
PY
echo "wrote $csv and $here/timing.md"
