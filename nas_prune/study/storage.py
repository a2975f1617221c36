"""Optuna storage of a study, the lock among workers, and worker liveness.

**Lock.** Workers serialise "create the study" and "count the trials, then start one"
with one lock per storage, so a study ends with exactly the trials asked for:

- a SQLite database or a journal file: ``flock`` on the file itself (processes of one
  machine; on Linux ``flock`` and SQLite's own POSIX locks do not interact, and no
  companion file is left beside a user's database). The descriptor stays open until the
  storage is closed: closing any descriptor of a SQLite file drops the POSIX locks that
  this process's SQLite connections hold on it (SQLite's "How To Corrupt", 2.2).
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``); MySQL: ``GET_LOCK``.
  Both hold across machines and are released by the server when a worker dies.
- other servers: none (the worker's surplus check still holds the count).

Every wait for a lock held by another process is bounded (:data:`~nas_prune.study.locks.LOCK_WAIT_S`) and said
after :data:`~nas_prune.study.locks.SAY_WAIT_S`; a SQLite file locked by another program fails after the same
bound with a one-line message instead of the driver's 120 s busy timeout.

**Schema.** The first worker to open an empty database creates Optuna's tables. Two
workers doing it at the same instant on PostgreSQL collide (``UniqueViolation`` on
``pg_type_typname_nsp_index``): under the lock above they create them one after the
other; elsewhere a creation that loses such a race is retried.

**Liveness.** RDB storages (SQLite and servers) use Optuna's heartbeat: a running trial
records a heartbeat every ``heartbeat_interval`` s; a trial without one for
``grace_period`` s (measured by the database's clock) is marked failed by the next
worker that looks, and :class:`RetryFailedTrialCallback` (Optuna's; named
``RetryHeartbeatStaleTrialCallback`` since Optuna 4.9) queues its parameters again as a
new trial, at most :data:`~nas_prune.study.liveness.MAX_RETRIES` times. Journal storages have no heartbeat in
Optuna: there the heartbeat is the trial's ``heartbeat`` user attribute (Unix time).
A trial whose worker ran on this host under a pid that is gone is failed at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from nas_prune.errors import NasPruneError
from nas_prune.study import locks
from nas_prune.study.liveness import _retry_callback
from nas_prune.study.locks import _FileLock, _ServerLock

if TYPE_CHECKING:  # pragma: no cover
    import optuna

STORAGE_FILE = "study.db"
HEARTBEAT_S = 10.0
_SCHEMA_ATTEMPTS = 5

# database drivers SQLAlchemy imports, and the package that provides each
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb",
    "oracledb": "oracledb",
    "cx_oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


@dataclass
class StudyStorage:
    """An opened Optuna storage.

    Attributes:
        storage: the Optuna storage object.
        url: the URL as shown to users (password hidden).
        lock_path: the SQLite or journal file whose ``flock`` is the workers' lock, or None.
        grace_s: a running trial without heartbeat for this long is taken as dead.
        heartbeat_s: seconds between two heartbeats of a running trial.
        say: where the storage reports (waits, recovered trials).
    """

    storage: Any
    url: str
    lock_path: Path | None
    grace_s: float = 120.0
    heartbeat_s: float = HEARTBEAT_S
    say: Callable[[str], None] = field(default=lambda _line: None)
    _file: "_FileLock | None" = None
    _server: "_ServerLock | None" = None
    _retry: Any = None

    @property
    def heartbeat_enabled(self) -> bool:
        """Whether Optuna's heartbeat runs (RDB storages); else the ``heartbeat`` user attribute."""
        return getattr(self.storage, "heartbeat_interval", None) is not None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The workers' lock (module docstring); a no-op for servers without one."""
        if self._file is not None:
            with self._file.hold(say=self.say, what=self.url):
                yield
        elif self._server is not None:
            with self._server.hold(say=self.say, what=self.url):
                yield
        else:
            yield

    def beat(self, trial: "optuna.trial.Trial") -> None:
        """Record one heartbeat of ``trial`` (Optuna's, or the user attribute)."""
        if self.heartbeat_enabled:
            self.storage.record_heartbeat(trial._trial_id)
        else:
            trial.set_user_attr("heartbeat", time.time())

    def fail_stale(self, study: "optuna.Study") -> None:
        """Optuna's check: fail trials whose heartbeat stopped, queue them again (RDB storages)."""
        if not self.heartbeat_enabled:
            return
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    def fail_and_retry(self, study: "optuna.Study", number: int, *, why: str) -> bool:
        """Mark running trial ``number`` failed and queue its parameters again.

        Returns False when another worker finished or failed it first.
        """
        from optuna.trial import TrialState

        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        try:
            if not study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return False
        except (ValueError, RuntimeError):  # UpdateFinishedTrialError: another worker got there first
            return False
        self._retry.why = why
        self._retry(study, study._storage.get_trial(trial_id))
        return True

    def close(self) -> None:
        """Close the database connections, then the lock: the last connection to a SQLite
        study checkpoints its write-ahead log and removes the -wal / -shm files, so the
        folder does not change later."""
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                self.storage.remove_session()
            engine.dispose()
        if self._server is not None:
            self._server.engine.dispose()
        if self._file is not None:
            self._file.close()


