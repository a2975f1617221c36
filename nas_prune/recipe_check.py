"""Everything a recipe run needs, checked before its first stage (``nas-prune validate`` and ``run``).

:func:`nas_prune.recipe.load_recipe` checks the format (keys, types, values) and opens
no file. :func:`check_recipe` then checks what would stop the run later, so a run
does not train for minutes and then stop:

- placeholders (``<...>``) left anywhere;
- the files and folders the recipe names: ``data`` (its layout for every stage's
  ``mode``, the splits the stages read, one batch of training images), ``teacher``
  (readable, in the pinned ``space`` if any), ``student``, ``space``, and the files of
  stage options (``evaluate.inception`` is loaded, ``evaluate.real_stats`` /
  ``segmenter``, ``distill.teacher_discriminator`` / ``vgg`` / ``segmenter``,
  ``prune.calib_data``, ``train_teacher.space``); semantic-map data for SPADE teachers;
- options that need another one or this machine: ``save_real_stats`` / ``real_stats``
  without ``inception``, GauGAN's VGG loss without ``vgg``, ``device: cuda`` or ``amp: fp16`` without CUDA, distillation
  layers the teacher does not have, a MACs target above the teacher's.

Problems name the recipe key (``stages.evaluate.inception``), never a command-line
flag; :func:`as_recipe_keys` rewrites the flags in messages of the library functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from nas_prune.families import data_kind
from nas_prune.errors import NasPruneError

__all__ = ["check_recipe", "as_recipe_keys"]

_TRAINING = ("train_teacher", "distill", "baseline")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def as_recipe_keys(message: str, stage: str) -> str:
    """``--crop-size`` -> ``stages.<stage>.crop_size`` in ``message`` for the stage's options."""
    from nas_prune.recipe import stage_options

    known = set(stage_options(stage))

    def sub(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        return f"stages.{stage}.{name}" if name in known else m.group(0)

    return _FLAG.sub(sub, message)


class _Checker:
    def __init__(self, recipe):
        self.r = recipe
        self.problems: list[str] = []
        self.teacher_arch = None
        self.spade_space = False
        self._inception: dict[str, str | None] = {}

    def add(self, key: str, problem: str) -> None:
        self.problems.append(f"{key}: {problem}")

    def attempt(self, key: str, fn: Callable[[], Any], *, stage: str | None = None) -> Any:
        """Run ``fn``; a NasPruneError becomes a problem of ``key`` (flags rewritten to keys)."""
        try:
            return fn()
        except NasPruneError as err:
            text = str(err)
            self.add(key, as_recipe_keys(text, stage) if stage else text)
        return None

    # -- what the stages read --------------------------------------------------------
    def opts(self, stage: str) -> dict[str, Any]:
        from nas_prune.recipe import stage_options

        out = {k: v for k, v in stage_options(stage).items() if v is not ...}
        if stage == "baseline":
            out.update(self.r.stages.get("distill", {}))
        out.update(self.r.stages.get(stage, {}))
        return out

    def data_reads(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``(stage, mode, split, options)`` of every read of the dataset."""
        st = self.r.stages
        reads = []
        if "train_teacher" in st:
            o = self.opts("train_teacher")
            reads.append(("train_teacher", "aligned" if o["objective"] == "pix2pix" else "unaligned", "train", o))
        for stage in ("distill", "baseline"):
            if stage in st:
                o = self.opts(stage)
                reads.append((stage, o["mode"], "train", o))
        dist = self.opts("distill") if "distill" in st else {}
        for stage in ("evaluate", "report"):
            if stage in st:
                o = dict(self.opts(stage))
                for key in ("mode", "direction", "crop_size"):
                    if key not in st[stage] and key in dist:
                        o[key] = dist[key]
                reads.append((stage, o.get("mode", "aligned"), "test", o))
        return reads

    # -- checks ----------------------------------------------------------------------
    def placeholders(self) -> None:
        from nas_prune.recipe import placeholders

        for key, value in placeholders(self.r):
            where = key if key in ("data", "teacher", "student", "space") else f"stages.{key}"
            self.add(where, f"replace the placeholder {value!r} (--set {key}=...)")

    def data(self) -> None:
        from nas_prune.data import TransformConfig, open_dataset

        r = self.r
        if r.data is None or "dataset" in r.stages or _is_placeholder(r.data):
            return
        if not Path(r.data).is_dir():
            self.add("data", f"{r.data} is not a folder")
            return
        arch = self.teacher_arch
        if data_kind(arch) == "semantic" or (arch is None and self.spade_space):
            return self.seg_data(arch)
        for stage, mode, split, o in self.data_reads():
            crop = o.get("crop_size", 256)
            if split == "train":
                tf = TransformConfig(load_size=o.get("load_size", crop), crop_size=crop,
                                     preprocess=o.get("preprocess", "resize_and_crop"), flip=False)
            else:
                tf = TransformConfig(load_size=crop, crop_size=crop, preprocess="resize", flip=False)
            try:
                ds = open_dataset(r.data, mode=mode, split=split, direction=o.get("direction", "AtoB"), transform=tf)
            except NasPruneError as err:
                how = (f"stages.train_teacher.objective {o['objective']}" if stage == "train_teacher"
                       else f"stages.{stage}")
                self.add("data", f"{as_recipe_keys(str(err), stage)} ({how} reads it as {mode} data)")
                return
            if split == "train" and len(ds) < o.get("batch_size", 1):
                self.add("data", f"the train split has {len(ds)} images, fewer than one batch of "
                                 f"stages.{stage}.batch_size {o['batch_size']}")

    def seg_data(self, arch) -> None:
        """Semantic-map data of SPADE generators (:mod:`nas_prune.data_seg`): the splits the stages read."""
        if arch is None:
            return  # the label count comes from the teacher, which has its own problem
        from nas_prune.data import TransformConfig
        from nas_prune.data_seg import open_seg_dataset

        splits = sorted({split for _, _, split, _ in self.data_reads()}, reverse=True)
        for split in splits:
            tf = TransformConfig(load_size=256, crop_size=256, preprocess="none", flip=False)
            try:
                open_seg_dataset(self.r.data, split=split, label_nc=arch.label_nc, transform=tf)
            except NasPruneError as err:
                self.add("data", str(err))
                return

    def teacher(self) -> None:
        from nas_prune.space import load_space

        r = self.r
        space = None
        if r.space is not None and not _is_placeholder(r.space):
            space = self.attempt("space", lambda: load_space(r.space))
            if space is None:
                return
            self.spade_space = data_kind(space) == "semantic"
        if "train_teacher" in r.stages:
            from nas_prune.train_teacher import TeacherConfig, teacher_arch

            o = r.stages["train_teacher"]
            if o.get("space") is not None:
                if self.attempt("stages.train_teacher.space", lambda: load_space(o["space"])) is None:
                    return
            self.teacher_arch = self.attempt("stages.train_teacher", lambda: teacher_arch(TeacherConfig.from_dict(o)))
            return
        if r.teacher is None or _is_placeholder(r.teacher):
            return
        if not Path(r.teacher).is_file():
            self.add("teacher", f"{r.teacher} not found")
            return
        from nas_prune.load import load_generator

        def load():
            try:
                return load_generator(r.teacher, space=space)
            except NasPruneError as err:
                if space is not None and "does not fit search space" in str(err):
                    raise NasPruneError(f"{err}; the recipe pins space: {r.space} (drop it to follow the teacher: "
                                        "--set space=null)") from None
                raise

        loaded = self.attempt("teacher", load)
        if loaded is not None:
            self.teacher_arch = loaded.arch

    def student(self) -> None:
        r = self.r
        if r.student is None or "prune" in r.stages or _is_placeholder(r.student):
            return
        if not Path(r.student).exists():
            self.add("student", f"{r.student} not found")
            return
        from nas_prune.export import read_student

        self.attempt("student", lambda: read_student(r.student, load_weights=False))

    def inception(self, key: str, path: str) -> None:
        """Load the FID Inception weights as the stage will (once per file)."""
        if path not in self._inception:
            from nas_prune.inception import load_inception

            try:
                load_inception(path)
                self._inception[path] = None
            except NasPruneError as err:
                self._inception[path] = str(err)
        if self._inception[path] is not None:
            self.add(key, self._inception[path])

    def files(self) -> None:
        st = self.r.stages
        ev = st.get("evaluate", {})
        if "evaluate" in st:
            inception = ev.get("inception")
            if inception is not None and not _is_placeholder(inception):
                self.inception("stages.evaluate.inception", inception)
            for key in ("real_stats", "save_real_stats"):
                if ev.get(key) and inception is None:
                    self.add(f"stages.evaluate.{key}", "needs stages.evaluate.inception (FID Inception weights): "
                                                       "the statistics are Inception features")
            rs = ev.get("real_stats")
            if rs and not _is_placeholder(rs) and not Path(rs).is_file():
                self.add("stages.evaluate.real_stats", f"{rs} not found")
        for stage in ("distill", "baseline"):
            if stage not in st:
                continue
            for key in ("teacher_discriminator", "inception", "vgg", "segmenter"):
                value = st[stage].get(key)
                if not value or _is_placeholder(value):
                    continue
                if key == "inception":
                    self.inception(f"stages.{stage}.inception", value)
                elif not Path(value).is_file():
                    self.add(f"stages.{stage}.{key}", f"{value} not found")
            o = self.opts(stage)
            gaugan = o.get("objective") == "gaugan" or (
                o.get("objective") == "auto" and (self.spade_space or data_kind(self.teacher_arch) == "semantic"))
            if gaugan and (o.get("lambda_vgg") or 0) > 0 and not o.get("vgg"):
                self.add(f"stages.{stage}.vgg", "GauGAN's VGG loss (lambda_vgg > 0) needs the VGG19 weights file "
                                                "(or set lambda_vgg: 0)")
        seg = ev.get("segmenter")
        if seg and not _is_placeholder(seg) and not Path(seg).is_file():
            self.add("stages.evaluate.segmenter", f"{seg} not found")
        calib = st.get("prune", {}).get("calib_data")
        if calib and not _is_placeholder(calib) and not Path(calib).is_dir():
            self.add("stages.prune.calib_data", f"{calib} is not a folder")

    def machine(self) -> None:
        import torch

        cuda = torch.cuda.is_available()
        for stage in (*_TRAINING, "evaluate"):
            if stage not in self.r.stages:
                continue
            o = self.opts(stage)
            device = str(o.get("device", "auto"))
            if device.startswith("cuda") and not cuda:
                self.add(f"stages.{stage}.device", f"{device}, but CUDA is not available on this machine "
                                                   "(use auto or cpu)")
            if o.get("amp") == "fp16" and (device == "cpu" or not cuda):
                self.add(f"stages.{stage}.amp", "fp16 needs a CUDA device; use bf16 or none on CPU")

    def architecture(self) -> None:
        arch = self.teacher_arch
        if arch is None:
            return
        from nas_prune.model import check_taps

        for stage in ("distill", "baseline"):
            taps = self.opts(stage).get("distill_taps") if stage in self.r.stages else None
            distill = self.opts(stage).get("distill") if stage in self.r.stages else None
            if taps and distill:
                self.attempt(f"stages.{stage}.distill_taps", lambda: check_taps(arch, taps))
        prune = self.r.stages.get("prune")
        if prune and not _is_placeholder(prune.get("target_macs")):
            from nas_prune.macs import count_macs, format_macs, parse_input_size, parse_macs

            conv = prune.get("convention", "fvcore")
            try:
                target = parse_macs(prune["target_macs"])
                full = count_macs(arch, input_size=parse_input_size(prune.get("input_size", 256)), convention=conv)
            except (NasPruneError, TypeError, ValueError, AttributeError):
                return  # format errors are load_recipe's; other families count elsewhere
            if target >= full:
                self.add("stages.prune.target_macs", f"{format_macs(target, conv)} is not below the teacher's "
                                                     f"{format_macs(full, conv)}: nothing to prune")


def _is_placeholder(value: Any) -> bool:
    from nas_prune.recipe import _placeholder

    return _placeholder(value)


def check_recipe(recipe) -> list[str]:
    """Check what a run of ``recipe`` (a loaded :class:`~nas_prune.recipe.Recipe`) will need.

    Returns:
        What was checked, one line each (for ``nas-prune validate``).

    Raises:
        NasPruneError: ``<recipe>: <key>: <problem>`` for one problem, or every
            problem on one line (``<recipe>: 3 settings would stop the run: ...``).
    """
    c = _Checker(recipe)
    c.placeholders()
    c.teacher()
    c.data()
    c.student()
    c.files()
    c.machine()
    c.architecture()
    src = recipe.source
    if len(c.problems) == 1:
        raise NasPruneError(f"{src}: {c.problems[0]}")
    if c.problems:
        raise NasPruneError(f"{src}: {len(c.problems)} settings would stop the run:", details=c.problems)
    done = []
    if recipe.data is not None and "dataset" not in recipe.stages:
        spade = data_kind(c.teacher_arch) == "semantic"
        kinds = "semantic maps" if spade else ", ".join(sorted({m for _, m, _, _ in c.data_reads()}))
        done.append(f"data: {recipe.data} ({kinds})")
    if c.teacher_arch is not None:
        done.append(f"teacher: {c.teacher_arch.summary()}")
    return done
