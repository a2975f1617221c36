"""The timing benchmarks of results/search and results/latency run end to end at tiny size
and write tables that say how they were measured (spread, load average). Slow: each builds
students of an ngf 16 teacher and times them; their numbers are not checked, only that
every row, column and note is there."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD_LINE = re.compile(r"^load average \(1/5/15 min\) at the start: [\d.]+ / [\d.]+ / [\d.]+; "
                       r"at the end: [\d.]+ / [\d.]+ / [\d.]+; other processes kept [\d.]+ cores busy", re.M)
SPREAD = r"[\d.]+ / [\d.]+ / [\d.]+"


def run(script: str, *args) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_bench_search_tiny(tmp_path):
    run("results/search/bench_search.py", "--tiny", "--out", tmp_path)
    time_md = (tmp_path / "search_time.md").read_text()
    rows = [line for line in time_md.splitlines() if re.match(r"\| (paper|fvcore) \| 1/\d \|", line)]
    assert len(rows) == 6  # two conventions x three targets
    assert all(re.search(rf"\| {SPREAD} \|.*\| {SPREAD} \| \d+\.\d+% \|$", r) for r in rows)
    assert LOAD_LINE.search(time_md)
    assert "shrink_model` on the same teacher" not in time_md  # CAT's seconds are for the ngf 64 teacher only
    with open(tmp_path / "search_time.csv") as f:
        assert all(float(r["gap_pct"]) >= 0 for r in csv.DictReader(f))  # every student under its target
    lat_md = (tmp_path / "latency.md").read_text()
    assert "measure_interleaved" in lat_md and LOAD_LINE.search(lat_md)
    lat_rows = [line for line in lat_md.splitlines() if re.match(r"\| (teacher|1/\d paper)", line)]
    assert len(lat_rows) == 1 + 3 * 3 and all(re.search(rf"\| {SPREAD} \|", r) for r in lat_rows)


@pytest.mark.slow
def test_bench_latency_tiny(tmp_path):
    run("results/latency/bench_latency.py", "--tiny", "--threads", "1", "--out", tmp_path,
        "--cache", tmp_path / "cache", "--allow-busy")  # a shared test machine
    md = (tmp_path / "latency.md").read_text()
    assert LOAD_LINE.search(md)
    with open(tmp_path / "latency.csv") as f:
        rows = list(csv.DictReader(f))
    for name in ("torch-cpu", "onnxruntime"):
        models = [r["model"] for r in rows if r["runtime"] == name]
        assert models[0] == "teacher" and any("round-to auto" in m for m in models)
        assert not any(m.startswith("CAT") for m in models)  # CAT's widths are for the ngf 64 teacher
        lat_rows = [r for r in rows if r["runtime"] == name and " ms + " in r["model"]]
        missed = f"No student: {name}:" in md
        assert len(lat_rows) == 1 or missed  # the latency-target row, or the reason it is missing
    for r in rows:
        assert float(r["min_ms"]) <= float(r["measured_ms"]) <= float(r["max_ms"])
        assert float(r["predicted_ms"]) > 0
    assert list((tmp_path / "cache" / "latency").glob("torch-cpu-*.json"))
    assert list((tmp_path / "cache" / "latency").glob("onnxruntime-*.json"))
