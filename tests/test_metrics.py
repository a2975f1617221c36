"""PSNR / SSIM against scikit-image, and the Fréchet distance on known Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nas_prune.errors import NasPruneError
from nas_prune.evaluate import frechet_distance
from nas_prune.metrics import psnr, ssim


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 32, 40, generator=g)
    noisy = (clean + 0.08 * torch.randn(3, 3, 32, 40, generator=g)).clamp(0, 1)
    return clean, noisy


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


def test_psnr_matches_skimage(pair):
    a, b = pair
    want = np.mean([peak_signal_noise_ratio(hwc(a[i]), hwc(b[i]), data_range=1.0) for i in range(3)])
    assert psnr(b, a, value_range=(0, 1)) == pytest.approx(want, abs=1e-4)
    assert 18 < want < 25


def test_ssim_matches_skimage(pair):
    a, b = pair
    want = np.mean([
        structural_similarity(hwc(a[i]), hwc(b[i]), data_range=1.0, channel_axis=2, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False)
        for i in range(3)
    ])
    assert ssim(b, a, value_range=(0, 1)) == pytest.approx(want, abs=1e-5)
    assert 0.3 < want < 0.99


def test_value_range_minus_one_one_is_equivalent(pair):
    a, b = pair
    assert psnr(2 * a - 1, 2 * b - 1) == pytest.approx(psnr(a, b, value_range=(0, 1)), abs=1e-6)
    assert ssim(2 * a - 1, 2 * b - 1) == pytest.approx(ssim(a, b, value_range=(0, 1)), abs=1e-6)


def test_identical_and_single_images(pair):
    a, _ = pair
    assert psnr(a, a, value_range=(0, 1)) == 100.0
    assert ssim(a[0], a[0], value_range=(0, 1)) == pytest.approx(1.0, abs=1e-9)


def test_errors(pair):
    a, b = pair
    with pytest.raises(NasPruneError, match="shapes differ"):
        psnr(a, b[:2])
    with pytest.raises(NasPruneError, match="at least 11x11"):
        ssim(a[..., :8, :8], b[..., :8, :8])


def test_frechet_distance_of_shifted_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean shifted by (1, 2, 0): distance ~ 1 + 4 = 5
    assert frechet_distance(x, y + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)) == pytest.approx(5.0, abs=0.1)
    # isotropic scale 2: Tr(S + 4S - 2*2S) = Tr(S) = 3
    assert frechet_distance(x, 2 * y) == pytest.approx(3.0, abs=0.15)
