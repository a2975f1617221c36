"""One FID path: distillation's periodic FID is ``nas-prune evaluate``'s FID (same weights file,
extractor, preprocessing and Fréchet distance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill
from nas_prune.errors import NasPruneError
from nas_prune.evaluate import evaluate, feature_stats, frechet_distance, frechet_distance_from_stats, load_stats
from nas_prune.model import build_generator

T_ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(Block(res=(2, 2, 2), dw=(2, 2, 2)),) * 2, head=(8, 8))
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 8), blocks=[Block(res=(1, 0, 1), dw=(0, 1, 1))] * 2, head=(4, 4))
FAST = dict(mode="aligned", epochs=1, epochs_decay=0, batch_size=4, load_size=32, crop_size=32, workers=0,
            ndf=8, progress=False, distill={})
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=4, n_test=3, seed=0)


def test_frechet_distance_of_features_is_the_stats_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(40, 5)) * 1.5 + 0.3
    ref = frechet_distance_from_stats(*feature_stats(x), *feature_stats(y))
    assert frechet_distance(x, y) == ref
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(NasPruneError, match="N >= 2"):
        frechet_distance(x[:1], y)


def test_distill_fid_equals_evaluate_fid(tmp_path, data, inception_weights):
    path, _ = inception_weights
    torch.manual_seed(0)
    teacher = build_generator(T_ARCH).eval()
    out = tmp_path / "run"
    res = distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST, inception=str(path)))
    assert res.step == 1 and len(res.history) == 1
    fid = res.metrics["fid"]
    assert np.isfinite(fid) and fid > 0
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert logged[-1]["fid"] == fid
    ev = evaluate(models={"final": out / "final"}, data=data, crop_size=32, batch_size=2, inception=path,
                  save_real_stats=tmp_path / "real.npz")
    # other batches sum float32 features in another order: compare to the features' scale
    # (FID is in squared feature units, like the trace of their covariance)
    scale = float(np.trace(load_stats(tmp_path / "real.npz")["sigma"]))
    assert ev.rows["final"]["fid"] == pytest.approx(fid, rel=1e-6, abs=1e-6 * scale)


def test_distill_inception_errors_before_training(tmp_path, data):
    torch.manual_seed(0)
    teacher = build_generator(T_ARCH).eval()
    out = tmp_path / "run"
    with pytest.raises(NasPruneError, match="Inception weights not found: .*pt_inception-2015-12-05"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST, inception=str(tmp_path / "nope.pth")))
    assert not (out / "checkpoints").exists()


def test_runs_written_with_the_old_option_name(tmp_path):
    assert DistillConfig.from_dict({"mode": "aligned", "fid_inception": None}) == DistillConfig(mode="aligned")
    with pytest.raises(NasPruneError, match="cfg.json: fid_inception: replaced by inception"):
        DistillConfig.from_dict({"fid_inception": "x.pt"}, where="cfg.json")
    assert "inception" in DistillConfig(inception="w.pth").to_dict()
