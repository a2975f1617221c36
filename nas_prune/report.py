"""The report of a recipe run: ``report.md`` (tables) and ``grid.png`` (test images).

It collects what the stages of ``run_dir`` wrote (their ``stage.json`` files, the
evaluation's ``metrics.json``, the export's ``export.json``) into one markdown page:
the models compared (MACs in both conventions, params, PSNR / SSIM / FID / KID), the
student's architecture, the export check, and the wall time of every stage. The grid
shows, for the first test images, one column per model between the input and the
real target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from nas_prune.errors import NasPruneError

__all__ = ["write_report", "image_grid"]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def image_grid(columns: list[Any], *, pad: int = 2) -> "Any":
    """Tile ``columns`` (each ``(N, C, H, W)`` in [-1, 1]) into one uint8 RGB array, N rows."""
    import numpy as np

    n = columns[0].shape[0]
    h, w = columns[0].shape[-2:]
    grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(columns):
        a = ((col.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        if a.shape[1] == 1:
            a = a.repeat(3, axis=1)
        for i in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = a[i, :3].transpose(1, 2, 0)
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
    lines = [f"# {title or recipe.get('name', run_dir.name)}", ""]
    if recipe.get("description"):
        lines += [recipe["description"].strip(), ""]
    if recipe.get("source"):
        cmd = f"nas-prune run {recipe['source']}" + "".join(f" --set {o}" for o in recipe.get("overrides", []))
        lines += ["Command:", "", "```", cmd, "```", ""]

    metrics = _read_json(run_dir / "evaluate" / "metrics.json")
    if metrics:
        from nas_prune.evaluate import EvalResult

        res = EvalResult(rows=metrics["models"], n_images=metrics["n_images"],
                         input_size=tuple(metrics["input_size"]), reference=metrics.get("reference"))
        lines += ["## Results", "", res.markdown().rstrip(), ""]
        notes = list(metrics.get("notes", []))
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

    grid_path = None
    if data is not None and models:
        grid_path = _grid(out / "grid.png", data=data, models=models, mode=mode, direction=direction,
                          crop_size=crop_size, n=grid_images, atomic_path=atomic_path)
        names = " | ".join(["input", *models, "target" if mode == "aligned" else "real B"])
        lines += ["## Test images", "", f"Columns: {names}.", "", "![test images](grid.png)", ""]
    write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")
    return out / "report.md"


def _grid(path: Path, *, data, models, mode, direction, crop_size, n, atomic_path) -> Path:
    import torch
    from PIL import Image

    from nas_prune.data import TransformConfig, collate, open_dataset
    from nas_prune.evaluate import open_generator

    if n < 1:
        raise NasPruneError(f"grid_images must be >= 1, got {n}")
    tf = TransformConfig(load_size=crop_size, crop_size=crop_size, preprocess="resize", flip=False)
    nets = {name: open_generator(p) for name, p in models.items()}
    first = next(iter(nets.values())).arch
    ds = open_dataset(data, mode=mode, split="test", direction=direction, transform=tf,
                      input_nc=first.input_nc, output_nc=first.output_nc)
    batch = collate([ds[i] for i in range(min(n, len(ds)))])
    cols = [batch["A"]]
    with torch.no_grad():
        cols += [net(batch["A"]) for net in nets.values()]
    cols.append(batch["B"])
    with atomic_path(path) as tmp:
        Image.fromarray(image_grid(cols)).save(tmp, format="PNG")
    return path
