"""Run the bad-input matrix against the ``nas-prune`` CLI and write ``matrix.md`` / ``matrix.json``.

Regenerate (a few minutes on 2 idle cores; every case is a real subprocess)::

    python results/reliability/run_matrix.py

Each case of ``cases.py`` runs in a fresh copy of nothing but the workspace it starts
from (teachers, a student, datasets, recipes and an interrupted run, built first), and is
judged on: exit code, exactly one ``error:`` line, no ``Traceback``, and the files of the
workspace before and after (SHA-256 of each): lost or changed, added (half-written).
Then ``run`` of a small recipe is stopped with SIGINT and, in a second chain, with
SIGKILL, once in each of its stages; each time the result of the unfinished run must be
refused by ``evaluate``, a file of the user's in the run folder must survive, and the next
``run`` must continue; the distilled student of each chain must equal that of an
uninterrupted run (max |difference| of the weights).

Options: ``--only TEXT`` runs the cases whose name contains TEXT; ``--no-kill`` skips the
signal chains; ``--out DIR`` writes the table elsewhere (default: next to this script).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import Case, build_workspace, cases  # noqa: E402

VERDICTS = ("pass", "lost", "silently wrong", "traceback", "half-written", "unclear message")
CLI = [sys.executable, "-c", "import sys; from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()"]
STAGES = ("dataset", "train_teacher", "prune", "distill", "baseline", "evaluate", "export", "report")


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(args, *, cwd: Path, env=None, timeout: float = 900) -> tuple[int, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if "PYTHONPATH" in (env or {}):
        e["PYTHONPATH"] = str(cwd / env["PYTHONPATH"])
    proc = subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def judge(case: Case, ws: Path, rc: int, out: str, before: dict, after: dict) -> tuple[str, str, list[str], list[str]]:
    """(verdict, message, lost or changed files, added files)."""
    changed = [f for f, h in before.items() if after.get(f) != h and not f.startswith(case.may_change or ("\0",))]
    added = [f for f in after if f not in before and not f.startswith(case.may_change or ("\0",))]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    message = errors[0] if errors else (out.strip().splitlines() or [""])[-1]
    problem = case.check(ws, out) if case.check is not None else None
    if "Traceback" in out:
        return "traceback", message, changed, added
    if changed:
        return "lost", message, changed, added
    if problem:
        return "silently wrong", f"{message} [{problem}]", changed, added
    if case.expect == "ok":
        return ("pass" if rc == 0 else "unclear message"), message, changed, added
    if case.expect == "safe" and rc == 0:
        return "pass", message or "(succeeded)", changed, added
    if rc == 0:
        return "silently wrong", f"(exit 0) {message}", changed, added
    if added:
        return "half-written", message, changed, added
    if rc != 2 or len(errors) != 1 or (case.says and case.says not in errors[0]):
        return "unclear message", message, changed, added
    return "pass", message, changed, added


def run_cases(ws_template: Path, selected: list[Case], scratch: Path) -> list[dict]:
    rows = []
    for i, case in enumerate(selected):
        ws = scratch / f"case{i:03d}"
        shutil.copytree(ws_template, ws, symlinks=True)
        if case.first is not None:
            cli(case.first, cwd=ws)
        if case.prepare is not None:
            case.prepare(ws)
        before = snapshot(ws)
        t0 = time.perf_counter()
        rc, out = cli(case.args, cwd=ws, env=case.env)
        seconds = time.perf_counter() - t0
        verdict, message, changed, added = judge(case, ws, rc, out, before, snapshot(ws))
        rows.append({"case": case.name, "category": case.category, "command": "nas-prune " + " ".join(case.args),
                     "expect": case.expect, "exit": rc, "message": message, "lost_or_changed": changed,
                     "added": added, "verdict": verdict, "seconds": round(seconds, 1)})
        print(f"[{i + 1}/{len(selected)}] {verdict:15s} {case.name}: {message[:120]}", flush=True)
        shutil.rmtree(ws, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- signals during `run`


def _recipe(ws: Path) -> Path:
    """The CI demo recipe (every stage) with its run folder in the workspace."""
    from nas_prune.shipped import shipped_dir

    text = (shipped_dir("recipes") / "demo_ci.yaml").read_text()
    ws.mkdir(parents=True, exist_ok=True)
    path = ws / "demo_ci.yaml"
    path.write_text(text.replace("run_dir: runs/demo_ci", "run_dir: runs/chain"))
    return path


def _start(ws: Path, recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, "run", str(recipe)], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _student_weights(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "student.safetensors"))


def run_chain(ws: Path, sig: int, reference: dict | None) -> list[dict]:
    """Stop ``run`` with ``sig`` once in each stage, in order; run it again after each stop."""
    recipe = _recipe(ws)
    run_dir = ws / "runs" / "chain"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("a file of the user's in the run folder\n")
    rows = []
    name = signal.Signals(sig).name
    for stage in STAGES:
        proc = _start(ws, recipe)
        lines, hit = [], False
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith(f"[{stage}] running") or line.startswith(f"[{stage}] resuming"):
                hit = True
                time.sleep(1.0)  # into the stage's work
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=900)
        lines += rest.splitlines()
        rc = proc.returncode
        out = "\n".join(lines)
        problems = []
        if "Traceback" in out:
            problems.append("traceback")
        if not (run_dir / "notes.txt").is_file():
            problems.append("the user's notes.txt was removed")
        state = {}
        if (run_dir / stage / "stage.json").is_file():
            state = json.loads((run_dir / stage / "stage.json").read_text())
        finished = state.get("status") == "done"
        if stage in ("distill", "baseline") and not finished:
            erc, eout = cli(["evaluate", f"runs/chain/{stage}/final", "--data", "runs/chain/dataset/data",
                             "--crop-size", "32"], cwd=ws)
            if erc == 0:
                problems.append(f"evaluate took the final/ of the unfinished {stage} (exit 0)")
            elif "Traceback" in eout:
                problems.append("evaluate ended in a traceback")
        expected_rc = {signal.SIGINT: 130, signal.SIGKILL: -9}[sig]
        if hit and not finished and rc != expected_rc:
            problems.append(f"exit {rc}, expected {expected_rc}")
        verdict = "pass" if not problems else ("traceback" if "traceback" in problems else
                                               "lost" if any("removed" in p for p in problems) else "silently wrong")
        what = (f"stopped in {stage} (stage.json: {state.get('status', 'none')})" if hit and not finished
                else f"{stage} finished before the signal" if hit else f"{stage} never started")
        rows.append({"case": f"{name} during run: {stage}", "category": "signal", "command": f"nas-prune run (kill -{name})",
                     "expect": "safe", "exit": rc, "message": what + ("; " + "; ".join(problems) if problems else ""),
                     "lost_or_changed": [], "added": [], "verdict": verdict, "seconds": None})
        print(f"[{name}] {verdict:15s} {stage}: {rows[-1]['message']}", flush=True)
    rc, out = cli(["run", str(recipe)], cwd=ws, timeout=1800)
    problems = [] if rc == 0 and "Traceback" not in out else [f"final run exit {rc}"]
    delta = None
    if reference is not None and rc == 0:
        mine = _student_weights(run_dir / "distill" / "final")
        delta = max(float((mine[k].float() - reference[k].float()).abs().max()) for k in reference)
        if delta != 0.0:
            problems.append(f"distilled student differs from an uninterrupted run by {delta:g}")
    rows.append({"case": f"{name} chain: final run completes", "category": "signal",
                 "command": "nas-prune run", "expect": "ok", "exit": rc,
                 "message": (f"max |Δ| of the distilled student vs an uninterrupted run: {delta}" if delta is not None
                             else (out.strip().splitlines() or [""])[-1]) + ("; " + "; ".join(problems) if problems else ""),
                 "lost_or_changed": [], "added": [], "verdict": "pass" if not problems else "silently wrong",
                 "seconds": None})
    print(f"[{name}] {rows[-1]['verdict']:15s} final: {rows[-1]['message']}", flush=True)
    return rows


def reference_run(ws: Path) -> dict:
    recipe = _recipe(ws)
    rc, out = cli(["run", str(recipe)], cwd=ws, timeout=1800)
    if rc != 0:
        raise SystemExit(f"the uninterrupted reference run failed:\n{out}")
    return _student_weights(ws / "runs" / "chain" / "distill" / "final")


# ----------------------------------------------------------------------------- table


def write_table(rows: list[dict], out: Path, *, command: str, seconds: float) -> None:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    lost = sum(len(r["lost_or_changed"]) for r in rows)
    lines = [
        "# Reliability matrix: bad input and interrupted runs",
        "",
        f"Regenerate: `{command}` ({seconds / 60:.0f} min on this machine). Every row is a real subprocess of the",
        "`nas-prune` CLI on tiny models; the script and its cases are `run_matrix.py` and `cases.py` here.",
        "",
        f"**{len(rows)} cases: {counts['pass']} pass, {counts['lost']} lost data ({lost} files lost or changed), "
        f"{counts['silently wrong']} silently wrong, {counts['traceback']} tracebacks, "
        f"{counts['half-written']} half-written, {counts['unclear message']} unclear messages.**",
        "",
        "Verdicts: *pass* = what the case expects (a one-line `error:` with exit 2 and no file touched, or success "
        "where success is right); *lost* = a file that existed before was removed or changed; *silently wrong* = "
        "exit 0 where an error was due, or a check of the result failed; *half-written* = an error that left new "
        "files; *unclear message* = another exit code, not exactly one `error:` line, or a message without the "
        "expected words.",
        "",
        "| # | category | case | exit | message | files lost / changed | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        msg = r["message"].replace("|", "\\|").replace("\n", " ")
        if len(msg) > 260:
            msg = msg[:257] + "..."
        files = ", ".join(r["lost_or_changed"]) or "0"
        lines.append(f"| {i} | {r['category']} | {r['case']} | {r['exit']} | {msg} | {files} | {r['verdict']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "matrix.json").write_text(json.dumps({"command": command, "counts": counts, "rows": rows}, indent=1) + "\n",
                                     encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGINT / SIGKILL chains")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="nas-prune-matrix-"))
    try:
        template = scratch / "workspace"

        def setup_cli(cmd, *, check=False, interrupt_after_line=None):
            if interrupt_after_line is None:
                rc, out = cli(cmd, cwd=template)
                if check and rc != 0:
                    raise SystemExit(f"setup failed: nas-prune {' '.join(cmd)}\n{out}")
                return
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen([*CLI, *cmd], cwd=template, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            while not (template / cmd[cmd.index("--out") + 1] / "checkpoints").exists():
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=600)

        build_workspace(template, setup_cli)
        selected = [c for c in cases() if args.only is None or args.only in c.name]
        rows = run_cases(template, selected, scratch)
        if not args.no_kill and args.only is None:
            ref = reference_run(scratch / "reference")
            for sig in (signal.SIGINT, signal.SIGKILL):
                rows += run_chain(scratch / f"chain-{signal.Signals(sig).name}", sig, ref)
        command = "python results/reliability/run_matrix.py" + (f" --only '{args.only}'" if args.only else "") + (
            " --no-kill" if args.no_kill else "")
        write_table(rows, args.out, command=command, seconds=time.perf_counter() - t0)
        print(f"wrote {args.out / 'matrix.md'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
