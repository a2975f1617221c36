"""One lock per output folder: a second writer of a folder is refused while the first runs.

Every command that writes a folder (``distill`` and its ``--resume``, ``train-teacher``,
``run``, ``search``, a study's ``--out``, ``export`` to a folder) holds
``<folder>/.nas-prune-lock`` (:func:`hold`) from its checks to its last write: an ``flock``
on the file, which the kernel releases when the process ends however it ends, and in the
file who holds it (pid, host, command, start time). A second writer stops before any work
with one line naming the holder::

    error: runs/d is in use by nas-prune distill (pid 4242 on gpu1, since 2026-12-01 12:03:05):
    wait for it to finish, or choose another --out

Workers of one Optuna study share their folder by design (the study's storage coordinates
them): they hold the lock *shared*, under the study's name (``shared=``); any other writer,
another study included, is refused while one of them runs.

A lock file left by a process killed outright (SIGKILL, a crash, a lost machine) is no
longer locked: the next writer takes it over with a note naming the old holder (``pid N on
host H, no longer running``). Where the system has no ``flock`` (Windows) the pid is
checked instead (same host). The file is removed on release, and a folder created only to
hold the lock is removed too when nothing was written in it.

A process holds a folder once: a nested :func:`hold` of the same folder (``train-teacher``
around the distillation it runs) is counted, not locked again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from nas_prune.errors import NasPruneError
from nas_prune.outputs import LOCK_FILE  # the folder layout's name for it

__all__ = ["LOCK_FILE", "hold", "holders"]

SHARED_WAIT_S = 5.0  # how long a study worker waits for another one setting up the shared lock

try:  # pragma: no cover - platform
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass
class _Hold:
    fd: int | None
    path: Path
    shared: str | None
    created: list[Path] = field(default_factory=list)
    count: int = 1


_HELD: dict[str, _Hold] = {}


def _me(command: str, shared: str | None) -> dict:
    rec = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
           "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    if shared is not None:
        rec["study"] = shared
    return rec


def _parse(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("pid"), int):
                out.append(rec)
    return out


def holders(folder: str | os.PathLike) -> list[dict]:
    """The holders recorded in ``folder``'s lock file (``[]`` without one), as written, stale or not."""
    try:
        return _parse((Path(folder) / LOCK_FILE).read_text(encoding="utf-8", errors="replace")[:100_000])
    except OSError:
        return []


def _read(fd: int) -> list[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b or sum(map(len, chunks)) > 100_000:
            break
        chunks.append(b)
    return _parse(b"".join(chunks).decode("utf-8", errors="replace"))


def _write(fd: int, records: list[dict]) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))


def _alive(rec: dict) -> bool | None:
    """Whether the holder of ``rec`` still runs: True / False on this host, None on another."""
    if rec.get("host") != socket.gethostname():
        return None
    pid = rec["pid"]
    if pid == os.getpid():
        return False  # an earlier hold of this process, released (a process holds a folder once)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _who(rec: dict) -> str:
    what = f"the study {rec['study']!r} of nas-prune" if rec.get("study") is not None else "nas-prune"
    return (f"{what} {rec.get('command', '?')} (pid {rec['pid']} on {rec.get('host', '?')}, "
            f"since {rec.get('since', '?')})")


def _busy(folder: Path, records: list[dict], option: str) -> NasPruneError:
    live = [r for r in records if _alive(r) is not False] or records
    who = _who(live[-1]) if live else "another nas-prune process"
    return NasPruneError(f"{folder} is in use by {who}: wait for it to finish, or choose another {option}")


