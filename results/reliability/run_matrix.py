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

Cases may run under a real fault (``wrap``: a tmpfs that fills up, a file-size limit, a
read-only mount, stdout into a pipe), beside a concurrent writer, or be sent a signal while they
run; a case that runs past its timeout is a *hang*.

Options: ``--only LIST`` runs a subset: a comma-separated list of categories (``files,dtypes``;
a word that is no category selects the cases whose name contains it) (the ``run`` chains run with the ``signals`` category or with
no ``--only``); ``--no-kill`` skips the signal chains; ``--out DIR`` writes the table elsewhere
(default: next to this script).
"""

from __future__ import annotations

import argparse
import contextlib
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

import cases_files  # noqa: E402
import cases_runs  # noqa: E402
from cases import Case  # noqa: E402
from cases import build_workspace as build_base  # noqa: E402
from cases import cases as base_cases  # noqa: E402


def cases() -> list[Case]:
    """Every case of the matrix: the first matrix's, then hostile files, then long runs."""
    return base_cases() + cases_files.cases() + cases_runs.cases()


def build_workspace(ws: Path, run_cli) -> None:
    """The shared workspace of every case (teachers, students, data, recipes, ...)."""
    build_base(ws, run_cli)
    cases_files.build(ws)
    cases_runs.build(ws)

VERDICTS = ("pass", "lost", "silently wrong", "traceback", "half-written", "hang", "unclear message")
CHAIN_SIGNALS = (signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGHUP)
EXPECTED_RC = {signal.SIGINT: 130, signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGHUP: 129}
CLI = [sys.executable, "-c", "import sys; from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()"]
STAGES = ("dataset", "train_teacher", "prune", "distill", "baseline", "evaluate", "export", "report")


def _digest(p: Path) -> str:
    st = p.stat()
    if st.st_size > 64 * 2**20:  # a big (sparse) file: its size and time stand for its content
        return f"size {st.st_size} mtime {st.st_mtime_ns}"
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[p.relative_to(root).as_posix()] = _digest(p)
    return out


def wrap(argv: list[str], runner: str | None) -> list[str]:
    """``argv`` run under a real fault (``cases.py``: ``Case.runner``)."""
    if runner is None:
        return argv
    kind, _, rest = runner.partition(":")
    if kind == "fsize":  # RLIMIT_FSIZE, as `ulimit -f` sets (Python ignores SIGXFSZ: writes fail with EFBIG)
        limit = int(rest)
        code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
                "from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()")
        return [sys.executable, "-c", code, *argv[len(CLI):]]
    if kind == "tmpfs":  # a tiny tmpfs in a private mount namespace: real ENOSPC; what is left is copied out
        size, _, folder = rest.partition(":")
        script = (f'mkdir -p {folder} && mount -t tmpfs -o size={size} tmpfs {folder} || exit 99; '
                  f'"$@"; rc=$?; cp -a {folder} {folder}.copy; exit $rc')
        return ["unshare", "-rm", "bash", "-c", script, "bash", *argv]
    if kind == "rofs":  # a read-only mount: EROFS
        script = f'mkdir -p {rest} && mount -t tmpfs -o ro,size=16k tmpfs {rest} || exit 99; exec "$@"'
        return ["unshare", "-rm", "bash", "-c", script, "bash", *argv]
    if kind == "pipe":  # stdout into a shell command; the exit is the CLI's own
        return ["bash", "-c", f'"$@" | {rest}; exit ${{PIPESTATUS[0]}}', "bash", *argv]
    raise ValueError(f"unknown runner {runner!r}")


def _env(cwd: Path, env=None) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if "PYTHONPATH" in (env or {}):
        e["PYTHONPATH"] = str(cwd / env["PYTHONPATH"])
    return e


