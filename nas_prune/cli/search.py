"""``nas-prune search``: prune a teacher to a MACs and/or latency target in one step and export the student."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import CHANGED_SOURCE_HELP, MODEL_ARGS_HELP, MODEL_HELP, MODEL_PANEL, user_model, console, user_errors


@app.command("search", short_help="Prune a teacher to a MACs budget (one step, or an Optuna study).")
def search_cli(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint (.pth/.pt/.safetensors; CAT, ResNet or CAT SPADE layout)."),
    target_macs: Optional[str] = typer.Option(None, "--target-macs", help="MACs budget for one image: 2.6G, 2.6B, 2600M or 2.6e9 (give it, --target-latency, or both)."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space the teacher must belong to: a YAML file or a shipped name (cat_inception)."),
    convention: str = typer.Option("fvcore", "--convention", help="Convention of the target: fvcore or paper (ConvTranspose over output pixels, as CAT / GAN Compression report)."),
    input_size: str = typer.Option("256", "--input-size", help="Input size the MACs are counted at: N or HxW, divisible by 4 (SPADE: by 2^n, e.g. 64)."),
    min_channels: int = typer.Option(16, "--min-channels", help="Floor on stem and head widths (branches may reach 0); SPADE: floor on ngf (fc width >= 16x this); --model: floor of every channel group."),
    importance: Optional[str] = typer.Option(None, "--importance", help="Channel importance: gamma | l1 | activation (default gamma when the norms are affine, else l1)."),
    round_to: Optional[str] = typer.Option(None, "--round-to", help="Round every width down to a multiple of N (floors up), still under the target; auto: the multiple with the best measured speed per MAC on --runtime."),
    fill: bool = typer.Option(True, "--fill/--no-fill", help="After thresholding, add the next channels by score while they fit (--no-fill: CAT's plain threshold)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="Folder of calibration images (searched recursively) for --importance activation and the Optuna scores (default: crops of scikit-image's sample photos, else seeded noise)."),
    calib_images: int = typer.Option(8, "--calib-images", help="How many calibration images to use (the folder must hold at least this many)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/search/<teacher>-<target>-<convention>)."),
    force: bool = typer.Option(False, "--force", help="Replace another result in --out: removes only the files nas-prune wrote there (a study of the same options in --out resumes without it)."),
    verify: str = typer.Option("fast", "--verify", help="fvcore check of the built student: fast (each distinct layer traced once at a reduced size, scaled exactly), full (the whole student at --input-size) or off."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    target_latency: Optional[str] = typer.Option(None, "--target-latency", help="Latency budget for one batch on --runtime, with a unit: 40ms, 0.04s.", rich_help_panel="Latency"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Where the student will run and is timed: torch-cpu, onnxruntime (the onnx extra), cuda, openvino, ncnn, executorch (XNNPACK), onnxruntime-int8 or executorch-int8 (their extras; default torch-cpu when latency is in play).", rich_help_panel="Latency"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of the runtime (default torch's current setting).", rich_help_panel="Latency"),
    batch: int = typer.Option(1, "--batch", help="Images per timed forward pass.", rich_help_panel="Latency"),
    latency_cache: Optional[Path] = typer.Option(None, "--latency-cache", help="Folder of cached latency tables (default $NAS_PRUNE_CACHE_DIR, else $XDG_CACHE_HOME/nas-prune).", rich_help_panel="Latency"),
    refresh_latency: bool = typer.Option(False, "--refresh-latency", help="Time the latency table again even if it is cached.", rich_help_panel="Latency"),
    allow_busy: bool = typer.Option(False, "--allow-busy", help="Build (or spot-check) the latency table even while other processes keep a core busy; the table records that it was forced.", rich_help_panel="Latency"),
    trials: Optional[int] = typer.Option(None, "--trials", help="Optuna study: N finished trials in total around the one-step solution (re-running resumes it; several workers may share --storage).", rich_help_panel="Optuna search"),
    score: str = typer.Option("zero-shot", "--score", help="Candidate score: zero-shot (fidelity of the sliced student to the teacher) or finetune:STEPS (short distillation first).", rich_help_panel="Optuna search"),
    objectives: str = typer.Option("quality", "--objectives", help="quality (PSNR to the teacher) or quality,latency (NSGA-II, Pareto front).", rich_help_panel="Optuna search"),
    score_size: Optional[str] = typer.Option(None, "--score-size", help="N or HxW the fidelity is measured at (default --input-size; smaller is faster).", rich_help_panel="Optuna search"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage shared by workers: RDB URL (sqlite:///f.db, postgresql://... with the postgres extra) or journal:PATH (default <out>/study.db); see docs/studies.md.", rich_help_panel="Optuna search"),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (default from teacher, target, score, objectives).", rich_help_panel="Optuna search"),
    pick: Optional[int] = typer.Option(None, "--pick", help="Export this index of the Pareto front (sorted by latency) / quality ranking (default: best quality).", rich_help_panel="Optuna search"),
    seed: int = typer.Option(0, "--seed", help="Sampler seed.", rich_help_panel="Optuna search"),
    code: Optional[str] = typer.Option(None, "--model", metavar="SPEC", help=MODEL_HELP, rich_help_panel=MODEL_PANEL),
    model_args: Optional[str] = typer.Option(None, "--model-args", metavar="JSON", help=MODEL_ARGS_HELP, rich_help_panel=MODEL_PANEL),
    keep: Optional[List[str]] = typer.Option(None, "--keep", metavar="MODULE", help="A module path of --model whose channels are never pruned (repeat it, or separate paths with commas).", rich_help_panel=MODEL_PANEL),
    allow_changed_source: bool = typer.Option(False, "--allow-changed-source", help=CHANGED_SOURCE_HELP, rich_help_panel=MODEL_PANEL),
) -> None:
    """Prune TEACHER to --target-macs and/or --target-latency with one global importance threshold; write arch.json + weights."""
    with user_errors():
        from nas_prune.errors import NasPruneError
        from nas_prune.latency.target import parse_round_to
        from nas_prune.study import study_requested

        common = dict(teacher=teacher, target_macs=target_macs, space=space, convention=convention,
                      input_size=input_size, min_channels=min_channels, importance=importance,
                      round_to=parse_round_to(round_to), fill=fill, calib_data=calib_data,
                      calib_images=calib_images, verify=verify, out=out,
                      model=user_model(code, model_args, allow_changed_source, input_size, keep=keep))

        if study_requested(trials=trials, score=score, objectives=objectives, score_size=score_size,
                           storage=storage, study_name=study_name, pick=pick):
            import optuna

            from nas_prune.study import render_study as render
            from nas_prune.study import run_study

            unsupported = [name for name, used in (("--target-latency", target_latency is not None),
                                                   ("--batch", batch != 1), ("--latency-cache", latency_cache),
                                                   ("--refresh-latency", refresh_latency),
                                                   ("--allow-busy", allow_busy)) if used]
            if unsupported:
                raise NasPruneError(f"{unsupported[0]} is not supported with --trials (an Optuna study prunes to "
                                    "--target-macs; its latency objective takes --runtime and --threads)")
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            result = run_study(**common, trials=trials, score=score, objectives=objectives, score_size=score_size,
                               storage=storage, study_name=study_name, pick=pick, seed=seed, force=force,
                               latency_runtime=runtime, latency_threads=threads,
                               log=None if as_json else console(stderr=True).print)
        else:
            from nas_prune.search_render import render_result as render
            from nas_prune.search import search

            result = search(**common, force=force, target_latency=target_latency, runtime=runtime,
                            threads=threads, batch=batch, latency_cache=latency_cache,
                            refresh_latency=refresh_latency, allow_busy=allow_busy)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    render(result, console())
