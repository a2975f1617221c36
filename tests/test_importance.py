"""Importance criteria: gamma, normalised L1, activation; key mapping with missing branches."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.calibration import calibration_images
from nas_prune.errors import NasPruneError
from nas_prune.importance import (
    compute_importance,
    default_criterion,
    producer_keys,
)
from nas_prune.model import build_generator
from nas_prune.plan import prunable_layers

# Block 0 lacks res k3 and dw k1/k3, so module indices differ from kernel-size slots.
GAPPY = Arch(
    input_nc=3, output_nc=3, stem=(8, 12, 16),
    blocks=(Block(res=(4, 0, 6), dw=(0, 0, 5)), Block(res=(3, 3, 3), dw=(2, 2, 2))),
    head=(12, 8),
)


def teacher(arch: Arch, seed: int = 0):
    model = randomize_(build_generator(arch), seed).eval()
    return model, model.state_dict()


def test_producer_keys_map_slots_to_existing_module_indices():
    model, _ = teacher(GAPPY)
    modules = dict(model.named_modules())
    keys = {l.name: producer_keys(GAPPY, l) for l in prunable_layers(GAPPY)}
    assert keys["blocks.0.res.2"] == ("features.0.res_ops.1.1.0", "features.0.res_ops.1.1.1")
    assert keys["blocks.0.dw.2"] == ("features.0.dw_ops.0.0.0", "features.0.dw_ops.0.0.1")
    assert keys["stem.2"] == ("down_sampling.7", "down_sampling.8")
    assert keys["head.1"] == ("up_sampling.3", "up_sampling.4")
    for layer in prunable_layers(GAPPY):
        conv, norm = keys[layer.name]
        assert modules[norm].num_features == layer.width, layer.name
        out_ch = modules[conv].weight.shape[1 if layer.kind == "head" else 0]
        assert out_ch == layer.width, layer.name


def test_gamma_is_abs_norm_weight():
    model, sd = teacher(GAPPY)
    name, scores = compute_importance("gamma", GAPPY, sd)
    assert name == "gamma"
    assert set(scores) == {l.name for l in prunable_layers(GAPPY)}
    assert torch.equal(scores["blocks.0.res.2"], sd["features.0.res_ops.1.1.1.weight"].abs())
    assert torch.equal(scores["head.0"], sd["up_sampling.1.weight"].abs())
    assert (scores["stem.1"] >= 0).all()


def test_gamma_refuses_affine_free_norms():
    arch = GAPPY.with_widths()
    arch = Arch.from_dict({**arch.to_dict(), "affine": False})
    _, sd = teacher(arch)
    with pytest.raises(NasPruneError, match="no affine parameters; use l1 or activation"):
        compute_importance("gamma", arch, sd)
    assert default_criterion(arch) == "l1" and default_criterion(GAPPY) == "gamma"
    name, scores = compute_importance(None, arch, sd)
    assert name == "l1" and len(scores) == len(prunable_layers(arch))


def test_l1_is_filter_norm_over_layer_mean():
    _, sd = teacher(GAPPY, seed=3)
    _, scores = compute_importance("l1", GAPPY, sd)
    for s in scores.values():
        assert float(s.mean()) == pytest.approx(1.0, rel=1e-5)
    w = sd["features.0.res_ops.1.1.0.weight"]  # Conv2d [out, in, k, k]
    raw = w.abs().sum(dim=(1, 2, 3))
    assert torch.allclose(scores["blocks.0.res.2"], raw / raw.mean())
    wt = sd["up_sampling.0.weight"]  # ConvTranspose2d [in, out, k, k]: filters along dim 1
    raw = wt.abs().sum(dim=(0, 2, 3))
    assert scores["head.0"].shape == (12,)
    assert torch.allclose(scores["head.0"], raw / raw.mean())
    # Scaling one filter up raises its score and only its own.
    sd2 = dict(sd)
    sd2["down_sampling.4.weight"] = sd["down_sampling.4.weight"].clone()
    sd2["down_sampling.4.weight"][5] *= 3
    _, scores2 = compute_importance("l1", GAPPY, sd2)
    assert int(scores2["stem.1"].argmax()) == 5
    assert torch.equal(scores2["stem.0"], scores["stem.0"])


def test_activation_matches_manual_forward_and_finds_dead_channels():
    model, sd = teacher(GAPPY, seed=1)
    sd = {k: v.clone() for k, v in sd.items()}
    # Channel 2 of the stem's first norm is dead: gamma 0 and beta -1 -> ReLU output 0.
    sd["down_sampling.2.weight"][2] = 0.0
    sd["down_sampling.2.bias"][2] = -1.0
    model.load_state_dict(sd)
    images, _, _ = calibration_images(GAPPY, n_images=3, input_size=(32, 32), seed=5)
    _, scores = compute_importance("activation", GAPPY, sd, images=images, batch_size=2)
    with torch.no_grad():
        h = model.down_sampling[:3](images)
        manual = torch.relu(h).abs().mean(dim=(0, 2, 3))
    assert torch.allclose(scores["stem.0"], manual / manual.mean(), atol=1e-5)
    assert float(scores["stem.0"][2]) == 0.0
    for s in scores.values():
        assert float(s.mean()) == pytest.approx(1.0, rel=1e-4)
    assert scores["blocks.0.dw.2"].shape == (5,)


def test_calibration_noise_and_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # no photos: seeded noise
    noise, _, text = calibration_images(GAPPY, n_images=2, input_size=(16, 24), seed=0)
    assert "noise" in text and "scikit-image is not installed" in text
    assert noise.shape == (2, 3, 16, 24) and noise.min() >= -1 and noise.max() <= 1
    assert torch.equal(noise, calibration_images(GAPPY, n_images=2, input_size=(16, 24), seed=0)[0])
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    imgs, _, _ = calibration_images(GAPPY, source=tmp_path, n_images=3, input_size=(16, 16))
    assert imgs.shape == (3, 3, 16, 16)
    assert imgs.min() >= -1 and imgs.max() <= 1 and imgs.std() > 0.1
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasPruneError, match="no image files"):
        calibration_images(GAPPY, source=tmp_path / "empty")
    with pytest.raises(NasPruneError, match="folder not found"):
        calibration_images(GAPPY, source=tmp_path / "missing")


def test_unknown_criterion():
    _, sd = teacher(GAPPY)
    with pytest.raises(NasPruneError, match="unknown importance criterion 'taylor': choose gamma, l1, activation"):
        compute_importance("taylor", GAPPY, sd)