def _stop(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The rest of the output of ``proc``, after it ends (killed with its group past ``timeout``)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out or ""
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return (out or "") + "\n[HANG: killed after the timeout]"


def cli(args, *, cwd: Path, env=None, timeout: float = 900, runner: str | None = None) -> tuple[int | None, str]:
    """Run the CLI; ``(None, output)`` when it ran past ``timeout`` (killed with its process group)."""
    proc = subprocess.Popen(wrap([*CLI, *map(str, args)], runner), cwd=cwd, env=_env(cwd, env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    out = _stop(proc, timeout)
    return (None if "[HANG:" in out else proc.returncode), out


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> bool:
    t0 = time.perf_counter()
    while not path.exists():
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.05)
    return True


def signalled(case: Case, ws: Path) -> tuple[int | None, str]:
    """Start the case, send ``case.signal`` once ``case.ready`` exists (+ ``case.delay`` s), wait for the end."""
    proc = subprocess.Popen(wrap([*CLI, *map(str, case.args)], case.runner), cwd=ws, env=_env(ws, case.env),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    note = ""
    if _wait_for(ws / case.ready, proc):
        time.sleep(case.delay)
        with contextlib.suppress(ProcessLookupError):
            if case.group:
                os.killpg(proc.pid, case.signal)
            else:
                os.kill(proc.pid, case.signal)
    else:
        note = f"\n[{case.ready} never appeared: no signal sent]"
    out = _stop(proc, case.timeout) + note
    return (None if "[HANG:" in out else proc.returncode), out


def judge(case: Case, ws: Path, rc: int, out: str, before: dict, after: dict) -> tuple[str, str, list[str], list[str]]:
    """(verdict, message, lost or changed files, added files)."""
    changed = [f for f, h in before.items() if after.get(f) != h and not f.startswith(case.may_change or ("\0",))]
    added = [f for f in after if f not in before and not f.startswith(case.may_change or ("\0",))]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    message = errors[0] if errors else (out.strip().splitlines() or [""])[-1]
    problem = case.check(ws, out) if case.check is not None else None
    if rc is None:
        return "hang", message, changed, added
    if "Traceback" in out:
        return "traceback", message, changed, added
    if changed:
        return "lost", message, changed, added
    if problem:
        return "silently wrong", f"{message} [{problem}]", changed, added
    if case.expect == "ok":
        return ("pass" if rc == 0 else "unclear message"), message, changed, added
    if case.expect == "stopped":
        if "no signal sent" in out:
            return "unclear message", message + " (finished or failed before the signal)", changed, added
        return ("pass" if rc == case.exit_code else "unclear message"), f"{message} (exit {rc})", changed, added
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
        background = None
        if case.background is not None:
            background = subprocess.Popen([*CLI, *map(str, case.background)], cwd=ws, env=_env(ws), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            if not _wait_for(ws / case.ready, background):
                print(f"  (the background command of {case.name!r} ended before {case.ready} appeared)", flush=True)
        before = snapshot(ws)
        t0 = time.perf_counter()
        if case.signal is not None:
            rc, out = signalled(case, ws)
        else:
            rc, out = cli(case.args, cwd=ws, env=case.env, runner=case.runner, timeout=case.timeout)
        seconds = time.perf_counter() - t0
        if background is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(background.pid, signal.SIGINT)
            _stop(background)
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
        # into the stage's work: a stage that computes says its torch threads at its first step (the
        # training stages, prune); the others are stopped just after they start. A fixed wait would
        # land in a later stage on an idle machine, where the tiny stages take well under a second.
        work = stage in ("train_teacher", "prune", "distill", "baseline")
        for line in proc.stdout:
            lines.append(line.rstrip())
            started = line.startswith(f"[{stage}] running") or line.startswith(f"[{stage}] resuming")
            if started and not work or line.startswith(f"[{stage}] torch threads"):
                hit = True
                time.sleep(0.1 if work else 0.2)
                proc.send_signal(sig)
                break
            if work and started:
                hit = True  # the signal waits for the threads line; ``hit`` says the stage ran
            if work and hit and line.startswith((f"[{stage}] done", f"[{stage}] interrupted", f"[{stage}] failed")):
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
        # the distillation's own status.json: a signal after its last step (while the stage records its
        # result) leaves it done, with a whole final/ that evaluate rightly takes
        trained = {}
        if (run_dir / stage / "status.json").is_file():
            trained = json.loads((run_dir / stage / "status.json").read_text())
        if stage in ("distill", "baseline") and not finished:
            erc, eout = cli(["evaluate", f"runs/chain/{stage}/final", "--data", "runs/chain/dataset/data",
                             "--crop-size", "32"], cwd=ws)
            if "Traceback" in eout:
                problems.append("evaluate ended in a traceback")
            elif trained.get("state") != "done" and erc == 0:
                problems.append(f"evaluate took the final/ of the unfinished {stage} (exit 0)")
            elif trained.get("state") == "done" and erc != 0:
                problems.append(f"evaluate refused the final/ of the finished distillation (exit {erc})")
        expected_rc = EXPECTED_RC[sig]
        if hit and not finished and rc != expected_rc:
            problems.append(f"exit {rc}, expected {expected_rc}")
        if hit and not finished and sig != signal.SIGKILL and state.get("status") != "interrupted":
            problems.append(f"stage.json says {state.get('status')!r}, not 'interrupted'")
        verdict = "pass" if not problems else ("traceback" if "traceback" in problems else
                                               "lost" if any("removed" in p for p in problems) else "silently wrong")
        after = "; the distillation had finished (status.json: done)" if trained.get("state") == "done" else ""
        what = (f"stopped in {stage} (stage.json: {state.get('status', 'none')}{after})" if hit and not finished
                else f"{stage} finished before the signal" if hit else f"{stage} never started")
        rows.append({"case": f"{name} during run: {stage}", "category": "signals", "command": f"nas-prune run (kill -{name})",
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
    rows.append({"case": f"{name} chain: final run completes", "category": "signals",
                 "command": "nas-prune run", "expect": "ok", "exit": rc,
                 "message": (f"max |Δ| of the distilled student vs an uninterrupted run: {delta}" if delta is not None
                             else (out.strip().splitlines() or [""])[-1]) + ("; " + "; ".join(problems) if problems else ""),
                 "lost_or_changed": [], "added": [], "verdict": "pass" if not problems else "silently wrong",
                 "seconds": None})
    print(f"[{name}] {rows[-1]['verdict']:15s} final: {rows[-1]['message']}", flush=True)
    return rows


def chain_names() -> list[str]:
    """The names of the rows of the ``run`` chains (:func:`run_chain`), in order."""
    names = []
    for sig in CHAIN_SIGNALS:
        name = signal.Signals(sig).name
        names += [f"{name} during run: {stage}" for stage in STAGES] + [f"{name} chain: final run completes"]
    return names


def reference_run(ws: Path) -> dict:
    recipe = _recipe(ws)
    rc, out = cli(["run", str(recipe)], cwd=ws, timeout=1800)
    if rc != 0:
        raise SystemExit(f"the uninterrupted reference run failed:\n{out}")
    return _student_weights(ws / "runs" / "chain" / "distill" / "final")


# ----------------------------------------------------------------------------- table


def _counts(rows: list[dict]) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    lost = sum(len(r["lost_or_changed"]) for r in rows)
    return (f"{len(rows)} cases: {counts['pass']} pass, {counts['lost']} lost data ({lost} files lost or changed), "
            f"{counts['silently wrong']} silently wrong, {counts['traceback']} tracebacks, "
            f"{counts['half-written']} half-written, {counts['hang']} hangs, "
            f"{counts['unclear message']} unclear messages")


def merge(rows: list[dict], out: Path, order: list[str]) -> tuple[list[dict], list[dict]]:
    """The rows of this run and those of ``out/matrix.json`` that it did not redo (``--only``), in
    the order of ``order`` (case names; the ``run`` chains last).

    Returns ``(every row, the rows kept from earlier runs)``; a kept row carries its ``run``.
    """
    path = out / "matrix.json"
    kept: list[dict] = []
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
        done = {r["case"] for r in rows}
        known = set(order) | set(chain_names())  # a row of a case since removed or renamed is dropped
        kept = [{**r, "run": r.get("run", doc.get("command"))} for r in doc.get("rows", [])
                if r["case"] not in done and r["case"] in known]
    rank = {name: i for i, name in enumerate(order)}
    every = sorted(kept + rows, key=lambda r: rank.get(r["case"], len(rank)))  # stable: chains keep their order
    return every, kept


def write_table(rows: list[dict], out: Path, *, command: str, seconds: float, pending: list[Case] = (),
                kept: list[dict] = ()) -> None:
    """``matrix.md`` and ``matrix.json``: counts of every row, of this run, and the cases not run yet."""
    this = [r for r in rows if r not in kept]
    lines = [
        "# Reliability matrix: bad input, hostile files, full disks and interrupted runs",
        "",
        f"Regenerate: `python results/reliability/run_matrix.py` (every case; the last run here was `{command}`, "
        f"{seconds / 60:.0f} min on this machine). Every row is a real subprocess of the `nas-prune` CLI on tiny "
        "models; the script and its cases are `run_matrix.py`, `cases.py`, `cases_files.py` and `cases_runs.py` here.",
        "",
        f"**{_counts(rows)}.**",
        "",
    ]
    if kept:
        earlier = sorted({r["run"] for r in kept if r.get("run")})
        lines += [f"This run (`{command}`): {_counts(this)}. The other {len(kept)} rows are kept from an earlier "
                  f"run ({', '.join(f'`{e}`' for e in earlier) or 'unrecorded'}).", ""]
    if pending:
        chains = "" if any(r["case"].startswith("SIGTERM chain") for r in rows) else (
            ", and the `run` chains stopped by SIGTERM and SIGHUP (9 rows each; they run with `--only signals` "
            "or with every case)")
        lines += [f"Not run yet: {len(pending)} cases ({', '.join(sorted({c.category for c in pending}))}; "
                  f"listed at the end){chains}.", ""]
    lines += [
        "Verdicts: *pass* = what the case expects (a one-line `error:` with exit 2 and no file touched, or success "
        "where success is right, or the exit a signal calls for); *lost* = a file that existed before was removed or "
        "changed; *silently wrong* = exit 0 where an error was due, or a check of the result failed; *half-written* = "
        "an error that left new files; *hang* = still running at its timeout (killed); *unclear message* = another "
        "exit code, not exactly one `error:` line, or a message without the expected words.",
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
    if pending:
        lines += ["", "## Not run yet", "", "| category | case | command |", "|---|---|---|"]
        for c in pending:
            cmd = " ".join(c.args)
            cmd = cmd if len(cmd) < 160 else cmd[:157] + "..."
            lines.append(f"| {c.category} | {c.name} | `nas-prune {cmd}` |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    (out / "matrix.json").write_text(json.dumps({"command": command, "seconds": round(seconds), "counts": counts,
                                                 "rows": rows, "not_run": [c.name for c in pending]}, indent=1) + "\n",
                                     encoding="utf-8")


def render(out: Path) -> None:
    """``matrix.md`` again from ``matrix.json`` (rows in case order), without running anything."""
    import re

    doc = json.loads((out / "matrix.json").read_text(encoding="utf-8"))
    seconds = doc.get("seconds")
    if seconds is None:  # recorded in matrix.md only, by older versions of this script
        found = re.search(r"(\d+) min on this machine", (out / "matrix.md").read_text(encoding="utf-8"))
        seconds = 60 * int(found.group(1)) if found else 0
    last = [r for r in doc["rows"] if "run" not in r]
    rows, kept = merge(last, out, [c.name for c in cases()])
    have = {r["case"] for r in rows}
    write_table(rows, out, command=doc["command"], seconds=seconds, kept=kept,
                pending=[c for c in cases() if c.name not in have])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None,
                        help="comma-separated categories (files,dtypes) or text found in case names")
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGINT / SIGKILL chains")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render", action="store_true", help="rewrite matrix.md from matrix.json, running nothing")
    args = parser.parse_args()
    if args.render:
        render(args.out)
        return
    # started as a background job (`cmd &`, nohup), this script and so every command it starts would
    # ignore SIGINT and SIGHUP: the Ctrl-C cases would then test nothing; the commands get them back
    for sig in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
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
        only = [w.strip() for w in args.only.split(",") if w.strip()] if args.only else None
        every = cases()
        categories = {c.category for c in every} | {"signals"}
        names = [w for w in only or () if w not in categories]  # the other words select by name
        selected = [c for c in every if only is None or c.category in only or any(w in c.name for w in names)]
        rows = run_cases(template, selected, scratch)
        if not args.no_kill and (only is None or "signals" in only):
            ref = reference_run(scratch / "reference")
            for sig in CHAIN_SIGNALS:
                rows += run_chain(scratch / f"chain-{signal.Signals(sig).name}", sig, ref)
        command = "python results/reliability/run_matrix.py" + (f" --only '{args.only}'" if args.only else "") + (
            " --no-kill" if args.no_kill else "")
        rows, kept = merge(rows, args.out, [c.name for c in every])
        have = {r["case"] for r in rows}
        pending = [c for c in every if c.name not in have]
        write_table(rows, args.out, command=command, seconds=time.perf_counter() - t0, pending=pending, kept=kept)
        print(f"wrote {args.out / 'matrix.md'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
