"""The whole SPADE / GauGAN chain on CPU in seconds: a label-map -> photo task cut from scikit-image's
photos, a tiny SPADE teacher pruned in one step, GauGAN distillation with GCKA, FID + mIoU, ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nas_prune.demo_data import make_demo_dataset
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.recipe import load_recipe
from nas_prune.recipe_run import run_recipe
from nas_prune.shipped import shipped_dir
from nas_prune.families.spade import cat_teacher_arch
from nas_prune.families.spade.model import seeded_weights_
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


def test_gaugan_chain_with_the_shipped_recipe(tmp_path, monkeypatch):
    """The cityscapes_gaugan recipe, scaled down by --set overrides: a tiny SPADE teacher pruned in one step,
    GauGAN + GCKA distillation, FID + mIoU of teacher / pruned / distilled, ONNX export."""
    import nas_prune.inception as inc

    features = TinyFeatures().eval()
    monkeypatch.setattr(inc, "load_inception", lambda path, **kw: features)  # FID's Inception, tiny
    data = make_demo_dataset(tmp_path / "data", task="segmentation", size=64, n_train=4, n_test=2, labels=LABELS)
    # a "normal" teacher: its tensors are those of "more", so only the recipe's space says which it is
    t_arch = cat_teacher_arch(ngf=2, label_nc=LABELS, num_upsampling_layers="normal", channels_reduction_factor=2, spade_hidden=4)
    space = tmp_path / "tiny_spade.yaml"
    space.write_text(yaml.safe_dump({"name": "tiny_spade", "family": "spade", "ngf": 2, "label_nc": LABELS,
                                     "num_upsampling_layers": "normal", "kernel_sizes": [1, 3, 5],
                                     "channels_reduction_factor": 2, "spade_hidden": 4}))
    teacher = tmp_path / "best_net_G.pth"
    torch.save(seeded_weights_(build_generator(t_arch), 0).state_dict(), teacher)  # as CAT saves it
    target = int(0.5 * count_macs(t_arch, input_size=64, convention="paper"))
    seg, vgg = save_drn(tmp_path, classes=LABELS), save_vgg(tmp_path)
    overrides = [
        f"teacher={teacher}", f"data={data}", f"space={space}", f"run_dir={tmp_path / 'run'}",
        f"prune.target_macs={target}", "prune.input_size=64", "prune.min_channels=1",
        "distill.epochs=1", "distill.epochs_decay=1", "distill.batch_size=2", "distill.crop_size=64", "distill.load_size=64",
        "distill.ndf=4", "distill.workers=0", "distill.progress=false", "distill.log_every=1",
        f"distill.vgg={vgg}", f"distill.segmenter={seg}", "distill.inception=inception.pth",
        "evaluate.crop_size=64", "evaluate.inception=inception.pth", f"evaluate.segmenter={seg}",
        "export.input_size=64", "export.dynamic=false",
    ]
    res = run_recipe(load_recipe(shipped_dir("recipes") / "cityscapes_gaugan.yaml", overrides=overrides), log=lambda s: None)
    assert [o.stage for o in res.stages] == ["prune", "distill", "evaluate", "export"]
    run = tmp_path / "run"

    arch = json.loads((run / "prune" / "student" / "arch.json").read_text())
    assert arch["arch"]["family"] == "spade" and target * 0.9 <= arch["macs"]["paper"] <= target
    log = [json.loads(x) for x in (run / "distill" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "g_total" in r]
    assert len(steps) == 4 and all(-3 <= r["kd_gcka"] < 0 and r["g_vgg"] > 0 and r["g_feat"] > 0 for r in steps)
    last_eval = [r for r in log if r.get("eval")][-1]

    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())["models"]
    assert set(metrics) == {"teacher", "pruned (no fine-tuning)", "student, distilled"}
    row = metrics["student, distilled"]
    # the recipe's evaluation scores the final student as distillation's last evaluation did
    assert row["fid"] == pytest.approx(last_eval["fid"]) and row["miou"] == pytest.approx(last_eval["miou"])
    assert row["psnr_ref"] == pytest.approx(last_eval["psnr_teacher"]) and np.isfinite(row["kid"])
    assert row["macs_paper"] == arch["macs"]["paper"] < metrics["teacher"]["macs_paper"]
    # every stage built the teacher from the space ("more" would count other MACs at 64x64)
    assert arch["arch"]["num_upsampling_layers"] == "normal"
    assert metrics["teacher"]["macs_paper"] == count_macs(t_arch, input_size=64, convention="paper")
    assert json.loads((run / "distill" / "config.json").read_text())["teacher_arch"] == t_arch.to_dict()
    assert "mIoU" in (run / "evaluate" / "metrics.md").read_text()
    assert (run / "export" / "generator.onnx").is_file()
