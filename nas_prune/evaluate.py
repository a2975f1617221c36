"""Evaluate generators on a test split: PSNR/SSIM, FID, KID, MACs and params.

- PSNR / SSIM (:mod:`nas_prune.metrics`) compare each output with the real target
  (aligned, pix2pix data) and, with ``reference``, with another model's output (e.g.
  the teacher's, the only comparison unpaired data allows).
- FID (Heusel et al., NeurIPS 2017): ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``
  between Gaussians fitted to InceptionV3 pool3 features (:mod:`nas_prune.inception`) of
  the real target images and of the outputs. The matrix square root's trace is taken
  from the eigenvalues of ``S_r^(1/2) S_f S_r^(1/2)`` (symmetric, so ``eigh`` is exact
  and stable); it equals ``Tr((S_r S_f)^(1/2))``.
- KID (Binkowski et al., ICLR 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets (mean and std reported).
  Unlike FID it is unbiased, so it is the better number for the few hundred test
  images of most pix2pix / CycleGAN test sets. Reported x1000 in tables, as usual.

Real-image statistics can be saved once (``.npz`` with ``mu``, ``sigma``, ``n`` and the
``features`` for KID) and passed back with ``real_stats``; an ``.npz`` with only ``mu``
and ``sigma`` (pytorch-fid's format) is accepted too, then KID is skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas_prune.errors import NasPruneError

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


# ----------------------------------------------------------------------------- math


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and sample covariance ``(D, D)`` (N - 1 normalisation) of ``(N, D)`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise NasPruneError(f"feature statistics need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID on Inception stats).

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues
    of ``S1^(1/2) S2 S1^(1/2)``, which is similar to ``S1 S2`` and symmetric PSD.

    Raises:
        NasPruneError: shapes that do not match.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise NasPruneError(
            f"FID statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets ``(N, D)`` (N >= 2 each): :func:`frechet_distance_from_stats`
    of their :func:`feature_stats`. With Inception pool3 features (D = 2048) this is FID;
    small N gives a biased, noisy estimate.
    """
    return frechet_distance_from_stats(*feature_stats(real), *feature_stats(fake))


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD^2 over random subsets.

    Kernel ``k(x, y) = (x.y / d + 1)^3``. Per subset of ``m`` real and ``m`` fake
    features (drawn without replacement; ``m = min(subset_size, N_real, N_fake)``)::

        MMD^2 = sum_{i!=j} k(r_i, r_j) / (m(m-1)) + sum_{i!=j} k(f_i, f_j) / (m(m-1))
                - 2 sum_{i,j} k(r_i, f_j) / m^2

    Args:
        real / fake: ``(N, D)`` features.
        subsets: number of subsets; ``seed`` fixes their draw.

    Raises:
        NasPruneError: fewer than 2 samples, or mismatched feature sizes.
    """
    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise NasPruneError(f"KID: expected (N, D) features of the same D, got {r.shape} and {f.shape}")
    m = min(subset_size, r.shape[0], f.shape[0])
    if m < 2:
        raise NasPruneError("KID needs at least 2 real and 2 fake images")
    if subsets < 1:
        raise NasPruneError(f"KID: subsets must be >= 1, got {subsets}")
    d = r.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = r[rng.choice(r.shape[0], m, replace=False)]
        y = f[rng.choice(f.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        values[s] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean()
        )
    return float(values.mean()), float(values.std())


# ----------------------------------------------------------------------------- stats files


def save_stats(path: str | os.PathLike, features: np.ndarray, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``mu``, ``sigma``, ``n`` and ``features`` (float64, for KID) to an ``.npz`` atomically."""
    from nas_prune.fileio import atomic_path

    path = Path(path)
    if path.suffix != ".npz":
        raise NasPruneError(f"statistics file must end in .npz: {path}")
    mu, sigma = feature_stats(features)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma, n=np.int64(len(features)),
                     features=np.asarray(features, np.float64), meta=json.dumps(dict(meta or {})))
    return path


