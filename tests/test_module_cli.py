"""The ``module`` family through the commands: ``--model nets.py:NAME`` end to end.

A tiny U-Net-like generator of :mod:`module_nets` (8-16 channels, 32x32) goes through
profile, search (one step, ``--trials``, a latency target), distill, evaluate and export,
and the student is rebuilt from its ``arch.json`` and the code alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import module_nets
from nas_prune.cli import app
from nas_prune.errors import NasPruneError

SIZE = 32
ARGS = '{"ngf": 8}'


def _cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def _fails(args, says: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert says in errors[0], errors[0]
    return errors[0]


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) * 0.9 + 0.1
            m.running_mean = torch.rand(m.num_features, generator=g) * 0.2 - 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return net.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("module_cli")
    shutil.copy(Path(module_nets.__file__), root / "nets.py")
    torch.manual_seed(0)
    torch.save(_randomised(module_nets.UNetSmall(ngf=8), 1).state_dict(), root / "G.pth")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        (root / "data" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (SIZE, 2 * SIZE, 3), dtype=np.uint8)).save(root / "data" / split / f"{i}.png")
    return root


def _model(world) -> list:
    return ["--model", f"{world / 'nets.py'}:UNetSmall", "--model-args", ARGS]


@pytest.fixture(scope="module")
def searched(world):
    """One-step search to 1.5M fvcore MACs at 32x32 through the CLI."""
    out = world / "S"
    _cli("search", "--teacher", world / "G.pth", *_model(world), "--input-size", SIZE, "--target-macs", "1.5M",
         "--min-channels", 2, "--out", out)
    return out


def test_profile_counts_equal_the_counters(world):
    report = json.loads(_cli("profile", world / "G.pth", *_model(world), "--input-size", SIZE, "--measure", "--json"))
    assert report["macs"]["fvcore"] == report["measured"]["fvcore"]
    assert report["macs"]["paper"] == report["measured"]["paper (torchprofile)"]
    assert report["params"] == sum(p.numel() for p in module_nets.UNetSmall(ngf=8).parameters())
    assert sum(s["macs"] for s in report["stages"]) == report["macs"]["fvcore"]
    assert [s["stage"] for s in report["stages"]] == ["inc", "down1", "down2", "up1", "up2", "outc"]


def test_search_lands_under_the_target_and_records_the_code(world, searched):
    doc = json.loads((searched / "arch.json").read_text())
    arch = doc["arch"]
    assert 1_500_000 * 0.99 <= doc["macs"]["fvcore"] <= 1_500_000
    assert doc["macs"]["measured"]["macs"] == doc["macs"]["fvcore"]  # fvcore on the built student
    assert arch["family"] == "module"
    assert arch["model"] == f"{(world / 'nets.py').resolve()}:UNetSmall"
    assert arch["args"] == {"ngf": 8}
    import hashlib

    assert arch["source_sha256"] == hashlib.sha256((world / "nets.py").read_bytes()).hexdigest()
    assert arch["input_size"] == [1, 3, SIZE, SIZE]
    assert set(arch["kept"]) == {"inc.0:out", "down1.0:out", "down2.0:out", "up1.0:out", "up2.0:out"}
    assert any(len(v) < w for v, w in zip(arch["kept"].values(), (8, 16, 16, 16, 8)))
    assert doc["provenance"]["kept"] == arch["kept"]
    assert "(gamma)" in (searched / "summary.md").read_text()
    assert "| outc | outc.0:out 3 (whole: the model's output channels) |" in (searched / "summary.md").read_text()


def test_rebuilt_from_arch_json_alone_matches_the_engine(world, searched):
    """The student folder rebuilds from arch.json + the code; it equals the engine's own cut of the teacher."""
    from nas_prune.export import load_student
    from nas_prune.families.module import prune_module

    student = load_student(searched)
    teacher = module_nets.UNetSmall(ngf=8)
    teacher.load_state_dict(torch.load(world / "G.pth", weights_only=True))
    kept = json.loads((searched / "arch.json").read_text())["arch"]["kept"]
    x = torch.randn(1, 3, SIZE, SIZE)
    cut, _ = prune_module(teacher.eval(), kept, example_input=torch.zeros(1, 3, SIZE, SIZE))
    with torch.no_grad():
        assert torch.allclose(student(x), cut.eval()(x), atol=1e-6)
    assert sum(p.numel() for p in student.parameters()) == json.loads((searched / "arch.json").read_text())["params"]


