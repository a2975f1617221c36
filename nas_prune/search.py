"""``nas-prune search``: one-step pruning of a teacher to a MACs target, end to end.

Stages, each a separate function so other searches (e.g. an Optuna study proposing
rescaled scores) can reuse them:

1. :func:`prune_to_target` -- importance scores, global-threshold plan
   (:func:`nas_prune.plan.plan_for_target`), sliced weights, fvcore check. No I/O.
2. :func:`arch_document` / :func:`export_result` -- ``arch.json``, ``student.safetensors``,
   ``summary.md`` written atomically (:mod:`nas_prune.export`).
3. :func:`render_result` -- the rich tables the CLI prints.

:func:`search` chains them. Example::

    from nas_prune.search import search
    result = search(teacher="latest_net_G.pth", target_macs="2.6G", convention="paper")
    result.student_arch.summary(), result.out
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.macs import (
    CONVENTIONS,
    check_convention,
    count_macs,
    count_params,
    format_macs,
    parse_input_size,
    parse_macs,
)
from nas_prune.plan import PrunePlan

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.latency.runtime import Runtime
    from nas_prune.latency.target import LatencyOptions, LatencyReport
    from nas_prune.load import LoadedGenerator, UserModel

DEFAULT_RUNS = Path("runs") / "search"
VERIFY_MODES = ("fast", "full", "off")


@dataclass
class SearchResult:
    """Everything one-step pruning produced.

    Attributes:
        teacher: the loaded teacher (arch, CAT-layout weights, sha256, path).
        space: search-space name, or None when no space file was given.
        criterion: importance criterion used.
        scores: ``{layer: 1-D scores}`` the plan was computed from.
        plan: kept channel indices.
        student_arch: the student.
        state_dict: the student's weights, sliced from the teacher.
        target_macs: the budget, in ``convention``, for one ``input_size`` image (None
            with a latency target only).
        convention: MACs convention of the target.
        input_size: ``(H, W)``.
        macs: analytic student MACs ``{"fvcore": .., "paper": ..}``.
        teacher_macs: the same for the teacher.
        measured_fvcore: fvcore count on a real forward pass, scaled to ``input_size``
            (None if not verified).
        traced_size: input size of that forward pass.
        params / teacher_params: learnable parameters.
        seconds: wall time per stage (``load``, ``importance``, ``plan``, ``slice``,
            ``verify``, ``total``).
        fill: whether the fill pass ran.
        calibration: where the ``activation`` criterion's images came from (None
            for other criteria).
        out: the exported folder, once written.
        latency: measured (and predicted) latency on a runtime, when one was asked
            for (:mod:`nas_prune.latency.target`).
    """

    teacher: "LoadedGenerator"
    space: str | None
    criterion: str
    scores: dict[str, "torch.Tensor"]
    plan: PrunePlan
    student_arch: Arch
    state_dict: dict[str, "torch.Tensor"]
    target_macs: int | None
    convention: str
    input_size: tuple[int, int]
    macs: dict[str, int]
    teacher_macs: dict[str, int]
    measured_fvcore: int | None
    traced_size: tuple[int, int] | None
    params: int
    teacher_params: int
    fill: bool = True
    calibration: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    latency: "LatencyReport | None" = None

    @property
    def reached(self) -> int:
        """Student MACs in the target's convention."""
        return self.macs[self.convention]

    @property
    def compression(self) -> float:
        """Teacher MACs / student MACs in the target's convention."""
        return self.teacher_macs[self.convention] / self.reached

    def to_json(self) -> dict[str, Any]:
        """Machine-readable summary (what ``--json`` prints)."""
        return {
            "out": str(self.out) if self.out else None,
            "target": self.target(),
            "input_size": list(self.input_size),
            "student": {
                "arch": self.student_arch.to_dict(),
                "macs": dict(self.macs),
                "measured_fvcore": self.measured_fvcore,
                "params": self.params,
            },
            "teacher": {
                "file": str(self.teacher.path),
                "sha256": self.teacher.sha256,
                "macs": dict(self.teacher_macs),
                "params": self.teacher_params,
            },
            "gap": None if self.target_macs is None else (self.target_macs - self.reached) / self.target_macs,
            "compression": self.compression,
            "criterion": self.criterion,
            "calibration": self.calibration,
            "threshold": self.plan.threshold,
            "filled_channels": self.plan.filled,
            "seconds": dict(self.seconds),
            "latency": None if self.latency is None else self.latency.to_json(),
            "round_to_auto": None if self.latency is None else self.latency.round_to_auto,
        }

    def target(self) -> dict[str, Any]:
        """``{"macs", "convention"}`` plus ``"latency_ms"`` with a latency target."""
        out: dict[str, Any] = {"macs": self.target_macs, "convention": self.convention}
        if self.latency is not None and self.latency.target_ms is not None:
            out["latency_ms"] = self.latency.target_ms
        return out


