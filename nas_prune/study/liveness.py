"""Worker liveness: heartbeats of running trials, the retry of interrupted ones."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import optuna

MAX_RETRIES = 3  # an interrupted trial is run again at most this many times


def _retry_callback(say: Callable[[str], None], grace: float):
    """Optuna's retry callback, keeping only the parameters of the failed trial.

    The copy Optuna queues carries the failed trial's user attributes; the widths,
    scores and worker of a half-run trial must not pass for the new trial's, so only
    ``one_step`` is kept. Optuna's ``failed_trial`` / ``retry_history`` system attributes
    name the trial it retries.
    """
    import optuna.storages

    base = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if base is None:  # Optuna < 4.9
        base = optuna.storages.RetryFailedTrialCallback

    stale = f"no heartbeat for {grace:.0f} s"

    class Retry(base):
        why = stale

        def __call__(self, study, trial) -> None:
            import copy

            kept = copy.deepcopy(trial)
            kept.user_attrs = {k: v for k, v in trial.user_attrs.items() if k == "one_step"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                super().__call__(study, kept)
                history = [*trial.system_attrs.get("retry_history", []), trial.number]
            what = ("its parameters queued again" if len(history) <= MAX_RETRIES
                    else f"not queued again: interrupted {len(history)} times")
            say(f"trial {trial.number} was interrupted ({self.why}): marked failed, {what}")
            self.why = stale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Retry(max_retry=MAX_RETRIES)


class _Heartbeat:
    """Records a heartbeat of a running trial every ``interval`` seconds (:meth:`StudyStorage.beat`)."""

    def __init__(self, trial: "optuna.trial.Trial", store):  # store: nas_prune.study.storage.StudyStorage
        self.trial = trial
        self.store = store
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop_event.wait(self.store.heartbeat_s):
            with contextlib.suppress(Exception):  # a missed beat is not fatal
                self.store.beat(self.trial)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
