"""The whole SPADE / GauGAN chain on CPU in seconds: a label-map -> photo task cut from scikit-image's
photos, a tiny SPADE teacher, a smaller student, GauGAN distillation with GCKA, FID + mIoU, ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nas_prune.demo_data import make_demo_dataset
from nas_prune.deploy import export_generator
from nas_prune.distill import DistillConfig, distill
from nas_prune.evaluate import evaluate
from nas_prune.spade import SpadeBlock, build_spade_generator
from seg_helpers import TinyFeatures, save_drn, save_vgg, tiny_spade_arch

LABELS = 5


def test_photo_segmentation_dataset(tmp_path):
    data = make_demo_dataset(tmp_path, task="segmentation", size=32, n_train=3, n_test=2, labels=LABELS)
    labels = sorted((data / "train" / "labels").glob("*.png"))
    assert len(labels) == 3 and len(list((data / "test" / "images").glob("*.png"))) == 2
    lab = np.asarray(Image.open(labels[0]))
    photo = np.asarray(Image.open(data / "train" / "images" / labels[0].name)).astype(np.float64) / 255
    assert lab.shape == photo.shape[:2] == (32, 32) and lab.max() < LABELS and len(np.unique(lab)) > 1
    # the label is the photo's luminance bin
    gray = photo @ np.array([0.2125, 0.7154, 0.0721])
    assert np.mean(np.minimum(LABELS - 1, np.floor(gray * LABELS)) == lab) > 0.99


def test_gaugan_chain(tmp_path, monkeypatch):
    import nas_prune.inception as inc

    features = TinyFeatures().eval()
    monkeypatch.setattr(inc, "load_inception", lambda path, **kw: features)  # FID's Inception, tiny
    data = make_demo_dataset(tmp_path / "data", task="segmentation", size=32, n_train=4, n_test=2, labels=LABELS)
    t_arch = tiny_spade_arch(label_nc=LABELS)
    torch.manual_seed(0)
    teacher = build_spade_generator(t_arch).eval()
    student = t_arch.with_widths(
        stream=(16, 16, 16, 16, 8, 4, 2, 2),
        blocks=[SpadeBlock(res=(1, 2, 0), dw=(0, 1, 1), spade_res=(1, 0, 1), spade_dw=(0, 1, 0))] * 6
        + [SpadeBlock(res=(0, 0, 0), dw=(0, 0, 0), spade_res=(0, 0, 0), spade_dw=(0, 0, 0))])
    seg = save_drn(tmp_path, classes=LABELS)
    config = DistillConfig(epochs=1, epochs_decay=1, batch_size=2, crop_size=32, preprocess="resize", workers=0, ndf=4,
                           vgg=str(save_vgg(tmp_path)), segmenter=str(seg), distill={"gcka": 0.5}, progress=False, log_every=1,
                           inception="inception.pth")
    with pytest.warns(UserWarning, match="no weights"):
        res = distill(teacher=teacher, student=student, data=data, out=tmp_path / "run", config=config)
    assert res.finished and res.step == 4 and 0 <= res.metrics["miou"] <= 100 and np.isfinite(res.metrics["fid"])
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("kd_gcka" in r and "g_vgg" in r for r in log)

    ev = evaluate(models={"teacher": teacher, "student": tmp_path / "run" / "final"}, data=data, crop_size=32,
                  inception="inception.pth", segmenter=seg, reference="teacher", out=tmp_path / "eval")
    row = ev.rows["student"]
    assert row["fid"] == pytest.approx(res.metrics["fid"]) and row["miou"] == pytest.approx(res.metrics["miou"])
    assert "psnr_ref" in row and np.isfinite(row["kid"])
    assert "mIoU" in (tmp_path / "eval" / "metrics.md").read_text()

    exp = export_generator(tmp_path / "run" / "final", out=tmp_path / "student.onnx", format="onnx", input_size=32,
                           dynamic=False)
    assert exp.path.is_file() and exp.max_abs_diff < 1e-4
