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
        Case("second search --trials into a study being written", "locks", [*search_trials, "--out", "study_lock"],
             says="pid", background=[*search_trials, "--out", "study_lock"], ready="study_lock",
             may_change=("study_lock/",)),
        Case("train-teacher into a folder another train-teacher writes", "locks", [*teacher, "--out", "tt_lock"],
             says="pid", background=[*teacher, "--out", "tt_lock"], ready="tt_lock/status.json",
             may_change=("tt_lock/",)),
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
