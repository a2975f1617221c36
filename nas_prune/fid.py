"""FID, KID and the table of evaluation results: the family-independent part of evaluation.

Used by :mod:`nas_prune.evaluate` (image data) and :mod:`nas_prune.gaugan.evaluate`
(semantic maps).

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


def write_result(result: EvalResult, out: str | os.PathLike | None) -> None:
    """``metrics.json`` and ``metrics.md`` (with the notes) in ``out``, atomically; nothing when ``out`` is None."""
    if out is None:
        return
    from nas_prune.fileio import write_json, write_text

    out = Path(out)
    write_json(out / "metrics.json", result.to_json())
    write_text(out / "metrics.md", result.markdown() + "".join(f"\n{x}\n" for x in result.notes))


