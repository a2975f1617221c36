"""``nas-prune train-teacher``: train a generator of the space from scratch (pix2pix or CycleGAN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import THREADS_HELP, console, torch_threads, user_errors


@app.command("train-teacher", short_help="Train a teacher of the space from scratch.")
def train_teacher_cli(
    data: Path = typer.Option(..., "--data", help="Dataset: pix2pix layout (train/, test/) or CycleGAN layout (trainA/, trainB/, ...)."),
    out: Path = typer.Option(..., "--out", help="Run folder; the teacher is written to OUT/teacher.safetensors."),
    objective: str = typer.Option("pix2pix", "--objective", help="pix2pix (GAN + L1, paired) or cyclegan (two generators, cycle + identity)."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space: a YAML file or a shipped name (default: cat_inception_pix2pix / cat_inception)."),
    ngf: Optional[int] = typer.Option(None, "--ngf", help="Base width (overrides the space's)."),
    n_blocks: Optional[int] = typer.Option(None, "--n-blocks", help="Inception-residual blocks (overrides the space's)."),
    norm: Optional[str] = typer.Option(None, "--norm", help="instance or batch (overrides the space's)."),
    direction: str = typer.Option("AtoB", "--direction", help="AtoB or BtoA."),
    epochs: int = typer.Option(100, "--epochs", help="Epochs at the constant learning rate."),
    epochs_decay: int = typer.Option(100, "--epochs-decay", help="Further epochs with linear decay to 0."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop (with a checkpoint) after N steps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per step."),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate."),
    gan_mode: Optional[str] = typer.Option(None, "--gan-mode", help="lsgan, vanilla or hinge (default vanilla for pix2pix, lsgan for CycleGAN)."),
    lambda_recon: float = typer.Option(100.0, "--lambda-recon", help="pix2pix L1 weight."),
    lambda_cycle: float = typer.Option(10.0, "--lambda-cycle", help="CycleGAN cycle-consistency weight."),
    lambda_identity: float = typer.Option(0.5, "--lambda-identity", help="CycleGAN identity weight (relative to --lambda-cycle)."),
    load_size: int = typer.Option(286, "--load-size", help="Resize side before the random crop."),
    crop_size: int = typer.Option(256, "--crop-size", help="Training crop side (multiple of 4)."),
    ndf: int = typer.Option(64, "--ndf", help="PatchGAN width."),
    d_layers: int = typer.Option(3, "--d-layers", help="PatchGAN depth."),
    workers: int = typer.Option(4, "--workers", help="Data-loader processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of init, data order and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    threads: str = typer.Option("auto", "--threads", metavar="N|auto", help=THREADS_HELP, show_default=False),
    log_every: int = typer.Option(50, "--log-every", help="Steps between log records (log.jsonl) and between progress lines when stderr is not a terminal."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar or progress lines."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
) -> None:
    """Train a teacher of the inception-residual space on your data (for users without one)."""
    with user_errors():
        from nas_prune.train_teacher import train_teacher

        with torch_threads(threads, workers=workers, quiet=as_json):
            res = train_teacher(
                data=data, out=out, resume=resume, objective=objective, space=str(space) if space else None, ngf=ngf,
                n_blocks=n_blocks, norm=norm, direction=direction, epochs=epochs, epochs_decay=epochs_decay,
                max_steps=max_steps, batch_size=batch_size, lr=lr, gan_mode=gan_mode, lambda_recon=lambda_recon,
                lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, load_size=load_size, crop_size=crop_size,
                ndf=ndf, d_layers=d_layers, workers=workers, seed=seed, device=device, log_every=log_every,
                progress=not (as_json or no_progress),
            )
    info = {"teacher": str(res.teacher), "step": res.step, "finished": res.finished, "interrupted": res.interrupted,
            "metrics": res.metrics, "seconds": round(res.seconds, 1)}
    from nas_prune.interrupt import exit_code, signal_name

    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        c = console()
        state = ("finished" if res.finished else (f"interrupted by {signal_name(res.signal)} (resume with --resume)"
                                                  if res.interrupted else "stopped at --max-steps"))
        c.print(f"teacher: {res.teacher} after {res.step} steps, {state}", highlight=False)
        if res.metrics:
            c.print("test: " + ", ".join(f"{k} {v:.4g}" for k, v in res.metrics.items() if k != "step"), highlight=False)
    if res.interrupted:  # as a shell reports a process stopped by the signal (nas_prune.interrupt)
        raise typer.Exit(exit_code(res.signal))