def open_storage(
    url: str | None,
    *,
    out: str | os.PathLike,
    check_only: bool = False,
    grace_s: float = 120.0,
    say: Callable[[str], None] | None = None,
) -> StudyStorage | None:
    """Open ``url`` (module docstring), default ``sqlite:///<out>/study.db``.

    With ``check_only``, the URL is checked (form, folders, that its database driver
    imports) and nothing is opened or created; returns None. When opening fails,
    nothing it created is left behind (the SQLite file it made).

    Args:
        grace_s: a running trial without heartbeat for this long is taken as dead
            (Optuna's ``grace_period``); heartbeats come every ``min(10, grace_s / 4)`` s.
        say: called with a line when the open waits for another process.

    Raises:
        NasPruneError: a URL that is not an RDB URL or ``journal:PATH``, a missing
            database driver (naming the package to install), a database that cannot be
            reached, a file locked by another process for longer than :data:`~nas_prune.study.locks.LOCK_WAIT_S`.
    """
    say = say or (lambda _line: None)
    heartbeat = max(1, int(min(HEARTBEAT_S, grace_s / 4)))
    grace = max(heartbeat + 1, int(round(grace_s)))
    given = bool(url)
    if url is None or url == "":
        if check_only:
            return None
        path = Path(out) / STORAGE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if url.startswith("journal:"):
        return _open_journal(url, check_only=check_only, grace_s=float(grace), heartbeat_s=heartbeat, say=say)

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
    backend = parsed.get_backend_name()
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.SQLAlchemyError as err:  # an unknown database or driver name
        raise NasPruneError(f"--storage {shown}: cannot open the storage ({_first_line(err)})") from None
    _check_driver(dialect, backend, shown)
    db = None
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise NasPruneError(f"--storage {shown}: an in-memory SQLite database cannot be shared or resumed")
        db = Path(parsed.database)
        if not db.parent.is_dir():
            raise NasPruneError(f"--storage {shown}: folder {db.parent} does not exist")
        if db.is_dir():
            raise NasPruneError(f"--storage {shown}: {db} is a folder; give a database file path")
    if check_only:
        return None
    store = StudyStorage(None, shown, db, grace_s=float(grace), heartbeat_s=float(heartbeat), say=say)
    store._retry = _retry_callback(say, grace)
    if db is not None:
        return _open_sqlite(url, db, store, heartbeat=heartbeat, grace=grace,
                            label=f"--storage {shown}" if given else f"the study database {db}")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend in ("postgresql", "mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable server fails in 10 s
    try:
        if backend == "postgresql" or backend in ("mysql", "mariadb"):
            store._server = _ServerLock(url, backend, kwargs)
        store.storage = _create_rdb(url, kwargs, store, heartbeat=heartbeat, grace=grace)
    except NasPruneError:
        store.close()
        raise
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as err:
        store.close()
        raise NasPruneError(f"--storage {shown}: cannot open the storage ({_first_line(err)})") from None
    return store


def _open_journal(url: str, *, check_only: bool, grace_s: float, heartbeat_s: float,
                  say: Callable[[str], None]) -> StudyStorage | None:
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

    mine = _ours_before(path)
    created = _create_file(path, url)
    store = StudyStorage(None, url, path, grace_s=grace_s, heartbeat_s=heartbeat_s, say=say)
    store._retry = _retry_callback(say, grace_s)
    try:
        store._file = _FileLock(path)
        store.storage = JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        store.close()
        _remove_created(path, created)
        raise NasPruneError(f"--storage {url}: cannot open the journal file ({err})") from None
    _own(mine)
    return store


def _open_sqlite(url: str, db: Path, store: StudyStorage, *, heartbeat: int, grace: int, label: str) -> StudyStorage:
    import sqlalchemy.exc

    mine = _ours_before(db, *(db.with_name(db.name + x) for x in ("-wal", "-shm", "-journal")))
    created = _create_file(db, store.url)
    try:
        _wait_unlocked(db, store, label)
        store._file = _FileLock(db)
        kwargs = {"connect_args": {"timeout": 120}}  # other workers' writes take milliseconds
        store.storage = _create_rdb(url, kwargs, store, heartbeat=heartbeat, grace=grace)
        _sqlite_wal(store.storage.engine)
    except BaseException as err:
        store.close()
        _remove_created(db, created)
        if isinstance(err, NasPruneError):
            raise
        if isinstance(err, (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError, OSError)):
            raise NasPruneError(f"--storage {store.url}: cannot open the storage ({_first_line(err)})") from None
        raise
    _own(mine)
    return store


def _create_rdb(url: str, kwargs: dict[str, Any], store: StudyStorage, *, heartbeat: int, grace: int):
    """``RDBStorage`` with Optuna's heartbeat, its tables created under the workers' lock.

    Without a lock (servers other than PostgreSQL and MySQL), a creation that collides
    with another worker's (a duplicate table, type or row) is tried again.
    """
    import inspect

    import optuna
    import sqlalchemy.exc

    callback = ("heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")
    for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
        try:
            with store.lock(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                    **{callback: store._retry},
                )
        except ImportError as err:  # a driver that imports but lacks a part
            raise NasPruneError(f"--storage {store.url}: database driver not usable ({_first_line(err)})") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == _SCHEMA_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.1, 0.3) * attempt)  # another worker is creating the tables
    raise AssertionError("unreachable")  # pragma: no cover


