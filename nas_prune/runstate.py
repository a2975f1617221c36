"""Whether a training run's folder holds a finished result.

A training run (``distill``, ``train-teacher``) keeps ``status.json`` in its folder::

    {"command": "distill", "state": "running" | "interrupted" | "failed" | "done",
     "step": 120, "end_step": 400, "outputs": ["final"], "reason": "SIGTERM"}

``running`` is written when training starts, the others when it stops: ``done`` when it
reached its last step (or ``--max-steps``), ``interrupted`` on Ctrl-C, SIGTERM or SIGHUP (a
checkpoint is kept; ``--resume`` continues; ``reason`` names the signal), ``failed`` on an
error (``reason`` is its one-line message). A run killed outright (SIGKILL) stays ``running``.
The run's results (``outputs``: ``final/`` of a distillation, the teacher files of
``train-teacher``) are written only when it is done, and
:func:`check_finished` refuses them while the run is not, so an earlier result left in
the folder is never taken for the result of the unfinished run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nas_prune.errors import NasPruneError

STATUS_FILE = "status.json"
STATES = ("running", "interrupted", "failed", "done")


def write_status(out: str | os.PathLike, *, command: str, state: str, step: int, end_step: int,
                 outputs: Sequence[str], reason: str | None = None) -> None:
    """Record the state of the run in ``out`` (atomic); ``reason``: the signal or the error that stopped it."""
    from nas_prune.fileio import write_json

    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    doc = {"command": command, "state": state, "step": int(step), "end_step": int(end_step), "outputs": list(outputs)}
    if reason:
        doc["reason"] = " ".join(str(reason).split())[:300]
    write_json(Path(out) / STATUS_FILE, doc)


def stop_reason(err: BaseException) -> tuple[str, str]:
    """``(state, reason)`` of a run stopped by ``err``: ``("interrupted", "SIGTERM")`` for a signal
    (Ctrl-C is SIGINT), else ``("failed", "<error type>: <message>")``."""
    if isinstance(err, KeyboardInterrupt):
        from nas_prune.interrupt import signal_name, signum_of

        return "interrupted", signal_name(signum_of(err))
    text = " ".join(str(err).split())
    return "failed", (text if isinstance(err, NasPruneError) else f"{type(err).__name__}: {text}".rstrip(": "))


class RunStatus:
    """Writes one run's ``status.json`` (only where ``enabled``: the main process of a DDP run)."""

    def __init__(self, out: str | os.PathLike, command: str, outputs: Sequence[str], *, end_step: int,
                 enabled: bool = True):
        self.out, self.command, self.outputs, self.end_step, self.enabled = out, command, list(outputs), end_step, enabled

    def write(self, state: str, step: int, reason: str | None = None) -> None:
        if self.enabled:
            write_status(self.out, command=self.command, state=state, step=step, end_step=self.end_step,
                         outputs=self.outputs, reason=reason)

    def stopped(self, err: BaseException, step: int) -> None:
        """Record a run stopped by ``err`` (:func:`stop_reason`); never raises over ``err``."""
        state, reason = stop_reason(err)
        try:
            self.write(state, step, reason)
        except Exception:  # noqa: BLE001 - e.g. a full disk: the error being raised says more
            pass


def read_status(folder: str | os.PathLike) -> dict | None:
    """The status of the run in ``folder``, or None when it has none (or it is unreadable)."""
    path = Path(folder) / STATUS_FILE
    from nas_prune.fileio import read_json

    try:
        doc = read_json(path, what="status file")
    except NasPruneError:
        return None
    return doc if isinstance(doc, dict) and doc.get("state") in STATES else None


def check_finished(path: str | os.PathLike) -> None:
    """Raise NasPruneError when ``path`` is a result of a run that has not finished.

    ``path`` may be the result itself (``RUN/final``, ``RUN/teacher.safetensors``) or a file
    inside it (``RUN/final/arch.json``); it need not exist. Anything else passes.
    """
    p = Path(path)
    for result, run in ((p, p.parent), (p.parent, p.parent.parent)):
        status = read_status(run)
        if status is None or result.name not in status.get("outputs", []):
            continue
        if status["state"] == "done":
            return
        command = status.get("command", "distill")
        how = ("nas-prune run RECIPE again" if (run / "stage.json").is_file()
               else f"nas-prune {command} --resume --out {run}" + (" (with the same --teacher, --student and --data)"
                                                                     if command == "distill" else " --data DIR"))
        reason = status.get("reason")
        what = {"interrupted": f"was interrupted{f' by {reason}' if reason else ''}",
                "failed": f"stopped on an error{f' ({reason})' if reason else ''}"}.get(
            status["state"], "has not finished (it was killed, or is still running)")
        raise NasPruneError(
            f"{result} is not a finished result: the {command} run in {run} {what} at step {status.get('step')} "
            f"of {status.get('end_step')}; finish it with {how}"
        )


def run_folder_hint(folder: str | os.PathLike) -> str | None:
    """``"<folder> is a training run folder: give its result (<folder>/final)"`` when ``folder`` is
    the folder of a training run (it holds ``status.json``), else None; commands say it where a
    student folder was expected."""
    status = read_status(folder)
    if status is None or not status.get("outputs"):
        return None
    return f"{folder} is a training run folder: give its result ({Path(folder) / status['outputs'][0]})"
