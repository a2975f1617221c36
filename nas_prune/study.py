"""Optuna search around the one-step solution, at the same MACs budget.

One-step pruning (CAT) keeps every channel whose importance score passes one global
threshold. A study reshapes that ranking: each trial multiplies the scores of whole
groups of layers by factors Optuna proposes, then runs the exact threshold search
and fill pass of :func:`nas_prune.plan.plan_for_target` on the rescaled scores, so
**every candidate meets the MACs target** (none is rejected for its budget). Each
candidate is sliced from the teacher and scored (:mod:`nas_prune.scores`).

Search variables (one multiplier per group, log-uniform in ``multiplier_range``,
default [0.5, 2], both ends included):

=============  ==============================================================
``stem``       ``stem.0``, ``stem.1`` (the 7x7 conv and the first stride-2 conv)
``stream``     ``stem.2``: its channels are the residual stream every block reads
               and writes, so it drives the cost of every block
``head``       ``head.0``, ``head.1`` (the ConvTransposes)
``res_kK``     every block's res branch of kernel size K (one group per size)
``dw_kK``      every block's dw branch of kernel size K (one group per size)
``early``      the branches of the first third of the blocks (``numpy.array_split``
``middle``     of the block indices in three; empty thirds, e.g. with 2 blocks,
``late``       have no variable)
=============  ==============================================================

A branch's scores are multiplied by its kernel-size group's and its depth group's
factors; stem and head layers by their group's. Importance scores are >= 0 (|gamma|,
normalised L1, mean activation), so a factor above 1 moves a group's channels up the
global ranking. Because a factor scales a whole layer, the order of channels inside
a layer never changes: equal width vectors are equal students (same kept indices),
and a candidate is scored once (the ``widths`` user attribute is the cache key; the
cache lives in the study, so resumed runs and other workers use it too). Trial 0 is
the one-step solution: all factors 1 (enqueued when the study is created).

Objectives: ``quality`` (maximised; PSNR in dB of the student's output against the
teacher's on calibration images, or mean GCKA with ``quality_metric="gcka"``) and
optionally ``latency`` (minimised; median milliseconds of the student's forward on
the machine that runs the trial). With one objective the sampler is TPE (and
``finetune:`` scores use Optuna's MedianPruner: trial pruning); with two it is
NSGA-II and the result is the Pareto front. Optuna cannot prune trials of
multi-objective studies, so ``finetune:`` trials then always run all their steps.

Storage: by default ``<out>/study.db`` (SQLite), so re-running the same command
resumes the study. ``storage`` takes any Optuna RDB URL (``sqlite:///path``,
``postgresql://user:pw@host/db``, ``mysql+pymysql://...``) or ``journal:PATH`` (an
Optuna journal file, for shared file systems without a database). Several worker
processes, on one machine or many, can run the same command on one storage:

- ``trials`` counts finished trials (complete or pruned) in the study, over all
  workers and runs. A worker starts a trial only while finished + running trials
  are fewer than ``trials``, and waits while others run the last ones, so the
  study ends with exactly ``trials`` finished trials. On one machine the check and
  the trial creation hold a file lock next to a SQLite or journal file; with a
  database server, a trial created in a race beyond ``trials`` is marked failed
  with the user attribute ``surplus`` before anything runs.
- Each running trial records its worker (host, pid) and a heartbeat every 10 s. A
  trial whose worker died (a dead pid on this host, or no heartbeat for
  ``grace_s`` seconds) is marked failed and its parameters are enqueued again, so
  killing a worker loses no trial and re-running never repeats a finished one.
- SQLite files are opened in WAL mode with ``synchronous=NORMAL`` (readers do not
  block the writer; a killed process loses nothing, a machine crash may lose the
  last commits). Keep them on a local disk; across machines use a database server.
- Workers' samplers are seeded with ``seed`` plus the number of trials that exist
  when they sample, so workers propose different candidates and one worker's run
  is reproducible.

Inspect a study with ``optuna-dashboard sqlite:///<out>/study.db`` (a separate
package); trial user attributes hold the widths, MACs, PSNR, GCKA, latency and the
trial whose score a cached trial reused.

Output folder: ``study.db`` (default storage), ``trials.csv`` (every trial),
``pareto.png`` (two objectives; needs matplotlib, the ``plot`` extra) and
``student/`` (``arch.json``, ``student.safetensors``, ``summary.md``: the picked
trial, exported like a one-step result, with the trial's parameters and scores
under ``provenance.study``; weights are the teacher's, sliced, also for
``finetune:`` scores).

Example::

    from nas_prune.study import run_study
    result = run_study(teacher="latest_net_G.pth", target_macs="2.6G", convention="paper",
                       trials=40, objectives=("quality", "latency"))
    result.front, result.picked.number, result.out
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import socket
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.macs import format_macs, parse_input_size

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import optuna
    import torch

    from nas_prune.search import SearchResult

__all__ = [
    "OBJECTIVES",
    "search_groups",
    "scaled_scores",
    "parse_objectives",
    "study_requested",
    "open_storage",
    "TrialRecord",
    "StudyResult",
    "run_study",
    "pareto_front",
    "plot_pareto",
    "render_study",
]

OBJECTIVES = ("quality", "latency")
DEFAULT_RANGE = (0.5, 2.0)
STORAGE_FILE = "study.db"
STUDENT_DIR = "student"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "pareto.png"
CONFIG_ATTR = "nas_prune"
HEARTBEAT_S = 10.0


# ----------------------------------------------------------------------------- search variables


def search_groups(arch: Arch) -> dict[str, tuple[str, ...]]:
    """``{variable name: prunable layer names}`` for ``arch`` (module docstring).

    Groups that would hold no layer (a kernel size no block has, an empty third)
    are left out. Every prunable layer is in exactly one of ``stem``/``stream``/
    ``head``/``res_kK``/``dw_kK``; branch layers are also in one depth group.
    """
    import numpy as np

    from nas_prune.plan import prunable_layers

    layers = prunable_layers(arch)
    groups: dict[str, list[str]] = {"stem": [], "stream": [], "head": []}
    for layer in layers:
        if layer.kind == "stem":
            groups["stream" if layer.index == 2 else "stem"].append(layer.name)
        elif layer.kind == "head":
            groups["head"].append(layer.name)
    for kind, sizes in (("res", arch.res_kernel_sizes), ("dw", arch.dw_kernel_sizes)):
        for j, k in enumerate(sizes):
            groups[f"{kind}_k{k}"] = [
                l.name for l in layers if l.kind == kind and l.index == j
            ]
    thirds = np.array_split(np.arange(arch.n_blocks), 3)
    for name, blocks in zip(("early", "middle", "late"), thirds):
        members = set(int(b) for b in blocks)
        groups[name] = [l.name for l in layers if l.block is not None and l.block in members]
    return {name: tuple(names) for name, names in groups.items() if names}


def layer_multipliers(groups: Mapping[str, Sequence[str]], params: Mapping[str, float]) -> dict[str, float]:
    """Product of the factors of the groups each layer belongs to."""
    out: dict[str, float] = {}
    for name, layers in groups.items():
        factor = float(params.get(name, 1.0))
        for layer in layers:
            out[layer] = out.get(layer, 1.0) * factor
    return out


def scaled_scores(
    scores: Mapping[str, Any], groups: Mapping[str, Sequence[str]], params: Mapping[str, float]
) -> dict[str, "np.ndarray"]:
    """Importance scores with each layer's multiplier applied (float64 numpy arrays)."""
    import numpy as np

    mult = layer_multipliers(groups, params)
    out = {}
    for name, value in scores.items():
        arr = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value, float)
        out[name] = arr * mult.get(name, 1.0)
    return out


