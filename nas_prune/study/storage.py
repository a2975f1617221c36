"""Optuna storage of a study, the file lock among workers, and worker liveness."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

STORAGE_FILE = "study.db"
HEARTBEAT_S = 10.0


@dataclass
class StudyStorage:
    """An opened Optuna storage.

    Attributes:
        storage: the Optuna storage object.
        url: the URL as shown to users (password hidden).
        lock_path: lock file for workers on this machine (SQLite / journal files), or None.
    """

    storage: Any
    url: str
    lock_path: Path | None

    def close(self) -> None:
        """Close the database connections: the last one to a SQLite study checkpoints its
        write-ahead log and removes the -wal / -shm files, so the folder does not change later."""
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                self.storage.remove_session()
            engine.dispose()


def open_storage(url: str | None, *, out: str | os.PathLike, check_only: bool = False) -> StudyStorage | None:
    """Open ``url`` (module docstring), default ``sqlite:///<out>/study.db``.

    With ``check_only``, the URL is checked (form, folders) and nothing is opened or
    created; returns None.

    Raises:
        NasPruneError: a URL that is not an RDB URL or ``journal:PATH``, a missing
            database driver, a database that cannot be reached.
    """
    import optuna

    if url is None or url == "":
        if check_only:
            return None
        path = Path(out) / STORAGE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not str(path) or str(path) == ".":
            raise NasPruneError("--storage journal:PATH: the path is missing")
        if path.is_dir():
            raise NasPruneError(f"--storage {url}: {path} is a folder; give a journal file path")
        if not path.parent.is_dir():
            raise NasPruneError(f"--storage {url}: folder {path.parent} does not exist")
        if check_only:
            return None
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        lock = path.with_name(path.name + ".nas-prune.lock")
        mine = _ours_before(path, lock)
        try:
            storage = JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise NasPruneError(f"--storage {url}: cannot open the journal file ({err})") from None
        _own(mine)
        return StudyStorage(storage, url, lock)

    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise NasPruneError(
            f"--storage {url!r}: not a database URL; expected e.g. sqlite:///study.db, "
            "postgresql://user:password@host/db or journal:PATH"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    lock = None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise NasPruneError(f"--storage {shown}: an in-memory SQLite database cannot be shared or resumed")
        db = Path(parsed.database)
        if not db.parent.is_dir():
            raise NasPruneError(f"--storage {shown}: folder {db.parent} does not exist")
        lock = db.with_name(db.name + ".nas-prune.lock")
        kwargs = {"connect_args": {"timeout": 120}}
        mine = _ours_before(db, lock, *(db.with_name(db.name + x) for x in ("-wal", "-shm", "-journal")))
    try:
        if check_only:
            parsed.get_dialect()  # an unknown database or a missing driver fails here
            return None
        with _file_lock(lock), warnings.catch_warnings():  # workers starting together create tables once
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if lock is not None:
                _sqlite_wal(storage.engine)
    except ImportError as err:
        raise NasPruneError(f"--storage {shown}: database driver not installed ({err})") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NasPruneError(f"--storage {shown}: cannot open the storage ({first})") from None
    if lock is not None:
        _own(mine)
    return StudyStorage(storage, shown, lock)


def _ours_before(path: Path, *companions: Path) -> list[Path]:
    """The files of a study file ``path`` to list as nas-prune's (live, :mod:`nas_prune.outputs`).

    A database or journal file is nas-prune's when it creates it or already listed it;
    then its lock and journal files are too. A user's existing file is never claimed
    (only the lock file, when nas-prune creates it).
    """
    from nas_prune.outputs import owned

    if not path.exists() or owned(path):
        return [path, *companions]
    lock = companions[0]
    return [] if lock.exists() else [lock]


def _own(paths: list[Path]) -> None:
    from nas_prune.outputs import record

    for p in paths:
        record(p, live=True)


def _sqlite_wal(engine) -> None:
    """WAL journal and ``synchronous=NORMAL`` for a SQLite storage.

    Readers then never block the writer (workers poll the study while others write),
    and a commit no longer waits for the disk: a killed process loses nothing, a
    crash of the machine may lose the last commits. Keep SQLite files on a local disk.
    """
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before the listener reconnect with it


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Exclusive lock among processes of this machine (no-op without a path or fcntl)."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the surplus check still holds
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)



class _Heartbeat:
    """Records ``heartbeat`` (Unix time) on a running trial every ``interval`` seconds."""

    def __init__(self, trial: "optuna.trial.Trial", interval: float):
        self.trial = trial
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop_event.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is not fatal
                self.trial.set_user_attr("heartbeat", time.time())

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
