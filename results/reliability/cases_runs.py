"""Runs that are stopped, doubled or piped: SIGTERM / SIGHUP during long commands, two writers of
one folder, output into a pipe that closes.

Categories: ``signals`` (``Case.signal``: exit 128 + the signal, the run recorded as
``interrupted`` with a whole checkpoint, a resume that is exact), ``locks`` (``Case.background``
runs the first writer; the second must be refused, naming the holder's pid), ``piped``
(``Case.runner = "pipe:..."``: no re-wrapping, no trailing spaces, a closed stdout does not fail
the run, Ctrl-C in a pipeline is an interruption). The ``run`` chains of ``run_matrix.py`` stop a
whole recipe with SIGINT, SIGKILL, SIGTERM and SIGHUP once in each stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cases import Case  # noqa: E402

LONG = ["--epochs", "40", "--epochs-decay", "0"]


def build(ws: Path) -> None:
    """Nothing beyond the common workspace: every case starts its own run."""


def _distill(out: str, *extra: str) -> list[str]:
    return ["distill", "--teacher", "t.pth", "--student", "S", "--data", "data", "--mode", "aligned",
            "--batch-size", "2", "--load-size", "32", "--crop-size", "32", "--ndf", "8", "--workers", "0",
            "--threads", "1", "--out", out, *extra]


def _interrupted(folder: str, *, stage: str | None = None):
    """The run in ``folder`` says interrupted and its checkpoint is whole."""

    def check(ws: Path, out: str) -> str | None:
        import torch

        run = ws / folder
        status = run / (f"{stage}/stage.json" if stage else "status.json")
        if not status.is_file():
            return f"no {status.relative_to(ws)}"
        doc = json.loads(status.read_text())
        state = doc.get("status" if stage else "state")
        if state != "interrupted":
            return f"{status.relative_to(ws)} says {state!r}, not 'interrupted'"
        if stage is None:
            ckpt = run / "checkpoints" / "last.pt"
            if not ckpt.is_file():
                return "no checkpoint at the stop"
            try:
                torch.load(ckpt, weights_only=True)
            except Exception as err:  # noqa: BLE001
                return f"checkpoint cut off ({type(err).__name__})"
        return None

    return check


def _cli(ws: Path, args: list[str]) -> tuple[int, str]:
    cmd = [sys.executable, "-c", "import sys; from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()", *args]
    p = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return p.returncode, p.stdout + p.stderr


def _resume_is_exact(folder: str):
    """After the stop, ``--resume`` finishes and its student equals an uninterrupted run's (max |Δ| = 0.0)."""

    def check(ws: Path, out: str) -> str | None:
        from safetensors.torch import load_file

        first = _interrupted(folder)(ws, out)
        if first:
            return first
        rc, text = _cli(ws, _distill(folder, *LONG, "--no-progress", "--resume"))
        if rc != 0:
            return f"--resume exit {rc}: {(text.strip().splitlines() or [''])[-1]}"
        rc, text = _cli(ws, _distill(f"{folder}_ref", *LONG, "--no-progress"))
        if rc != 0:
            return f"uninterrupted run exit {rc}"
        a = load_file(str(ws / folder / "final" / "student.safetensors"))
        b = load_file(str(ws / f"{folder}_ref" / "final" / "student.safetensors"))
        delta = max(float((a[k].float() - b[k].float()).abs().max()) for k in b)
        return None if delta == 0.0 else f"resumed student differs from an uninterrupted run by {delta:g}"

    return check


def _clean_lines(ws: Path, out: str) -> str | None:
    """Output into a pipe: no trailing spaces, no carriage returns, no line cut at 80 columns."""
    lines = out.splitlines()
    trailing = [i for i, line in enumerate(lines) if line != line.rstrip()]
    if trailing:
        return f"{len(trailing)} lines end in spaces (e.g. {lines[trailing[0]]!r:.60})"
    if "\r" in out:
        return "carriage returns in piped output"
    cut = [line for line in lines if len(line) == 80 or len(line) == 79]
    if len(cut) > 2:
        return f"{len(cut)} lines of exactly 79-80 columns: output re-wrapped for a terminal"
    return None