def load_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Read an ``.npz`` of real statistics: ``{"mu", "sigma", "features" or None, "meta"}``.

    Raises:
        NasPruneError: missing file, not an npz, no ``mu`` / ``sigma``, or shapes that disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise NasPruneError(f"real statistics not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise NasPruneError(f"{path}: not a readable .npz file ({err})") from None
    for key in ("mu", "sigma"):
        if key not in data:
            raise NasPruneError(f"{path}: {key}: missing array (expected mu and sigma)")
    mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise NasPruneError(f"{path}: sigma: shape {sigma.shape} does not match mu {mu.shape}")
    feats = data.get("features")
    from nas_prune.fileio import loads_json

    meta = loads_json(str(data["meta"]), source=f"{path} meta") if "meta" in data else {}
    return {"mu": mu, "sigma": sigma, "features": feats, "meta": meta}


# ----------------------------------------------------------------------------- models


def open_generator(path: str | os.PathLike, *, space: Any = None, like: Any = None, notes: list[str] | None = None):
    """Load any generator nas-prune reads, in eval mode on CPU.

    Accepted: a teacher checkpoint (``.pth`` / ``.pt`` / ``.safetensors``, CAT or
    ResNet layout), a student folder or its ``arch.json`` (``nas-prune-arch``), and
    the ``final/`` / ``best/`` folders of a distillation run.

    ``space`` (YAML path, shipped name or space object) and ``like`` (a student's
    architecture) give a checkpoint the settings its shapes cannot show
    (:func:`nas_prune.load.load_generator`); what loading assumed is appended to ``notes``.

    Raises:
        NasPruneError: a path that is none of these.
    """
    from nas_prune.runstate import check_finished, read_status

    p = Path(path)
    check_finished(p)
    if not p.exists():
        raise NasPruneError(f"model not found: {p}")
    if p.is_file() and p.suffix != ".json":
        from nas_prune.distill_io import open_space
        from nas_prune.load import load_generator

        loaded = load_generator(p, space=open_space(space), like=like)
        if notes is not None:
            notes.extend(loaded.notes)
        return loaded.build()
    if p.is_dir():
        from nas_prune.export import student_folder

        p = student_folder(p)
    if p.is_dir() and not (p / "arch.json").is_file():
        status = read_status(p)
        if status is not None and status.get("outputs"):
            raise NasPruneError(f"{p} is a training run folder: give its result ({p / status['outputs'][0]})")
        raise NasPruneError(f"{p}: no arch.json (expected a checkpoint file or a student folder)")
    from nas_prune.export import load_student

    # arch.json is validated strictly: a document whose format is not nas-prune-arch is refused
    return load_student(p)


def _is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and Path(obj).is_file() and Path(obj).suffix != ".json"


def open_models(models: Mapping[str, Any], *, space: Any = None, notes: list[str]) -> dict[str, Any]:
    """``{name: generator in eval mode}``; checkpoint files are read last, with ``space``.

    Without a space, SPADE checkpoints (teachers) follow the settings their shapes cannot
    show (upsampling, activation) from the SPADE students given with them, when these agree.
    """
    from nas_prune.arch import settings_differ
    from nas_prune.distill_io import open_space

    space = open_space(space)
    nets = {name: _as_model(m) for name, m in models.items() if not _is_checkpoint(m)}
    spade = [n.arch for n in nets.values() if n.arch.family == "spade"]
    like = spade[0] if spade and all(settings_differ(a, spade[0]) is None for a in spade) else None
    for name, m in models.items():
        if _is_checkpoint(m):
            said: list[str] = []
            nets[name] = open_generator(m, space=space, like=None if space is not None else like, notes=said)
            notes.extend(f"{name}: {note}" for note in said)
    return {name: nets[name] for name in models}


def _as_model(obj: Any):
    from nas_prune.model import Generator
    from nas_prune.spade.model import SpadeGenerator

    if isinstance(obj, (Generator, SpadeGenerator)):
        return obj.eval()
    if isinstance(obj, (str, os.PathLike)):
        return open_generator(obj)
    raise NasPruneError(f"expected a model path or a Generator, got {type(obj).__name__}")


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        rows: ``{model name: {metric: value}}``; metrics: ``psnr`` (dB), ``ssim``,
            ``psnr_ref`` / ``ssim_ref`` (to the reference model's output), ``fid``,
            ``kid`` / ``kid_std`` (raw MMD^2, not x1000), ``miou`` (x 100, SPADE generators
            with a segmenter), ``macs_fvcore`` / ``macs_paper`` (per image at the evaluated
            size), ``params``.
        n_images: test images evaluated.
        input_size: ``(H, W)`` of the evaluated images.
        reference: name of the reference model, if any.
        real_stats: the ``.npz`` written or read, if any.
    """

    rows: dict[str, dict[str, float]]
    n_images: int
    input_size: tuple[int, int]
    reference: str | None = None
    real_stats: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "input_size": list(self.input_size), "reference": self.reference,
                "real_stats": self.real_stats, "notes": list(self.notes), "models": self.rows}

    def markdown(self) -> str:
        """A markdown table: one row per model, columns for the metrics present."""
        from nas_prune.macs import format_macs

        cols = [c for c in ("macs_fvcore", "macs_paper", "params", "psnr", "ssim", "psnr_ref", "ssim_ref", "fid", "kid", "miou")
                if any(c in r for r in self.rows.values())]
        heads = {"macs_fvcore": "MACs (fvcore)", "macs_paper": "MACs (paper)", "params": "params",
                 "psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "psnr_ref": f"PSNR vs {self.reference} (dB) ↑",
                 "ssim_ref": f"SSIM vs {self.reference} ↑", "fid": "FID ↓", "kid": "KID×1000 ↓", "miou": "mIoU ↑"}
        lines = ["| model | " + " | ".join(heads[c] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
        for name, r in self.rows.items():
            cells = []
            for c in cols:
                v = r.get(c)
                if v is None:
                    cells.append("–")
                elif c.startswith("macs"):
                    cells.append(format_macs(v))
                elif c == "params":
                    cells.append(f"{int(v):,}")
                elif c == "kid":
                    cells.append(f"{1000 * v:.2f} ± {1000 * r.get('kid_std', 0.0):.2f}")
                elif c.startswith("psnr") or c in ("fid", "miou"):
                    cells.append(f"{v:.2f}")
                else:
                    cells.append(f"{v:.4f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        h, w = self.input_size
        lines.append("")
        lines.append(f"{self.n_images} test images at {h}x{w}; MACs per image at that size.")
        return "\n".join(lines) + "\n"


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
    nets = {name: net.to(device) for name, net in open_models(models, space=space, notes=load_notes).items()}
    notes.extend(load_notes)
    first = next(iter(nets.values())).arch
    for name, net in nets.items():
        if (net.arch.input_nc, net.arch.output_nc) != (first.input_nc, first.output_nc):
            raise NasPruneError(f"model {name!r}: channels {net.arch.input_nc}->{net.arch.output_nc} differ from the others")
        if getattr(net.arch, "family", None) != "spade":  # semantic-map data check their own sizes
            check_input_size(net.arch, (crop_size, crop_size), option="--crop-size")
            check_forward_memory(net.arch, (crop_size, crop_size), batch=batch_size, device=device, option="--crop-size")
    spade = [getattr(net.arch, "family", None) == "spade" for net in nets.values()]
    if any(spade) and not all(spade):
        raise NasPruneError("SPADE generators (semantic maps in) and image-to-image generators cannot be evaluated together")
    if segmenter is not None and not all(spade):
        raise NasPruneError("--segmenter: mIoU is computed for SPADE generators on semantic-map data")
    if all(spade):
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


def add_fid_kid(rows: dict[str, dict[str, float]], fake_feats: Mapping[str, np.ndarray], *, real_list: list,
                real_given: Mapping[str, Any] | None, real_stats, save_real_stats, meta: Mapping[str, Any],
                kid_subsets: int, kid_subset_size: int, seed: int, notes: list[str]) -> str | None:
    """Add ``fid`` (and ``kid`` / ``kid_std``) to each model's row; returns the statistics file used or written.

    Real statistics come from ``real_given`` (a :func:`load_stats` result read from ``real_stats``)
    or from the features in ``real_list`` (then saved to ``save_real_stats`` with ``meta`` when given).
    Notes about skipped KID and small-sample FID go into ``notes``.
    """
    stats_path = None
    if real_given is not None:
        mu_r, sig_r, real_feats = real_given["mu"], real_given["sigma"], real_given["features"]
        stats_path = str(real_stats)
        if real_feats is None:
            notes.append(f"{real_stats} holds no features: KID skipped")
    else:
        real_feats = np.concatenate(real_list)
        mu_r, sig_r = feature_stats(real_feats)
        if save_real_stats is not None:
            stats_path = str(save_stats(save_real_stats, real_feats, meta=meta))
    for name, fake in fake_feats.items():
        rows[name]["fid"] = frechet_distance_from_stats(mu_r, sig_r, *feature_stats(fake))
        if real_feats is not None:
            rows[name]["kid"], rows[name]["kid_std"] = kid(
                real_feats, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    n = int(meta.get("n", 0))
    if n < 2048:
        notes.append(f"FID on {n} images is biased upwards (2048-d covariance from few samples); compare KID")
    return stats_path


def _write_result(result: EvalResult, out: str | os.PathLike | None) -> None:
    """``metrics.json`` and ``metrics.md`` (with the notes) in ``out``, atomically; nothing when ``out`` is None."""
    if out is None:
        return
    from nas_prune.fileio import write_json, write_text

    out = Path(out)
    write_json(out / "metrics.json", result.to_json())
    write_text(out / "metrics.md", result.markdown() + "".join(f"\n{x}\n" for x in result.notes))


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