def _check_driver(dialect, backend: str, shown: str) -> None:
    """Import the database driver of ``dialect``; a missing one names the package to install."""
    try:
        dialect.import_dbapi()
    except ImportError as err:
        driver = getattr(dialect, "driver", "") or ""
        module = getattr(err, "name", None) or driver
        package = _DRIVER_PACKAGES.get(driver, driver)
        names = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB"}
        if driver == "psycopg":
            hint = ("pip install 'nas-prune[postgres]' (psycopg 3), or name an installed driver in the URL, "
                    "e.g. postgresql+psycopg2://")
        elif backend in ("mysql", "mariadb") and driver == "mysqldb":
            hint = (f"pip install mysqlclient, or pip install PyMySQL and write the URL as "
                    f"{backend}+pymysql://...")
        else:
            hint = f"pip install {package}"
        raise NasPruneError(
            f"--storage {shown}: the {names.get(backend, backend)} driver {driver} is not installed "
            f"(no module {module!r}): {hint}"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _create_file(path: Path, shown: str) -> bool:
    """Create ``path`` empty if it does not exist (an empty file is a new SQLite database and
    an empty journal); True when this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise NasPruneError(f"--storage {shown}: cannot create {path} ({err.strerror})") from None
    os.close(fd)
    return True


def _remove_created(path: Path, created: bool) -> None:
    """Remove the study file a failed open created, if nothing was written to it."""
    if created:
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()
                for x in ("-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        path.with_name(path.name + x).unlink()


def _wait_unlocked(db: Path, store: StudyStorage, label: str) -> None:
    """Wait (bounded) until no other process holds a write lock on SQLite file ``db``.

    SQLite would wait its busy timeout (120 s, for workers' short writes) at every
    statement; a program that keeps the file locked is reported here instead.
    """
    import sqlite3

    if db.stat().st_size == 0:
        return
    deadline = time.monotonic() + locks.LOCK_WAIT_S
    said = False
    while True:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=min(1.0, locks.LOCK_WAIT_S))
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                return  # not a lock: opening the storage reports it
        except sqlite3.DatabaseError:
            return
        finally:
            con.close()
        if time.monotonic() > deadline:
            raise NasPruneError(
                f"{label}: the database is locked by another process (waited {locks.LOCK_WAIT_S:.0f} s); "
                "stop that process" + (" or use another --storage" if label.startswith("--storage") else "")
            )
        if not said:
            said = True
            store.say(f"{label}: the database is locked by another process; "
                      f"waiting up to {locks.LOCK_WAIT_S:.0f} s")
        time.sleep(0.2)


def _ours_before(path: Path, *companions: Path) -> list[Path]:
    """The files of a study file ``path`` to list as nas-prune's (live, :mod:`nas_prune.outputs`).

    A database or journal file is nas-prune's when it creates it or already listed it;
    then its -wal / -shm / -journal files are too. A user's existing file is never claimed.
    """
    from nas_prune.outputs import owned

    if not path.exists() or owned(path):
        return [path, *companions]
    return []


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
