"""Output folders: nas-prune's record of the files it wrote, ``--force``, and inputs kept safe.

Every file nas-prune writes (through :mod:`nas_prune.fileio`, the student writer, the
training logs, a study's database) is listed in a manifest, ``.nas-prune-manifest.json``,
in the folder that holds it: file name -> size and sha256. The entry is written under a
lock on the folder *before* the file is renamed into place, so a process killed at any
moment never leaves one of its own files unlisted. Files that nas-prune keeps appending to
while it runs (``log.jsonl``, TensorBoard events, a study's SQLite database and journal)
are listed as ``live``: they belong to nas-prune by name, their content changes with
every step.

What this guarantees:

- A file nas-prune did not write is never replaced: writing over an existing file that
  its folder's manifest does not list is an error (:func:`check_replaceable`).
- ``--force`` (:func:`clear`) removes only listed files whose content still matches the
  manifest (live files by name), in the folder and its subfolders. A file edited since,
  and every file nas-prune did not write, stay where they are, and the command says so;
  folders are removed only when nothing but nas-prune's files was in them.
- No command writes over one of its own inputs, nor into an input folder (:func:`check_inputs`;
  same resolved path or the same file through a link).
- A run that fails before it has anything to resume from leaves nothing behind: it removes
  the files it wrote (:func:`snapshot`, :func:`undo`), and only those.
- One writer at a time: every command holds its output folder's lock while it writes
  (:mod:`nas_prune.locks`; the lock file is not an output and is never listed).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.checkpoint import file_sha256

MANIFEST = ".nas-prune-manifest.json"
#: The lock a writer holds on its output folder (:mod:`nas_prune.locks`); never an output.
LOCK_FILE = ".nas-prune-lock"
MANIFEST_FORMAT = "nas-prune-manifest"

__all__ = [
    "MANIFEST",
    "record",
    "adopt",
    "owned",
    "check_replaceable",
    "check_inputs",
    "check_out_files",
    "check_out_dir",
    "clear",
    "ClearReport",
    "snapshot",
    "undo",
]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder`` among processes of this machine (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_manifest(folder: str | os.PathLike) -> dict[str, dict]:
    """``{file name: {"size", "sha256"} or {"live": True}}`` of ``folder`` ({} without a manifest).

    An unreadable manifest counts as none: nothing in the folder is then taken as nas-prune's.
    """
    path = Path(folder) / MANIFEST
    from nas_prune.readers import read_json

    try:
        doc = read_json(path, what="manifest")
    except NasPruneError:  # missing, unreadable, too large or too deep
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def _write_manifest(folder: Path, files: dict[str, dict]) -> None:
    path = folder / MANIFEST
    if not files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    doc = {"format": MANIFEST_FORMAT, "version": 1,
           "note": "files nas-prune wrote in this folder; --force removes only these",
           "files": dict(sorted(files.items()))}
    fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def record(path: str | os.PathLike, *, content: str | os.PathLike | None = None, live: bool = False) -> None:
    """List ``path`` in its folder's manifest as written by nas-prune.

    Args:
        path: the file (it may not exist yet).
        content: the file whose bytes will be at ``path`` (a temporary file about to be
            renamed to ``path``); default ``path`` itself.
        live: a file nas-prune keeps appending to (owned by name, content not checked).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if live:
        entry: dict = {"live": True}
    else:
        src = Path(content) if content is not None else path
        entry = {"size": src.stat().st_size, "sha256": file_sha256(src)}
    with _locked(folder):
        files = read_manifest(folder)
        if files.get(path.name) == entry:
            return
        files[path.name] = entry
        _write_manifest(folder, files)


def forget(path: str | os.PathLike) -> None:
    """Drop ``path`` from its folder's manifest (after nas-prune removed the file itself)."""
    path = Path(path)
    if not (path.parent / MANIFEST).is_file():
        return
    with _locked(path.parent):
        files = read_manifest(path.parent)
        if files.pop(path.name, None) is not None:
            _write_manifest(path.parent, files)