def test_export_onnx_and_torchscript_check_themselves(world, searched):
    pytest.importorskip("onnxruntime")
    for fmt, name in (("onnx", "s.onnx"), ("torchscript", "s.pt")):
        res = json.loads(_cli("export", searched, "--out", world / name, "--format", fmt, "--input-size", SIZE, "--json"))
        assert res["max_abs_diff"] is not None and res["max_abs_diff"] <= 1e-4
        assert (world / name).is_file()


def test_distill_a_few_steps_at_a_named_tap_then_evaluate(world, searched):
    out = world / "D"
    _cli("distill", "--teacher", world / "G.pth", *_model(world), "--student", searched, "--data", world / "data",
         "--mode", "aligned", "--max-steps", 2, "--batch-size", 2, "--crop-size", SIZE, "--load-size", SIZE,
         "--taps", "down1,up1", "--distill", "gcka,mse,crd,akdg,ackd", "--log-every", 1, "--out", out, "--no-progress")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    seen = {k for rec in log for k in rec}
    for method in ("gcka", "mse", "crd", "akdg", "ackd"):
        assert any(method in k for k in seen), (method, sorted(seen))
    doc = json.loads((out / "final" / "arch.json").read_text())
    assert doc["arch"]["family"] == "module"
    config = json.loads((out / "config.json").read_text())
    assert list(config.get("distill_taps", config.get("config", {}).get("distill_taps", []))) == ["down1", "up1"]
    res = json.loads(_cli("evaluate", f"teacher={world / 'G.pth'}", f"student={searched}", f"distilled={out / 'final'}",
                          *_model(world), "--data", world / "data", "--crop-size", SIZE, "--reference", "teacher",
                          "--json"))
    rows = res["models"]
    macs = json.loads((searched / "arch.json").read_text())["macs"]["fvcore"]
    assert rows["student"]["macs_fvcore"] == rows["distilled"]["macs_fvcore"] == macs
    assert rows["teacher"]["macs_fvcore"] > macs
    assert rows["student"]["psnr_ref"] > 20  # the sliced student stays close to its teacher


def test_distill_taps_default_and_unknown_tap(world, searched):
    from nas_prune.export import read_student
    from nas_prune.model import check_taps, default_taps, tap_channels

    arch, _, _ = read_student(searched)
    taps = default_taps(arch)
    assert taps and set(taps) <= {"inc", "down1", "down2", "up1", "up2"}
    assert tap_channels(arch, "down1") == len(arch.kept_dict["down1.0:out"])
    with pytest.raises(NasPruneError, match="unknown feature layer 'nope'"):
        check_taps(arch, ["nope"])


def test_profile_latency_of_a_student(world, searched):
    report = json.loads(_cli("profile", searched, "--latency", "--repeats", 2, "--input-size", SIZE, "--json"))
    assert report["kind"] == "arch-json" and report["latency"]["runtime"] == "torch-cpu"
    assert report["latency"]["runs"] == 2 and 0 < report["latency"]["min_ms"] <= report["latency"]["median_ms"]


def test_changed_source_is_refused_through_the_cli_unless_allowed(world, searched, tmp_path):
    code = tmp_path / "nets.py"
    code.write_text((world / "nets.py").read_text())
    folder = tmp_path / "S"
    shutil.copytree(searched, folder)
    doc = json.loads((folder / "arch.json").read_text())
    old = doc["arch"]["source_sha256"]
    doc["arch"]["model"] = doc["provenance"]["teacher"]["arch"]["model"] = f"{code.resolve()}:UNetSmall"
    (folder / "arch.json").write_text(json.dumps(doc))
    code.write_text(code.read_text() + "\n# edited\n")
    import hashlib

    new = hashlib.sha256(code.read_bytes()).hexdigest()
    line = _fails(["export", folder, "--out", tmp_path / "a.pt", "--format", "torchscript", "--input-size", SIZE],
                  "changed since")
    assert old in line and new in line and "--allow-changed-source" in line
    assert not (tmp_path / "a.pt").exists()
    _cli("export", folder, "--out", tmp_path / "a.pt", "--format", "torchscript", "--input-size", SIZE,
         "--allow-changed-source")
    assert (tmp_path / "a.pt").is_file()
    # what was built while allowed (cached in this process) is still refused without the flag
    _fails(["export", folder, "--out", tmp_path / "b.pt", "--format", "torchscript", "--input-size", SIZE],
           "changed since")