def prune_to_target(
    teacher: "LoadedGenerator",
    *,
    target_macs: int | str | None,
    convention: str = "fvcore",
    input_size: int | str | tuple[int, int] = 256,
    min_channels: int = 16,
    importance: str | None = None,
    scores: Mapping[str, "torch.Tensor"] | None = None,
    round_to: int | str | None = None,
    fill: bool = True,
    calib_data: str | os.PathLike | None = None,
    calib_images: int = 8,
    verify: str = "fast",
    space: str | None = None,
    latency: "LatencyOptions | None" = None,
) -> SearchResult:
    """Prune a loaded teacher to ``target_macs`` and/or a latency target (no files written).

    Args:
        teacher: from :func:`nas_prune.load.load_generator`.
        target_macs: budget for one image, e.g. ``"2.6G"`` or ``2_600_000_000``; None
            when ``latency`` carries a target instead.
        convention: ``fvcore`` or ``paper`` (:mod:`nas_prune.macs`).
        input_size: ``H``, ``"HxW"`` or ``(H, W)``.
        min_channels: stem/head floor.
        importance: ``gamma`` / ``l1`` / ``activation``; None = gamma if the norms are
            affine, else l1 (:mod:`nas_prune.importance`).
        scores: precomputed scores (skips ``importance``; recorded as ``custom``
            unless ``importance`` names them).
        round_to: round widths to multiples of this; ``"auto"`` picks the multiple with
            the best measured speed per MAC on ``latency.runtime``.
        fill: run the fill pass after thresholding (:func:`~nas_prune.plan.plan_for_target`).
        calib_data: folder of calibration images for ``activation`` (default: the
            fallback of :func:`nas_prune.calibration.calibration_images`).
        calib_images: how many calibration images (read at ``input_size``).
        verify: count the built student with fvcore on a real forward pass and fail if
            it differs from the analytic count: ``fast`` traces each distinct layer once
            (:func:`nas_prune.apply.fvcore_by_distinct_layers`) at a reduced input size and
            scales exactly (:func:`nas_prune.apply.trace_size`), ``full`` traces the whole
            student at ``input_size``, ``off`` skips the check.
        space: search-space name to record.
        latency: from :func:`nas_prune.latency.target.latency_options`: a latency
            target and/or the runtime to measure the student on.

    Raises:
        NasPruneError: bad target (above the teacher, below the floor), bad option.
    """
    import torch

    from nas_prune.apply import slice_state_dict, verify_macs
    from nas_prune.calibration import calibration_images
    from nas_prune.importance import compute_importance
    from nas_prune.latency.target import parse_round_to
    from nas_prune.model import build_generator, check_forward_memory, check_input_size
    from nas_prune.plan import plan_for_target

    target, size = check_options(
        target_macs=target_macs, convention=convention, input_size=input_size, min_channels=min_channels,
        importance=None if scores is not None else importance, round_to=round_to, calib_images=calib_images,
        verify=verify, latency=latency,
    )
    round_to = parse_round_to(round_to)
    arch = teacher.arch
    check_input_size(arch, size)
    if verify == "full":
        check_forward_memory(arch, size)
    if scores is None and (importance or "") == "activation":
        check_forward_memory(arch, size, batch=calib_images)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    calibration = None
    if scores is None:
        options: dict[str, Any] = {}
        if (importance or "") == "activation":
            options["images"], _, calibration = calibration_images(
                arch, source=calib_data, n_images=calib_images, input_size=size
            )
        criterion, scores = compute_importance(importance, arch, teacher.state_dict, **options)
    else:
        criterion = importance or "custom"
    seconds["importance"] = time.perf_counter() - start

    start = time.perf_counter()
    report = None
    if latency is None:
        plan = plan_for_target(scores, arch, target_macs=target, convention=convention, input_size=size,
                               min_channels=min_channels, round_to=round_to, fill=fill)
    else:
        from nas_prune.latency.target import plan_for_latency

        plan, report = plan_for_latency(scores, teacher, latency, target_macs=target, convention=convention,
                                        input_size=size, min_channels=min_channels, round_to=round_to, fill=fill)
    student = plan.student_arch()
    macs = {c: count_macs(student, input_size=size, convention=c) for c in CONVENTIONS}
    seconds["plan" if latency is None else "plan+latency"] = time.perf_counter() - start
    if target is not None and macs[convention] > target:  # guaranteed by the plan; a failure is a bug
        raise RuntimeError(f"plan misses the target: {macs[convention]:,} > {target:,}")

    start = time.perf_counter()
    state = slice_state_dict(plan, teacher.state_dict)
    seconds["slice"] = time.perf_counter() - start

    measured = traced = None
    if verify != "off":
        start = time.perf_counter()
        with torch.device("meta"):  # no weight init: the sliced tensors are assigned below
            model = build_generator(student)
        model.load_state_dict(state, strict=True, assign=True)
        for name, buf in list(model.named_buffers()):  # buffers the state dict does not hold (none today)
            if buf.is_meta:
                raise RuntimeError(f"student buffer {name} has no value after loading the sliced weights")
        measured, traced = verify_macs(
            model, input_size=size, expected_fvcore=macs["fvcore"], full=verify == "full"
        )
        seconds["verify"] = time.perf_counter() - start

    return SearchResult(
        teacher=teacher,
        space=space,
        criterion=criterion,
        scores={k: v for k, v in scores.items()},
        plan=plan,
        student_arch=student,
        state_dict=state,
        target_macs=target,
        convention=convention,
        input_size=size,
        macs=macs,
        teacher_macs={c: count_macs(arch, input_size=size, convention=c) for c in CONVENTIONS},
        measured_fvcore=measured,
        traced_size=traced,
        params=count_params(student),
        teacher_params=count_params(arch),
        fill=fill,
        calibration=calibration,
        seconds=seconds,
        latency=report,
    )


