"""Recipes: YAML files that chain the stages of nas-prune into one resumable job.

A recipe names a run folder, the data and the teacher, and the options of each stage::

    # Run: nas-prune run horse2zebra --set teacher=G_A.pth --set data=datasets/horse2zebra
    name: horse2zebra
    run_dir: runs/horse2zebra
    data: datasets/horse2zebra          # or produced by the `dataset` stage
    teacher: latest_net_G_A.pth         # or produced by the `train_teacher` stage
    stages:
      prune:    {target_macs: 2.6G, convention: paper, input_size: 256}
      distill:  {mode: unaligned, epochs: 500, epochs_decay: 500, batch_size: 80}
      evaluate: {crop_size: 256}
      export:   {format: onnx}

Stages run in this fixed order; each is optional:

==================  =========================================================  ==========================
stage               what it does / options                                     output in ``run_dir/<stage>/``
==================  =========================================================  ==========================
``dataset``         :func:`nas_prune.demo_data.make_demo_dataset` (demo only)  ``data/``
``train_teacher``   :func:`nas_prune.train_teacher.train_teacher`              ``teacher.safetensors``
                    (:class:`~nas_prune.train_teacher.TeacherConfig` fields)
``prune``           :func:`nas_prune.search.search` options; with a ``study``  ``student/``
                    mapping, :func:`nas_prune.study.run_study` (Optuna)
``distill``         :func:`nas_prune.distill.distill`                           ``final/`` (student)
                    (:class:`~nas_prune.distill.DistillConfig` fields)
``baseline``        the same pruned student trained without distillation:      ``final/``
                    ``distill``'s options, overridden by these, ``distill: {}``
``evaluate``        :func:`nas_prune.evaluate.evaluate` options                ``metrics.json``, ``.md``
``export``          :func:`nas_prune.deploy.export_generator` options          ``generator.onnx`` / ``.pt``
``report``          :func:`nas_prune.report.write_report` options              ``report.md``, ``grid.png``
==================  =========================================================  ==========================

Recipes shipped in ``recipes/`` run by name from any folder
(``nas-prune run demo``); any other recipe by its path.

Allowed options are read from those functions' keyword-only parameters and config
dataclasses, so a recipe accepts exactly what the library (and the CLI) accepts.
Unknown keys are errors naming the file and the field, with a close match.
Paths in a recipe are relative to the working directory (as on the command line).
:func:`load_recipe` opens no file but the recipe (the shipped paper recipes load with
their ``<...>`` placeholders); :func:`nas_prune.recipe_check.check_recipe`, run by
``nas-prune validate`` and by :func:`nas_prune.recipe_run.run_recipe` before the first stage, checks the
placeholders, files, data layout and option dependencies the run will need.

Resuming: each stage writes ``stage.json`` (resolved options, inputs, fingerprint,
status). On a new run, a stage that is ``done`` with the same fingerprint and whose
outputs exist is skipped; ``distill``, ``baseline`` and ``train_teacher`` that were
interrupted (Ctrl-C, or a crash after a checkpoint) continue from their checkpoint;
changing only a schedule-length field (``epochs``, ``epochs_decay``, ``max_steps``,
logging intervals) also continues the run; any other change re-runs the stage from
scratch, and a re-run stage re-runs every stage after it that uses its output.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas_prune.errors import NasPruneError

__all__ = [
    "STAGES", "Recipe", "load_recipe", "apply_overrides", "stage_options", "placeholders", "resolve_recipe",
]

STAGES = ("dataset", "train_teacher", "prune", "distill", "baseline", "evaluate", "export", "report")
TOP_KEYS = ("name", "description", "run_dir", "data", "teacher", "student", "space", "threads", "stages")
STAGE_FILE = "stage.json"
PLACEHOLDER_PREFIX = "<"

# Options that never change results: excluded from fingerprints.
_COSMETIC = frozenset({"progress", "workers", "log_every"})
# Stages that can continue from a checkpoint, and the fields that may change when they do.
# (distill's list is nas_prune.distill.RESUMABLE_CHANGES; see _resumable_fields).
_RESUMABLE_TEACHER = frozenset({"epochs", "epochs_decay", "max_steps", "save_every", "eval_every", "device"})


def _resumable_fields(stage: str) -> frozenset[str]:
    """Options of a checkpointed stage that may change while it continues from its checkpoint."""
    if stage == "train_teacher":
        return _RESUMABLE_TEACHER
    if stage in ("distill", "baseline"):
        from nas_prune.distill import RESUMABLE_CHANGES

        return frozenset(RESUMABLE_CHANGES)
    return frozenset()


# ----------------------------------------------------------------------------- option specs


def _kwonly(fn: Callable, drop: Sequence[str]) -> dict[str, Any]:
    """Keyword-only parameters of ``fn`` with their defaults (``...`` when required)."""
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.name not in drop:
            out[p.name] = ... if p.default is p.empty else p.default
    return out


def _dataclass_fields(cls) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = ...
    return out


def stage_options(stage: str) -> dict[str, Any]:
    """``{option: default}`` a stage accepts (``...`` marks required ones).

    Derived from the library function or config dataclass the stage calls, minus the
    arguments the runner wires itself (teacher, data, student, output folders).
    """
    if stage == "dataset":
        from nas_prune.demo_data import make_demo_dataset

        return _kwonly(make_demo_dataset, ())
    if stage == "train_teacher":
        from nas_prune.train_teacher import TeacherConfig

        return _dataclass_fields(TeacherConfig)
    if stage == "prune":
        from nas_prune.search import search

        opts = _kwonly(search, ("teacher", "out", "force", "write", "space"))
        opts["study"] = None
        return opts
    if stage in ("distill", "baseline"):
        from nas_prune.distill import DistillConfig

        return _dataclass_fields(DistillConfig)
    if stage == "evaluate":
        from nas_prune.evaluate import evaluate

        opts = _kwonly(evaluate, ("models", "data", "out", "save_real_stats"))
        opts["save_real_stats"] = False
        return opts
    if stage == "export":
        from nas_prune.deploy import export_generator

        opts = _kwonly(export_generator, ("out",))
        opts["model"] = "distill"
        return opts
    if stage == "report":
        from nas_prune.report_options import ReportOptions

        return _dataclass_fields(ReportOptions)
    raise NasPruneError(f"unknown stage {stage!r}")


def study_options() -> dict[str, Any]:
    """Options of ``prune.study`` (those of :func:`nas_prune.study.run_study` not shared with one-step pruning)."""
    from nas_prune.study import run_study

    shared = set(stage_options("prune")) | {"teacher", "out", "log", "space"}
    return _kwonly(run_study, tuple(shared))


# ----------------------------------------------------------------------------- loading


@dataclass
class Recipe:
    """A validated recipe.

    Attributes:
        source: the file it came from (for messages).
        name / description: free text.
        run_dir: run folder; every stage writes into ``run_dir/<stage>/``.
        data / teacher / student: external inputs (None when a stage produces them).
        space: search space of the teacher (prune, study): a YAML file or a shipped name.
        stages: ``{stage: options}`` in run order, options as written (defaults not filled).
        threads: torch CPU threads of every stage: a count, or ``auto`` (the default:
            chosen per stage from the cores other processes leave free, see
            :mod:`nas_prune.threads`).
        path: the YAML file read (a shipped recipe's file inside the package).
    """

    source: str
    name: str
    run_dir: Path
    stages: dict[str, dict[str, Any]]
    description: str = ""
    data: str | None = None
    teacher: str | None = None
    student: str | None = None
    space: str | None = None
    threads: int | str = "auto"
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "run_dir": str(self.run_dir),
                "data": self.data, "teacher": self.teacher, "student": self.student, "space": self.space,
                "threads": self.threads, "stages": self.stages}


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"


def _read_yaml(path: Path) -> Any:
    from nas_prune.fileio import read_yaml

    return read_yaml(path, what="recipe")


def _parse_value(raw: str, *, source: str = "--set value") -> Any:
    """``raw`` read as YAML, or the text itself when it is not valid YAML (bounded: :mod:`nas_prune.fileio`)."""
    from nas_prune.fileio import InvalidSyntaxError, loads_yaml

    try:
        return loads_yaml(raw, source=source) if raw.strip() else None
    except InvalidSyntaxError:
        return raw


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` items to a raw recipe mapping (returns a copy).

    ``KEY`` is a dotted path; a first part that names a stage means ``stages.<stage>``
    (``distill.epochs=5``, ``prune.study.trials=20``, ``distill.distill.gcka=1.3``);
    other keys are top-level (``run_dir=runs/x``, ``teacher=G.pth``). ``VALUE`` is read
    as YAML (``5``, ``true``, ``null``, ``[stem, block3]``, ``{gcka: 1}``); ``STAGE=null``
    removes a stage. Setting a key of a stage the recipe does not have adds the stage.
    """
    import copy

    out = copy.deepcopy(dict(data)) if data else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise NasPruneError(f"{source} {item!r}: expected KEY=VALUE, e.g. distill.epochs=5")
        parts = key.split(".")
        if parts[0] in STAGES:
            parts = ["stages", *parts]
        value = _parse_value(raw, source=f"{source} {key}")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise NasPruneError(f"{source} {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        if value is None and parts[0] == "stages" and len(parts) == 2:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return out


def _hints(obj: Any) -> dict[str, Any]:
    """Evaluated annotations of a function's parameters or a dataclass's fields ({} where they fail)."""
    raw = getattr(obj, "__annotations__", {})
    module = inspect.getmodule(obj)
    ns = dict(vars(module)) if module else {}
    ns.setdefault("os", os)
    out = {}
    for name, ann in raw.items():
        try:
            out[name] = eval(ann, ns) if isinstance(ann, str) else ann  # noqa: S307 - our own annotations
        except Exception:  # noqa: BLE001 - names only imported for type checking
            continue
    return out


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type annotation (basic types, unions, containers)."""
    import types
    import typing

    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or hint is os.PathLike:
        return isinstance(value, str)
    base = origin or hint
    if base in (tuple, list) or base in (typing.Sequence,) or getattr(base, "__name__", "") == "Sequence":
        return isinstance(value, (list, tuple))
    if base in (dict, Mapping) or getattr(base, "__name__", "") == "Mapping":
        return isinstance(value, Mapping)
    return True


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("os.PathLike", "path").replace("NoneType", "null")
    return text.replace("<class '", "").replace("'>", "")


def _check_type(src: str, name: str, value: Any, hint: Any) -> None:
    """Raise a one-line error when ``value`` does not fit the parameter's annotation."""
    if hint is None or _matches(value, hint):
        return
    raise NasPruneError(f"{src}: {name}: expected {_describe(hint)}, got {value!r}")


def _stage_hints(stage: str) -> dict[str, Any]:
    if stage == "dataset":
        from nas_prune.demo_data import make_demo_dataset as target
    elif stage == "train_teacher":
        from nas_prune.train_teacher import TeacherConfig as target
    elif stage == "prune":
        from nas_prune.search import search as target
    elif stage in ("distill", "baseline"):
        from nas_prune.distill import DistillConfig as target
    elif stage == "evaluate":
        from nas_prune.evaluate import evaluate as target
    elif stage == "export":
        from nas_prune.deploy import export_generator as target
    else:
        from nas_prune.report_options import ReportOptions as target
    hints = _hints(target)
    if stage == "evaluate":
        hints["save_real_stats"] = bool
    if stage == "export":
        hints["model"] = str
    return hints


def _check_stage(src: str, stage: str, opts: Any) -> dict[str, Any]:
    where = f"stages.{stage}"
    if opts is None:
        opts = {}
    if not isinstance(opts, Mapping):
        raise NasPruneError(f"{src}: {where}: expected a mapping of options, got {opts!r}")
    known = stage_options(stage)
    hints = _stage_hints(stage)
    for key, value in opts.items():
        if key not in known:
            raise NasPruneError(f"{src}: {where}.{key}: unknown option{_suggest(str(key), sorted(known))}")
        _check_type(src, f"{where}.{key}", value, hints.get(key))
    missing = [k for k, d in known.items() if d is ... and k not in opts]
    if missing:
        raise NasPruneError(f"{src}: {where}.{missing[0]}: missing required option")
    opts = dict(opts)
    if stage == "prune" and opts.get("study") is not None:
        study = opts["study"]
        if not isinstance(study, Mapping):
            raise NasPruneError(f"{src}: {where}.study: expected a mapping of Optuna study options")
        from nas_prune.study import run_study

        sknown, shints = study_options(), _hints(run_study)
        for key, value in study.items():
            if key not in sknown:
                raise NasPruneError(f"{src}: {where}.study.{key}: unknown option{_suggest(str(key), sorted(sknown))}")
            _check_type(src, f"{where}.study.{key}", value, shints.get(key))
        smissing = [k for k, d in sknown.items() if d is ... and k not in study]
        if smissing:
            raise NasPruneError(f"{src}: {where}.study.{smissing[0]}: missing required option")
    _check_values(src, stage, opts)
    return opts


def _check_values(src: str, stage: str, opts: dict[str, Any]) -> None:
    """Value checks that need no files: the config dataclasses' own validation, MACs strings, enums."""

    def wrap(fn: Callable[[], Any], prefix: str) -> None:
        try:
            fn()
        except NasPruneError as err:
            raise NasPruneError(f"{src}: {prefix}{err}") from None
        except (TypeError, ValueError) as err:
            raise NasPruneError(f"{src}: {prefix}{err}") from None

    where = f"stages.{stage}."
    if stage == "train_teacher":
        from nas_prune.train_teacher import TeacherConfig

        wrap(lambda: TeacherConfig.from_dict(opts), where)
    elif stage in ("distill", "baseline"):
        from nas_prune.distill import DistillConfig

        wrap(lambda: DistillConfig.from_dict(opts), where)
    elif stage == "prune":
        from nas_prune.macs import check_convention, parse_input_size, parse_macs

        if "target_macs" not in opts and "target_latency" not in opts:  # search needs one of them
            raise NasPruneError(f"{src}: {where}target_macs: missing required option (or target_latency)")
        if opts.get("target_macs") is not None and not _placeholder(opts.get("target_macs")):
            wrap(lambda: parse_macs(opts["target_macs"]), where + "target_macs: ")
        if opts.get("target_latency") is not None and not _placeholder(opts.get("target_latency")):
            from nas_prune.latency.runtime import parse_latency

            wrap(lambda: parse_latency(opts["target_latency"]), where + "target_latency: ")
        wrap(lambda: check_convention(opts.get("convention", "fvcore")), where + "convention: ")
        wrap(lambda: parse_input_size(opts.get("input_size", 256)), where + "input_size: ")
    elif stage == "export":
        from nas_prune.deploy import FORMATS

        if opts.get("format", "onnx") not in FORMATS:
            raise NasPruneError(f"{src}: {where}format: {opts['format']!r} is not one of {', '.join(FORMATS)}")
        if opts.get("model", "distill") not in ("distill", "baseline", "prune"):
            raise NasPruneError(f"{src}: {where}model: {opts['model']!r} is not one of distill, baseline, prune")


def _flatten(opts: Mapping[str, Any], prefix: str = ""):
    """``(dotted key, value)`` of every leaf of nested option mappings."""
    for key, value in opts.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX)


def placeholders(recipe: "Recipe") -> list[tuple[str, str]]:
    """``(key, value)`` of every ``<...>`` placeholder left in a recipe (``--set`` keys)."""
    found = [(k, getattr(recipe, k)) for k in ("data", "teacher", "student", "space") if _placeholder(getattr(recipe, k))]
    for stage, opts in recipe.stages.items():
        found += [(f"{stage}.{k}", v) for k, v in _flatten(opts) if _placeholder(v)]
    return found


def resolve_recipe(path: str | os.PathLike) -> tuple[Path, str]:
    """The recipe file behind a path or a shipped name, and how messages name it.

    A file that exists is used as it is; otherwise a bare name (``demo``,
    ``horse2zebra.yaml``) is one of the recipes shipped in ``recipes/``,
    named by its stem in messages.

    Raises:
        NasPruneError: ``recipe not found`` with the shipped names.
    """
    from nas_prune.shipped import resolve_shipped

    found, shipped = resolve_shipped("recipes", path)
    return found, (found.stem if shipped else str(path))


def load_recipe(path: str | os.PathLike, *, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe (no file other than the recipe is opened).

    Args:
        path: a recipe YAML file, or the name of a shipped recipe (``demo``,
            ``horse2zebra``; :func:`resolve_recipe`).
        overrides: ``--set`` items (:func:`apply_overrides`).

    Raises:
        NasPruneError: ``<file>: <field>: <problem>`` for the first bad field.
    """
    path, src = resolve_recipe(path)
    raw = _read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise NasPruneError(f"{src}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    for key in raw:
        if key not in TOP_KEYS:
            raise NasPruneError(f"{src}: {key}: unknown key{_suggest(str(key), TOP_KEYS)}")
    for key in ("name", "run_dir"):
        if raw.get(key) in (None, ""):
            raise NasPruneError(f"{src}: {key}: missing required key")
    for key in ("name", "description", "run_dir", "data", "teacher", "student", "space"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise NasPruneError(f"{src}: {key}: expected a string, got {v!r}")
    from nas_prune.threads import parse_threads

    threads = parse_threads(raw.get("threads") if raw.get("threads") is not None else "auto",
                            where=f"{src}: threads")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, Mapping) or not stages_raw:
        raise NasPruneError(f"{src}: stages: expected a mapping with at least one of {', '.join(STAGES)}")
    stages: dict[str, dict[str, Any]] = {}
    for name in stages_raw:
        if name not in STAGES:
            raise NasPruneError(f"{src}: stages.{name}: unknown stage{_suggest(str(name), STAGES)}")
    for name in STAGES:
        if name in stages_raw:
            stages[name] = _check_stage(src, name, stages_raw[name])
    recipe = Recipe(source=src, name=raw["name"], description=raw.get("description") or "",
                    run_dir=Path(raw["run_dir"]), stages=stages, data=raw.get("data"),
                    teacher=raw.get("teacher"), student=raw.get("student"), space=raw.get("space"),
                    threads=threads, path=path)
    _check_wiring(recipe)
    return recipe


def _check_wiring(r: Recipe) -> None:
    src, st = r.source, r.stages
    if "dataset" in st and r.data is not None:
        raise NasPruneError(f"{src}: data: set either data or stages.dataset, not both")
    if "train_teacher" in st and r.teacher is not None:
        raise NasPruneError(f"{src}: teacher: set either teacher or stages.train_teacher, not both")
    if "prune" in st and r.student is not None:
        raise NasPruneError(f"{src}: student: set either student or stages.prune, not both")
    needs_data = [s for s in ("train_teacher", "distill", "baseline", "evaluate", "report") if s in st]
    if needs_data and r.data is None and "dataset" not in st:
        raise NasPruneError(f"{src}: data: stages.{needs_data[0]} needs a dataset (set data or add stages.dataset)")
    needs_teacher = [s for s in ("prune", "distill") if s in st]
    if needs_teacher and r.teacher is None and "train_teacher" not in st:
        raise NasPruneError(f"{src}: teacher: stages.{needs_teacher[0]} needs a teacher (set teacher or add stages.train_teacher)")
    needs_student = [s for s in ("distill", "baseline") if s in st]
    if needs_student and "prune" not in st and r.student is None:
        raise NasPruneError(f"{src}: student: stages.{needs_student[0]} needs a student (set student or add stages.prune)")
    if "export" in st:
        which = st["export"].get("model", "distill")
        if which in ("distill", "baseline", "prune") and which not in st and not (which == "prune" and r.student):
            raise NasPruneError(f"{src}: stages.export.model: {which!r} but the recipe has no {which} stage")