def parse_objectives(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"quality"`` or ``"quality,latency"`` (or a sequence) -> validated tuple.

    Raises:
        NasPruneError: unknown or repeated objective, or no ``quality``.
    """
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    for item in items:
        if item not in OBJECTIVES:
            raise NasPruneError(f"--objectives: unknown objective {item!r}: choose quality or quality,latency")
    if len(set(items)) != len(items):
        raise NasPruneError(f"--objectives: {','.join(items)} repeats an objective")
    if not items or items[0] != "quality":
        raise NasPruneError("--objectives: expected quality or quality,latency")
    return tuple(items)


def study_requested(
    *,
    trials: int | None,
    score: str = "zero-shot",
    objectives: str | Sequence[str] = ("quality",),
    score_size: int | str | tuple[int, int] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    pick: int | None = None,
) -> bool:
    """Whether ``nas-prune search`` runs an Optuna study: ``trials`` is set.

    The other arguments are the options only a study reads, at their defaults unless
    the user set them.

    Raises:
        NasPruneError: a study option is set without ``trials`` (naming the option).
    """
    if trials is not None:
        return True
    items = [v.strip() for v in (objectives.split(",") if isinstance(objectives, str) else objectives)]
    study_only = {
        "--score": str(score).strip() != "zero-shot",
        "--objectives": items != ["quality"],
        "--score-size": score_size is not None,
        "--storage": storage is not None,
        "--study-name": study_name is not None,
        "--pick": pick is not None,
    }
    for option, used in study_only.items():
        if used:
            raise NasPruneError(f"{option} needs --trials N")
    return False


# ----------------------------------------------------------------------------- storage


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


def open_storage(url: str | None, *, out: str | os.PathLike) -> StudyStorage:
    """Open ``url`` (module docstring), default ``sqlite:///<out>/study.db``.

    Raises:
        NasPruneError: a URL that is not an RDB URL or ``journal:PATH``, a missing
            database driver, a database that cannot be reached.
    """
    import optuna

    if url is None or url == "":
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
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            storage = JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise NasPruneError(f"--storage {url}: cannot open the journal file ({err})") from None
        return StudyStorage(storage, url, path.with_name(path.name + ".nas-prune.lock"))

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
    try:
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
    return StudyStorage(storage, shown, lock)


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


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as nas-prune reads it back.

    Attributes:
        number: Optuna trial number.
        state: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``.
        params: ``{group: multiplier}``.
        quality: the quality objective (dB for PSNR), or None.
        psnr / gcka: fidelity numbers (None if not scored).
        latency_ms: median forward latency, or None when not measured.
        macs: student MACs in the study's convention.
        params_count: student parameters.
        widths: the cache key (comma-joined widths in prunable-layer order).
        one_step: all multipliers are 1 (CAT's one-step solution).
        cached_from: the trial whose score this one reused, or None.
        summary: :meth:`Arch.summary` of the student.
    """

    number: int
    state: str
    params: dict[str, float]
    quality: float | None
    psnr: float | None
    gcka: float | None
    latency_ms: float | None
    macs: int | None
    params_count: int | None
    widths: str | None
    one_step: bool
    cached_from: int | None
    summary: str | None

    @classmethod
    def from_trial(cls, trial: "optuna.trial.FrozenTrial") -> "TrialRecord":
        ua = trial.user_attrs
        values = trial.values or []
        return cls(
            number=trial.number,
            state=trial.state.name,
            params={k: float(v) for k, v in trial.params.items()},
            quality=float(values[0]) if values else None,
            psnr=ua.get("psnr"),
            gcka=ua.get("gcka"),
            latency_ms=float(values[1]) if len(values) > 1 else ua.get("latency_ms"),
            macs=ua.get("macs"),
            params_count=ua.get("params"),
            widths=ua.get("widths"),
            one_step=bool(trial.params) and all(float(v) == 1.0 for v in trial.params.values()),
            cached_from=ua.get("cached_from"),
            summary=ua.get("summary"),
        )


def pareto_front(records: Sequence[TrialRecord], *, objectives: Sequence[str]) -> list[TrialRecord]:
    """Complete trials not dominated by another, one per student, in pick order.

    One objective: every distinct student ranked by quality (best first). Two: the
    non-dominated students (higher quality, lower latency) sorted by latency. A
    student reached by several trials is represented by the first of them.
    """
    seen: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.state == "COMPLETE" and r.quality is not None and r.widths not in seen:
            seen[r.widths] = r
    unique = list(seen.values())
    if len(objectives) == 1:
        return sorted(unique, key=lambda r: (-r.quality, r.number))
    front = [
        r for r in unique
        if not any(
            o.quality >= r.quality and o.latency_ms <= r.latency_ms
            and (o.quality > r.quality or o.latency_ms < r.latency_ms)
            for o in unique
        )
    ]
    return sorted(front, key=lambda r: (r.latency_ms, -r.quality, r.number))


@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes:
        study_name / storage: the Optuna study and its storage URL (password hidden).
        objectives: ``("quality",)`` or ``("quality", "latency")``.
        score: ``zero-shot`` or ``finetune:STEPS``.
        quality_metric: ``psnr`` or ``gcka``.
        calibration: where the calibration images came from.
        trials: every trial of the study (all workers), by number.
        front: the pick list (:func:`pareto_front`); ``picked`` is ``front[pick]``.
        pick: index of the exported trial in ``front``.
        one_step: the one-step trial, if it finished.
        evaluated: numbers of the trials this process scored (not cached, not reused).
        ran: numbers of the trials this process ran (evaluated or cached).
        export: the exported student (a :class:`~nas_prune.search.SearchResult`).
        out: the output folder; ``student_dir`` the exported student folder.
        plot: the Pareto PNG, when written.
        latency_device: where latencies were measured (this process's setting).
        notes: remarks worth printing (fallbacks, recovered trials).
    """

    study_name: str
    storage: str
    objectives: tuple[str, ...]
    score: str
    quality_metric: str
    calibration: str
    trials: list[TrialRecord]
    front: list[TrialRecord]
    pick: int
    one_step: TrialRecord | None
    evaluated: list[int]
    ran: list[int]
    export: "SearchResult"
    out: Path
    student_dir: Path
    plot: Path | None
    target_macs: int
    convention: str
    latency_device: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def picked(self) -> TrialRecord:
        return self.front[self.pick]

    def to_json(self) -> dict[str, Any]:
        """Machine-readable summary (what ``--json`` prints)."""

        def rec(r: TrialRecord | None) -> dict[str, Any] | None:
            return None if r is None else {
                "number": r.number, "state": r.state, "params": r.params, "quality": r.quality,
                "psnr": r.psnr, "gcka": r.gcka, "latency_ms": r.latency_ms, "macs": r.macs,
                "params_count": r.params_count, "one_step": r.one_step, "cached_from": r.cached_from,
            }

        return {
            "study": self.study_name,
            "storage": self.storage,
            "objectives": list(self.objectives),
            "score": self.score,
            "quality_metric": self.quality_metric,
            "calibration": self.calibration,
            "target": {"macs": self.target_macs, "convention": self.convention},
            "finished": sum(r.state in ("COMPLETE", "PRUNED") for r in self.trials),
            "front": [rec(r) for r in self.front],
            "pick": self.pick,
            "picked": rec(self.picked),
            "one_step": rec(self.one_step),
            "evaluated_here": self.evaluated,
            "out": str(self.out),
            "student": str(self.student_dir),
            "plot": str(self.plot) if self.plot else None,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- the study


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


def _widths_key(widths: Mapping[str, int], layers: Sequence[Any]) -> str:
    return ",".join(str(int(widths[l.name])) for l in layers)


class _Study:
    """State of one worker: teacher, base scores, probe, storage; :meth:`run` is the loop."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    # -- setup ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that makes two runs' scores comparable; stored in the study."""
        return json.loads(json.dumps({
            "version": 1,
            "teacher_sha256": self.teacher.sha256,
            "target_macs": self.target,
            "convention": self.convention,
            "input_size": list(self.size),
            "min_channels": self.min_channels,
            "round_to": self.round_to,
            "fill": self.fill,
            "criterion": self.criterion,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "multiplier_range": list(self.multiplier_range),
            "score": str(self.spec),
            "quality_metric": self.quality_metric,
            "objectives": list(self.objectives),
            "score_size": list(self.score_size),
            "calibration": self.calibration,
        }))

    def open_study(self) -> "optuna.Study":
        import optuna

        directions = ["maximize"] + (["minimize"] if "latency" in self.objectives else [])
        config = self.config()
        with _file_lock(self.store.lock_path):
            try:
                study = optuna.create_study(
                    storage=self.store.storage, study_name=self.study_name, directions=directions
                )
                study.enqueue_trial({g: 1.0 for g in self.groups}, user_attrs={"one_step": True})
                study.set_user_attr(CONFIG_ATTR, config)
                self.say(f"study {self.study_name!r} created in {self.store.url}")
                return study
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=self.study_name, storage=self.store.storage)
        deadline = time.monotonic() + 60
        while CONFIG_ATTR not in study.user_attrs:  # its creator is still setting it up
            if time.monotonic() > deadline:
                raise NasPruneError(
                    f"study {self.study_name!r} in {self.store.url} was not created by nas-prune "
                    "search: choose another --study-name"
                )
            time.sleep(0.5)
        stored = study.user_attrs[CONFIG_ATTR]
        for key, value in config.items():
            if stored.get(key) != value:
                old = stored.get(key)
                raise NasPruneError(
                    f"study {self.study_name!r} in {self.store.url} was created with {key} = "
                    f"{_short(old)}, this run has {_short(value)}: use the same options or another --study-name"
                )
        if [d.name.lower() for d in study.directions] != directions:
            raise NasPruneError(f"study {self.study_name!r}: its objectives differ from --objectives")
        return study

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        low, high = self.multiplier_range
        return {g: FloatDistribution(low, high, log=True) for g in self.groups}

    def sampler(self, n_existing: int):
        import optuna

        seed = None if self.seed is None else self.seed + n_existing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if len(self.objectives) == 2:
                pop = max(4, min(50, self.n_trials // 5))
                return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True,
                n_startup_trials=max(1, min(10, self.n_trials // 3)),
            )

    # -- the worker loop ------------------------------------------------------------------

    def recover_stale(self, study: "optuna.Study") -> None:
        """Fail running trials whose worker is gone and enqueue their parameters again."""
        from optuna.trial import TrialState

        now = time.time()
        host = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker") or {}
            beat = t.user_attrs.get("heartbeat")
            if beat is None:
                beat = t.datetime_start.timestamp() if t.datetime_start else now
            mine_dead = (
                worker.get("host") == host and worker.get("pid") != os.getpid()
                and not _pid_alive(int(worker.get("pid", -1)))
            )
            if not (mine_dead or now - beat > self.grace_s):
                continue
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another worker got there first
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **(
                {"one_step": True} if t.user_attrs.get("one_step") else {})})
            why = "its worker died" if mine_dead else f"no heartbeat for {now - beat:.0f} s"
            self.say(f"trial {t.number} was interrupted ({why}): marked failed, its parameters queued again")

    def run(self, study: "optuna.Study") -> None:
        from optuna.trial import TrialState

        finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
        distributions = self.distributions()
        announced = False
        while True:
            trial = None
            with _file_lock(self.store.lock_path):
                self.recover_stale(study)
                trials = study.get_trials(deepcopy=False)
                finished = sum(t.state in finished_states for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                if not announced:
                    announced = True
                    if finished:
                        self.say(f"resuming: {finished} of {self.n_trials} trials already finished")
                if finished >= self.n_trials:
                    return
                if finished + running < self.n_trials:
                    study.sampler = self.sampler(len(trials))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        trial = study.ask(distributions)
                    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
                    trial.set_user_attr("heartbeat", time.time())
            if trial is None:  # other workers run the last trials; wait for them (or their death)
                time.sleep(self.poll_s)
                continue
            earlier = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            if sum(t.number < trial.number for t in earlier) >= self.n_trials:
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            self.run_trial(study, trial)

    def run_trial(self, study: "optuna.Study", trial: "optuna.trial.Trial") -> None:
        import optuna
        from optuna.trial import TrialState

        try:
            with _Heartbeat(trial, self.heartbeat_s):
                values = self.evaluate(study, trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            self.ran.append(trial.number)
            return
        except BaseException as err:
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL)
                if isinstance(err, KeyboardInterrupt):
                    # the candidate itself is fine: queue it again for the next run
                    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        study.tell(trial, values)
        self.ran.append(trial.number)

    # -- one trial ------------------------------------------------------------------------

    def evaluate(self, study: "optuna.Study", trial: "optuna.trial.Trial") -> list[float]:
        import optuna
        import torch

        from nas_prune.apply import build_student
        from nas_prune.macs import count_macs, count_params
        from nas_prune.plan import plan_for_target

        params = dict(trial.params)
        plan = plan_for_target(
            scaled_scores(self.scores, self.groups, params), self.teacher.arch,
            target_macs=self.target, convention=self.convention, input_size=self.size,
            min_channels=self.min_channels, round_to=self.round_to, fill=self.fill,
        )
        student_arch = plan.student_arch()
        macs = count_macs(student_arch, input_size=self.size, convention=self.convention)
        if macs > self.target:  # plan_for_target guarantees it; a failure is a bug
            raise RuntimeError(f"trial {trial.number}: {macs:,} MACs > target {self.target:,}")
        key = _widths_key(plan.widths, self.layers)
        one_step = all(float(v) == 1.0 for v in params.values())
        for name, value in (
            ("widths", key), ("macs", macs), ("params", count_params(student_arch)),
            ("summary", student_arch.summary()), ("one_step", one_step),
        ):
            trial.set_user_attr(name, value)

        hit = self.cached(study, key, trial.number)
        if hit is not None:
            trial.set_user_attr("cached_from", hit.number)
            for name in ("psnr", "gcka", "latency_ms", "latency_device"):
                if name in hit.user_attrs:
                    trial.set_user_attr(name, hit.user_attrs[name])
            self.say(f"trial {trial.number}: same student as trial {hit.number}, score reused")
            if hit.state.name == "PRUNED":
                raise optuna.TrialPruned()
            return list(hit.values)

        student = build_student(plan, self.teacher.state_dict).to(self.device)
        pruned_at = None
        if self.spec.kind == "finetune":
            seed = (self.seed or 0) ^ zlib.crc32(key.encode())
            torch.manual_seed(seed)
            multi = len(self.objectives) > 1

            def report(step: int, fid) -> bool:
                if multi:
                    return False
                trial.report(fid.value(self.quality_metric), step)
                return trial.should_prune()

            fidelity, steps_run = self.finetune(
                student, self.probe, steps=self.spec.steps, train_images=self.train_images,
                on_report=report, seed=seed,
            )
            if steps_run < self.spec.steps:
                pruned_at = steps_run
        else:
            fidelity = self.probe.score(student)
        trial.set_user_attr("psnr", fidelity.psnr)
        trial.set_user_attr("gcka", fidelity.gcka)
        trial.set_user_attr("evaluated", True)
        self.evaluated.append(trial.number)
        if pruned_at is not None:
            trial.set_user_attr("pruned_at_step", pruned_at)
            self.say(f"trial {trial.number}: pruned at step {pruned_at} ({fidelity.psnr:.2f} dB)")
            raise optuna.TrialPruned()
        values = [fidelity.value(self.quality_metric)]
        lat_text = ""
        if "latency" in self.objectives:
            lat = self.latency(student)
            trial.set_user_attr("latency_ms", lat.median_ms)
            trial.set_user_attr("latency_device", lat.device)
            values.append(lat.median_ms)
            lat_text = f", {lat.median_ms:.1f} ms"
        self.say(
            f"trial {trial.number}{' (one-step)' if one_step else ''}: {fidelity.psnr:.2f} dB PSNR, "
            f"GCKA {fidelity.gcka:.4f}{lat_text}, {format_macs(macs, self.convention)}"
        )
        return values

    def latency(self, model):
        return self.measure_latency(
            model, input_size=self.latency_size, device=self.device,
            threads=self.latency_threads, repeats=self.latency_repeats,
        )

    def cached(self, study: "optuna.Study", key: str, number: int):
        """A finished trial with the same widths, waiting for an earlier running one if any."""
        from optuna.trial import TrialState

        while True:
            trials = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            same = [t for t in trials if t.number != number and t.user_attrs.get("widths") == key]
            done = [t for t in same if t.state != TrialState.RUNNING and t.user_attrs.get("evaluated")]
            if done:
                return min(done, key=lambda t: t.number)
            if not any(t.state == TrialState.RUNNING and t.number < number for t in same):
                return None
            time.sleep(self.poll_s)  # an earlier trial is scoring this student right now
            with _file_lock(self.store.lock_path):
                self.recover_stale(study)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _default_name(teacher: str | os.PathLike, target: int, convention: str, score: str, objectives) -> str:
    """``<teacher stem>-<target>-<convention>-<score>-<objectives>``, e.g. ``G-2.6G-paper-zero-shot-quality``."""
    from nas_prune.search import default_out_dir

    return f"{default_out_dir(teacher, target, convention).name}-{score}-{'+'.join(objectives)}"


def run_study(
    *,
    teacher: str | os.PathLike,
    target_macs: int | str,
    trials: int,
    space: str | os.PathLike | None = None,
    convention: str = "fvcore",
    input_size: int | str | tuple[int, int] = 256,
    min_channels: int = 16,
    importance: str | None = None,
    round_to: int | None = None,
    fill: bool = True,
    calib_data: str | os.PathLike | None = None,
    calib_images: int = 8,
    verify: str = "fast",
    score: str = "zero-shot",
    objectives: str | Sequence[str] = ("quality",),
    quality_metric: str = "psnr",
    score_size: int | str | tuple[int, int] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    pick: int | None = None,
    seed: int | None = 0,
    multiplier_range: tuple[float, float] = DEFAULT_RANGE,
    device: str | None = None,
    latency_size: int | str | tuple[int, int] | None = None,
    latency_threads: int | None = None,
    latency_repeats: int = 10,
    out: str | os.PathLike | None = None,
    plot: bool = True,
    grace_s: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run (or resume, or join) an Optuna study and export the picked student.

    Options shared with one-step pruning (``space`` .. ``verify``) mean what they
    mean for :func:`nas_prune.search.search` (``verify`` checks the exported student;
    trials are counted analytically); the one-step solution of the same options is
    trial 0. The calibration images (:mod:`nas_prune.calibration`) feed
    both the ``activation`` importance (at ``input_size``) and the scores (at
    ``score_size``).

    Args:
        trials: finished trials the study must reach in total (>= 1), counting those
            of earlier runs and of other workers.
        score: ``zero-shot`` or ``finetune:STEPS`` (:mod:`nas_prune.scores`).
        objectives: ``quality`` or ``quality,latency``.
        quality_metric: ``psnr`` (dB, default) or ``gcka`` as the quality objective.
        calib_data: folder of calibration images (searched recursively); None:
            scikit-image sample photos, else noise (the result says which).
        calib_images: calibration images (>= 2: GCKA compares samples); ``finetune:``
            trains on 2x as many others.
        score_size: ``(H, W)`` the fidelity is measured at; default ``input_size``.
            A smaller size makes scoring faster (MACs and latency keep ``input_size``).
        storage: Optuna storage URL or ``journal:PATH``; default ``sqlite:///<out>/study.db``.
        study_name: default ``<teacher>-<target>-<convention>-<score>-<objectives>``.
        pick: index into :attr:`StudyResult.front` of the trial to export
            (two objectives: the Pareto front by latency; one: the ranking by quality);
            default the best quality.
        seed: sampler seed (plus the number of existing trials); None for random.
        multiplier_range: ``(low, high)`` of every multiplier, ``0 < low <= 1 <= high``.
        device: where students are scored and timed (default CUDA if available).
        latency_size: input ``(H, W)`` for latency; default ``input_size``.
        latency_threads: CPU threads while timing; default torch's current setting.
        latency_repeats: timed passes per trial (median reported).
        out: output folder; default ``runs/search/<teacher>-<target>-<convention>-study``.
        plot: write ``pareto.png`` with two objectives (skipped without matplotlib).
        grace_s: a running trial without heartbeat for this long is taken as dead.
        log: called with one line per event (trial finished, resumed, ...).

    Raises:
        NasPruneError: bad option (``trials`` < 1, bad storage URL, ``pick`` outside
            the front, ...), a study created with other options, or any error of
            one-step pruning (target out of reach).
    """
    import torch

    from nas_prune.load import load_generator
    from nas_prune.plan import prunable_layers
    from nas_prune.calibration import calibration_images
    from nas_prune.scores import QUALITY_METRICS, FidelityProbe, finetune, measure_latency, parse_score
    from nas_prune.search import DEFAULT_RUNS, check_options, default_out_dir, prune_to_target
    from nas_prune.space import load_space

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise NasPruneError(f"--trials must be an integer >= 1, got {trials}")
    target, size = check_options(
        target_macs=target_macs, convention=convention, input_size=input_size, min_channels=min_channels,
        importance=importance, round_to=round_to, calib_images=calib_images, verify=verify,
    )
    spec = parse_score(score)
    objs = parse_objectives(objectives)
    if quality_metric not in QUALITY_METRICS:
        raise NasPruneError(f"quality metric {quality_metric!r}: choose psnr or gcka")
    if pick is not None and pick < 0:
        raise NasPruneError(f"--pick must be >= 0, got {pick}")
    low, high = (float(v) for v in multiplier_range)
    if not (0 < low <= 1.0 <= high) or low == high:
        raise NasPruneError(f"multiplier range must satisfy 0 < low <= 1 <= high, low < high; got {low}, {high}")
    if calib_images < 2:
        raise NasPruneError(f"--calib-images must be >= 2, got {calib_images}")
    if latency_repeats < 1:
        raise NasPruneError(f"latency repeats must be >= 1, got {latency_repeats}")
    s_size = parse_input_size(score_size) if score_size is not None else size
    l_size = parse_input_size(latency_size) if latency_size is not None else size
    if out is None:
        base = default_out_dir(teacher, target, convention)
        out = DEFAULT_RUNS / f"{base.name}-study"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NasPruneError(f"output path exists and is not a folder: {out}")
    say = log or (lambda _line: None)

    space_obj = load_space(space) if space is not None else None
    loaded = load_generator(teacher, space=space_obj)
    arch = loaded.arch
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    notes: list[str] = []

    n_train = 2 * calib_images if spec.kind == "finetune" else 0
    images, train_images, calib_text = calibration_images(
        arch, source=calib_data, n_images=calib_images, n_train=n_train, input_size=s_size, seed=0,
    )
    notes.append(f"calibration: {calib_text}, at {s_size[0]}x{s_size[1]}")
    if spec.kind == "finetune" and train_images is None:
        notes.append("finetune: too few extra calibration images; students are tuned on the scoring images")
    for line in notes:
        say(line)

    # The one-step code path gives the base scores (and, with all multipliers 1, trial 0).
    one = prune_to_target(
        loaded, target_macs=target, convention=convention, input_size=size,
        min_channels=min_channels, importance=importance, round_to=round_to, fill=fill,
        calib_data=calib_data, calib_images=calib_images, verify="off",
    )
    criterion, base_scores = one.criterion, one.scores

    out.mkdir(parents=True, exist_ok=True)
    store = open_storage(storage, out=out)
    name = study_name or _default_name(teacher, target, convention, str(spec), objs)
    teacher_model = loaded.build(device=str(dev))
    probe = FidelityProbe(teacher_model, images, device=dev)
    worker = _Study(
        teacher=loaded, scores=base_scores, criterion=criterion, groups=search_groups(arch),
        layers=prunable_layers(arch), target=target, convention=convention, size=size,
        min_channels=min_channels, round_to=round_to, fill=fill, verify=verify, spec=spec, objectives=objs,
        quality_metric=quality_metric, multiplier_range=(low, high), score_size=s_size,
        calibration=calib_text if calib_data is None else str(Path(calib_data).resolve()),
        store=store, study_name=name, n_trials=trials, seed=seed, probe=probe,
        train_images=train_images, finetune=finetune, measure_latency=measure_latency,
        device=dev, latency_size=l_size, latency_threads=latency_threads,
        latency_repeats=latency_repeats, grace_s=grace_s, heartbeat_s=HEARTBEAT_S, poll_s=0.5,
        evaluated=[], ran=[], say=say,
    )
    study = worker.open_study()
    worker.run(study)

    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    front = pareto_front(records, objectives=objs)
    if not front:
        raise NasPruneError(f"study {name!r}: no complete trial to export (all pruned or failed)")
    if pick is None:
        index = max(range(len(front)), key=lambda i: (front[i].quality, -front[i].number))
    elif pick >= len(front):
        what = "Pareto front" if len(objs) == 2 else "ranking"
        raise NasPruneError(f"--pick {pick}: the {what} has {len(front)} trials (0..{len(front) - 1})")
    else:
        index = pick
    one_step = next((r for r in records if r.one_step and r.state == "COMPLETE"), None)

    chosen = front[index]
    student_dir = out / STUDENT_DIR
    export = _export(
        loaded, chosen, worker, student_dir, space=space_obj.name if space_obj is not None else None,
        front_index=index, study_size=len(records),
    )
    _write_trials_csv(out / TRIALS_FILE, records, worker.groups)
    plot_path = None
    if len(objs) == 2 and plot:
        try:
            plot_path = plot_pareto(records, front, out / PLOT_FILE, picked=chosen, one_step=one_step,
                                    quality_metric=quality_metric,
                                    title=f"{name} ({format_macs(target, convention)} MACs)")
        except ImportError:
            notes.append("pareto.png skipped: matplotlib is not installed (pip install 'nas-prune[plot]')")
    return StudyResult(
        study_name=name, storage=store.url, objectives=objs, score=str(spec),
        quality_metric=quality_metric, calibration=calib_text, trials=records, front=front,
        pick=index, one_step=one_step, evaluated=list(worker.evaluated), ran=list(worker.ran),
        export=export, out=out, student_dir=student_dir, plot=plot_path, target_macs=target,
        convention=convention,
        latency_device=(next((t.user_attrs.get("latency_device") for t in study.get_trials(deepcopy=False)
                             if t.user_attrs.get("latency_device")), None)),
        notes=notes,
    )


def _export(loaded, record: TrialRecord, worker: _Study, out: Path, *, space: str | None,
            front_index: int, study_size: int) -> "SearchResult":
    """Prune with the trial's multipliers through the one-step code path and write ``student/``."""
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
    export_result(result, out, force=True, provenance={"study": study}, summary_note=note)
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


# ----------------------------------------------------------------------------- reporting


def plot_pareto(
    records: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    path: str | os.PathLike,
    *,
    picked: TrialRecord | None = None,
    one_step: TrialRecord | None = None,
    quality_metric: str = "psnr",
    title: str = "",
) -> Path:
    """Latency (x) vs quality (y) of every complete trial, the front as a step line.

    Marks the one-step solution (star) and the exported trial (ring). Written
    atomically as PNG with matplotlib's Agg backend.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas_prune.fileio import atomic_path

    done = [r for r in records if r.state == "COMPLETE" and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter([r.latency_ms for r in done], [r.quality for r in done], s=14, c="#9aa5b1", label="trials")
    fx = [r.latency_ms for r in front]
    fy = [r.quality for r in front]
    ax.step(fx, fy, where="post", color="#1f77b4", lw=1.2)
    ax.scatter(fx, fy, s=26, c="#1f77b4", label="Pareto front", zorder=3)
    if one_step is not None and one_step.latency_ms is not None:
        ax.scatter([one_step.latency_ms], [one_step.quality], marker="*", s=220, c="#d62728",
                   label=f"one-step (trial {one_step.number})", zorder=4)
    if picked is not None and picked.latency_ms is not None:
        ax.scatter([picked.latency_ms], [picked.quality], s=160, facecolors="none", edgecolors="#2ca02c",
                   linewidths=2, label=f"exported (trial {picked.number})", zorder=5)
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel("PSNR to teacher (dB)" if quality_metric == "psnr" else "GCKA to teacher")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def render_study(result: StudyResult, console, *, top: int = 10) -> None:
    """Rich table of the pick list (top ``top``) and a summary of the study and export."""
    from rich.table import Table

    conv = result.convention
    two = len(result.objectives) == 2
    title = (
        f"{'Pareto front' if two else 'top trials'} of {result.study_name} "
        f"({sum(r.state in ('COMPLETE', 'PRUNED') for r in result.trials)} finished trials)"
    )
    table = Table(title=title)
    for col, justify in (("pick", "right"), ("trial", "right"), ("PSNR dB", "right"), ("GCKA", "right"),
                         ("latency ms", "right"), (f"MACs ({conv})", "right"), ("params", "right"),
                         ("student", "left"), ("", "left")):
        table.add_column(col, justify=justify)
    rows = list(enumerate(result.front[:top]))
    if result.one_step is not None and all(r.number != result.one_step.number for _, r in rows):
        rows.append((None, result.one_step))
    for i, r in rows:
        notes = []
        if r.one_step:
            notes.append("one-step")
        if i == result.pick:
            notes.append("exported")
        table.add_row(
            "-" if i is None else str(i), str(r.number), _cell(r.psnr, ".2f"), _cell(r.gcka, ".4f"),
            _cell(r.latency_ms, ".1f"), format_macs(r.macs) if r.macs else "-",
            f"{r.params_count:,}" if r.params_count else "-", r.summary or "", ", ".join(notes),
        )
    console.print(table)
    for line in result.notes:
        console.print(line)
    p, o = result.picked, result.one_step
    if o is not None and p.number != o.number:
        diff = f"{p.psnr - o.psnr:+.2f} dB PSNR"
        if p.latency_ms is not None and o.latency_ms is not None:
            diff += f", {p.latency_ms - o.latency_ms:+.1f} ms"
        console.print(f"exported trial {p.number} vs one-step trial {o.number}: {diff}")
    console.print(f"study {result.study_name!r} in {result.storage}; student written to {result.student_dir}")
    if result.plot:
        console.print(f"Pareto plot: {result.plot}")


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