def _done(folder: str):
    def check(ws: Path, out: str) -> str | None:
        status = ws / folder / "status.json"
        state = json.loads(status.read_text()).get("state") if status.is_file() else None
        return None if state == "done" else f"status.json says {state!r}, not 'done'"

    return check


def _export_names_interruption(folder: str):
    def check(ws: Path, out: str) -> str | None:
        first = _interrupted(folder)(ws, out)
        if first:
            return first
        rc, text = _cli(ws, ["export", f"{folder}/final", "--out", "x.onnx", "--input-size", "32"])
        if rc == 0:
            return "export took the final/ of the interrupted run"
        if "interrupted" not in text:
            return f"export does not say the run was interrupted: {(text.strip().splitlines() or [''])[-1]}"
        return None

    return check


def _joined(folder: str):
    """The second worker found the first one's trials (it says ``joining`` when one is running at that
    moment, ``resuming`` between two trials) and the folder holds one whole student."""

    def check(ws: Path, out: str) -> str | None:
        from safetensors.torch import load_file

        if "joining:" not in out and "resuming:" not in out:
            return "the second worker did not find the running study's trials"
        try:
            load_file(str(ws / folder / "student.safetensors"))
        except Exception as err:  # noqa: BLE001
            return f"no whole student in {folder} ({type(err).__name__})"
        return None

    return check


def _dead_pid() -> int:
    """The pid of a process that has ended (a ``true`` started and reaped here)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _stale_lock(folder: str, *, host: str | None = None, text: str | None = None, user_file: bool = False):
    """``prepare``: ``folder/.nas-prune-lock`` as a writer killed outright leaves it (nobody holds the
    ``flock``): a dead pid of this host, another host's pid, or ``text`` (bytes that are no record)."""

    def prepare(ws: Path) -> None:
        import socket

        d = ws / folder
        d.mkdir(parents=True, exist_ok=True)
        rec = {"pid": _dead_pid(), "host": host or socket.gethostname(), "command": "distill",
               "since": "2026-12-01 03:04:05"}
        (d / ".nas-prune-lock").write_text(text if text is not None else json.dumps(rec) + "\n")
        if user_file:
            (d / "notes.txt").write_text("a file of the user's\n")

    return prepare


def _took_over(folder: str, *, note: str | None = "no longer running", done: str | None = None,
               kept: tuple[str, ...] = ()):
    """The command took the stale lock over, said so (``note``; None: says nothing of it), released it
    at the end, kept ``kept`` and (``done``) finished its run."""

    def check(ws: Path, out: str) -> str | None:
        if note is not None and not ("took over the lock" in out and note in out):
            return f"no note of the stale lock taken over (expected 'took over the lock ... {note}')"
        if note is None and "took over the lock" in out:
            return "a note of a lock taken over where the file held no holder"
        if (ws / folder / ".nas-prune-lock").exists():
            return "the lock file is still there after the command ended"
        for f in kept:
            if not (ws / f).is_file():
                return f"{f} was removed"
        if done is not None:
            return _done(done)(ws, out)
        return None

    return check


def _killed_then(folder: str, first: list[str]):
    """``prepare``: ``first`` started, killed with SIGKILL once ``folder/status.json`` exists (its lock
    file stays, unlocked by the kernel)."""

    def prepare(ws: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-c", "import sys; from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()",
               *first]
        proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import time

        t0 = time.monotonic()
        while not (ws / folder / "checkpoints" / "last.pt").is_file() and proc.poll() is None \
                and time.monotonic() - t0 < 300:
            time.sleep(0.05)
        proc.kill()
        proc.wait()

    return prepare


