"""The report of a recipe run: ``report.md`` (tables) and ``grid.png`` (test images).

It collects what the stages of ``run_dir`` wrote (their ``stage.json`` files, the
evaluation's ``metrics.json``, the export's ``export.json``) into one markdown page:
the settings that ran (read from ``stage.json``, so ``--set`` changes and defaults are
included), the models compared (MACs in both conventions, params, PSNR / SSIM / FID /
KID), the student's architecture, the export check, and the wall and CPU time of every
stage. The grid shows, for the first test images, one labelled column per model between
the input and the real target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from nas_prune.errors import NasPruneError

__all__ = ["write_report", "image_grid", "settings_that_ran", "distillation_note", "SHORT_NAMES", "NOISE_PSNR_DB",
           "NOISE_SSIM"]

#: Differences between the distilled student and the undistilled baseline below these are not read as an
#: effect: each stage is one run of one seed and the report has no measure of the seed-to-seed spread.
#: They are thresholds chosen for that reading, not measured values.
NOISE_PSNR_DB = 0.5
NOISE_SSIM = 0.01


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    from nas_prune.fileio import read_json

    try:
        doc = read_json(path)
    except NasPruneError:
        return None
    return doc if isinstance(doc, dict) else None


#: Column labels of the grid for the models a recipe run compares (the report names them in full).
SHORT_NAMES = {"pruned (no fine-tuning)": "pruned", "student, no distillation": "no distill",
               "student, distilled": "distilled"}


def _label_font(labels: list[str], width: int):
    """The largest default font (11 px down to 6 px) in which every label fits ``width`` pixels."""
    from PIL import ImageFont

    font = None
    for size in range(11, 5, -1):
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: one bitmap size
            return ImageFont.load_default()
        if all(font.getbbox(t)[2] <= width for t in labels):
            return font
    return font


def image_grid(columns: list[Any], *, labels: list[str] | None = None, pad: int = 2) -> "Any":
    """Tile ``columns`` (each ``(N, C, H, W)`` in [-1, 1]) into one uint8 RGB array, N rows,
    under a header row with ``labels`` (one per column) when given."""
    import numpy as np

    n = columns[0].shape[0]
    h, w = columns[0].shape[-2:]
    head = 0
    if labels is not None:
        if len(labels) != len(columns):
            raise NasPruneError(f"{len(labels)} labels for {len(columns)} grid columns")
        font = _label_font(labels, w)
        head = max(font.getbbox(t)[3] for t in labels) + 2 * pad
    grid = np.full((head + n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(columns):
        a = ((col.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        if a.shape[1] == 1:
            a = a.repeat(3, axis=1)
        for i in range(n):
            y, x = head + pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = a[i, :3].transpose(1, 2, 0)
    if labels is not None:
        from PIL import Image, ImageDraw

        img = Image.fromarray(grid)
        draw = ImageDraw.Draw(img)
        for j, text in enumerate(labels):
            tw = font.getbbox(text)[2]
            draw.text((pad + j * (w + pad) + max(0, (w - tw) // 2), pad), text, fill=(0, 0, 0), font=font)
        grid = np.asarray(img).copy()
    return grid


def write_report(
    *,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    models: Mapping[str, Any] | None = None,
    mode: str = "aligned",
    direction: str = "AtoB",
    crop_size: int = 256,
    grid_images: int = 6,
    title: str | None = None,
) -> Path:
    """Write ``out/report.md`` and ``out/grid.png`` for the run in ``run_dir``.

    Args:
        run_dir: the recipe's run folder.
        out: folder to write into.
        data / models: test data and ``{column name: model path}`` for the grid
            (no grid without them).
        mode / direction / crop_size: how to read the test split (as in evaluation).
        grid_images: rows of the grid (the first test images).
        title: page title (default: the recipe name).

    Returns:
        the path of ``report.md``.
    """
    from nas_prune.fileio import atomic_path, write_text
    from nas_prune.macs import format_macs

    run_dir, out = Path(run_dir), Path(out)
    recipe = _read_json(run_dir / "recipe.json") or {}
    overrides = list(recipe.get("overrides", []))
    lines = [f"# {title or recipe.get('name', run_dir.name)}", ""]
    if recipe.get("description"):
        if overrides:
            lines += ["The recipe's description, as written (this run changed it with `--set`; the settings "
                      "that ran are below):", ""]
        lines += [recipe["description"].strip(), ""]
    if recipe.get("source"):
        cmd = f"nas-prune run {recipe['source']}" + "".join(f" --set {o}" for o in overrides)
        lines += ["Command:", "", "```", cmd, "```", ""]
    settings = settings_that_ran(run_dir)
    if settings:
        lines += ["## Settings that ran", "", "| stage | settings |", "|---|---|",
                  *(f"| {stage} | {text} |" for stage, text in settings), ""]

    metrics = _read_json(run_dir / "evaluate" / "metrics.json")
    if metrics:
        from nas_prune.evaluate import EvalResult

        res = EvalResult(rows=metrics["models"], n_images=metrics["n_images"],
                         input_size=tuple(metrics["input_size"]), reference=metrics.get("reference"))
        lines += ["## Results", "", res.markdown().rstrip(), ""]
        notes = list(metrics.get("notes", []))
        pruned = _pruned_note(metrics["models"], metrics.get("reference"))
        if pruned:
            notes.append(pruned)
        compared = distillation_note(metrics["models"])
        if compared:
            notes.append(compared)
        lines += [f"- {note}" for note in notes]
        if notes:
            lines.append("")

    prune = _read_json(run_dir / "prune" / "stage.json")
    if prune and prune.get("summary"):
        s = prune["summary"]
        opts = prune.get("options", {})
        target = opts.get("target_macs")
        conv = opts.get("convention", "fvcore")
        lines += ["## Student", "", f"- architecture: {s.get('arch')}"]
        if target is not None:
            lines.append(f"- target: {target} MACs ({conv} convention) at input {opts.get('input_size', 256)}")
        for c, v in (s.get("macs") or {}).items():
            lines.append(f"- reached: {format_macs(v)} MACs ({c})")
        lines.append("")

    exp = _read_json(run_dir / "export" / "export.json")
    if exp:
        diff = exp.get("max_abs_diff")
        lines += ["## Export", "",
                  f"- {exp['format']} file of the {exp.get('model', 'distill')} student: `{Path(exp['path']).name}` "
                  f"({exp['file_bytes'] / 1024:.0f} KiB)",
                  f"- max |exported - PyTorch| = {diff:.2e} over inputs {exp.get('checked')}" if diff is not None
                  else "- not checked", ""]

    rows = []
    total = total_cpu = 0.0
    for stage in ("dataset", "train_teacher", "prune", "distill", "baseline", "evaluate", "export"):
        st = _read_json(run_dir / stage / "stage.json")
        if not st:
            continue
        secs = float(st.get("seconds", 0.0)) + float(st.get("seconds_before", 0.0))
        cpu = float(st.get("cpu_seconds", 0.0)) + float(st.get("cpu_seconds_before", 0.0))
        total, total_cpu = total + secs, total_cpu + cpu
        summ = st.get("summary") or {}
        extra = f"{summ['step']} steps" if "step" in summ else ""
        rows.append(f"| {stage} | {secs:.1f} | {cpu:.1f} | {extra} |")
    if rows:
        lines += ["## Time", "",
                  "Wall-clock and process CPU seconds (all threads) of each stage; the report stage is not included.",
                  "", "| stage | wall s | CPU s | |", "|---|---:|---:|---|", *rows,
                  f"| **total** | **{total:.1f}** | **{total_cpu:.1f}** | |", ""]

    if data is not None and models:
        last = "target" if mode == "aligned" else "real B"
        labels = ["input", *(SHORT_NAMES.get(n, n) for n in models), last]
        _grid(out / "grid.png", data=data, models=models, labels=labels, mode=mode, direction=direction,
              crop_size=crop_size, n=grid_images, atomic_path=atomic_path)
        names = " | ".join(["input", *models, last])
        lines += ["## Test images", "", f"Columns, as labelled: {names}.", ""]
        if "pruned (no fine-tuning)" in models:
            lines += ["The *pruned* column is the student straight out of one-step pruning: the teacher's kept "
                      "channels with their weights, before any training. Removing channels changes what every "
                      "later layer receives, so its images can be far off (flat or tinted) until the "
                      "fine-tuning of the next columns adapts the remaining channels to each other.", ""]
        lines += ["![test images](grid.png)", ""]
    write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")
    return out / "report.md"


def _grid(path: Path, *, data, models, labels, mode, direction, crop_size, n, atomic_path) -> Path:
    import torch
    from PIL import Image

    from nas_prune.data import TransformConfig, collate, open_dataset
    from nas_prune.evaluate import open_models

    if n < 1:
        raise NasPruneError(f"grid_images must be >= 1, got {n}")
    tf = TransformConfig(load_size=crop_size, crop_size=crop_size, preprocess="resize", flip=False)
    nets = open_models(models, notes=[])
    first = next(iter(nets.values())).arch
    ds = open_dataset(data, mode=mode, split="test", direction=direction, transform=tf,
                      input_nc=first.input_nc, output_nc=first.output_nc)
    batch = collate([ds[i] for i in range(min(n, len(ds)))])
    cols = [batch["A"]]
    with torch.no_grad():
        cols += [net(batch["A"]) for net in nets.values()]
    cols.append(batch["B"])
    with atomic_path(path) as tmp:
        Image.fromarray(image_grid(cols, labels=labels)).save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------- settings


def _recon(o: Mapping[str, Any]) -> float:
    """``lambda_recon`` with the default of :attr:`nas_prune.distill.DistillConfig.recon_weight`."""
    if o.get("lambda_recon") is not None:
        return float(o["lambda_recon"])
    return 100.0 if o.get("mode", "aligned") == "aligned" else 5.0


def _semantic(family: Any) -> bool:
    """Whether the generator family named in a run's config reads semantic maps."""
    from nas_prune.families import get_family

    try:
        return isinstance(family, str) and get_family(family).data_kind == "semantic"
    except Exception:  # an unknown family in an old run's config: images
        return False


