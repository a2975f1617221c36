"""``run_study``: run, resume or join a study and export the picked student."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas_prune.families import data_kind, family_of
from nas_prune.errors import NasPruneError
from nas_prune.macs import format_macs, parse_input_size
from nas_prune.study.output import PLOT_FILE, TRIALS_FILE, _export, _write_trials_csv, check_out
from nas_prune.study.records import StudyResult, TrialRecord, pareto_front
from nas_prune.study.render import plot_pareto
from nas_prune.study.storage import open_storage
from nas_prune.study.variables import DEFAULT_RANGE, parse_objectives, search_groups
from nas_prune.study.worker import _Study

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.latency.runtime import Runtime


def _remove_if_empty(out: Path) -> None:
    """Remove folder ``out`` if it holds nothing but nas-prune's manifest."""
    from nas_prune.outputs import MANIFEST

    try:
        entries = list(out.iterdir())
        if all(p.name == MANIFEST and p.is_file() for p in entries):
            for p in entries:
                p.unlink()
            out.rmdir()
    except OSError:
        pass


def _default_name(teacher: str | os.PathLike, target: int, convention: str, score: str, objectives) -> str:
    """``<teacher stem>-<target>-<convention>-<score>-<objectives>``, e.g. ``G-2.6G-paper-zero-shot-quality``."""
    from nas_prune.search import default_out_dir

    return f"{default_out_dir(teacher, target, convention).name}-{score}-{'+'.join(objectives)}"