def cases() -> list[Case]:
    TERM, HUP, INT = signal.SIGTERM, signal.SIGHUP, signal.SIGINT
    search_trials = ["search", "--teacher", "t.pth", "--target-macs", "2M", "--input-size", "32",
                     "--min-channels", "4", "--trials", "400"]
    teacher = ["train-teacher", "--data", "data", "--ngf", "4", "--n-blocks", "1", "--epochs", "40",
               "--epochs-decay", "0", "--batch-size", "2", "--load-size", "32", "--crop-size", "32",
               "--workers", "0", "--no-progress"]
    return [
        # signals (the handler is one for SIGINT, SIGTERM and SIGHUP)
        Case("SIGTERM during distill", "signals", _distill("run_term", *LONG, "--no-progress"), expect="stopped",
             signal=TERM, ready="run_term/status.json", exit_code=143, check=_interrupted("run_term"),
             may_change=("run_term/",)),
        Case("SIGHUP during distill", "signals", _distill("run_hup", *LONG, "--no-progress"), expect="stopped",
             signal=HUP, ready="run_hup/status.json", exit_code=129, check=_interrupted("run_hup"),
             may_change=("run_hup/",)),
        Case("SIGTERM during distill, then --resume is exact", "signals",
             _distill("run_term2", *LONG, "--no-progress"), expect="stopped", signal=TERM,
             ready="run_term2/status.json", exit_code=143, check=_resume_is_exact("run_term2"),
             may_change=("run_term2",)),
        Case("SIGTERM right after distill's first checkpoint", "signals",
             _distill("run_term3", *LONG, "--no-progress", "--save-every", "1"), expect="stopped", signal=TERM,
             ready="run_term3/checkpoints/last.pt", delay=0.0, exit_code=143, check=_interrupted("run_term3"),
             may_change=("run_term3/",)),
        Case("SIGTERM during train-teacher", "signals", [*teacher, "--out", "tt_term"], expect="stopped",
             signal=TERM, ready="tt_term/status.json", exit_code=143, check=_interrupted("tt_term"),
             may_change=("tt_term/",)),
        Case("SIGTERM during run (distill stage)", "signals",
             ["run", "recipes/ok.yaml", "--set", "run_dir=runs/term", "--set", "distill.epochs=40"],
             expect="stopped", signal=TERM, ready="runs/term/distill/status.json", exit_code=143,
             check=_interrupted("runs/term", stage="distill"), may_change=("runs/term/",)),
        Case("SIGTERM during search --trials", "signals", [*search_trials, "--out", "study_term"], expect="stopped",
             signal=TERM, ready="study_term", delay=4.0, exit_code=143, may_change=("study_term/",)),
        # two writers of one folder
        Case("second distill into a running distill's folder", "locks", _distill("run_lock", "--no-progress"),
             says="pid", background=_distill("run_lock", *LONG, "--no-progress"), ready="run_lock/status.json",
             may_change=("run_lock/",)),
        Case("distill --resume while the run is still going", "locks",
             _distill("run_lock2", *LONG, "--no-progress", "--resume"), says="pid",
             background=_distill("run_lock2", *LONG, "--no-progress"), ready="run_lock2/checkpoints/last.pt",
             may_change=("run_lock2/",)),
        Case("second run of one recipe while the first runs", "locks",
             ["run", "recipes/ok.yaml", "--set", "run_dir=runs/lock"], says="pid",
             background=["run", "recipes/ok.yaml", "--set", "run_dir=runs/lock", "--set", "distill.epochs=40"],
             ready="runs/lock/distill/status.json", may_change=("runs/lock/",)),
        # workers of one study share its folder by design (nas_prune.locks): another study is refused
        Case("search --trials of another study into a study being written", "locks",
             [*search_trials[:4], "2.5M", *search_trials[5:], "--out", "study_lock"],
             says="pid", background=[*search_trials, "--out", "study_lock"], ready="study_lock/study.db",
             may_change=("study_lock/",)),
        Case("a second worker of the same study joins it (shared by design)", "locks",
             [*search_trials[:-1], "40", "--out", "study_join"], expect="ok", check=_joined("study_join"),
             background=[*search_trials[:-1], "40", "--out", "study_join"], ready="study_join/study.db",
             may_change=("study_join/",)),
        Case("train-teacher into a folder another train-teacher writes", "locks", [*teacher, "--out", "tt_lock"],
             says="pid", background=[*teacher, "--out", "tt_lock"], ready="tt_lock/status.json",
             may_change=("tt_lock/",)),
        # stale locks: a lock file whose writer is gone is taken over, with a note
        Case("stale lock (dead pid) in distill's --out is taken over", "locks",
             _distill("run_stale", "--epochs", "1", "--epochs-decay", "0", "--no-progress"), expect="ok",
             prepare=_stale_lock("run_stale"), check=_took_over("run_stale", done="run_stale"),
             may_change=("run_stale/",)),
        Case("distill --resume after a SIGKILL: the dead run's lock is taken over", "locks",
             _distill("run_kill9", "--epochs", "3", "--epochs-decay", "0", "--no-progress", "--resume"), expect="ok",
             prepare=_killed_then("run_kill9", _distill("run_kill9", "--epochs", "3", "--epochs-decay", "0",
                                                        "--no-progress", "--save-every", "1")),
             check=_took_over("run_kill9", done="run_kill9"), may_change=("run_kill9/",)),
        Case("stale lock from another host, no longer locked, is taken over", "locks",
             _distill("run_stale_host", "--epochs", "1", "--epochs-decay", "0", "--no-progress"), expect="ok",
             prepare=_stale_lock("run_stale_host", host="gpu-node-7"),
             check=_took_over("run_stale_host", note="its lock was released", done="run_stale_host"),
             may_change=("run_stale_host/",)),
        Case("lock file of random bytes (no holder) is taken over silently", "locks",
             _distill("run_stale_junk", "--epochs", "1", "--epochs-decay", "0", "--no-progress"), expect="ok",
             prepare=_stale_lock("run_stale_junk", text="\x00\xff not json {\n"),
             check=_took_over("run_stale_junk", note=None, done="run_stale_junk"), may_change=("run_stale_junk/",)),
        Case("stale lock in train-teacher's --out is taken over", "locks",
             [*teacher[:8], "1", *teacher[9:], "--out", "tt_stale"], expect="ok",
             prepare=_stale_lock("tt_stale"), check=_took_over("tt_stale"), may_change=("tt_stale/",)),
        Case("stale lock in search's --out is taken over, the user's file kept", "locks",
             [*search_trials[:-2], "--out", "S_stale", "--force"], expect="ok",
             prepare=_stale_lock("S_stale", user_file=True), check=_took_over("S_stale", kept=("S_stale/notes.txt",)),
             may_change=("S_stale/",)),
        Case("stale lock in a study folder (search --trials) is taken over", "locks",
             [*search_trials[:-1], "3", "--out", "study_stale"], expect="ok",
             prepare=_stale_lock("study_stale"), check=_took_over("study_stale"), may_change=("study_stale/",)),
        Case("stale lock in a recipe's run folder is taken over", "locks",
             ["run", "recipes/ok.yaml", "--set", "run_dir=runs/stale"], expect="ok",
             prepare=_stale_lock("runs/stale", user_file=True),
             check=_took_over("runs/stale", kept=("runs/stale/notes.txt",)), may_change=("runs/stale/",)),
        # piped output
        Case("distill with progress piped to a file: no re-wrapping, no trailing spaces", "piped",
             _distill("run_pipe", "--epochs", "2", "--epochs-decay", "0", "--log-every", "1"), expect="ok",
             runner="pipe:cat", check=_clean_lines, may_change=("run_pipe/",)),
        Case("search piped to a file: no trailing spaces, tables not padded to 80 columns", "piped",
             [*search_trials[:-2], "--out", "S_pipe"], expect="ok", runner="pipe:cat", check=_clean_lines,
             may_change=("S_pipe/",)),
        Case("profile piped to a file: no trailing spaces", "piped", ["profile", "t.pth", "--input-size", "32"],
             expect="ok", runner="pipe:cat", check=_clean_lines),
        Case("distill whose stdout closes early (EPIPE) still finishes", "piped",
             _distill("run_epipe", "--epochs", "3", "--epochs-decay", "0", "--log-every", "1"), expect="ok",
             runner="pipe:head -c 1", check=_done("run_epipe"), may_change=("run_epipe/",)),
        Case("Ctrl-C while piped into tee: interrupted, not failed", "piped",
             _distill("run_tee", *LONG), expect="stopped", runner="pipe:tee tee.log", signal=INT, group=True,
             ready="run_tee/status.json", exit_code=130, check=_interrupted("run_tee"),
             may_change=("run_tee/", "tee.log")),
        Case("export after a Ctrl-C in a pipeline names the interruption", "piped",
             _distill("run_tee2", *LONG), expect="stopped", runner="pipe:tee tee2.log", signal=INT, group=True,
             ready="run_tee2/status.json", exit_code=130, check=_export_names_interruption("run_tee2"),
             may_change=("run_tee2/", "tee2.log")),
    ]
