"""The evaluation and perceptual networks against the reference implementations' own outputs.

Each network is loaded from a state dict with the reference key names through nas-prune's loader
(``load_inception``, ``load_segmenter``, ``load_vgg19``) and run on the inputs the reference saw;
its outputs must equal the reference's (pytorch-fid's ``InceptionV3`` pool3, fyu/drn's ``DRNSeg``
scores, torchvision's ``vgg19().features`` relu1_1 .. relu5_1) up to float32 rounding, and FID,
KID and mIoU computed by nas-prune from them must equal the values the references computed
(pytorch-fid's ``calculate_frechet_distance``, torch-fidelity's KID, fyu/drn's
``fast_hist`` / ``per_class_iu``). How the files in ``tests/data/reference/`` were made:
``tests/data/reference/README.md``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nas_prune.evaluate import frechet_distance, kid
from nas_prune.gaugan.vgg import load_vgg19
from nas_prune.inception import WEIGHTS_FILE, InceptionFeatures, load_inception
from nas_prune.miou import ConfusionMatrix, predict, segment_scores, to_uint8
from nas_prune.segmenter import CITYSCAPES_MEAN, CITYSCAPES_STD, load_segmenter
from refnets import REFERENCE, assert_close_scaled, random_state, state_digest


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.fixture(scope="module")
def fid_reference(tmp_path_factory):
    """``(features, reference)``: nas-prune's pool3 features of the reference images, from the FID
    Inception loaded with the reference's random weights (regenerated from the seed, see refnets)."""
    path = REFERENCE / "fid_inception_outputs.safetensors"
    meta = _metadata(path)
    ref = load_file(str(path))
    shapes = {k: tuple(v.shape) for k, v in InceptionFeatures().state_dict().items()}
    shapes.update({"fc.weight": (1008, 2048), "fc.bias": (1008,)})  # the classifier the real file carries
    state = random_state(shapes, int(meta["seed"]))
    # the same weights as the reference ran with (a mismatch here means the generator changed, not the network)
    assert state_digest(state) == meta["weights_sha256"]
    weights = tmp_path_factory.mktemp("fid") / WEIGHTS_FILE
    torch.save(state, weights)
    del state
    net = load_inception(weights, value_range=(0.0, 1.0))
    with torch.no_grad():
        features = net(ref["images"])
    return features, ref, int(meta["n_per_set"])


def test_fid_inception_pool3_equals_pytorch_fid(fid_reference):
    features, ref, _ = fid_reference
    assert features.shape == ref["features"].shape == (12, 2048)
    assert float(ref["features"].std()) > 0.1  # random weights that still give image-dependent features
    assert_close_scaled(features, ref["features"], rel=1e-4, name="pool3")


def test_fid_and_kid_from_those_features_equal_the_references(fid_reference):
    features, ref, n = fid_reference
    f = features.double().numpy()
    real, fake = f[:n], f[n:]
    # pytorch-fid's calculate_frechet_distance (scipy sqrtm) on the reference features
    assert frechet_distance(real, fake) == pytest.approx(float(ref["fid"]), rel=1e-4)
    # torch-fidelity's KID with subsets of all n samples (so every subset is the whole set)
    mean, std = kid(real, fake, subsets=3, subset_size=n)
    assert mean == pytest.approx(float(ref["kid"]), rel=1e-4) and std == pytest.approx(0.0, abs=1e-9)
    # on the reference's own features KID agrees to float64 rounding (FID, whose 2048 x 2048
    # eigendecompositions take seconds, agrees to 1.4e-9 relative: tests/data/reference/README.md)
    g = ref["features"].double().numpy()
    assert kid(g[:n], g[n:], subsets=1, subset_size=n)[0] == pytest.approx(float(ref["kid"]), rel=1e-9)


def test_drn_d_105_scores_and_miou_equal_fyu_drn():
    weights = REFERENCE / "drn_d_105_narrow.safetensors"
    out = load_file(str(REFERENCE / "drn_d_105_narrow_outputs.safetensors"))
    meta = _metadata(REFERENCE / "drn_d_105_narrow_outputs.safetensors")
    net = load_segmenter(weights)  # float16 file, upcast by the loader; depths of drn_d_105, narrow widths
    assert net.config.layers == (1, 1, 3, 4, 23, 3, 1, 1)
    assert net.config.channels == tuple(int(c) for c in meta["channels"].split(","))
    assert net.base[0][0].weight.dtype == torch.float32
    pixels = out["pixels"]  # (2, 3, 32, 64) uint8, what the reference read as RGB / 255
    images = (pixels.float() + 0.5) / 255 * 2 - 1  # generator outputs that quantise back to those pixels
    assert torch.equal(to_uint8(images), pixels)
    with torch.no_grad():
        scores = segment_scores(net, images, mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD)
    assert_close_scaled(scores, out["scores"], rel=1e-4, name="DRNSeg scores")
    # the smallest top-2 gap of the reference scores is far above the float32 differences, so the
    # arg-max and with it mIoU must be identical
    assert float(meta["min_top2_margin"]) > 1e-5 * float(out["scores"].abs().max())
    labels = out["labels"].long()
    pred = predict(scores, tuple(labels.shape[-2:]))
    assert torch.equal(pred, out["scores"].argmax(1))
    cm = ConfusionMatrix(19)
    for p, t in zip(pred, labels):
        cm.update(p, t)
    assert 5.0 < float(out["miou"]) < 95.0  # a non-trivial value: some classes right, some wrong
    assert cm.miou() == pytest.approx(float(out["miou"]), abs=1e-9)


def test_drn_normalisation_is_fyu_drn_cityscapes_info():
    # the mean / std the reference normalised with (fyu/drn datasets/cityscapes/info.json)
    meta = _metadata(REFERENCE / "drn_d_105_narrow_outputs.safetensors")
    assert np.allclose(CITYSCAPES_MEAN, json.loads(meta["normalize_mean"]), rtol=0, atol=1e-12)
    assert np.allclose(CITYSCAPES_STD, json.loads(meta["normalize_std"]), rtol=0, atol=1e-12)


def test_vgg19_relu_outputs_equal_torchvision():
    net = load_vgg19(REFERENCE / "vgg19_narrow.safetensors")
    out = load_file(str(REFERENCE / "vgg19_narrow_outputs.safetensors"))
    assert net.widths == (8, 16, 32, 64, 64)
    with torch.no_grad():
        feats = net(out["input"])
    names = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert len(feats) == len(names)
    for got, name in zip(feats, names):
        assert float(out[name].abs().max()) > 0.5, name
        assert_close_scaled(got, out[name], rel=1e-4, name=name)
