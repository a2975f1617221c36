"""Running a recipe: the stages in order, with skip / resume bookkeeping in ``stage.json``.

:func:`run_recipe` takes a :class:`~nas_prune.recipe.Recipe` (or a path) validated by
:mod:`nas_prune.recipe`; see that module for the format, the stages and how resuming works.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.recipe import (
    _COSMETIC,
    STAGE_FILE,
    STAGES,
    Recipe,
    _flatten,
    _placeholder,
    _resumable_fields,
    load_recipe,
)

__all__ = ["StageOutcome", "RunResult", "run_recipe"]


@dataclass
class StageOutcome:
    """How one stage went: ``ran``, ``resumed``, ``skipped``; seconds of this invocation."""

    stage: str
    action: str
    seconds: float
    folder: Path
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What :func:`run_recipe` returns: the run folder and one outcome per stage, in order."""

    run_dir: Path
    stages: list[StageOutcome]
    seconds: float

    def outcome(self, stage: str) -> StageOutcome:
        return next(o for o in self.stages if o.stage == stage)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _external(path: str | None) -> dict[str, Any] | None:
    """Identity of a user-supplied input: path, and size + modification time of a file."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"path": str(p)}


def _outputs_record(folder: Path, outputs: Sequence[str]) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file of a stage's outputs (files or folders)."""
    from nas_prune.load import file_sha256
    from nas_prune.locks import LOCK_FILE

    record: dict[str, list] = {}
    for name in outputs:
        root = folder / name
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and f.name != LOCK_FILE)
        for f in files:
            record[f.relative_to(folder).as_posix()] = [f.stat().st_size, file_sha256(f)]
    return record


def _outputs_changed(folder: Path, record: Mapping[str, list] | None) -> list[tuple[str, str]]:
    """Files of a finished stage's outputs that are gone or changed since it finished: ``[(path, why)]``.

    Checked by size, then SHA-256. Files added to an output folder since do not count.
    """
    from nas_prune.load import file_sha256

    changed = []
    for rel, (size, digest) in (record or {}).items():
        f = folder / rel
        if not f.is_file():
            changed.append((rel, "is missing"))
        elif f.stat().st_size != size:
            changed.append((rel, f"changed size ({f.stat().st_size:,} bytes, {size:,} when the stage finished)"))
        elif file_sha256(f) != digest:
            changed.append((rel, "changed (another SHA-256 than when the stage finished)"))
    return changed


def _set_aside(folder: Path, rels: Sequence[str]) -> Path | None:
    """Move changed output files to ``folder/changed-<time>/`` (nothing is deleted); returns that folder."""
    present = [r for r in rels if (folder / r).is_file()]
    if not present:
        return None
    aside = folder / time.strftime("changed-%Y%m%dT%H%M%S")
    for rel in present:
        (aside / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / rel, aside / rel)
    return aside


