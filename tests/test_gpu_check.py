"""results/gpu/check.sh's Python core in its CPU mode: it runs tests, benchmarks and writes the report."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "results" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_script_runs_on_cpu_and_writes_the_report(tmp_path):
    check = load("check")
    rc = check.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                     "--tests-k", "reflect_pad", "--bench-args", "--batches 2 --steps 1 --workers 0"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert rc == 0, report
    for heading in ("# GPU check", "## Machine", "## Tests", "## Throughput", "CPU smoke run"):
        assert heading in report
    assert re.search(r"\| torch \| \d+\.\d+", report)
    assert "| test_reflect_pad_by_slices_equals_reflection_pad | passed |" in report
    rows = [line.split("|")[1:-1] for line in report.splitlines() if re.match(r"\| 2 \| (CAT-like|ours)", line)]
    assert [r[1].strip() for r in rows] == ["CAT-like fp32", "ours bf16", "ours bf16 + channels_last"]
    for r in rows:
        img_s, img_s_compute, step_ms, peak = float(r[2]), float(r[4]), float(r[6]), float(r[9])
        teacher_ms = float(r[7].split()[0])
        assert min(img_s, img_s_compute, step_ms, teacher_ms, peak) > 0
        assert float(r[8]) > 0  # the loader alone
    assert re.search(r"- batch 2: ours .* = \d+\.\d+x CAT-like .*(compute|loader)-bound", report)


def test_check_script_reports_a_failing_test_and_exits_1(tmp_path):
    check = load("check")
    rc = check.main(["--device", "cpu", "--out", str(tmp_path), "--work", str(tmp_path / "work"),
                     "--tests-k", "no_test_has_this_name", "--skip-bench"])
    report = (tmp_path / "report.md").read_text()
    assert rc == 1 and "| (test run) | failed |" in report and "not run (--skip-bench)" in report


def test_check_sh_passes_its_arguments_to_check_py():
    text = (ROOT / "results" / "gpu" / "check.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash") and 'exec python results/gpu/check.py "$@"' in text
    assert (ROOT / "results" / "gpu" / "check.sh").stat().st_mode & 0o111
