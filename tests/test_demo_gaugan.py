"""The whole SPADE / GauGAN chain on CPU in seconds: a label-map -> photo task cut from scikit-image's
photos, a tiny SPADE teacher pruned in one step, GauGAN distillation with GCKA, FID + mIoU, ONNX export."""

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
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.search import search
from nas_prune.spade import cat_teacher_arch
from nas_prune.spade.model import seeded_weights_
from seg_helpers import TinyFeatures, save_drn, save_vgg

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
    """make data -> tiny SPADE teacher -> one-step pruning -> GauGAN + GCKA distillation -> FID, mIoU -> ONNX."""
    import nas_prune.inception as inc

    features = TinyFeatures().eval()
    monkeypatch.setattr(inc, "load_inception", lambda path, **kw: features)  # FID's Inception, tiny
    data = make_demo_dataset(tmp_path / "data", task="segmentation", size=64, n_train=4, n_test=2, labels=LABELS)
    t_arch = cat_teacher_arch(ngf=2, label_nc=LABELS, num_upsampling_layers="more", channels_reduction_factor=2, spade_hidden=4)
    teacher_path = tmp_path / "best_net_G.pth"
    torch.save(seeded_weights_(build_generator(t_arch), 0).state_dict(), teacher_path)  # as CAT saves it

    target = int(0.5 * count_macs(t_arch, input_size=64, convention="paper"))
    pruned = search(teacher=teacher_path, target_macs=target, convention="paper", input_size=64, min_channels=1,
                    out=tmp_path / "student")
    assert target * 0.9 <= pruned.reached <= target

    seg = save_drn(tmp_path, classes=LABELS)
    config = DistillConfig(epochs=1, epochs_decay=1, batch_size=2, crop_size=64, preprocess="resize", workers=0, ndf=4,
                           vgg=str(save_vgg(tmp_path)), segmenter=str(seg), distill={"gcka": 0.5}, progress=False,
                           log_every=1, inception="inception.pth")
    res = distill(teacher=teacher_path, student=tmp_path / "student", data=data, out=tmp_path / "run", config=config)
    assert res.finished and res.step == 4 and 0 <= res.metrics["miou"] <= 100 and np.isfinite(res.metrics["fid"])
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(-3 <= r["kd_gcka"] < 0 and r["g_vgg"] > 0 for r in log if "g_total" in r)

    ev = evaluate(models={"teacher": teacher_path, "student": tmp_path / "run" / "final"}, data=data, crop_size=64,
                  inception="inception.pth", segmenter=seg, reference="teacher", out=tmp_path / "eval")
    row = ev.rows["student"]
    assert row["fid"] == pytest.approx(res.metrics["fid"]) and row["miou"] == pytest.approx(res.metrics["miou"])
    assert row["psnr_ref"] == pytest.approx(res.metrics["psnr_teacher"]) and np.isfinite(row["kid"])
    assert row["macs_paper"] == pruned.reached and ev.rows["teacher"]["macs_paper"] > row["macs_paper"]
    assert "mIoU" in (tmp_path / "eval" / "metrics.md").read_text()

    exp = export_generator(tmp_path / "run" / "final", out=tmp_path / "student.onnx", format="onnx", input_size=64,
                           dynamic=False)
    assert exp.path.is_file() and exp.max_abs_diff < 1e-4