class _Runner:
    """Runs a recipe's stages in order with skip / resume bookkeeping."""

    def __init__(self, recipe: Recipe, *, log: Callable[[str], None], hooks: Mapping[str, Callable] | None):
        self.r = recipe
        self.log = log
        self.hooks = dict(hooks or {})
        self.run_dir = recipe.run_dir
        self.stamps: dict[str, str] = {}  # stage -> stamp of its finished outputs
        self.outcomes: list[StageOutcome] = []

    # -- wiring --------------------------------------------------------------------------
    def folder(self, stage: str) -> Path:
        return self.run_dir / stage

    def data(self) -> tuple[str, Any]:
        if "dataset" in self.r.stages:
            return str(self.folder("dataset") / "data"), self.stamps["dataset"]
        return self._require(self.r.data, "data"), _external(self.r.data)

    def teacher(self) -> tuple[str, Any]:
        if "train_teacher" in self.r.stages:
            from nas_prune.train_teacher import TEACHER_FILE

            return str(self.folder("train_teacher") / TEACHER_FILE), self.stamps["train_teacher"]
        return self._require(self.r.teacher, "teacher"), _external(self.r.teacher)

    def student(self) -> tuple[str, Any]:
        if "prune" in self.r.stages:
            return str(self.folder("prune") / "student"), self.stamps["prune"]
        return self._require(self.r.student, "student"), _external(self.r.student)

    def _require(self, value: str | None, key: str) -> str:
        if value is None:
            raise NasPruneError(f"{self.r.source}: {key}: not set")
        if _placeholder(value):
            raise NasPruneError(f"{self.r.source}: {key}: replace the placeholder {value!r} (e.g. --set {key}=PATH)")
        if not Path(value).exists():
            raise NasPruneError(f"{self.r.source}: {key}: {value} not found")
        return value

    def distill_options(self, stage: str) -> dict[str, Any]:
        opts = dict(self.r.stages.get("distill", {}))
        if stage == "baseline":
            opts.update(self.r.stages["baseline"])
            opts["distill"] = {}
        return opts

    def threads(self, stage: str, options: Mapping[str, Any]):
        """The torch thread count of a stage (:func:`nas_prune.threads.use_threads`).

        ``dataset`` runs no torch; training stages count their data-loader workers
        against the free cores.
        """
        from nas_prune.threads import use_threads

        workers = 0
        if stage in ("train_teacher", "distill", "baseline"):
            from nas_prune.recipe import stage_options

            workers = min(int(options.get("workers", stage_options(stage).get("workers", 0))), os.cpu_count() or 1)
        spec = None if stage == "dataset" else self.r.threads
        return use_threads(spec, workers=workers, log=lambda line: self.log(f"[{stage}] {line}"))

    # -- bookkeeping ---------------------------------------------------------------------
    def _read_state(self, stage: str) -> dict[str, Any] | None:
        path = self.folder(stage) / STAGE_FILE
        if not path.is_file():
            return None
        from nas_prune.fileio import read_json

        try:
            state = read_json(path, what="stage state")
        except NasPruneError:
            return None
        return state if isinstance(state, dict) else None

    def _write_state(self, stage: str, state: dict[str, Any]) -> None:
        from nas_prune.fileio import write_json

        write_json(self.folder(stage) / STAGE_FILE, state)

    def run_stage(self, stage: str, options: dict[str, Any], inputs: dict[str, Any],
                  body: Callable[[Path, bool], dict[str, Any]], outputs: Sequence[str]) -> None:
        """Skip, resume or run ``body(folder, resume) -> summary`` for one stage."""
        folder = self.folder(stage)
        for key, value in _flatten(options):
            if _placeholder(value):
                raise NasPruneError(
                    f"{self.r.source}: stages.{stage}.{key}: replace the placeholder {value!r} "
                    f"(e.g. --set {stage}.{key}=PATH)"
                )
        resumable = _resumable_fields(stage)
        strict = {k: v for k, v in options.items() if k not in _COSMETIC and k not in resumable}
        fingerprint = _hash({"stage": stage, "options": strict, "inputs": inputs})
        full = _hash({"fingerprint": fingerprint, "options": {k: v for k, v in options.items() if k not in _COSMETIC}})
        prev = self._read_state(stage)
        have_outputs = all((folder / o).exists() for o in outputs)
        same = prev is not None and prev.get("fingerprint") == fingerprint
        if same and prev.get("status") == "done" and prev.get("full") == full:
            changed = _outputs_changed(folder, prev.get("outputs"))
            if have_outputs and not changed:
                self.stamps[stage] = prev["stamp"]
                self.outcomes.append(StageOutcome(stage, "skipped", 0.0, folder, prev.get("summary", {})))
                self.log(f"[{stage}] skipped: done, options and inputs unchanged ({folder})")
                return
            what = f"{changed[0][0]} {changed[0][1]}" if changed else "an output is missing"
            aside = _set_aside(folder, [rel for rel, _ in changed])
            kept = f"; the changed files are kept in {aside}" if aside is not None else ""
            self.log(f"[{stage}] finished before, but {what}: running it again{kept}")
        resume = bool(same and resumable and (folder / "checkpoints" / "last.pt").is_file())
        if not resume and folder.exists():
            if prev is not None and not same:
                self.log(f"[{stage}] options or inputs changed: running it again from scratch")
            from nas_prune.outputs import clear

            clear(folder)  # what nas-prune wrote there; other files stay (and are named)
        folder.mkdir(parents=True, exist_ok=True)
        state = {"stage": stage, "recipe": self.r.source, "options": options, "inputs": inputs,
                 "fingerprint": fingerprint, "full": full, "status": "running",
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if resume and prev is not None:
            state["seconds_before"] = prev.get("seconds", 0.0) + prev.get("seconds_before", 0.0)
            state["cpu_seconds_before"] = prev.get("cpu_seconds", 0.0) + prev.get("cpu_seconds_before", 0.0)
        self._write_state(stage, state)
        self.log(f"[{stage}] {'resuming from its checkpoint' if resume else 'running'} -> {folder}")
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with self.threads(stage, options) as choice:
                summary = body(folder, resume)
        except BaseException as err:
            failed = not isinstance(err, KeyboardInterrupt)
            message = " ".join(str(err).split()) or type(err).__name__
            if isinstance(err, NasPruneError):
                from nas_prune.recipe_check import as_recipe_keys

                message = as_recipe_keys(message, stage)
            from nas_prune.interrupt import signal_name, signum_of

            why = {"error": message} if failed else {"signal": signal_name(signum_of(err))}
            state.update(status="failed" if failed else "interrupted", seconds=time.perf_counter() - t0,
                         cpu_seconds=time.process_time() - c0, **why)
            with contextlib.suppress(Exception):  # e.g. a full disk: the error being raised says more
                self._write_state(stage, state)
            self.log(f"[{stage}] {'failed: ' + message if failed else 'interrupted by ' + why['signal']}")
            if isinstance(err, NasPruneError):
                raise NasPruneError(f"{self.r.source}: [{stage}] {message}") from None
            raise
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if choice is not None:
            state["threads"] = choice.to_json()
        if summary.get("interrupted"):
            from nas_prune.interrupt import Interrupted, signal_name

            signum = summary.get("signal") or signal.SIGINT
            state.update(status="interrupted", seconds=seconds, cpu_seconds=cpu, summary=summary,
                         signal=signal_name(signum))
            self._write_state(stage, state)
            self.outcomes.append(StageOutcome(stage, "interrupted", seconds, folder, summary))
            self.log(f"[{stage}] interrupted by {signal_name(signum)} at step {summary.get('step')}: "
                     "run the same command again to resume")
            raise Interrupted(signum)
        stamp = _hash({"full": full, "finished": time.time_ns()})
        state.update(status="done", seconds=seconds, cpu_seconds=cpu, summary=summary, stamp=stamp,
                     finished=time.strftime("%Y-%m-%dT%H:%M:%S"), outputs=_outputs_record(folder, outputs))
        self._write_state(stage, state)
        self.stamps[stage] = stamp
        self.outcomes.append(StageOutcome(stage, "resumed" if resume else "ran", seconds, folder, summary))
        self.log(f"[{stage}] done in {seconds:.1f} s")

    # -- stages --------------------------------------------------------------------------
    def stage_dataset(self) -> None:
        opts = self.r.stages["dataset"]

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.demo_data import make_demo_dataset

            make_demo_dataset(folder / "data", **opts)
            return {"data": str(folder / "data")}

        self.run_stage("dataset", opts, {}, body, ["data"])

    def stage_train_teacher(self) -> None:
        opts = self.r.stages["train_teacher"]
        data, data_id = self.data()

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.train_teacher import TeacherConfig, train_teacher

            cfg = TeacherConfig.from_dict(opts)
            res = train_teacher(data=data, out=folder, config=cfg, resume=resume,
                                on_step=self.hooks.get("train_teacher"))
            return {"teacher": str(res.teacher), "step": res.step, "interrupted": res.interrupted,
                    "signal": res.signal, "metrics": res.metrics}

        from nas_prune.train_teacher import TEACHER_FILE

        self.run_stage("train_teacher", opts, {"data": data_id}, body, [TEACHER_FILE])

    def stage_prune(self) -> None:
        opts = dict(self.r.stages["prune"])
        teacher, teacher_id = self.teacher()
        space = self.r.space

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            study = opts.pop("study", None)
            out = folder / "student"
            if study:
                import optuna

                from nas_prune.study import run_study

                optuna.logging.set_verbosity(optuna.logging.WARNING)

                # the study folder is the student folder: arch.json + weights beside study.db
                res = run_study(teacher=teacher, space=space, out=out, log=self.log, **opts, **study)
                arch = res.export.student_arch
                macs = res.export.macs
            else:
                from nas_prune.search import search

                res = search(teacher=teacher, space=space, out=out, **opts)
                arch, macs = res.student_arch, res.macs
            return {"student": str(out), "arch": arch.summary(), "macs": dict(macs)}

        space_id = None
        if space is not None:
            from nas_prune.shipped import resolve_shipped

            space_id = _external(str(resolve_shipped("search_spaces", space)[0]))
        self.run_stage("prune", dict(opts), {"teacher": teacher_id, "space": space_id}, body, ["student"])

    def _distill_stage(self, stage: str) -> None:
        opts = self.distill_options(stage)
        data, data_id = self.data()
        teacher, teacher_id = self.teacher()
        student, student_id = self.student()

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.distill import DistillConfig, distill

            cfg = DistillConfig.from_dict(opts)
            res = distill(teacher=teacher, student=student, data=data, out=folder, config=cfg, resume=resume,
                          on_step=self.hooks.get(stage), label=stage, space=self.r.space)
            return {"student": str(folder / "final"), "step": res.step, "interrupted": res.interrupted,
                    "signal": res.signal, "finished": res.finished, "metrics": res.metrics,
                    "images_per_second": res.images_per_second}

        inputs = {"data": data_id, "teacher": teacher_id, "student": student_id}
        self.run_stage(stage, opts, inputs, body, ["final"])

    def stage_distill(self) -> None:
        self._distill_stage("distill")

    def stage_baseline(self) -> None:
        self._distill_stage("baseline")

    def models(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The models a run evaluates: teacher, pruned (no fine-tuning), undistilled, distilled."""
        models, ids = {}, {}
        if self.r.teacher is not None or "train_teacher" in self.r.stages:
            models["teacher"], ids["teacher"] = self.teacher()
        if "prune" in self.r.stages or self.r.student is not None:
            models["pruned (no fine-tuning)"], ids["pruned"] = self.student()
        for stage, name in (("baseline", "student, no distillation"), ("distill", "student, distilled")):
            if stage in self.r.stages:
                models[name], ids[stage] = str(self.folder(stage) / "final"), self.stamps[stage]
        return models, ids

    def stage_evaluate(self) -> None:
        opts = dict(self.r.stages["evaluate"])
        data, data_id = self.data()
        models, ids = self.models()
        dopts = self.r.stages.get("distill", {})
        for key in ("mode", "direction", "crop_size"):  # follow the distillation data unless set
            if key not in opts and key in dopts:
                opts[key] = dopts[key]
        if "reference" not in opts and "teacher" in models:
            opts["reference"] = "teacher"

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.evaluate import evaluate

            kw = dict(opts)
            save = kw.pop("save_real_stats", False)
            res = evaluate(models=models, data=data, out=folder, space=self.r.space,
                           save_real_stats=folder / "real_stats.npz" if save else None, **kw)
            return {"rows": res.rows, "n_images": res.n_images}

        self.run_stage("evaluate", opts, {"data": data_id, "models": ids}, body, ["metrics.json"])

    def stage_export(self) -> None:
        opts = dict(self.r.stages["export"])
        which = opts.pop("model", "distill")
        if which == "prune":
            model, model_id = self.student()
        else:
            model, model_id = str(self.folder(which) / "final"), self.stamps[which]
        if "input_size" not in opts and "prune" in self.r.stages:
            opts["input_size"] = self.r.stages["prune"].get("input_size", 256)

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.deploy import export_generator

            res = export_generator(model, out=folder, **opts)
            summary = res.to_json()
            from nas_prune.fileio import write_json

            write_json(folder / "export.json", {"model": which, **summary})
            return {"model": which, **summary}

        self.run_stage("export", {"model": which, **opts}, {"model": model_id}, body, ["export.json"])

    def stage_report(self) -> None:
        opts = dict(self.r.stages["report"])
        data, data_id = self.data()
        models, _ = self.models()
        dopts = self.r.stages.get("distill", {})
        for key in ("mode", "direction", "crop_size"):
            if key not in opts and key in dopts:
                opts[key] = dopts[key]
        upstream = {s: self.stamps.get(s) for s in STAGES if s in self.stamps}

        def body(folder: Path, resume: bool) -> dict[str, Any]:
            from nas_prune.report import write_report

            path = write_report(run_dir=self.run_dir, out=folder, data=data, models=models, **opts)
            return {"report": str(path)}

        self.run_stage("report", opts, {"data": data_id, "upstream": upstream}, body, ["report.md"])


def run_recipe(
    path: str | os.PathLike | Recipe,
    *,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    hooks: Mapping[str, Callable[[int, dict[str, float]], None]] | None = None,
) -> RunResult:
    """Run (or resume) every stage of a recipe.

    Args:
        path: the recipe file, or a :class:`Recipe` from :func:`load_recipe`.
        overrides: ``--set`` items (:func:`apply_overrides`).
        log: receives one line per stage event (default: print).
        hooks: ``{stage: on_step}`` passed to the training stages (``train_teacher``,
            ``distill``, ``baseline``); raising KeyboardInterrupt in one stops the stage
            with a checkpoint, like Ctrl-C.

    Raises:
        NasPruneError: invalid recipe, a setting that would stop the run
            (:func:`nas_prune.recipe_check.check_recipe`, before the first stage), or a
            stage's user error (naming recipe keys, not command-line flags).
        KeyboardInterrupt: a stage was interrupted by Ctrl-C, SIGTERM or SIGHUP
            (:class:`nas_prune.interrupt.Interrupted`; its checkpoint is kept; run again to resume).
    """
    recipe = path if isinstance(path, Recipe) else load_recipe(path, overrides=overrides)
    from nas_prune.recipe_check import check_recipe

    check_recipe(recipe)  # what would stop the run later stops it now
    from nas_prune.interrupt import handle_signals
    from nas_prune.locks import hold

    # SIGTERM / SIGHUP stop any stage as Ctrl-C does (nas_prune.interrupt); one run of a run folder at a time
    with handle_signals(), hold(recipe.run_dir, command="run", option="run_dir"):
        return _run(recipe, overrides=overrides, log=log, hooks=hooks)


def _run(recipe: Recipe, *, overrides: Sequence[str], log, hooks) -> RunResult:
    """:func:`run_recipe` with the run folder held."""
    if log is None:  # print, muted instead of failing when nobody reads stdout any more (nas_prune.pipes)
        import sys

        from nas_prune.pipes import emit

        def log(line: str) -> None:
            emit(line, stream=sys.stdout)
    runner = _Runner(recipe, log=log, hooks=hooks)
    t0 = time.perf_counter()
    from nas_prune.fileio import write_json
    from nas_prune.outputs import check_out_files

    check_out_files([recipe.run_dir / "recipe.json", recipe.run_dir / "timings.json"], inputs=[recipe.source])
    recipe.run_dir.mkdir(parents=True, exist_ok=True)

    write_json(recipe.run_dir / "recipe.json", {"source": recipe.source, "overrides": list(overrides),
                                                 **recipe.to_dict()})
    for stage in STAGES:
        if stage in recipe.stages:
            getattr(runner, f"stage_{stage}")()
    seconds = time.perf_counter() - t0
    write_json(recipe.run_dir / "timings.json", {
        "total_seconds_this_invocation": round(seconds, 2),
        "stages": {o.stage: {"action": o.action, "seconds": round(o.seconds, 2)} for o in runner.outcomes},
    })
    return RunResult(run_dir=recipe.run_dir, stages=runner.outcomes, seconds=seconds)