def _flock(fd: int, mode: str) -> bool | None:
    """Try to lock ``fd`` (``ex`` / ``sh``) without waiting: True, False (held by another), or None
    where locks do not exist (no fcntl, a file system without them): the pids in the file decide then."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if mode == "ex" else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # pragma: no cover - a file system without locks
        return None
    return True


def _same_file(fd: int, path: Path) -> bool:
    """The locked file is still the one at ``path`` (a releasing holder removes it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _mkdirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders created, outermost first."""
    missing = []
    p = folder
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _stale_note(folder: Path, records: list[dict]) -> None:
    if not records:
        return
    from nas_prune.errors import RunWarning

    old = records[-1]
    gone = "no longer running" if _alive(old) is False else "its lock was released"
    warnings.warn(f"{folder}: took over the lock left by nas-prune {old.get('command', '?')} (pid {old['pid']} "
                  f"on {old.get('host', '?')}, {gone})", RunWarning, stacklevel=5)


def _acquire(folder: Path, command: str, shared: str | None, option: str) -> _Hold:
    from nas_prune.outputs import check_writable

    check_writable(folder, what="output folder")
    try:
        created = _mkdirs(folder)
    except OSError as err:
        raise NasPruneError(f"cannot create {folder}: {err.strerror or err}") from None
    path = folder / LOCK_FILE
    deadline = time.monotonic() + SHARED_WAIT_S
    try:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise NasPruneError(f"cannot write {path}: {err.strerror or err}") from None
            got = _flock(fd, "ex")
            if got is not False:  # nobody holds it (True), or no locks here (None): the pids decide
                if not _same_file(fd, path):
                    os.close(fd)
                    continue
                records = _read(fd)
                alive = [r for r in records if _alive(r) is not False]
                if got is None and alive and not (shared is not None and all(r.get("study") == shared for r in alive)):
                    os.close(fd)  # pragma: no cover - no locks on this system
                    raise _busy(folder, alive, option)
                if got is None and alive:  # pragma: no cover - fellow workers of the study, without locks
                    with open(path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(_me(command, shared)) + "\n")
                    return _Hold(fd, path, shared, created)
                _stale_note(folder, records)
                _write(fd, [_me(command, shared)])
                if shared is not None and got and not _flock(fd, "sh"):
                    os.close(fd)  # lost it while turning it into a shared lock: someone else holds it now
                    continue
                return _Hold(fd, path, shared, created)
            if shared is not None and _flock(fd, "sh"):
                if not _same_file(fd, path):
                    os.close(fd)
                    continue
                records = _read(fd)
                others = [r for r in records if r.get("study") != shared and _alive(r) is not False]
                if others:
                    os.close(fd)
                    raise _busy(folder, others, option)
                with open(path, "a", encoding="utf-8") as fh:  # one line, appended: the others' stay
                    fh.write(json.dumps(_me(command, shared)) + "\n")
                return _Hold(fd, path, shared, created)
            records = _read(fd)
            os.close(fd)
            # a study worker setting the shared lock up holds it exclusively for a moment
            if shared is not None and time.monotonic() < deadline and (not records or all(
                    r.get("study") == shared for r in records)):
                time.sleep(0.05)
                continue
            raise _busy(folder, records, option)
    except BaseException:
        _remove_created(created)
        raise


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break


def _release(h: _Hold) -> None:
    if h.fd is None:
        return
    try:
        got = None if h.shared is None else _flock(h.fd, "ex")
        last = h.shared is None or got is True or (got is None and not any(_alive(r) for r in _read(h.fd)))
        if last and _same_file(h.fd, h.path):
            with contextlib.suppress(OSError):
                h.path.unlink()
        elif not last:  # other workers of the study still hold it: drop this process's line
            with contextlib.suppress(OSError):
                mine = os.getpid(), socket.gethostname()
                _write(h.fd, [r for r in _read(h.fd) if (r.get("pid"), r.get("host")) != mine])
    finally:
        os.close(h.fd)
        h.fd = None
    _remove_created(h.created)


@contextlib.contextmanager
def hold(folder: str | os.PathLike, *, command: str, shared: str | None = None, option: str = "--out",
         enabled: bool = True) -> Iterator[Path]:
    """Hold the lock of the output folder ``folder`` (created if missing) for the block.

    Args:
        command: what writes it (``distill``, ``run``, ...), named to a refused second writer.
        shared: the name of an Optuna study whose workers share the folder; None: exclusive.
        option: the option that chose the folder, for the message (``--out``).
        enabled: False holds nothing (a DDP process other than rank 0: rank 0 holds it).

    Raises:
        NasPruneError: another process holds the folder (the message names its pid and host),
            or the folder cannot be created.
    """
    folder = Path(folder)
    if not enabled:
        yield folder
        return
    key = str(folder.resolve())
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
        try:
            yield folder
        finally:
            held.count -= 1
        return
    h = _acquire(folder, command, shared, option)
    _HELD[key] = h
    try:
        yield folder
    finally:
        del _HELD[key]
        _release(h)
