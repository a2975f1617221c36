"""Distillation with GauGAN's objective for SPADE students: losses, TTUR, evaluation (FID, mIoU), resume."""

from __future__ import annotations

import json

import pytest
import torch

from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.distill import DistillConfig, distill
from nas_prune.errors import NasPruneError
from nas_prune.evaluate import evaluate
from nas_prune.families.spade import SpadeBlock, build_spade_generator
from seg_helpers import save_drn, save_vgg, tiny_spade_arch, write_label_folder

T_ARCH = tiny_spade_arch()
S_ARCH = T_ARCH.with_widths(
    stream=(16, 16, 16, 16, 8, 4, 2, 2),
    blocks=[SpadeBlock(res=(1, 2, 0), dw=(0, 1, 1), spade_res=(1, 0, 1), spade_dw=(0, 1, 0))] * 5
    + [SpadeBlock(res=(1, 0, 0), dw=(0, 0, 1), spade_res=(1, 0, 0), spade_dw=(0, 0, 0))]
    + [SpadeBlock(res=(0, 0, 0), dw=(0, 0, 0), spade_res=(0, 0, 0), spade_dw=(0, 0, 0))],
)
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gaugan")
    return {"data": write_label_folder(root / "data"), "vgg": str(save_vgg(root)), "seg": str(save_drn(root, classes=5))}


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_spade_generator(T_ARCH).eval()


def cfg(files, **kw):
    base = dict(epochs=1, epochs_decay=1, batch_size=2, crop_size=32, preprocess="resize", flip=True, workers=0,
                ndf=4, vgg=files["vgg"], distill={"gcka": 0.5}, progress=False, log_every=1, eval_every=0)
    return DistillConfig(**{**base, **kw})