def owned(path: str | os.PathLike) -> bool:
    """Whether ``path`` is listed in its folder's manifest (nas-prune wrote a file there)."""
    path = Path(path)
    return path.name in read_manifest(path.parent)


def _matches(path: Path, entry: dict) -> bool:
    """The file at ``path`` is still what nas-prune wrote (a regular file, same size and sha256)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if entry.get("live"):
        return True
    return st.st_size == entry.get("size") and file_sha256(path) == entry.get("sha256")


def check_replaceable(path: str | os.PathLike) -> None:
    """Fail unless writing ``path`` replaces nothing the user owns.

    Raises:
        NasPruneError: ``path`` is a folder, or an existing file that nas-prune did not write
            (not in its folder's manifest).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        raise NasPruneError(f"cannot write {path}: a folder is in the way")
    if path.is_symlink() or not owned(path):
        raise NasPruneError(
            f"{path} exists and was not written by nas-prune: move it away or choose another output path"
        )


def adopt(folder: str | os.PathLike, patterns: Sequence[str], *, live: Sequence[str] = (),
          dry_run: bool = False) -> list[Path]:
    """Take the files of a run folder written before nas-prune kept manifests as its own.

    Only when no manifest exists anywhere in ``folder`` (a run of an earlier version being
    resumed): the existing files matching ``patterns`` (globs relative to ``folder``) are
    recorded, those matching ``live`` as live. Returns the files recorded (with
    ``dry_run``: the files it would record, recording nothing).
    """
    folder = Path(folder)
    if not folder.is_dir() or any(folder.rglob(MANIFEST)):
        return []
    done: list[Path] = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and not path.is_symlink():
                if not dry_run:
                    record(path, live=any(path.match(str(folder / p)) for p in live))
                done.append(path)
    return done


# ----------------------------------------------------------------------------- inputs


def _input_files(paths: Iterable[str | os.PathLike | None]) -> list[Path]:
    """The input paths, a folder standing for itself and the files directly in it."""
    out: list[Path] = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        out.append(p)
        if p.is_dir():
            with contextlib.suppress(OSError):
                out.extend(c for c in p.iterdir() if c.is_file())
    return out


def _same(a: Path, b: Path) -> bool:
    """Same resolved path, or the same file on disk (hard or symbolic link)."""
    with contextlib.suppress(OSError):
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    return a.resolve() == b.resolve()


def check_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Fail when a file about to be written is one of the command's inputs, or lies in an input folder.

    Writing a new file into an input folder (``export S --out S``, ``distill --out S`` for the
    student folder ``S``) destroys nothing but changes the folder and its manifest, so a recipe
    sees its input changed; it is refused as well.

    Args:
        outputs: files the command will write (or replace).
        inputs: files and folders it reads (a folder's files count as inputs).

    Raises:
        NasPruneError: an output is an input (same path, or the same file via a link), or its
            folder is an input folder (named in the message).
    """
    inputs = [Path(i) for i in inputs if i is not None]
    ins = _input_files(inputs)
    folders = [i for i in inputs if i.is_dir()]
    for o in outputs:
        o = Path(o)
        for i in ins:
            if _same(o, i):
                raise NasPruneError(f"{o} is an input of this command: writing it would destroy it; "
                                    "choose another output path")
        for d in folders:
            if _same(o.parent, d):
                raise NasPruneError(f"{o.parent} is an input of this command (it reads {d}): nas-prune does not "
                                    "write into its inputs; choose another output path")


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def check_writable(path: str | os.PathLike, *, what: str = "output folder") -> None:
    """Fail early when ``path`` (a folder to create or fill) cannot be written.

    Raises:
        NasPruneError: an existing file is in the way (at ``path`` or above it), or the
            nearest existing folder does not take a new file (tried with a temporary file).
    """
    path = Path(path)
    probe = path
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe == path:
            raise NasPruneError(f"{what} {path} is a file, not a folder: choose a folder")
        raise NasPruneError(f"cannot create {what} {path}: {probe} is a file")
    try:  # the nearest existing folder must take a new file (permissions, read-only mounts)
        fd, tmp = tempfile.mkstemp(prefix=".nas-prune-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise NasPruneError(f"cannot write to {what} {path}: {probe} does not take new files "
                            f"({err.strerror or err})") from None


def check_out_files(files: Iterable[str | os.PathLike | None], *, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Fail early, before any work, when one of ``files`` could not be written safely.

    Raises:
        NasPruneError: a file's folder is a file or not writable, the file is an input,
            a folder, or an existing file nas-prune did not write.
    """
    paths = [Path(f) for f in files if f is not None]
    ins = list(inputs)
    check_inputs(paths, ins)
    for path in paths:
        check_writable(path.parent)
        check_replaceable(path)


# ----------------------------------------------------------------------------- --force


@dataclass
class ClearReport:
    """What :func:`clear` did (paths relative to the cleared folder).

    Attributes:
        removed: nas-prune's files that were removed.
        changed: nas-prune's files edited since it wrote them (kept).
        foreign: files nas-prune did not write (kept).
    """

    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return sorted(self.changed + self.foreign)


def _scan(folder: Path, keep: Sequence[Path]) -> tuple[list[tuple[Path, str]], ClearReport]:
    """Files :func:`clear` would remove (path, relative name) and the report of the rest."""
    report = ClearReport()
    remove: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        listed = read_manifest(here)
        for name in sorted(files + [d for d in dirs if (here / d).is_symlink()]):
            if name in (MANIFEST, LOCK_FILE):
                continue
            path = here / name
            rel = str(path.relative_to(folder))
            entry = listed.get(name)
            if entry is None:
                report.foreign.append(rel)
            elif any(_same(path, k) for k in keep) or not _matches(path, entry):
                report.changed.append(rel)
            else:
                remove.append((path, rel))
    return remove, report


def clear(
    folder: str | os.PathLike,
    *,
    keep: Iterable[str | os.PathLike | None] = (),
    in_the_way: Iterable[str] = (),
    say_kept: bool = True,
    dry_run: bool = False,
) -> ClearReport:
    """Remove what nas-prune wrote in ``folder`` (``--force``), keep everything else.

    Removes the files listed in the manifests of ``folder`` and its subfolders whose content
    still matches (live files by name), then the subfolders left empty that held a manifest.
    Files edited since, files nas-prune did not write, and ``keep`` stay in place; a
    :class:`~nas_prune.loop.RunWarning` names them.

    Args:
        keep: paths never removed (the command's inputs).
        in_the_way: names (relative to ``folder``) the command is about to write; a kept
            file at one of them is an error, raised before anything is removed.
        dry_run: only check (``in_the_way``) and report what would be removed.

    Raises:
        NasPruneError: a kept file is in the way of an output.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return ClearReport()
    keep_paths = [Path(k) for k in keep if k is not None]
    remove, report = _scan(folder, keep_paths)
    for name in in_the_way:
        if name in report.changed or name in report.foreign:
            why = "was changed since nas-prune wrote it" if name in report.changed else "was not written by nas-prune"
            raise NasPruneError(f"--force keeps {folder / name}: it {why}; move it away or choose another --out")
    if dry_run:
        report.removed = [rel for _, rel in remove]
        return report
    for path, rel in remove:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        report.removed.append(rel)
    for root, dirs, _files in os.walk(folder, topdown=False):
        here = Path(root)
        listed = read_manifest(here)
        if listed:
            left = {k: v for k, v in listed.items() if os.path.lexists(here / k)}
            with _locked(here):
                _write_manifest(here, left)
        if here != folder and not any(here.iterdir()) and listed:
            here.rmdir()
    if say_kept and report.kept:
        from nas_prune.errors import RunWarning

        shown = ", ".join(report.kept[:5]) + (f" and {len(report.kept) - 5} more" if len(report.kept) > 5 else "")
        parts = []
        if report.foreign:
            parts.append(f"{len(report.foreign)} not written by nas-prune")
        if report.changed:
            parts.append(f"{len(report.changed)} changed since nas-prune wrote them")
        warnings.warn(f"kept {len(report.kept)} file(s) in {folder} ({'; '.join(parts)}): {shown}",
                      RunWarning, stacklevel=2)
    return report


def check_out_dir(
    out: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    writes: Sequence[str] = (),
    what: str = "output folder",
    dry_run: bool = False,
) -> None:
    """Check an output folder that must be new or empty (unless ``force``) before any work.

    Args:
        out: the folder.
        force: the folder may hold an earlier result; nas-prune's own files in it are
            removed (:func:`clear`) by this call.
        inputs: the command's input files and folders: never written over, and with
            ``force`` none may lie inside ``out``.
        writes: file names (relative to ``out``) the command will write.
        dry_run: check only, remove nothing (to fail early, before the work that
            precedes writing).

    Raises:
        NasPruneError: ``out`` is a file or cannot be written, is not empty and ``force``
            is false, holds an input (with ``force``), would be the current folder or one
            above it (with ``force``), or a kept file is in the way of an output.
    """
    out = Path(out)
    check_writable(out, what=what)
    inputs = [Path(i) for i in inputs if i is not None]
    check_inputs([out / w for w in writes], inputs)
    if force and (_inside(Path.cwd(), out) or out.resolve() == Path.home().resolve()):
        raise NasPruneError(f"--force with --out {out}: that is the current folder, one above it or the "
                            "home folder; give a folder of its own")
    if not out.exists() or not any(p.name != LOCK_FILE for p in out.iterdir()):
        return
    if not force:
        raise NasPruneError(
            f"{what} exists and is not empty: {out} (use --force to replace what nas-prune wrote there)"
        )
    for i in inputs:
        if _inside(i, out):
            raise NasPruneError(f"--force with --out {out}: it holds the input {i}; choose another --out")
    clear(out, keep=inputs, in_the_way=writes, dry_run=dry_run)


# ----------------------------------------------------------------------------- undoing a failed run


def snapshot(folder: str | os.PathLike) -> frozenset[str]:
    """Relative paths of every file and folder under ``folder`` now (empty when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return frozenset()
    seen = set()
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        seen.update(str((here / n).relative_to(folder)) for n in (*dirs, *files))
    return frozenset(seen)


def undo(folder: str | os.PathLike, *, before: frozenset[str]) -> list[str]:
    """Remove what nas-prune wrote in ``folder`` since :func:`snapshot` returned ``before``.

    New files listed in their folder's manifest go (live files by name, others only while their
    content is what nas-prune wrote), their manifest entries with them; new folders left empty
    go too. Files that were there before, and files nas-prune did not write, stay. Returns the
    removed files (relative paths).
    """
    folder = Path(folder)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for root, dirs, files in os.walk(folder, topdown=False):
        here = Path(root)
        listed = read_manifest(here)
        gone = []
        for name in files:
            rel = str((here / name).relative_to(folder))
            entry = listed.get(name)
            if rel in before or name in (MANIFEST, LOCK_FILE) or entry is None or not _matches(here / name, entry):
                continue
            with contextlib.suppress(FileNotFoundError):
                (here / name).unlink()
            gone.append(name)
            removed.append(rel)
        if gone:
            with _locked(here):
                _write_manifest(here, {k: v for k, v in read_manifest(here).items() if k not in gone})
        rel_here = str(here.relative_to(folder)) if here != folder else ""
        if here != folder and rel_here not in before:
            with contextlib.suppress(OSError):
                here.rmdir()  # only when empty
    return sorted(removed)
