"""``nas-prune distill``: fine-tune a pruned student by distilling from its teacher."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import CHANGED_SOURCE_HELP, MODEL_ARGS_HELP, MODEL_HELP, MODEL_PANEL, user_model, THREADS_HELP, console, torch_threads, user_errors
from nas_prune.errors import NasPruneError

_METHOD_LAMBDAS = ("mse", "crd", "akdg", "ackd")


def parse_distill(methods: str, weights: dict[str, Optional[float]]) -> dict[str, float]:
    """``"gcka,crd"`` + ``{"gcka": 1.0, "crd": None}`` -> ``{"gcka": 1.0, "crd": 1.0}``; ``"none"`` -> ``{}``."""
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if names == ["none"]:
        return {}
    if not names:
        raise NasPruneError("--distill: give method names separated by commas, or none")
    if len(set(names)) != len(names):
        raise NasPruneError(f"--distill: a method is listed twice in {methods!r}")
    for name, w in weights.items():
        if w is not None and name not in names:
            flag = "--lambda-distill" if name == "gcka" else f"--lambda-{name}"
            raise NasPruneError(f"{flag} is given but {name} is not in --distill {methods}")
    return {n: 1.0 if weights.get(n) is None else float(weights[n]) for n in names}


def parse_options(items: List[str]) -> dict[str, dict[str, Any]]:
    """``["gcka.centered=true", "crd.patch=4"]`` -> ``{"gcka": {"centered": True}, "crd": {"patch": 4}}``."""
    from nas_prune.fileio import InvalidSyntaxError, loads_yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method or not option:
            raise NasPruneError(f"--distill-option {item!r}: expected METHOD.OPTION=VALUE, e.g. gcka.centered=true")
        try:
            value = loads_yaml(raw, source=f"--distill-option {key}")
        except InvalidSyntaxError:
            value = raw
        out.setdefault(method.strip(), {})[option.strip()] = value
    return out


@app.command("distill", short_help="Fine-tune a student by distilling from its teacher.")
def distill_cli(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint (.pth/.pt/.safetensors; CAT or ResNet layout)."),
    student: Path = typer.Option(..., "--student", help="Student folder (arch.json + student.safetensors) or an arch.json."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space the teacher belongs to: a YAML file or a shipped name (cat_spade_cityscapes). A SPADE teacher otherwise follows the student's arch.json (upsampling, activation); the two must agree."),
    data: Path = typer.Option(..., "--data", help="Dataset folder: train/ test/ (aligned), trainA/ trainB/ testA/ testB/ (unaligned), or semantic maps for SPADE teachers (cityscapes gtFine/ + leftImg8bit/, or train/labels/ + train/images/)."),
    out: Path = typer.Option(Path("runs/distill"), "--out", help="Run folder: checkpoints, best/ and final/ students, samples, logs."),
    objective: Optional[str] = typer.Option(None, "--objective", help="auto (default: gaugan for SPADE teachers, else pix2pix), pix2pix or gaugan."),
    mode: Optional[str] = typer.Option(None, "--mode", help="aligned (paired, pix2pix) or unaligned (CycleGAN). Required for image folders unless --resume."),
    direction: Optional[str] = typer.Option(None, "--direction", help="AtoB (default) or BtoA."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs at constant learning rate [100]."),
    epochs_decay: Optional[int] = typer.Option(None, "--epochs-decay", help="Epochs of linear learning-rate decay to 0 [100]."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps in total (a checkpoint is kept)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step and device, >= 2 [4]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate [2e-4]."),
    gan_mode: Optional[str] = typer.Option(None, "--gan-mode", help="lsgan, vanilla or hinge [lsgan; hinge for GauGAN]."),
    lambda_gan: Optional[float] = typer.Option(None, "--lambda-gan", help="Weight of the GAN loss [1]."),
    lambda_recon: Optional[float] = typer.Option(None, "--lambda-recon", help="Weight of the L1 loss [100 aligned, 5 unaligned; none for GauGAN]."),
    lambda_feat: Optional[float] = typer.Option(None, "--lambda-feat", help="GauGAN: weight of discriminator feature matching [10]."),
    lambda_vgg: Optional[float] = typer.Option(None, "--lambda-vgg", help="GauGAN: weight of the VGG19 perceptual loss [10]."),
    vgg: Optional[Path] = typer.Option(None, "--vgg", help="GauGAN: local VGG19 weights (torchvision's vgg19-dcbb9e9d.pth), needed when --lambda-vgg > 0."),
    distill_methods: Optional[str] = typer.Option(None, "--distill", help="Distillation methods, comma-separated (gcka, mse, crd, akdg, ackd) or none [gcka]."),
    lambda_distill: Optional[float] = typer.Option(None, "--lambda-distill", help="Weight of GCKA, whose KA is computed per device and averaged across DDP ranks: CAT's lambda_distill on its 4 GPUs is 4x this (horse2zebra 4, map2aerial 5.2, cityscapes 2) [1]."),
    lambda_mse: Optional[float] = typer.Option(None, "--lambda-mse", help="Weight of feature MSE [1]."),
    lambda_crd: Optional[float] = typer.Option(None, "--lambda-crd", help="Weight of CRD, whose per-image losses are averaged over the batch: the published pix2pix setting (batch 4) is 4, CycleGAN 10 [1]."),
    lambda_akdg: Optional[float] = typer.Option(None, "--lambda-akdg", help="Weight of AKDG, whose distillation discriminator sees input and output; --distill-option akdg.conditional=false shows it the output only, as the paper [1]."),
    lambda_ackd: Optional[float] = typer.Option(None, "--lambda-ackd", help="Weight of ACKD [1]."),
    distill_layers: Optional[str] = typer.Option(None, "--distill-layers", "--taps", help="Feature layers, e.g. stem,block3,block6,block9 [stem + blocks at 1/3, 2/3, 3/3]; for --model, module paths (default: the top-level children at about 1/4, 1/2 and 3/4 of the MACs)."),
    distill_option: Optional[List[str]] = typer.Option(None, "--distill-option", metavar="METHOD.OPTION=VALUE", help="METHOD.OPTION=VALUE, repeatable, e.g. gcka.centered=true."),
    teacher_d: Optional[Path] = typer.Option(None, "--teacher-discriminator", help="Start the discriminator from this checkpoint."),
    ndf: Optional[int] = typer.Option(None, "--ndf", help="Discriminator width [64]."),
    load_size: Optional[int] = typer.Option(None, "--load-size", help="Resize side before cropping [286]."),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help="Training crop and evaluation side, multiple of 4 [256]."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="resize_and_crop (default), crop, resize or none."),
    no_flip: bool = typer.Option(False, "--no-flip", help="No random horizontal flips."),
    amp: Optional[str] = typer.Option(None, "--amp", help="auto (bf16 on CUDA, default), bf16, fp16 or none."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Channels-last memory format (faster convs on recent GPUs)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the student, the discriminator and the teacher's forward."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Bit-reproducible CUDA training (exact --resume on a GPU): deterministic algorithms, no cuDNN autotuning, CUBLAS_WORKSPACE_CONFIG=:4096:8. Slower."),
    dist_backend: Optional[str] = typer.Option(None, "--dist-backend", help="Under torchrun: auto (NCCL on CUDA, gloo on CPU), nccl or gloo (several processes on one GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loader processes [4]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of init, data order, augmentation [0]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu, cuda or cuda:N."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps (0 = every epoch)."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps (0 = every epoch)."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps between log records (log.jsonl, TensorBoard) and between progress lines when stderr is not a terminal [50]."),
    inception: Optional[Path] = typer.Option(None, "--inception", help="Local FID Inception weights (pt_inception-2015-12-05-6726825d.pth, as for evaluate); adds FID to each evaluation."),
    segmenter: Optional[Path] = typer.Option(None, "--segmenter", help="GauGAN: local DRN-D-105 weights (drn-d-105_ms_cityscapes.pth); adds mIoU to each evaluation."),
    threads: str = typer.Option("auto", "--threads", metavar="N|auto", help=THREADS_HELP, show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar or progress lines."),
    code: Optional[str] = typer.Option(None, "--model", metavar="SPEC", help=MODEL_HELP, rich_help_panel=MODEL_PANEL),
    model_args: Optional[str] = typer.Option(None, "--model-args", metavar="JSON", help=MODEL_ARGS_HELP, rich_help_panel=MODEL_PANEL),
    allow_changed_source: bool = typer.Option(False, "--allow-changed-source", help=CHANGED_SOURCE_HELP, rich_help_panel=MODEL_PANEL),
) -> None:
    """Fine-tune a student with GAN + L1 + feature distillation (GCKA by default) from its teacher.

    Several GPUs: torchrun --nproc-per-node N "$(which nas-prune)" distill ...
    """
    with user_errors():
        from nas_prune.distill import DistillConfig, distill, read_run_config

        given: dict[str, Any] = {
            "mode": mode, "direction": direction, "epochs": epochs, "epochs_decay": epochs_decay,
            "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "gan_mode": gan_mode,
            "lambda_gan": lambda_gan, "lambda_recon": lambda_recon, "ndf": ndf, "load_size": load_size,
            "crop_size": crop_size, "preprocess": preprocess, "amp": amp, "workers": workers, "seed": seed,
            "device": device, "eval_every": eval_every, "save_every": save_every, "log_every": log_every,
            "dist_backend": dist_backend,
            "teacher_discriminator": str(teacher_d) if teacher_d else None,
            "inception": str(inception) if inception else None,
            "objective": objective, "lambda_feat": lambda_feat, "lambda_vgg": lambda_vgg,
            "vgg": str(vgg) if vgg else None, "segmenter": str(segmenter) if segmenter else None,
        }
        overrides = {k: v for k, v in given.items() if v is not None}
        if no_flip:
            overrides["flip"] = False
        if channels_last:
            overrides["channels_last"] = True
        if compile_:
            overrides["compile"] = True
        if deterministic:
            overrides["deterministic"] = True
        if no_progress:
            overrides["progress"] = False
        weights = {"gcka": lambda_distill, "mse": lambda_mse, "crd": lambda_crd, "akdg": lambda_akdg, "ackd": lambda_ackd}
        if distill_methods is not None:
            overrides["distill"] = parse_distill(distill_methods, weights)
        elif any(w is not None for w in weights.values()):
            overrides["distill"] = parse_distill("gcka", weights)
        if distill_layers is not None:
            overrides["distill_taps"] = tuple(t.strip() for t in distill_layers.split(",") if t.strip())
        if distill_option:
            overrides["distill_options"] = parse_options(distill_option)
        if resume:
            config = read_run_config(out).replace(**overrides)
        else:
            from nas_prune.data_seg import detect_seg_layout

            semantic = objective == "gaugan" or detect_seg_layout(data) is not None
            if "mode" not in overrides and not semantic:
                raise NasPruneError("--mode is required: aligned (train/, test/) or unaligned (trainA/, trainB/)")
            config = DistillConfig(**overrides)
        with torch_threads(threads, workers=config.workers):
            result = distill(teacher=teacher, student=student, data=data, out=out, config=config, resume=resume,
                             space=str(space) if space is not None else None,
                             model=user_model(code, model_args, allow_changed_source))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, process 0 reports
    c = console()
    m = result.metrics
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k != "step")
    if result.interrupted:
        from nas_prune.interrupt import exit_code, signal_name

        c.print(f"interrupted by {signal_name(result.signal)} at step {result.step}; continue with the same "
                "command and --resume")
        raise typer.Exit(exit_code(result.signal))
    c.print(f"step {result.step}: {shown or 'no test split'}")
    if result.best_metrics:
        c.print(f"best (step {result.best_step}) student: {out / 'best'}; final student: {out / 'final'}")
    c.print(f"{result.images_per_second:.1f} images/s")
