"""``nas-prune search``: prune a teacher to a MACs target in one step and export the student."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import console, user_errors


@app.command("search")
def search_cli(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint (.pth/.pt/.safetensors; CAT, ResNet or CAT SPADE layout)."),
    target_macs: str = typer.Option(..., "--target-macs", help="MACs budget for one image: 2.6G, 2.6B, 2600M or 2.6e9."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space the teacher must belong to: a YAML file or a shipped name (cat_inception)."),
    convention: str = typer.Option("fvcore", "--convention", help="Convention of the target: fvcore or paper (ConvTranspose over output pixels, as CAT / GAN Compression report)."),
    input_size: str = typer.Option("256", "--input-size", help="Input size the MACs are counted at: N or HxW, divisible by 4 (SPADE: by 2^n, e.g. 64)."),
    min_channels: int = typer.Option(16, "--min-channels", help="Floor on stem and head widths (branches may reach 0); SPADE: floor on ngf (fc width >= 16x this)."),
    importance: Optional[str] = typer.Option(None, "--importance", help="Channel importance: gamma | l1 | activation (default gamma when the norms are affine, else l1)."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Round every width down to a multiple of N (floors up), still under the target."),
    fill: bool = typer.Option(True, "--fill/--no-fill", help="After thresholding, add the next channels by score while they fit (--no-fill: CAT's plain threshold)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="Folder of calibration images (searched recursively) for --importance activation and the Optuna scores (default: crops of scikit-image's sample photos, else seeded noise)."),
    calib_images: int = typer.Option(8, "--calib-images", help="How many calibration images to use (the folder must hold at least this many)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/search/<teacher>-<target>-<convention>)."),
    force: bool = typer.Option(False, "--force", help="Replace another result in --out: removes only the files nas-prune wrote there (a study of the same options in --out resumes without it)."),
    verify: str = typer.Option("fast", "--verify", help="fvcore check of the built student: fast (forward pass at a reduced size, scaled exactly), full (at --input-size) or off."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Optuna study: N finished trials in total around the one-step solution (re-running resumes it; several workers may share --storage).", rich_help_panel="Optuna search"),
    score: str = typer.Option("zero-shot", "--score", help="Candidate score: zero-shot (fidelity of the sliced student to the teacher) or finetune:STEPS (short distillation first).", rich_help_panel="Optuna search"),
    objectives: str = typer.Option("quality", "--objectives", help="quality (PSNR to the teacher) or quality,latency (NSGA-II, Pareto front).", rich_help_panel="Optuna search"),
    score_size: Optional[str] = typer.Option(None, "--score-size", help="N or HxW the fidelity is measured at (default --input-size; smaller is faster).", rich_help_panel="Optuna search"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage: RDB URL (sqlite:///f.db, postgresql://...) or journal:PATH (default <out>/study.db).", rich_help_panel="Optuna search"),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (default from teacher, target, score, objectives).", rich_help_panel="Optuna search"),
    pick: Optional[int] = typer.Option(None, "--pick", help="Export this index of the Pareto front (sorted by latency) / quality ranking (default: best quality).", rich_help_panel="Optuna search"),
    seed: int = typer.Option(0, "--seed", help="Sampler seed.", rich_help_panel="Optuna search"),
) -> None:
    """Prune TEACHER to --target-macs with one global importance threshold; write arch.json + weights."""
    common = dict(teacher=teacher, target_macs=target_macs, space=space, convention=convention,
                  input_size=input_size, min_channels=min_channels, importance=importance, round_to=round_to,
                  fill=fill, calib_data=calib_data, calib_images=calib_images, verify=verify, out=out)
    with user_errors():
        from nas_prune.study import study_requested

        if study_requested(trials=trials, score=score, objectives=objectives, score_size=score_size,
                           storage=storage, study_name=study_name, pick=pick):
            import optuna

            from nas_prune.study import render_study as render
            from nas_prune.study import run_study

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            result = run_study(**common, trials=trials, score=score, objectives=objectives, score_size=score_size,
                               storage=storage, study_name=study_name, pick=pick, seed=seed, force=force,
                               log=None if as_json else console(stderr=True).print)
        else:
            from nas_prune.search import render_result as render
            from nas_prune.search import search

            result = search(**common, force=force)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    render(result, console())