def check_options(
    *,
    target_macs: int | str | None,
    convention: str,
    input_size: int | str | tuple[int, int],
    min_channels: int,
    importance: str | None,
    round_to: int | str | None,
    calib_images: int,
    verify: str = "fast",
    latency: "LatencyOptions | None" = None,
) -> tuple[int | None, tuple[int, int]]:
    """Reject bad one-step pruning options before any work is done (also run by a study).

    Returns:
        ``(target MACs or None, (H, W))`` parsed from ``target_macs`` and ``input_size``.

    Raises:
        NasPruneError: naming the first bad option.
    """
    from nas_prune.importance import CRITERIA

    from nas_prune.latency.target import parse_round_to

    check_convention(convention)
    if target_macs is None and (latency is None or latency.target_ms is None):
        raise NasPruneError("give --target-macs, --target-latency or both")
    target = None if target_macs is None else parse_macs(target_macs)
    size = parse_input_size(input_size)
    if importance is not None and importance not in CRITERIA:
        raise NasPruneError(f"unknown importance criterion {importance!r}: choose {', '.join(CRITERIA)}")
    if verify not in VERIFY_MODES:
        raise NasPruneError(f"unknown verify mode {verify!r}: choose {', '.join(VERIFY_MODES)}")
    if min_channels < 1:
        raise NasPruneError(f"--min-channels must be >= 1, got {min_channels}")
    if parse_round_to(round_to) == "auto" and latency is None:
        raise NasPruneError("--round-to auto times students on a runtime: it is not supported with --trials")
    if calib_images < 1:
        raise NasPruneError(f"--calib-images must be >= 1, got {calib_images}")
    return target, size