def _gan(o: Mapping[str, Any], spade: bool) -> str:
    """The GAN loss that ran: ``gan_mode``, whose default follows the objective (hinge for GauGAN,
    which ``auto`` picks for SPADE students)."""
    if o.get("gan_mode"):
        return str(o["gan_mode"])
    objective = o.get("objective", "auto")
    return "hinge" if objective == "gaugan" or (objective == "auto" and spade) else "lsgan"


def _fmt_epochs(o: Mapping[str, Any]) -> str:
    return f"{o.get('epochs')} + {o.get('epochs_decay')} epochs"


def _stage_settings(stage: str, opts: Mapping[str, Any], summary: Mapping[str, Any], *, spade: bool = False) -> str:
    """The settings of one stage that shape its result, in words."""
    parts: list[str] = []
    steps = f", {summary['step']} steps" if "step" in summary else ""
    if stage == "dataset":
        parts.append(f"{opts.get('task')} pairs of {opts.get('size')}x{opts.get('size')}, "
                     f"{opts.get('n_train')} train / {opts.get('n_test')} test, seed {opts.get('seed')}")
    elif stage == "train_teacher":
        arch = ", ".join(f"{k} {opts[k]}" for k in ("ngf", "n_blocks", "norm") if opts.get(k) is not None)
        parts.append(f"{opts.get('objective')}{f' ({arch})' if arch else ''}, {_fmt_epochs(opts)}{steps}, "
                     f"batch {opts.get('batch_size')}, crop {opts.get('crop_size')}, lr {opts.get('lr')}, "
                     f"seed {opts.get('seed')}")
    elif stage == "prune":
        parts.append(f"to {opts.get('target_macs')} MACs ({opts.get('convention')}) at input "
                     f"{opts.get('input_size')}, min_channels {opts.get('min_channels')}")
        if opts.get("study"):
            parts.append(f"Optuna study {dict(opts['study'])}")
    elif stage in ("distill", "baseline"):
        kd = opts.get("distill") or {}
        what = ", ".join(f"{k} {v:g}" for k, v in kd.items()) if kd else "no distillation"
        taps = opts.get("distill_taps")
        where = f" at {'/'.join(taps)}" if kd and taps else ""
        parts.append(f"{what}{where}, {opts.get('mode')}, lambda_recon {_recon(opts):g}, "
                     f"{_gan(opts, spade)}, {_fmt_epochs(opts)}{steps}, batch {opts.get('batch_size')}, "
                     f"crop {opts.get('crop_size')}, seed {opts.get('seed')}")
    elif stage == "evaluate":
        fid = "FID/KID" if opts.get("inception") else "no FID (no Inception weights)"
        parts.append(f"crop {opts.get('crop_size')}, {fid}")
    elif stage == "export":
        parts.append(f"{opts.get('format')} of the {opts.get('model')} student at {opts.get('input_size')}")
    return "; ".join(parts)


