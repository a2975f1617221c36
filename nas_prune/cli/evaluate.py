"""``nas-prune evaluate``: PSNR/SSIM, FID and KID of generators on a test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from nas_prune.cli import app
from nas_prune.cli.common import CHANGED_SOURCE_HELP, MODEL_ARGS_HELP, MODEL_HELP, MODEL_PANEL, user_model, THREADS_HELP, console, torch_threads, user_errors


@app.command("evaluate", short_help="Score generators: PSNR/SSIM, FID/KID, MACs, params.")
def evaluate_cli(
    models: List[str] = typer.Argument(..., metavar="MODEL", help="Models to compare: PATH or NAME=PATH (checkpoint, student folder, distill final/)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (pix2pix train/test or CycleGAN trainA/testA layout; semantic maps for SPADE generators)."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space of the checkpoint MODELs: a YAML file or a shipped name (cat_spade_cityscapes); sets a SPADE teacher's upsampling and activation, which its tensors do not show (default: those of the SPADE students evaluated with it)."),
    mode: str = typer.Option("aligned", "--mode", help="aligned (paired: PSNR/SSIM to the target) or unaligned."),
    direction: str = typer.Option("AtoB", "--direction", help="AtoB or BtoA."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test or train."),
    crop_size: int = typer.Option(256, "--crop-size", help="Images are resized to this side (multiple of 4); semantic maps to this width, keeping the aspect ratio (512 for cityscapes at 256x512)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Evaluate the first N images only."),
    reference: Optional[str] = typer.Option(None, "--reference", help="NAME of a model whose outputs the others are also compared with (e.g. the teacher; default on unpaired data without --inception: the model named teacher, else the first)."),
    inception: Optional[Path] = typer.Option(None, "--inception", help="Local FID Inception weights (pt_inception-2015-12-05-6726825d.pth from pytorch-fid's releases); enables FID and KID."),
    real_stats: Optional[Path] = typer.Option(None, "--real-stats", help="Precomputed real-image statistics (.npz with mu, sigma; features for KID)."),
    save_real_stats: Optional[Path] = typer.Option(None, "--save-real-stats", help="Write the real-image statistics to this .npz."),
    segmenter: Optional[Path] = typer.Option(None, "--segmenter", help="Local DRN-D-105 segmenter weights (drn-d-105_ms_cityscapes.pth from http://go.yf.io/drn-cityscapes-models); adds mIoU for SPADE generators."),
    kid_subsets: int = typer.Option(100, "--kid-subsets", help="KID: number of random subsets."),
    kid_subset_size: int = typer.Option(1000, "--kid-subset-size", help="KID: subset size (capped by the image count)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the KID subsets."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for metrics.json and metrics.md."),
    threads: str = typer.Option("auto", "--threads", metavar="N|auto", help=THREADS_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    code: Optional[str] = typer.Option(None, "--model", metavar="SPEC", help=MODEL_HELP + " Applies to the checkpoint files among MODEL.", rich_help_panel=MODEL_PANEL),
    model_args: Optional[str] = typer.Option(None, "--model-args", metavar="JSON", help=MODEL_ARGS_HELP, rich_help_panel=MODEL_PANEL),
    allow_changed_source: bool = typer.Option(False, "--allow-changed-source", help=CHANGED_SOURCE_HELP, rich_help_panel=MODEL_PANEL),
) -> None:
    """Score generators on a test split: PSNR/SSIM (paired), FID/KID (with --inception), mIoU (SPADE, with --segmenter), MACs, params."""
    with user_errors():
        from nas_prune.errors import NasPruneError
        from nas_prune.evaluate import evaluate

        named: dict[str, str] = {}
        for item in models:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).name or item, item
            elif not name.strip() or not path.strip():
                empty = "NAME" if not name.strip() else "PATH"
                raise NasPruneError(f"model {item!r}: empty {empty} in NAME=PATH (e.g. student=runs/s)")
            if name in named:
                raise NasPruneError(f"model name {name!r} is given twice; use NAME=PATH")
            named[name] = path
        with torch_threads(threads, quiet=as_json):
            res = evaluate(models=named, data=data, mode=mode, direction=direction, split=split, crop_size=crop_size,
                           batch_size=batch_size, max_images=max_images, reference=reference, inception=inception,
                           real_stats=real_stats, save_real_stats=save_real_stats, segmenter=segmenter,
                           kid_subsets=kid_subsets,
                           kid_subset_size=kid_subset_size, seed=seed, device=device, out=out,
                           space=str(space) if space is not None else None,
                           model=user_model(code, model_args, allow_changed_source))
    if as_json:
        typer.echo(json.dumps(res.to_json(), indent=2))
        return
    c = console()
    c.print(res.markdown(), highlight=False, markup=False, soft_wrap=True)
    for note in res.notes:
        c.print(f"note: {note}", highlight=False, markup=False)