def test_gaugan_distill_losses_ttur_and_metrics(tmp_path, files, teacher):
    out = tmp_path / "run"
    res = distill(teacher=teacher, student=S_ARCH, data=files["data"], out=out, config=cfg(files, segmenter=files["seg"]))
    assert res.step == 4 and res.finished
    info = json.loads((out / "config.json").read_text())
    assert info["objective"] == "gaugan"
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in logs if "g_total" in r]
    assert len(train) == 4
    for r in train:
        # G: 1 * hinge + 10 * feature matching + 10 * VGG + 0.5 * (-sum KA over head_0, G_middle_1, up_1)
        assert r["g_total"] == pytest.approx(r["g_gan"] + 10 * r["g_feat"] + 10 * r["g_vgg"] + 0.5 * r["kd_gcka"], rel=1e-5)
        assert -3.0 <= r["kd_gcka"] < 0 and r["g_vgg"] > 0 and r["g_feat"] > 0
        assert r["d"] == pytest.approx(r["d_fake"] + r["d_real"], rel=1e-6)
    evals = [r for r in logs if r.get("eval")]
    assert len(evals) == 2 and all(0.0 <= r["miou"] <= 100.0 and "psnr_teacher" in r for r in evals)
    assert res.metrics["miou"] == evals[-1]["miou"]
    assert (out / "best" / "arch.json").is_file() and (out / "final" / "student.safetensors").is_file()
    assert list((out / "samples").glob("step_*.png"))
    # TTUR: Adam betas (0, 0.9); generator at lr / 2, discriminator at 2 lr (here decayed to the last step's factor)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    g, d = state["opt_g"]["param_groups"][0], state["opt_d"]["param_groups"][0]
    assert tuple(g["betas"]) == (0.0, 0.9) == tuple(d["betas"])
    factor = train[-1]["lr"] / 2e-4
    assert g["lr"] == pytest.approx(1e-4 * factor) and d["lr"] == pytest.approx(4e-4 * factor) and factor < 1
    assert set(k.split(".")[0] for k in state["discriminator"]) == {"discriminator_0", "discriminator_1"}
    # nas-prune evaluate scores the saved student as distillation did (same split, same code)
    ev = evaluate(models={"teacher": teacher, "final": out / "final"}, data=files["data"], crop_size=32,
                  segmenter=files["seg"], reference="teacher")
    assert ev.rows["final"]["miou"] == pytest.approx(res.metrics["miou"], rel=1e-9)
    assert ev.rows["final"]["psnr_ref"] == pytest.approx(res.metrics["psnr_teacher"], rel=1e-6)
    assert "miou" in ev.rows["teacher"] and "mIoU ↑" in ev.markdown()
    cli = CliRunner().invoke(app, ["evaluate", f"student={out / 'final'}", "--data", str(files["data"]), "--crop-size", "32",
                                   "--segmenter", files["seg"], "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["models"]["student"]["miou"] == pytest.approx(res.metrics["miou"], rel=1e-9)


def test_gaugan_resume_is_exact(tmp_path, files, teacher):
    c = cfg(files, lambda_vgg=0.0, vgg=None, distill={"gcka": 0.5}, max_steps=4, eval_every=100)
    full = distill(teacher=teacher, student=S_ARCH, data=files["data"], out=tmp_path / "a", config=c)
    distill(teacher=teacher, student=S_ARCH, data=files["data"], out=tmp_path / "b", config=c.replace(max_steps=2))
    resumed = distill(teacher=teacher, student=S_ARCH, data=files["data"], out=tmp_path / "b", config=c, resume=True)
    assert resumed.step == 4
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k


def test_gaugan_errors(tmp_path, files, teacher):
    run = dict(teacher=teacher, student=S_ARCH, data=files["data"])
    with pytest.raises(NasPruneError, match="use objective gaugan"):
        distill(**run, out=tmp_path / "a", config=cfg(files, objective="pix2pix"))
    with pytest.raises(NasPruneError, match="lambda_recon: GauGAN's objective has no L1 term"):
        distill(**run, out=tmp_path / "b", config=cfg(files, lambda_recon=100.0))
    with pytest.raises(NasPruneError, match="needs VGG19 weights"):
        distill(**run, out=tmp_path / "c", config=cfg(files, vgg=None))
    with pytest.raises(NasPruneError, match="segmenter weights not found"):
        distill(**run, out=tmp_path / "d", config=cfg(files, segmenter=str(tmp_path / "x.pth")))
    with pytest.raises(NasPruneError, match="multiples of 32"):
        distill(**run, out=tmp_path / "e", config=cfg(files, crop_size=48))
    with pytest.raises(NasPruneError, match="objective: 'gau' is not one of auto, pix2pix, gaugan"):
        cfg(files, objective="gau")
    assert not (tmp_path / "a").exists() and not (tmp_path / "e" / "checkpoints").exists()


def test_cityscapes_gaugan_recipe_has_cat_settings():
    from nas_prune.recipe import load_recipe
    from nas_prune.shipped import shipped_dir

    path = shipped_dir("recipes") / "cityscapes_gaugan.yaml"
    r = load_recipe(path)
    p, d = r.stages["prune"], r.stages["distill"]
    assert (p["target_macs"], p["convention"], p["input_size"], p["min_channels"]) == ("30G", "paper", "256x512", 16)
    assert load_recipe(path, overrides=["prune.target_macs=5.6G"]).stages["prune"]["target_macs"] == "5.6G"
    assert "--set prune.target_macs=5.6G" in path.read_text().splitlines()[1]
    # CAT's scripts/gaugan/cityscapes/train_inception_student_{30B,5p6B}.sh and the SPADE distiller defaults
    c = DistillConfig.from_dict({k: (None if isinstance(v, str) and v.startswith("<") else v) for k, v in d.items()})
    assert (c.objective, c.epochs, c.epochs_decay, c.batch_size, c.lr, c.ttur, c.gan_mode) == ("gaugan", 100, 100, 16, 2e-4, True, "hinge")
    assert (c.lambda_gan, c.lambda_feat, c.lambda_vgg, c.distill, c.distill_taps) == (1.0, 10.0, 10.0, {"gcka": 0.5}, ("head_0", "G_middle_1", "up_1"))
    assert (c.ndf, c.d_layers, c.num_d, c.preprocess, c.crop_size) == (64, 4, 2, "scale_width", 512)
    assert r.space == "cat_spade_cityscapes" and r.stages["evaluate"]["crop_size"] == 512