def test_optuna_trials(world):
    out = world / "T"
    _cli("search", "--teacher", world / "G.pth", *_model(world), "--input-size", SIZE, "--target-macs", "1.5M",
         "--min-channels", 2, "--trials", 2, "--calib-images", 2, "--out", out)
    doc = json.loads((out / "arch.json").read_text())
    assert doc["arch"]["family"] == "module" and doc["macs"]["fvcore"] <= 1_500_000
    assert doc["provenance"]["study"]["trials"] >= 2 if isinstance(doc["provenance"].get("study"), dict) else True


def test_target_latency_with_a_fake_clock(world, tmp_path):
    from test_latency import FakeRuntime

    from nas_prune.load import user_model
    from nas_prune.search import search

    model = user_model(f"{world / 'nets.py'}:UNetSmall", ARGS, input_size=SIZE)
    from nas_prune.load import load_generator
    from nas_prune.macs import count_macs

    full = count_macs(load_generator(world / "G.pth", model=model).arch, input_size=SIZE, convention="fvcore")
    teacher = search(teacher=world / "G.pth", model=model, input_size=SIZE, target_macs=full, min_channels=2,
                     write=False, runtime=FakeRuntime(), latency_cache=tmp_path / "cache", target_latency="1000ms")
    full_ms = teacher.latency.measured_ms
    target = full_ms * 0.7
    res = search(teacher=world / "G.pth", model=model, input_size=SIZE, min_channels=2, write=False,
                 runtime=FakeRuntime(), latency_cache=tmp_path / "cache", target_latency=f"{target}ms")
    assert res.latency.measured_ms <= target < full_ms
    assert res.macs["fvcore"] < teacher.macs["fvcore"]


def test_keep_leaves_a_module_whole(world, tmp_path):
    _cli("search", "--teacher", world / "G.pth", *_model(world), "--input-size", SIZE, "--target-macs", "1.8M",
         "--min-channels", 2, "--keep", "down1", "--out", tmp_path / "K")
    arch = json.loads((tmp_path / "K" / "arch.json").read_text())["arch"]
    assert arch["keep"] == ["down1"] and "down1.0:out" not in arch["kept"]


@pytest.mark.parametrize("args, says", [
    (["--model", "NETS:Nope"], "'Nope' is not defined"),
    (["--model", "no_such_pkg_xyz.nets:G"], "cannot import 'no_such_pkg_xyz.nets'"),
    (["--model", "NETS:UNetSmall", "--model-args", '{"nfg": 8}'], "--model-args do not fit UNetSmall"),
    (["--model", "NETS:UNetSmall", "--model-args", "{ngf: 8}"], "--model-args: not JSON"),
    (["--model", "NETS:UNetSmall", "--model-args", '{"ngf": 16}'], "shape mismatch: inc.0.weight (8, 3, 3, 3) vs expected (16, 3, 3, 3)"),
    (["--model", "NETS:ResnetSmall"], "unexpected keys: inc.0.weight"),
    (["--model", "NETS:UNetSmall", "--model-args", ARGS, "--target-macs", "0.1M"], "below the smallest reachable student"),
])
def test_bad_input_is_one_line(world, args, says):
    args = [a.replace("NETS", str(world / "nets.py")) if isinstance(a, str) else a for a in args]
    if "--target-macs" not in args:
        args += ["--target-macs", "1M"]
    _fails(["search", "--teacher", world / "G.pth", "--input-size", SIZE, "--min-channels", 2,
            "--out", world / "never", *args], says)
    assert not (world / "never").exists()


def test_nothing_prunable_is_one_line(world, tmp_path):
    torch.save(module_nets.NothingPrunable().state_dict(), tmp_path / "N.pth")
    _fails(["search", "--teacher", tmp_path / "N.pth", "--model", f"{world / 'nets.py'}:NothingPrunable",
            "--input-size", SIZE, "--target-macs", "1K", "--out", tmp_path / "o"], "nothing in the module is prunable")


def test_package_module_spec_through_the_cli(world, tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    shutil.copy(world / "nets.py", tmp_path / "mypkg" / "nets.py")
    monkeypatch.chdir(tmp_path)
    report = json.loads(_cli("profile", world / "G.pth", "--model", "mypkg.nets:UNetSmall", "--model-args", ARGS,
                             "--input-size", SIZE, "--json"))
    full = json.loads(_cli("profile", world / "G.pth", *_model(world), "--input-size", SIZE, "--json"))
    assert report["macs"] == full["macs"] and report["params"] == full["params"]
    assert "mypkg.nets:UNetSmall" in " ".join(report["notes"])
