"""Image-quality metrics for paired evaluation: PSNR and SSIM.

Both take image batches ``(N, C, H, W)`` (or one image ``(C, H, W)``) with values in
``value_range``: ``(-1, 1)`` for generator outputs (tanh), ``(0, 1)`` for images
loaded as floats. Images are mapped to [0, 1] and clipped first, so the data range
is 1 and numbers are comparable with pix2pix-style evaluations of 8-bit images.
Both return the mean over the batch of per-image scores, in float64 precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nas_prune.errors import NasPruneError

__all__ = ["psnr", "ssim", "to_unit_range"]


def to_unit_range(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Map ``x`` from ``value_range`` to [0, 1] (clipped), as float64 ``(N, C, H, W)``."""
    lo, hi = value_range
    if not hi > lo:
        raise NasPruneError(f"value_range: expected (low, high) with high > low, got {value_range}")
    x = x.detach().to(torch.float64)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise NasPruneError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise NasPruneError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    max_db: float = 100.0,
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)`` on [0, 1] images.

    The MSE is taken per image over all channels and pixels; identical images
    give ``max_db`` instead of infinity. Returns the mean over the batch.
    """
    _check_pair(pred, target)
    p = to_unit_range(pred, value_range)
    t = to_unit_range(target, value_range)
    mse = ((p - t) ** 2).flatten(1).mean(dim=1)
    floor = 10.0 ** (-max_db / 10.0)
    db = 10.0 * torch.log10(1.0 / mse.clamp_min(floor))
    return float(db.mean())


def _gaussian_window(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity (Wang et al., IEEE TIP 2004) with an 11x11 Gaussian window.

    Local means/variances/covariance use a Gaussian of ``sigma`` 1.5 truncated at
    3.5 sigma (radius 5), population (not sample) covariance, C1 = (k1)^2, C2 = (k2)^2
    for data range 1. The SSIM map is averaged over pixels whose window lies inside
    the image and over channels, then over the batch. This equals
    ``skimage.metrics.structural_similarity(p, t, data_range=1, channel_axis=...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` on each image.

    Raises:
        NasPruneError: images smaller than the 11x11 window, or shapes differ.
    """
    _check_pair(pred, target)
    p = to_unit_range(pred, value_range)
    t = to_unit_range(target, value_range)
    w = _gaussian_window(sigma, 3.5, p.dtype, p.device)
    size = w.numel()
    if p.shape[-1] < size or p.shape[-2] < size:
        raise NasPruneError(f"SSIM needs images of at least {size}x{size}, got {p.shape[-2]}x{p.shape[-1]}")
    n, c = p.shape[:2]

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(n * c, 1, *x.shape[-2:])
        x = F.conv2d(x, w.view(1, 1, 1, -1))
        x = F.conv2d(x, w.view(1, 1, -1, 1))
        return x.reshape(n, c, *x.shape[-2:])

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = k1**2, k2**2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    value = float(s.flatten(1).mean(dim=1).mean())
    return value if math.isfinite(value) else float("nan")