def settings_that_ran(run_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(stage, settings in words)`` from each stage's ``stage.json``: the options that ran,
    defaults filled in, ``--set`` changes included, the torch thread count last."""
    from nas_prune.recipe import STAGES, stage_options

    run_dir = Path(run_dir)
    out = []
    distill_opts: dict[str, Any] = {}
    for stage in STAGES:
        st = _read_json(run_dir / stage / "stage.json")
        if not st or stage == "report":
            continue
        opts = {k: v for k, v in stage_options(stage).items() if v is not ...}
        if stage == "baseline":
            opts.update(distill_opts)
        opts.update(st.get("options") or {})
        if stage == "distill":
            distill_opts = dict(st.get("options") or {})
        run_config = _read_json(run_dir / stage / "config.json") or {}
        spade = _semantic((run_config.get("student_arch") or {}).get("family"))
        text = _stage_settings(stage, opts, st.get("summary") or {}, spade=spade)
        threads = st.get("threads")
        if threads:
            n = threads["threads"]
            changed = f", then {', '.join(str(c['threads']) for c in threads['changes'])}" if threads.get("changes") else ""
            text += f"; {n} torch thread{'s' if n != 1 else ''} ({threads['source']}{changed})"
        if st.get("status") != "done":
            text += f" ({st.get('status')})"
        out.append((stage, text))
    return out


def _pruned_note(rows: Mapping[str, Mapping[str, float]], reference: str | None) -> str | None:
    """A line on the pruned-but-not-fine-tuned row when it is far below the teacher."""
    pruned, teacher = rows.get("pruned (no fine-tuning)"), rows.get("teacher")
    if not pruned or not teacher:
        return None
    key = "psnr" if "psnr" in pruned and "psnr" in teacher else None
    drop = teacher[key] - pruned[key] if key else 0.0
    gap = f" ({drop:.1f} dB below the teacher)" if drop >= 1.0 else ""
    return (f"pruned (no fine-tuning) is the sliced student before any training{gap}: its numbers are the "
            "starting point of fine-tuning, not a result")


def distillation_note(rows: Mapping[str, Mapping[str, float]]) -> str | None:
    """Whether the distilled student beat the undistilled baseline, and what the difference is worth.

    Both come from one training run with one seed, so there is no estimate of seed noise here: a
    difference below :data:`NOISE_PSNR_DB` dB PSNR and :data:`NOISE_SSIM` SSIM (thresholds chosen,
    not measured) is reported as "about the same", and the note says how to measure the noise.
    """
    dist, base = rows.get("student, distilled"), rows.get("student, no distillation")
    if not dist or not base or "psnr" not in dist or "psnr" not in base:
        return None
    dp = dist["psnr"] - base["psnr"]
    ds = dist["ssim"] - base["ssim"] if "ssim" in dist and "ssim" in base else None
    said = f"PSNR {dist['psnr']:.2f} vs {base['psnr']:.2f} dB ({dp:+.2f})"
    if ds is not None:
        said += f", SSIM {dist['ssim']:.4f} vs {base['ssim']:.4f} ({ds:+.4f})"
    small = abs(dp) < NOISE_PSNR_DB and (ds is None or abs(ds) < NOISE_SSIM)
    if small:
        verdict = "scored about the same as the undistilled baseline"
    elif dp >= 0 and (ds is None or ds >= 0):
        verdict = "beat the undistilled baseline"
    elif dp <= 0 and (ds is None or ds <= 0):
        verdict = "scored below the undistilled baseline"
    else:
        verdict = "scored differently from the undistilled baseline (one metric higher, the other lower)"
    return (f"the distilled student {verdict}: {said}. Each is a single training run with a single seed and this "
            f"report has no estimate of seed noise, so differences below {NOISE_PSNR_DB:g} dB PSNR and "
            f"{NOISE_SSIM:g} SSIM (thresholds chosen, not measured) are not read as an effect of distillation; "
            "run the recipe with several seeds (--set distill.seed=N, which the baseline follows) to measure the spread")