def arch_document(result: SearchResult) -> dict[str, Any]:
    """The ``arch.json`` document of a result (:mod:`nas_prune.export` describes it)."""
    import nas_prune
    from nas_prune.export import FORMAT, FVCORE_COUNTER, VERSION

    h, w = result.input_size
    return {
        "format": FORMAT,
        "version": VERSION,
        "space": result.space,
        "arch": result.student_arch.to_dict(),
        "macs": {
            "input_size": [h, w],
            "fvcore": result.macs["fvcore"],
            "paper": result.macs["paper"],
            "measured": None
            if result.measured_fvcore is None
            else {
                "counter": FVCORE_COUNTER,
                "convention": "fvcore",
                "macs": result.measured_fvcore,
                "traced_input_size": list(result.traced_size),
            },
        },
        "params": result.params,
        "provenance": {
            "teacher": {
                "file": Path(result.teacher.path).name,
                "sha256": result.teacher.sha256,
                "layout": result.teacher.layout,
                "arch": result.teacher.arch.to_dict(),
                "macs": dict(result.teacher_macs),
                "params": result.teacher_params,
            },
            "target": result.target(),
            "criterion": result.criterion,
            "threshold": result.plan.threshold,
            "min_channels": result.plan.min_channels,
            "round_to": result.plan.round_to,
            **({"round_to_auto": result.latency.round_to_auto}
               if result.latency is not None and result.latency.round_to_auto else {}),
            "fill": result.fill,
            "filled_channels": result.plan.filled,
            "kept": result.plan.kept_lists(),
            "tool": {"name": "nas-prune", "version": nas_prune.__version__},
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(result.seconds.get("total", sum(result.seconds.values())), 4),
        },
        **({"latency": result.latency.to_json()} if result.latency is not None else {}),
    }


def default_out_dir(teacher_path: str | os.PathLike, target_macs: int | None, convention: str,
                    latency: "LatencyOptions | None" = None) -> Path:
    """``runs/search/<teacher stem>-<target>-<convention>``, e.g. ``runs/search/G-2.6G-paper``;
    a latency target adds ``-<ms>ms-<runtime>`` (``G-40ms-torch-cpu``, ``G-2.6G-paper-40ms-onnxruntime``)."""
    parts = [Path(teacher_path).stem]
    if target_macs is not None:
        text = format_macs(target_macs)
        parts += [re.sub(r"\.?0+(?=[KMGT]$)", "", text), convention]  # 2.600G -> 2.6G, 1.000G -> 1G
    if latency is not None and latency.target_ms is not None:
        parts += [f"{latency.target_ms:g}ms", latency.runtime.name]
    return DEFAULT_RUNS / "-".join(parts)


def export_result(
    result: SearchResult,
    out: str | os.PathLike,
    *,
    force: bool = False,
    provenance: Mapping[str, Any] | None = None,
    summary_note: str = "",
    inputs: Sequence[str | os.PathLike | None] = (),
    beside: bool = False,
) -> Path:
    """Write ``arch.json``, ``student.safetensors`` and ``summary.md`` to ``out`` atomically.

    Args:
        force: replace what nas-prune wrote in an existing folder
            (:func:`nas_prune.export.write_student`).
        provenance: extra entries for ``arch.json``'s ``provenance`` (e.g. ``study``).
        summary_note: a paragraph appended to ``summary.md``.
        inputs: the command's input files, never written over.
        beside: write next to other files of the same command (a study's database).
    """
    from nas_prune.export import summary_markdown, write_student

    doc = arch_document(result)
    doc["provenance"].update(provenance or {})
    result.out = write_student(out, document=doc, state_dict=result.state_dict,
                               summary=summary_markdown(doc) + summary_note, force=force,
                               inputs=inputs, beside=beside)
    return result.out