def _holding(fn):
    """Run ``fn`` under the stop-signal handler (SIGTERM / SIGHUP stop a study as Ctrl-C does:
    :mod:`nas_prune.interrupt`), with an ExitStack ``_held`` for the folder locks it takes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from nas_prune.interrupt import handle_signals

        with handle_signals(), contextlib.ExitStack() as held:
            return fn(*args, _held=held, **kwargs)
    return wrapper


@_holding
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
    latency_runtime: "str | Runtime | None" = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    plot: bool = True,
    grace_s: float = 120.0,
    log: Callable[[str], None] | None = None,
    model: Any = None,
    _held: contextlib.ExitStack | None = None,
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
        latency_runtime: ``torch-cpu``, ``onnxruntime`` or ``cuda``: where the latency
            objective is timed (:mod:`nas_prune.latency.runtime`, the code ``search
            --target-latency`` uses); default the study's device.
        out: output folder; default ``runs/search/<teacher>-<target>-<convention>-study``.
            It may be new or empty, or hold this same study (same name and options: it is
            resumed); another result there is an error unless ``force``.
        force: replace another result in ``out``: what nas-prune wrote there is removed,
            other files stay (:func:`nas_prune.outputs.clear`).
        plot: write ``pareto.png`` with two objectives (skipped without matplotlib).
        grace_s: a running trial without heartbeat for this long is taken as dead.
        log: called with one line per event (trial finished, resumed, ...).
        model: the user's generator code (:class:`nas_prune.load.UserModel`): ``teacher`` is its state dict.

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
    if pick is not None and pick >= trials:  # the pick list holds at most one student per trial
        raise NasPruneError(f"--pick {pick}: a study of {trials} trials ranks at most {trials} students "
                            f"(--pick 0..{trials - 1})")
    low, high = (float(v) for v in multiplier_range)
    if not (0 < low <= 1.0 <= high) or low == high:
        raise NasPruneError(f"multiplier range must satisfy 0 < low <= 1 <= high, low < high; got {low}, {high}")
    if calib_images < 2:
        raise NasPruneError(f"--calib-images must be >= 2, got {calib_images}")
    if latency_repeats < 1:
        raise NasPruneError(f"latency repeats must be >= 1, got {latency_repeats}")
    if round_to == "auto":
        raise NasPruneError("--round-to auto is not supported with --trials: give a multiple, e.g. --round-to 8")
    l_runtime = None
    if latency_runtime is not None:
        from nas_prune.latency.runtime import Runtime

        if "latency" not in objs:
            raise NasPruneError("--runtime times the latency objective of a study: add --objectives quality,latency")
        l_runtime = (latency_runtime if isinstance(latency_runtime, Runtime)
                     else Runtime(latency_runtime, threads=latency_threads))
    s_size = parse_input_size(score_size) if score_size is not None else size
    l_size = parse_input_size(latency_size) if latency_size is not None else size
    if out is None:
        base = default_out_dir(teacher, target, convention)
        out = DEFAULT_RUNS / f"{base.name}-study"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NasPruneError(f"output path exists and is not a folder: {out}")
    from nas_prune.outputs import check_writable

    check_writable(out)
    open_storage(storage, out=out, check_only=True)  # URL form and database driver, before any work
    say = log or (lambda _line: None)

    space_obj = load_space(space) if space is not None else None
    loaded = load_generator(teacher, space=space_obj, model=model)
    arch = loaded.arch
    if data_kind(arch) != "images":
        raise NasPruneError(
            f"{teacher}: an Optuna study (--trials) scores students on calibration images, a "
            f"{family_of(arch).title} generator reads semantic maps: not supported; run the one-step search "
            "(without --trials)"
        )
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from nas_prune.model import check_forward_memory, check_input_size

    for option, value in (("--input-size", size), ("--score-size", s_size), ("latency size", l_size)):
        check_input_size(arch, value, option=option)
    check_forward_memory(arch, s_size, batch=calib_images, device=str(dev), option="--score-size")
    check_forward_memory(arch, l_size, device=str(dev), option="latency size")
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

    name = study_name or _default_name(teacher, target, convention, str(spec), objs)
    teacher_model = loaded.build(device=str(dev))
    probe = FidelityProbe(teacher_model, images, device=dev)
    worker = _Study(
        teacher=loaded, scores=base_scores, criterion=criterion, groups=search_groups(arch),
        layers=prunable_layers(arch), target=target, convention=convention, size=size,
        min_channels=min_channels, round_to=round_to, fill=fill, verify=verify, spec=spec, objectives=objs,
        quality_metric=quality_metric, multiplier_range=(low, high), score_size=s_size,
        calibration=calib_text if calib_data is None else str(Path(calib_data).resolve()),
        store=None, study_name=name, n_trials=trials, seed=seed, probe=probe,
        train_images=train_images, finetune=finetune, measure_latency=measure_latency,
        device=dev, latency_size=l_size, latency_threads=latency_threads, latency_runtime=l_runtime,
        latency_repeats=latency_repeats, poll_s=0.5,
        evaluated=[], ran=[], say=say,
    )
    from nas_prune.locks import hold

    # workers of this study share --out; any other writer of it is refused (nas_prune.locks)
    _held.enter_context(hold(out, command="search --trials", shared=name))
    check_out(out, name=name, config=worker.config(), storage=storage, force=force,
              inputs=[teacher, space, calib_data], say=say)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        store = worker.store = open_storage(storage, out=out, grace_s=grace_s, say=say)
    except BaseException:
        if created:
            _remove_if_empty(out)  # a storage that cannot be opened leaves no empty --out
        raise
    try:
        study = worker.open_study()
        worker.run(study)
        trials = study.get_trials(deepcopy=True)
    finally:
        store.close()

    records = [TrialRecord.from_trial(t) for t in trials]
    front = pareto_front(records, objectives=objs)
    if not front:
        raise NasPruneError(f"study {name!r}: no complete trial to export (all pruned or failed)")
    if pick is None:
        index = max(range(len(front)), key=lambda i: (front[i].quality, -front[i].number))
    elif pick >= len(front):
        what = "Pareto front" if len(objs) == 2 else "ranking"
        raise NasPruneError(f"--pick {pick}: the {what} has {len(front)} trials (0..{len(front) - 1}); the "
                            f"study is kept in {store.url}: re-run with --pick 0..{len(front) - 1} to export one")
    else:
        index = pick
    one_step = next((r for r in records if r.one_step and r.state == "COMPLETE"), None)

    chosen = front[index]
    student_dir = out
    export = _export(
        loaded, chosen, worker, out, space=space_obj.name if space_obj is not None else None,
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
        latency_device=(next((t.user_attrs.get("latency_device") for t in trials
                             if t.user_attrs.get("latency_device")), None)),
        notes=notes,
    )
