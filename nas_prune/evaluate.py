"""Evaluate generators on a test split: PSNR/SSIM, FID, KID, MACs and params.

- PSNR / SSIM (:mod:`nas_prune.metrics`) compare each output with the real target
  (aligned, pix2pix data) and, with ``reference``, with another model's output (e.g.
  the teacher's, the only comparison unpaired data allows).
- FID and KID on InceptionV3 pool3 features (:mod:`nas_prune.inception`) of the real target
  images and of the outputs, as :mod:`nas_prune.fid` defines and computes them (real-image
  statistics saved once and passed back with ``real_stats``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas_prune.errors import NasPruneError
from nas_prune.families import data_kind
from nas_prune.fid import (  # noqa: F401  (public names of this module)
    EvalResult,
    add_fid_kid,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    kid,
    load_stats,
    save_stats,
)
from nas_prune.fid import write_result as _write_result

__all__ = [
    "add_fid_kid",
    "frechet_distance",
    "frechet_distance_from_stats",
    "feature_stats",
    "kid",
    "load_stats",
    "save_stats",
    "open_generator",
    "EvalResult",
    "evaluate",
    "real_stats",
]


# ----------------------------------------------------------------------------- models


def open_generator(path: str | os.PathLike, *, space: Any = None, like: Any = None, notes: list[str] | None = None,
                   model: Any = None):
    """Load any generator nas-prune reads, in eval mode on CPU.

    Accepted: a teacher checkpoint (``.pth`` / ``.pt`` / ``.safetensors``, CAT or
    ResNet layout), a student folder or its ``arch.json`` (``nas-prune-arch``), and
    the ``final/`` / ``best/`` folders of a distillation run.

    ``space`` (YAML path, shipped name or space object) and ``like`` (a student's
    architecture) give a checkpoint the settings its shapes cannot show
    (:func:`nas_prune.load.load_generator`); what loading assumed is appended to ``notes``.
    ``model`` (:class:`nas_prune.load.UserModel`) builds a checkpoint from the user's code.

    Raises:
        NasPruneError: a path that is none of these.
    """
    from nas_prune.runstate import check_finished

    p = Path(path)
    check_finished(p)
    if not p.exists():
        raise NasPruneError(f"model not found: {p}")
    if p.is_file() and p.suffix != ".json":
        from nas_prune.distill_io import open_space
        from nas_prune.load import load_generator

        loaded = load_generator(p, space=open_space(space), like=like, model=model)
        if notes is not None:
            notes.extend(loaded.notes)
        return loaded.build()
    if p.is_dir():
        from nas_prune.export import student_folder

        p = student_folder(p)
    if p.is_dir() and not (p / "arch.json").is_file():
        from nas_prune.runstate import run_folder_hint

        raise NasPruneError(run_folder_hint(p) or f"{p}: no arch.json (expected a checkpoint file or a student folder)")
    from nas_prune.export import load_student

    # arch.json is validated strictly: a document whose format is not nas-prune-arch is refused
    return load_student(p)


def _is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and Path(obj).is_file() and Path(obj).suffix != ".json"


def open_models(models: Mapping[str, Any], *, space: Any = None, notes: list[str], model: Any = None) -> dict[str, Any]:
    """``{name: generator in eval mode}``; checkpoint files are read last, with ``space``.

    Without a space, SPADE checkpoints (teachers) follow the settings their shapes cannot
    show (upsampling, activation) from the SPADE students given with them, when these agree.
    """
    from nas_prune.arch import settings_differ
    from nas_prune.distill_io import open_space

    space = open_space(space)
    nets = {name: _as_model(m) for name, m in models.items() if not _is_checkpoint(m)}
    # A checkpoint takes the settings its shapes cannot show from the students given with it,
    # when they agree (a CAT SPADE teacher's upsampling and activation).
    archs = [n.arch for n in nets.values()]
    like = archs[0] if archs and all(settings_differ(a, archs[0]) is None for a in archs) else None
    for name, m in models.items():
        if _is_checkpoint(m):
            said: list[str] = []
            nets[name] = open_generator(m, space=space, like=None if space is not None else like, notes=said,
                                        model=model)
            notes.extend(f"{name}: {note}" for note in said)
    return {name: nets[name] for name in models}


def _as_model(obj: Any):
    from nas_prune.families import module_types

    if isinstance(obj, module_types()):
        return obj.eval()
    if isinstance(obj, (str, os.PathLike)):
        return open_generator(obj)
    raise NasPruneError(f"expected a model path or a Generator, got {type(obj).__name__}")


# ----------------------------------------------------------------------------- evaluation


def _open_split(data, *, mode, direction, split, crop_size, input_nc, output_nc, max_images):
    """The split resized to ``crop_size`` and the number of images to use."""
    from nas_prune.data import TransformConfig, open_dataset

    tf = TransformConfig(load_size=crop_size, crop_size=crop_size, preprocess="resize", flip=False)
    ds = open_dataset(data, mode=mode, split=split, direction=direction, transform=tf,
                      input_nc=input_nc, output_nc=output_nc)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    return ds, n


def _batches(ds, n: int, batch_size: int):
    """``(A, B)`` batches of the first ``n`` samples, in order (images are read lazily)."""
    from nas_prune.data import collate

    for i in range(0, n, batch_size):
        batch = collate([ds[j] for j in range(i, min(n, i + batch_size))])
        yield batch["A"], batch["B"]


def evaluate(
    *,
    models: Mapping[str, Any],
    data: str | os.PathLike,
    mode: str = "aligned",
    direction: str = "AtoB",
    split: str = "test",
    crop_size: int = 256,
    batch_size: int = 8,
    max_images: int | None = None,
    reference: str | None = None,
    inception: str | os.PathLike | None = None,
    real_stats: str | os.PathLike | None = None,
    save_real_stats: str | os.PathLike | None = None,
    segmenter: str | os.PathLike | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    out: str | os.PathLike | None = None,
    space: Any = None,
    model: Any = None,
) -> EvalResult:
    """Run each model on the ``split`` of ``data`` and score it.

    Args:
        models: ``{name: path or Generator}``; paths as :func:`open_generator` reads.
        data: dataset folder (pix2pix ``aligned`` or CycleGAN ``unaligned`` layout). SPADE
            generators read semantic-map data instead (:mod:`nas_prune.data_seg`; ``mode``
            and ``direction`` do not apply) and are scored by
            :func:`nas_prune.gaugan.evaluate.evaluate_semantic`.
        crop_size: images are resized to this side (pixels; multiple of 4); semantic maps
            are scaled to this width keeping their aspect ratio.
        max_images: evaluate the first N images only (None: all).
        reference: a name in ``models`` whose outputs the others are also compared
            with (``psnr_ref`` / ``ssim_ref``). On unpaired data without ``inception``
            it defaults to the model named ``teacher`` (else the first of several), so
            there is still a quality number: fidelity to the teacher.
        inception: path of the FID Inception weights (:func:`nas_prune.inception.load_inception`);
            None skips FID and KID, with a note saying so (``real_stats`` then is an
            error: they are Inception features).
        real_stats: ``.npz`` of real-image statistics to use instead of computing them.
        save_real_stats: write the real-image statistics to this ``.npz``.
        segmenter: DRN-D-105 segmenter weights (``drn-d-105_ms_cityscapes.pth``,
            :func:`nas_prune.segmenter.load_segmenter`): mIoU of SPADE generators' outputs.
        kid_subsets / kid_subset_size: KID subsets (100 x 1000 as in the KID paper; the
            subset size is capped by the image count).
        out: folder for ``metrics.json`` and ``metrics.md`` (written atomically).
        space: search space (YAML path or shipped name) of the checkpoint files among
            ``models``: it gives a SPADE teacher the settings its shapes cannot show
            (upsampling, activation). Without it, a SPADE checkpoint follows the SPADE
            students evaluated with it (:func:`open_models`).
        model: the user's generator code (:class:`nas_prune.load.UserModel`, ``--model``) the
            checkpoint files among ``models`` are state dicts of.

    Raises:
        NasPruneError: bad data, unknown reference, statistics without Inception weights, ...
    """
    import torch

    from nas_prune.macs import count_macs, count_params
    from nas_prune.metrics import psnr, ssim
    from nas_prune.model import check_forward_memory, check_input_size

    if not models:
        raise NasPruneError("evaluate: no model given")
    if max_images is not None and max_images < 1:
        raise NasPruneError(f"--max-images must be >= 1 (or left out for every image), got {max_images}")
    if batch_size < 1:
        raise NasPruneError(f"--batch-size must be >= 1, got {batch_size}")
    if reference is not None and reference not in models:
        raise NasPruneError(f"reference {reference!r} is not one of the models: {', '.join(models)}")
    notes: list[str] = []
    if inception is None:
        notes.append("FID / KID skipped: they need the FID Inception weights, a local file nas-prune does not "
                     "download (--inception PATH, in a recipe evaluate.inception: "
                     "PATH/pt_inception-2015-12-05-6726825d.pth)")
        if mode == "unaligned":
            if reference is None and len(models) > 1:
                reference = "teacher" if "teacher" in models else next(iter(models))
            if reference is not None:
                notes.append(f"unpaired data has no target per image: PSNR / SSIM are to {reference}'s outputs")
            else:
                notes.append("unpaired data has no target per image and one model gives nothing to compare: "
                             "add the teacher (teacher=PATH) for PSNR / SSIM to its outputs")
    if (real_stats is not None or save_real_stats is not None) and inception is None:
        raise NasPruneError("real statistics are Inception features: pass --inception PATH as well")
    from nas_prune.outputs import check_out_files

    check_out_files(
        [*((Path(out) / "metrics.json", Path(out) / "metrics.md") if out is not None else ()), save_real_stats],
        inputs=[*(m for m in models.values() if isinstance(m, (str, os.PathLike))), data, inception, real_stats],
    )
    load_notes: list[str] = []
    from nas_prune.load import code_options

    with code_options(model):
        nets = {name: net.to(device)
                for name, net in open_models(models, space=space, notes=load_notes, model=model).items()}
    notes.extend(load_notes)
    first = next(iter(nets.values())).arch
    for name, net in nets.items():
        if (net.arch.input_nc, net.arch.output_nc) != (first.input_nc, first.output_nc):
            raise NasPruneError(f"model {name!r}: channels {net.arch.input_nc}->{net.arch.output_nc} differ from the others")
        if data_kind(net.arch) != "semantic":  # semantic-map data check their own sizes
            check_input_size(net.arch, (crop_size, crop_size), option="--crop-size")
            check_forward_memory(net.arch, (crop_size, crop_size), batch=batch_size, device=device, option="--crop-size")
    semantic = [data_kind(net.arch) == "semantic" for net in nets.values()]
    if any(semantic) and not all(semantic):
        raise NasPruneError("SPADE generators (semantic maps in) and image-to-image generators cannot be evaluated together")
    if segmenter is not None and not all(semantic):
        raise NasPruneError("--segmenter: mIoU is computed for SPADE generators on semantic-map data")
    if all(semantic):
        from nas_prune.gaugan.evaluate import evaluate_semantic
        from nas_prune.inception import load_inception

        result = evaluate_semantic(
            nets=nets, data=data, split=split, crop_size=crop_size, batch_size=batch_size, max_images=max_images,
            reference=reference, inception=load_inception(inception, value_range=(-1.0, 1.0), device=device) if inception else None,
            real_stats=real_stats, save_real_stats=save_real_stats, segmenter=segmenter, kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size, seed=seed, device=device)
        result.notes[:0] = load_notes
        _write_result(result, out)
        return result
    ds, n = _open_split(data, mode=mode, direction=direction, split=split, crop_size=crop_size,
                        input_nc=first.input_nc, output_nc=first.output_nc, max_images=max_images)
    if n < 1:
        raise NasPruneError(f"{data}: the {split} split is empty")
    net_i, real_given = None, None
    if inception is not None:
        from nas_prune.inception import load_inception

        if n < 2:
            raise NasPruneError("FID/KID need at least 2 test images")
        net_i = load_inception(inception, value_range=(-1.0, 1.0), device=device)
        if real_stats is not None:
            real_given = load_stats(real_stats)

    # one pass over the split: every model on each batch, per-image scores summed
    sums: dict[str, dict[str, float]] = {name: {} for name in nets}
    fake_feats: dict[str, list] = {name: [] for name in nets}
    real_list: list = []
    size = None

    def add(name: str, key: str, value: float, k: int) -> None:
        sums[name][key] = sums[name].get(key, 0.0) + value * k

    with torch.no_grad():
        for a, b in _batches(ds, n, batch_size):
            size = (a.shape[-2], a.shape[-1])
            k = a.shape[0]
            outs = {name: net(a.to(device)).float().cpu() for name, net in nets.items()}
            for name, y in outs.items():
                if mode == "aligned":
                    add(name, "psnr", psnr(y, b), k)
                    if min(size) >= 11:
                        add(name, "ssim", ssim(y, b), k)
                if reference is not None and name != reference:
                    add(name, "psnr_ref", psnr(y, outs[reference]), k)
                    if min(size) >= 11:
                        add(name, "ssim_ref", ssim(y, outs[reference]), k)
                if net_i is not None:
                    fake_feats[name].append(net_i(y.to(device)).double().cpu().numpy())
            if net_i is not None and real_given is None:
                real_list.append(net_i(b.to(device)).double().cpu().numpy())

    rows: dict[str, dict[str, float]] = {}
    for name, net in nets.items():
        rows[name] = {
            "macs_fvcore": count_macs(net.arch, input_size=size, convention="fvcore"),
            "macs_paper": count_macs(net.arch, input_size=size, convention="paper"),
            "params": count_params(net.arch),
            **{key: total / n for key, total in sums[name].items()},
        }

    stats_path = None
    if net_i is not None:
        stats_path = add_fid_kid(
            rows, {name: np.concatenate(fake_feats[name]) for name in nets}, real_list=real_list,
            real_given=real_given, real_stats=real_stats, save_real_stats=save_real_stats,
            meta={"data": str(data), "split": split, "direction": direction, "crop_size": crop_size, "n": n},
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, notes=notes)

    result = EvalResult(rows=rows, n_images=n, input_size=size, reference=reference,
                        real_stats=stats_path, notes=notes)
    _write_result(result, out)
    return result


def real_stats(
    *,
    data: str | os.PathLike,
    inception: str | os.PathLike,
    out: str | os.PathLike,
    mode: str = "aligned",
    direction: str = "AtoB",
    split: str = "test",
    crop_size: int = 256,
    channels: int = 3,
    batch_size: int = 8,
    max_images: int | None = None,
    device: str = "cpu",
) -> Path:
    """Compute and save the Inception statistics of the real target images (B) of a split."""
    from nas_prune.inception import load_inception

    import torch

    net = load_inception(inception, value_range=(-1.0, 1.0), device=device)
    ds, n = _open_split(data, mode=mode, direction=direction, split=split, crop_size=crop_size,
                        input_nc=channels, output_nc=channels, max_images=max_images)
    if n < 2:
        raise NasPruneError(f"{data}: real statistics need at least 2 images in the {split} split")
    with torch.no_grad():
        feats = np.concatenate([net(b.to(device)).double().cpu().numpy() for _, b in _batches(ds, n, batch_size)])
    return save_stats(out, feats, meta={"data": str(data), "split": split, "direction": direction,
                                        "crop_size": crop_size, "n": n})
