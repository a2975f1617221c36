"""A study's output folder: which result it holds, the picked student and ``trials.csv``."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.fileio import read_json
from nas_prune.study.records import TrialRecord
from nas_prune.study.locks import file_lock
from nas_prune.study.storage import STORAGE_FILE
from nas_prune.study.variables import scaled_scores
from nas_prune.study.worker import CONFIG_ATTR, _short, _Study, _widths_key

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.search import SearchResult

STUDENT_DIR = "student"  # where studies of earlier versions put the student (still read)
TRIALS_FILE = "trials.csv"
PLOT_FILE = "pareto.png"


def check_out(
    out: Path,
    *,
    name: str,
    config: Mapping[str, Any],
    storage: str | None,
    force: bool,
    inputs: Sequence[str | os.PathLike | None],
    say: Callable[[str], None] | None = None,
) -> None:
    """Check the output folder of a study before it opens its storage.

    ``out`` may be new or empty, or hold this same study (same name and options: it is
    resumed). Any other result there (a one-step student, a study of another target or
    other options, other files) is replaced only with ``force``, and then only what
    nas-prune wrote (:func:`nas_prune.outputs.check_out_dir`).

    Raises:
        NasPruneError: ``out`` cannot be written, holds another result and ``force`` is
            false, or an input would be written over.
    """
    from nas_prune.export import student_files
    from nas_prune.outputs import adopt, check_inputs, check_out_dir, check_replaceable, check_writable

    check_writable(out)
    writes = [STORAGE_FILE] * (storage is None) + [TRIALS_FILE, PLOT_FILE]
    writes += student_files()
    other = held_result(out, name=name, config=config, storage=storage, say=say)
    if other is None:
        check_inputs([out / w for w in writes], inputs)
        db = [STORAGE_FILE + x for x in ("", "-wal", "-shm", "-journal", ".nas-prune.lock")]
        legacy = [*db, TRIALS_FILE, PLOT_FILE, f"{STUDENT_DIR}/*"]  # a study folder of an earlier version
        earlier = adopt(out, legacy, live=db, dry_run=True)
        for w in writes[1:] if storage is None else writes:  # the database is opened, never replaced
            if out / w not in earlier:
                check_replaceable(out / w)
        adopt(out, legacy, live=db)
        return
    if not force:
        raise NasPruneError(f"{out} holds {other}: use --force to replace what nas-prune wrote there, "
                            "or choose another --out")
    check_out_dir(out, force=True, inputs=inputs, writes=writes)


def held_result(out: Path, *, name: str, config: Mapping[str, Any], storage: str | None,
                say: Callable[[str], None] | None = None) -> str | None:
    """None when ``out`` is new, empty or holds study ``name`` run with ``config``; else what it holds."""
    from nas_prune.export import ARCH_FILE
    from nas_prune.locks import LOCK_FILE
    from nas_prune.outputs import MANIFEST

    db = out / STORAGE_FILE
    legacy_lock = db.name + ".nas-prune.lock"  # the lock file of earlier versions
    if not out.is_dir() or not any(p.name not in (MANIFEST, legacy_lock, LOCK_FILE) for p in out.iterdir()):
        return None
    if db.exists():
        if storage is not None:
            return f"a study database ({STORAGE_FILE}) that --storage does not use"
        with file_lock(db, say=say):  # workers starting together: wait until the study is set up
            studies = _studies_in(db)
        if studies is None:
            return f"a {STORAGE_FILE} that is not a readable study database"
        if name in studies:
            stored = studies[name]
            if stored is None:  # created by a worker killed before it recorded the options
                return None
            diff = next((k for k, v in config.items() if stored.get(k) != v), None)
            if diff is None:
                return None
            return (f"study {name!r}, which was created with {diff} = {_short(stored.get(diff))}, "
                    f"this run has {_short(config[diff])}")
        return ("study " + ", ".join(repr(n) for n in studies)) if studies else None
    for doc in (out / ARCH_FILE, out / STUDENT_DIR / ARCH_FILE):
        if doc.is_file():
            try:
                prov = read_json(doc, what="architecture file").get("provenance") or {}
            except (NasPruneError, OSError, ValueError, AttributeError):
                return f"a {doc.name} that cannot be read"
            study = prov.get("study") if isinstance(prov, dict) else None
            if not isinstance(study, dict):
                return "a one-step student"
            return None if study.get("name") == name and storage is not None else f"study {study.get('name')!r}"
    return "files of another result"


def _studies_in(db: Path) -> dict[str, Any] | None:
    """``{study name: its nas-prune config or None}`` of a SQLite study file, read-only (None: unreadable)."""
    import sqlite3

    # A reader of a WAL database leaves -wal / -shm files behind; with no -wal file no process
    # is writing, so the file is read as immutable and nothing is added to the folder.
    flags = "mode=ro" if db.with_name(db.name + "-wal").exists() else "mode=ro&immutable=1"
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?{flags}", uri=True)
        try:
            rows = con.execute(
                "SELECT s.study_name, a.value_json FROM studies s LEFT JOIN study_user_attributes a "
                "ON a.study_id = s.study_id AND a.key = ?", (CONFIG_ATTR,),
            ).fetchall()
        finally:
            con.close()
        return {n: (json.loads(v) if v else None) for n, v in rows}
    except (sqlite3.Error, ValueError):
        return None


def _export(loaded, record: TrialRecord, worker: _Study, out: Path, *, space: str | None,
            front_index: int, study_size: int) -> "SearchResult":
    """Prune with the trial's multipliers through the one-step code path and write the student to ``out``.

    ``arch.json``, ``student.safetensors`` and ``summary.md`` go next to the study's own
    files, so the study folder is a student folder like a one-step result.
    """
    from nas_prune.search import export_result, prune_to_target

    result = prune_to_target(
        loaded, target_macs=worker.target, convention=worker.convention, input_size=worker.size,
        min_channels=worker.min_channels, importance=worker.criterion,
        scores=scaled_scores(worker.scores, worker.groups, record.params),
        round_to=worker.round_to, fill=worker.fill, verify=worker.verify, space=space,
    )
    key = _widths_key(result.plan.widths, worker.layers)
    if key != record.widths:  # the same multipliers give the same plan; a failure is a bug
        raise RuntimeError(f"re-pruning trial {record.number} gave other widths than the trial")
    study = {
        "name": worker.study_name,
        "storage": worker.store.url,
        "trial": record.number,
        "one_step": record.one_step,
        "params": dict(record.params),
        "groups": {k: list(v) for k, v in worker.groups.items()},
        "score": str(worker.spec),
        "objectives": list(worker.objectives),
        "quality_metric": worker.quality_metric,
        "values": {"psnr": record.psnr, "gcka": record.gcka, "latency_ms": record.latency_ms},
        "front_index": front_index,
        "trials": study_size,
        "calibration": worker.calibration,
        "score_size": list(worker.score_size),
    }
    note = (
        f"\nStudy `{worker.study_name}`, trial {record.number}"
        f"{' (the one-step solution)' if record.one_step else ''}: score {worker.spec}, "
        f"PSNR to the teacher {record.psnr:.2f} dB, GCKA {record.gcka:.4f}"
        + (f", latency {record.latency_ms:.1f} ms" if record.latency_ms is not None else "")
        + ". Multipliers: " + ", ".join(f"{k} {v:.3f}" for k, v in record.params.items()) + ".\n"
    )
    export_result(result, out, beside=True, provenance={"study": study}, summary_note=note, inputs=[loaded.path])
    return result


def _write_trials_csv(path: Path, records: Sequence[TrialRecord], groups: Mapping[str, Any]) -> None:
    from nas_prune.fileio import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "one_step", "cached_from", "quality", "psnr_db", "gcka",
                "latency_ms", "macs", "params", *groups, "widths"])
    for r in records:
        w.writerow([
            r.number, r.state, int(r.one_step), "" if r.cached_from is None else r.cached_from,
            _fmt(r.quality), _fmt(r.psnr), _fmt(r.gcka), _fmt(r.latency_ms),
            "" if r.macs is None else r.macs, "" if r.params_count is None else r.params_count,
            *(_fmt(r.params.get(g)) for g in groups), r.widths or "",
        ])
    write_text(path, buf.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
