"""The workers' lock of a study storage: ``flock`` on a study file, a server's session lock.

See :mod:`nas_prune.study.storage` for which storage uses which. Every wait for a lock
held by another process is said after :data:`SAY_WAIT_S` and fails after :data:`LOCK_WAIT_S`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from nas_prune.errors import NasPruneError

LOCK_WAIT_S = 60.0  # longest wait for a lock another process holds (workers hold it for milliseconds)
SAY_WAIT_S = 5.0  # a wait longer than this is said (creating the tables on a busy server takes seconds)
_SERVER_LOCK_KEY = 0x6E61737072756E  # pg_advisory_lock key ("nasprun")
_SERVER_LOCK_NAME = "nas-prune-study"  # MySQL GET_LOCK name


class _FileLock:
    """``flock`` on a study file among processes of this machine (module docstring).

    A no-op where ``fcntl`` is missing (Windows: the worker's surplus check still holds).
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        try:
            import fcntl  # noqa: F401
        except ImportError:  # pragma: no cover
            return
        self.fd = os.open(path, os.O_RDONLY)

    @contextlib.contextmanager
    def hold(self, *, say: Callable[[str], None], what: str) -> Iterator[None]:
        if self.fd is None:  # pragma: no cover
            yield
            return
        import fcntl

        _wait_for(lambda: _try_flock(self.fd), say=say, what=f"the study lock on {what}")
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _try_flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path, *, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the workers' lock of an existing study file ``path`` once (see :class:`_FileLock`).

    Only for a process with no SQLite connection to ``path`` open: the descriptor is closed
    at the end.
    """
    lock = _FileLock(path)
    try:
        with lock.hold(say=say or (lambda _line: None), what=str(path)):
            yield
    finally:
        lock.close()


def _wait_for(attempt: Callable[[], bool], *, say: Callable[[str], None], what: str) -> None:
    """Call ``attempt`` until it returns True; say so after :data:`SAY_WAIT_S`, fail after :data:`LOCK_WAIT_S`."""
    start = time.monotonic()
    said = False
    delay = 0.01
    while not attempt():
        waited = time.monotonic() - start
        if waited > LOCK_WAIT_S:
            raise NasPruneError(
                f"{what} has been held by another process for {LOCK_WAIT_S:.0f} s (workers hold it for "
                "milliseconds): a worker may be stuck; stop it, or try again"
            )
        if not said and waited > SAY_WAIT_S:
            said = True
            say(f"waiting for {what}, held by another process (up to {LOCK_WAIT_S:.0f} s)")
        time.sleep(delay)
        delay = min(0.2, delay * 2)


class _ServerLock:
    """A session-level lock on a PostgreSQL (advisory lock) or MySQL (``GET_LOCK``) server.

    It holds across machines; the server releases it when the holding connection dies.
    Its connection comes from a one-connection pool of its own, outside Optuna's sessions.
    """

    def __init__(self, url: str, backend: str, kwargs: dict[str, Any]):
        import sqlalchemy

        self.backend = backend
        self.engine = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, **kwargs)

    @contextlib.contextmanager
    def hold(self, *, say: Callable[[str], None], what: str) -> Iterator[None]:
        from sqlalchemy import text

        pg = self.backend == "postgresql"
        take = text("SELECT pg_try_advisory_lock(:k)" if pg else "SELECT GET_LOCK(:k, 0)")
        give = text("SELECT pg_advisory_unlock(:k)" if pg else "SELECT RELEASE_LOCK(:k)")
        key = {"k": _SERVER_LOCK_KEY if pg else _SERVER_LOCK_NAME}
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            _wait_for(lambda: bool(conn.execute(take, key).scalar()), say=say, what=f"the study lock on {what}")
            try:
                yield
            finally:
                try:
                    conn.execute(give, key)
                except Exception:  # the lock dies with the connection
                    conn.invalidate()
        finally:
            conn.close()
