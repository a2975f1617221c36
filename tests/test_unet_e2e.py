"""A U-Net teacher through every command: profile, search (lands on its MACs target), distill on CPU, export."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.families import detect_layout, get_family
from nas_prune.families.unet.arch import teacher_arch

FAM = get_family("unet")
runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A 5-level ngf-8 U-Net with batch norm and |gamma| ~ U(0, 1), saved as pix2pix does (a .pth state dict)."""
    arch = teacher_arch(ngf=8, num_downs=5)
    torch.manual_seed(0)
    model = FAM.build(arch)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    path = tmp_path_factory.mktemp("teacher") / "latest_net_G.pth"
    torch.save(model.state_dict(), path)
    return path


def test_registry_tells_the_layouts_apart():
    from nas_prune.families.inception.arch import Arch, Block
    from nas_prune.families.inception.model import build_generator

    unet = FAM.build(teacher_arch(ngf=2, num_downs=5)).state_dict()
    fam, layout = detect_layout(list(unet))
    assert (fam.name, layout) == ("unet", "pix2pix-unet")
    cat = build_generator(Arch(input_nc=3, output_nc=3, stem=(4, 8, 8), blocks=(Block(res=(2,), dw=(2,)),), head=(8, 4),
                               res_kernel_sizes=(3,), dw_kernel_sizes=(3,), norm="instance", affine=True)).state_dict()
    assert detect_layout(list(cat))[0].name == "inception"
    resnet = ["model.1.weight", "model.4.weight", "model.10.conv_block.1.weight", "model.10.conv_block.5.weight"]
    assert detect_layout(resnet)[0].name == "inception"


def test_profile_checkpoint_measures_both_conventions(teacher_file):
    result = invoke("profile", teacher_file, "--measure", "--input-size", "64", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    arch = teacher_arch(ngf=8, num_downs=5)
    assert report["macs"]["fvcore"] == sum(c.macs for c in FAM.layer_costs(arch, (64, 64), "fvcore"))
    assert report["macs"]["paper"] == sum(c.macs for c in FAM.layer_costs(arch, (64, 64), "paper"))
    assert report["measured"]["fvcore"] == report["macs"]["fvcore"]
    assert report["measured"]["paper (torchprofile)"] == report["macs"]["paper"]


def test_profile_refuses_a_size_the_unet_cannot_take(teacher_file):
    result = invoke("profile", teacher_file, "--input-size", "48")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "multiples of 32" in result.output


@pytest.mark.parametrize("convention, fraction", [("paper", 0.5), ("paper", 0.25), ("fvcore", 0.4)])
def test_search_lands_on_its_target(teacher_file, convention, fraction):
    from nas_prune.search import search

    arch = teacher_arch(ngf=8, num_downs=5)
    total = sum(c.macs for c in FAM.layer_costs(arch, (64, 64), convention))
    target = int(total * fraction)
    res = search(teacher=teacher_file, target_macs=target, convention=convention, input_size=64, min_channels=4,
                 write=False)
    reached = res.macs[convention]
    assert reached <= target and (target - reached) / target < 0.01
    assert res.measured_fvcore == res.macs["fvcore"]
    assert reached == sum(c.macs for c in FAM.layer_costs(res.student_arch, (64, 64), convention))
    assert all(w >= 4 for w in (*res.student_arch.down, *res.student_arch.up))
    student = FAM.build(res.student_arch)
    student.load_state_dict(res.state_dict, strict=True)


def test_cli_search_distill_export(tmp_path, teacher_file):
    from nas_prune.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", size=32, n_train=4, n_test=2, seed=0)
    out = tmp_path / "student"
    result = invoke("search", "--teacher", teacher_file, "--target-macs", "2M", "--convention", "paper",
                    "--input-size", "32", "--min-channels", "4", "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "arch.json").read_text())
    assert doc["arch"]["family"] == "unet" and doc["macs"]["paper"] <= 2_000_000
    assert set(doc["provenance"]["kept"]) == {f"down.{i}" for i in range(5)} | {f"up.{i}" for i in range(1, 5)}
    run = tmp_path / "run"
    result = invoke("distill", "--teacher", teacher_file, "--student", out, "--data", data, "--out", run,
                    "--mode", "aligned", "--max-steps", "2", "--batch-size", "2", "--load-size", "36",
                    "--crop-size", "32", "--workers", "0", "--ndf", "8", "--device", "cpu", "--threads", "1", "--log-every", "1")
    assert result.exit_code == 0, result.output
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in logs if "eval" not in r]
    assert [r["step"] for r in train] == [1, 2]
    assert all(-4.0 <= r["kd_gcka"] < -2.0 for r in train)  # -sum of KA at the four default taps down.1/3, up.3/1
    onnx = tmp_path / "student.onnx"
    result = invoke("export", run / "final", "--format", "onnx", "--out", onnx, "--input-size", "64")
    assert result.exit_code == 0, result.output
    import numpy as np
    import onnxruntime as ort

    from nas_prune.export import load_student

    student = load_student(run / "final").eval()
    x = torch.rand(1, 3, 96, 64) * 2 - 1
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert np.abs(y - student(x).numpy()).max() < 1e-4


@pytest.mark.slow
def test_bench_unet_tiny(tmp_path):
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "results/unet/bench_unet.py"), "--tiny", "--repeats", "3",
                           "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "unet.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["teacher", "student 1/2", "student 1/4", "student 1/8"]
    for r in rows[1:]:
        assert 0 <= int(r["gap_macs"]) and float(r["gap_pct"]) < 1.0  # every student just under its target
        assert int(r["paper_macs"]) <= int(r["target_paper"]) and 10 < float(r["psnr_db"]) < 100
        assert float(r["latency_min_ms"]) <= float(r["latency_median_ms"]) <= float(r["latency_max_ms"])
    md = (tmp_path / "unet.md").read_text()
    assert "Load average (1/5/15 min) at the start:" in md and "shared" in md


def test_the_shipped_recipe_runs_on_a_tiny_unet(tmp_path, teacher_file):
    from nas_prune.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", size=32, n_train=4, n_test=2, seed=0)
    sets = {"teacher": teacher_file, "data": data, "run_dir": tmp_path / "run", "prune.input_size": 32,
            "prune.target_macs": "2M", "prune.min_channels": 4, "distill.max_steps": 2, "distill.batch_size": 2,
            "distill.load_size": 36, "distill.crop_size": 32, "distill.device": "cpu", "distill.workers": 0,
            "evaluate.crop_size": 32, "evaluate.inception": "null", "evaluate.save_real_stats": "false",
            "export.input_size": 32}
    args = ["run", "pix2pix_unet", "--threads", "1"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    doc = json.loads((run / "prune" / "student" / "arch.json").read_text())
    assert doc["arch"]["family"] == "unet" and doc["macs"]["paper"] <= 2_000_000
    assert (run / "export" / "generator.onnx").is_file() and (run / "report" / "report.md").is_file()