def search(
    *,
    teacher: str | os.PathLike,
    target_macs: int | str | None = None,
    space: str | os.PathLike | None = None,
    convention: str = "fvcore",
    input_size: int | str | tuple[int, int] = 256,
    min_channels: int = 16,
    importance: str | None = None,
    round_to: int | str | None = None,
    fill: bool = True,
    calib_data: str | os.PathLike | None = None,
    calib_images: int = 8,
    out: str | os.PathLike | None = None,
    force: bool = False,
    write: bool = True,
    verify: str = "fast",
    target_latency: str | None = None,
    runtime: "str | Runtime | None" = None,
    threads: int | None = None,
    batch: int = 1,
    latency_cache: str | os.PathLike | None = None,
    refresh_latency: bool = False,
    model: "UserModel | None" = None,
    allow_busy: bool = False,
) -> SearchResult:
    """Load ``teacher``, prune it to ``target_macs`` and/or ``target_latency``, export the student folder.

    Options are those of :func:`prune_to_target` (``calib_data`` needs
    ``importance="activation"``), plus those of
    :func:`nas_prune.latency.target.latency_options`, and:

    Args:
        teacher: checkpoint file (``.pth`` / ``.pt`` / ``.safetensors``, CAT or ResNet layout).
        space: search-space YAML the teacher must belong to (its name is recorded).
        out: output folder; default :func:`default_out_dir`.
        force: replace what nas-prune wrote in an existing output folder; other files stay
            (:func:`nas_prune.outputs.clear`).
        write: export the folder (false: only compute).
        model: the user's generator code (:class:`nas_prune.load.UserModel`, ``--model``):
            ``teacher`` is its state dict; ``model.keep`` names modules never pruned.

    Raises:
        NasPruneError: any user error, before anything is written.
    """
    from nas_prune.load import load_generator
    from nas_prune.space import load_space, shipped_space_of

    from nas_prune.latency.target import latency_options

    t0 = time.perf_counter()
    latency = latency_options(target_latency=target_latency, runtime=runtime, threads=threads, batch=batch,
                              round_to=round_to, cache_dir=latency_cache, refresh=refresh_latency,
                              allow_busy=allow_busy)
    target, size = check_options(
        target_macs=target_macs, convention=convention, input_size=input_size, min_channels=min_channels,
        importance=importance, round_to=round_to, calib_images=calib_images, verify=verify, latency=latency,
    )
    if calib_data is not None and importance != "activation":
        raise NasPruneError(
            "--calib-data is read by --importance activation and by an Optuna study (--trials); "
            "this search uses neither"
        )
    space_obj = load_space(space) if space is not None else None
    out_dir = Path(out) if out is not None else default_out_dir(teacher, target, convention, latency)
    from nas_prune.locks import hold

    with hold(out_dir, command="search", enabled=write):  # one writer per output folder (nas_prune.locks)
        return _search_and_write(
            teacher=teacher, space=space, space_obj=space_obj, out_dir=out_dir, write=write, force=force, t0=t0,
            target=target, convention=convention, size=size, min_channels=min_channels, importance=importance,
            round_to=round_to, fill=fill, calib_data=calib_data, calib_images=calib_images, verify=verify,
            latency=latency, model=model)


def _search_and_write(*, teacher, space, space_obj, out_dir: Path, write: bool, force: bool, t0: float, target,
                      convention, size, min_channels, importance, round_to, fill, calib_data, calib_images, verify,
                      latency, model=None) -> SearchResult:
    """:func:`search` with the output folder held."""
    from nas_prune.load import load_generator
    from nas_prune.space import shipped_space_of

    if write:
        from nas_prune.export import student_files
        from nas_prune.outputs import check_out_dir

        check_out_dir(out_dir, force=force, inputs=[teacher, space], writes=student_files(),
                      dry_run=True)
    loaded = load_generator(teacher, space=space_obj, model=model)
    load_s = time.perf_counter() - t0
    result = prune_to_target(
        loaded,
        target_macs=target,
        convention=convention,
        input_size=size,
        min_channels=min_channels,
        importance=importance,
        round_to=round_to,
        fill=fill,
        calib_data=calib_data,
        calib_images=calib_images,
        verify=verify,
        space=space_obj.name if space_obj is not None else shipped_space_of(loaded.arch),
        latency=latency,
    )
    result.seconds = {"load": load_s, **result.seconds}
    result.seconds["total"] = time.perf_counter() - t0
    if write:
        export_result(result, out_dir, force=force, inputs=[teacher, space])
    return result
