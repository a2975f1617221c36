"""The GPU check: run the ``gpu`` tests and the throughput benchmark, write ``report.md``.

``results/gpu/check.sh`` runs this; see that file for the commands. On a CUDA machine it takes
at most ``--budget-s`` seconds (480 by default: the tests get up to ``--tests-budget-s``, the
benchmark the rest, skipping the settings it has no time left for). With ``--device cpu`` it
runs a quick selection of tests and the benchmark at tiny sizes, so that the script itself is
tested on machines without a GPU; those numbers say nothing about GPU throughput.

Exit status: 0 when every test passed and the benchmark ran, 1 otherwise (the report is
written either way).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TESTS = "tests/test_gpu_paths.py"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Run the GPU tests and the throughput benchmark; write report.md.")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default) or cpu (tiny smoke run)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder of report.md [results/gpu]")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check", help="scratch folder [runs/gpu-check]")
    ap.add_argument("--budget-s", type=float, default=480.0, help="total time budget in seconds [480]")
    ap.add_argument("--tests-budget-s", type=float, default=300.0, help="time limit of the test run [300]")
    ap.add_argument("--tests-k", default=None, help="pytest -k expression to run a subset of the tests")
    ap.add_argument("--skip-tests", action="store_true", help="benchmark only")
    ap.add_argument("--skip-bench", action="store_true", help="tests only")
    ap.add_argument("--bench-args", default="", help="extra arguments for bench_throughput.py, e.g. '--steps 10'")
    return ap.parse_args(argv)


def environment(device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "platform": platform.platform(), "cpus": os.cpu_count(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                   memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    else:
        env.update(device=f"CPU ({platform.processor() or platform.machine()})", gpus=0)
    return env


def run_tests(args, xml: Path) -> tuple[list[dict], str]:
    """Run the tests in a child pytest; ``([{name, outcome, seconds, message}], note)``."""
    marker = "gpu" if args.device == "cuda" else "not gpu and not slow"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS, "-m", marker, f"--junitxml={xml}"]
    if args.tests_k:
        cmd += ["-k", args.tests_k]
    note = "`" + shlex.join(["python", *(c for c in cmd[1:] if not c.startswith("--junitxml"))]) + "`"
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.tests_budget_s)
    except subprocess.TimeoutExpired:
        return [{"name": "(test run)", "outcome": "failed", "seconds": args.tests_budget_s,
                 "message": f"stopped after the time limit of {args.tests_budget_s:.0f} s"}], note
    rows = read_junit(xml) if xml.is_file() else []
    if not rows or done.returncode not in (0, 1):  # 1: some tests failed (they are in the rows)
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        rows.append({"name": "(test run)", "outcome": "failed", "seconds": 0.0,
                     "message": f"pytest exit status {done.returncode}: {tail[0]}"})
    return rows, note


def read_junit(xml: Path) -> list[dict]:
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (el.get("message") or "").splitlines()[0][:200] if el.get("message") else ""
                break
        rows.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time") or 0), "message": message})
    return rows


def bench_verdicts(bench: dict) -> list[str]:
    """One line per batch size: the best of ours against the CAT-like step, and what bounds the step."""
    lines = []
    for batch in sorted({r["batch"] for r in bench["rows"]}, reverse=True):
        rows = [r for r in bench["rows"] if r["batch"] == batch]
        base = next((r for r in rows if r["setting"].startswith("CAT")), None)
        ours = [r for r in rows if r["setting"].startswith("ours")]
        if base is None or not ours:
            continue
        best = max(ours, key=lambda r: r["img_per_s"])
        ratio = best["img_per_s"] / base["img_per_s"]
        ratio_c = best["img_per_s_compute"] / base["img_per_s_compute"]
        loader = bench["loader_img_per_s"][str(batch)]
        bound = (f"loader-bound: the loader alone gives {loader:.1f} img/s, the step could take "
                 f"{best['img_per_s_compute']:.1f}" if loader < best["img_per_s_compute"]
                 else f"compute-bound: the loader alone gives {loader:.1f} img/s, "
                      f"{loader / best['img_per_s_compute']:.1f}x what the step takes")
        lines.append(
            f"- batch {batch}: {best['setting']} {best['img_per_s']:.1f} img/s = {ratio:.2f}x CAT-like "
            f"({ratio_c:.2f}x without the loader); goal >= 2x {'met' if ratio >= 2 else 'NOT met'}. "
            f"{bound}; teacher forward {best['teacher_share']:.0%} of our step, {base['teacher_share']:.0%} of CAT-like's."
        )
    return lines


def render(*, args, env: dict, tests: list[dict] | None, tests_note: str, bench: dict | None, bench_error: str,
           seconds: float, command: str) -> str:
    cpu = args.device == "cpu"
    out = ["<!-- written by results/gpu/check.sh; regenerate: bash results/gpu/check.sh -->", "# GPU check", ""]
    if cpu:
        out += ["**CPU smoke run at tiny sizes**: it checks that the script works; its numbers say nothing "
                "about GPU throughput.", ""]
    out += [f"{datetime.datetime.now().isoformat(timespec='seconds')}, `{command}`, {seconds:.0f} s in all.", "",
            "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in env.items()]
    out += ["", "## Tests", ""]
    if tests is None:
        out += ["not run (--skip-tests)"]
    else:
        counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
        out += [f"{tests_note}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v), "",
                "| test | result | seconds | message |", "|---|---|---|---|"]
        out += [f"| {t['name']} | {t['outcome']} | {t['seconds']:.1f} | {t['message'].replace('|', '/')} |" for t in tests]
    out += ["", "## Throughput", ""]
    if bench is None:
        out += [f"not run ({bench_error})" if bench_error else "not run (--skip-bench)"]
    else:
        from nas_prune.macs import format_macs

        m = bench["models"]
        out += [
            f"`{bench['command']}`: {bench['size']}x{bench['size']} crops (resized to {bench['load_size']}), "
            f"{bench['workers']} loader workers, {bench['warmup']} warm-up + {bench['steps']} timed steps per figure. "
            f"Teacher ngf {m['teacher_ngf']} ({format_macs(m['teacher_macs_paper'])} MACs, paper convention), student "
            f"{format_macs(m['student_macs_paper'])} MACs (target {format_macs(m['target_macs_paper'])}). "
            "How each figure is measured: results/gpu/bench_throughput.py's docstring.", "",
            "| batch | setting | img/s | vs CAT-like | img/s without loader | vs CAT-like | step ms | teacher ms (share) "
            "| loader alone img/s | peak memory GiB | warm-up s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in bench["rows"]:
            base = next((b for b in bench["rows"] if b["batch"] == r["batch"] and b["setting"].startswith("CAT")), None)
            vs = f"{r['img_per_s'] / base['img_per_s']:.2f}x" if base else "-"
            vs_c = f"{r['img_per_s_compute'] / base['img_per_s_compute']:.2f}x" if base else "-"
            out.append(
                f"| {r['batch']} | {r['setting']} | {r['img_per_s']:.1f} | {vs} | {r['img_per_s_compute']:.1f} | {vs_c} | "
                f"{r['step_ms']:.1f} | {r['teacher_ms']:.1f} ({r['teacher_share']:.0%}) | "
                f"{bench['loader_img_per_s'][str(r['batch'])]:.1f} | {r['peak_memory_gib']:.2f} | {r['warmup_s']:.1f} |")
        out += ["", *bench_verdicts(bench)]
        for s in bench["skipped"]:
            out.append(f"- not measured: batch {s['batch']} {s['setting']} ({s['why']})")
        if cpu:
            out.append("- peak memory on CPU is the process's peak resident set (it only grows)")
    return "\n".join(out) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.work, args.out = args.work.resolve(), args.out.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    command = "bash results/gpu/check.sh" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    env = environment(args.device)
    if args.device == "cuda" and env["gpus"] == 0:
        print("error: no CUDA device here; run with --device cpu for a smoke run", file=sys.stderr)
        return 2
    tests, note = None, ""
    if not args.skip_tests:
        (args.work / "tests.xml").unlink(missing_ok=True)
        tests, note = run_tests(args, args.work / "tests.xml")
        print(f"tests: {sum(t['outcome'] == 'passed' for t in tests)} passed of {len(tests)}", flush=True)
    bench, bench_error = None, ""
    if not args.skip_bench:
        sys.path.insert(0, str(HERE))
        import bench_throughput

        left = args.budget_s - (time.perf_counter() - start) - 20
        extra = args.bench_args.split()
        default = ["--device", args.device, "--work", str(args.work / "bench"), "--json", str(args.work / "bench.json"),
                   "--budget-s", f"{max(left, 0):.0f}"]
        if args.device == "cpu":
            default.append("--tiny")
        try:
            bench = bench_throughput.main(default + extra)
        except Exception as err:  # noqa: BLE001 - the report says what failed
            bench_error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "report.md", render(args=args, env=env, tests=tests, tests_note=note, bench=bench,
                                              bench_error=bench_error, seconds=seconds, command=command))
    print(f"wrote {args.out / 'report.md'} ({seconds:.0f} s)")
    ok = (tests is None or all(t["outcome"] in ("passed", "skipped") for t in tests)) and (bench is not None or args.skip_bench)
    if tests and args.device == "cuda" and any(t["outcome"] == "skipped" for t in tests):
        ok = False  # on a GPU machine nothing may be skipped
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
