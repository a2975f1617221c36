"""Stopping a long command cleanly: one handler for SIGINT, SIGTERM and SIGHUP.

Ctrl-C sends SIGINT; ``docker stop``, systemd, Slurm and Kubernetes send SIGTERM (and SIGKILL
some seconds later); closing the terminal sends SIGHUP. All three are handled alike:

- While a command runs (:func:`handle_signals`, entered by every CLI command), each of them
  raises :class:`Interrupted`, a ``KeyboardInterrupt``: every clean-up path written for
  Ctrl-C (``status.json`` / ``stage.json`` say ``interrupted``, a trial of a study is queued
  again, the folder lock is released) runs for SIGTERM and SIGHUP too.
- Inside a training loop (:func:`deferred`), the first signal only asks the loop to stop
  after the current step; the loop then writes its checkpoint at that step (also when the
  signal arrives while a checkpoint is being written: the write finishes first), so
  ``--resume`` continues exactly. A second signal stops at once, keeping the last
  checkpoint on disk. A signal after the loop's last look (while the finished run writes
  its result) lets the writes finish, then stops the command.
- The command exits with ``128 + the signal's number``, as a shell reports a process killed
  by it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (:func:`exit_code`).

A signal that this process ignores when the handler is installed (``nohup`` ignores SIGHUP,
a shell's background job may ignore SIGINT) stays ignored. Handlers exist only in the main
thread; elsewhere (a library user's worker thread) nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Interrupted", "Stop", "handle_signals", "deferred", "exit_code", "signal_name", "SIGNALS"]

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def signal_name(signum: int | None) -> str:
    """``15`` -> ``"SIGTERM"`` (None: SIGINT, which a KeyboardInterrupt stands for)."""
    signum = signal.SIGINT if signum is None else signum
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int | None) -> int:
    """The exit status of a command stopped by ``signum``: 128 + its number (None: SIGINT, 130)."""
    return 128 + int(signal.SIGINT if signum is None else signum)


class Interrupted(KeyboardInterrupt):
    """A stop asked by a signal (SIGINT, SIGTERM or SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def signum_of(err: BaseException) -> int:
    """The signal a KeyboardInterrupt stands for (a plain one, e.g. raised by a hook: SIGINT)."""
    return getattr(err, "signum", int(signal.SIGINT))


class Stop:
    """A stop request of a training loop: ``requested`` after the first signal, ``signum`` its number.

    Reading ``requested`` while it is True counts as acting on the request. A request that
    arrives after the loop's last look (during the final checkpoint or the write of the
    result) was never acted on: :func:`deferred` raises it when its block ends, so the
    command stops (a ``run`` does not go on to its next stage).
    """

    def __init__(self) -> None:
        self._requested = False
        self._seen = False
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        if self._requested:
            self._seen = True
        return self._requested

    @property
    def unseen(self) -> bool:
        """A stop was requested and nobody has read ``requested`` since."""
        return self._requested and not self._seen

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to stop after the current step (a hook raising KeyboardInterrupt does this)."""
        if not self._requested:
            self._requested, self.signum = True, int(signum)


_previous: dict[int, object] = {}
_users = 0
_scopes: list[Stop] = []


def _handler(signum, frame) -> None:
    if _scopes and not _scopes[-1]._requested:
        _scopes[-1].request(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Install the handler for the block (nested blocks share it; the previous handlers come back after)."""
    global _users
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _users == 0:
        for s in SIGNALS:
            before = signal.getsignal(s)
            if before is signal.SIG_IGN:  # nohup, a background job: leave it ignored
                continue
            _previous[s] = before
            signal.signal(s, _handler)
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            for s, before in list(_previous.items()):
                signal.signal(s, before if before is not None else signal.SIG_DFL)
            _previous.clear()


@contextlib.contextmanager
def deferred() -> Iterator[Stop]:
    """A block where the first signal only sets ``stop.requested`` (the loop stops after its step).

    A second signal raises :class:`Interrupted` at once. A request the block never read
    (:attr:`Stop.unseen`: it came after the last look) is raised as :class:`Interrupted` when
    the block ends without an error. Installs the handler if no command did.
    """
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    with handle_signals():
        _scopes.append(stop)
        try:
            yield stop
        finally:
            _scopes.remove(stop)
        if stop.unseen:  # only after a block that ended without an error (an error propagates past here)
            raise Interrupted(stop.signum)
