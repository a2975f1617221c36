"""SPADE generators: MACs (analytic == fvcore / torchprofile), one-step pruning, slicing, search, CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.apply import build_student, slice_state_dict
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.export import load_student, read_student, reslice
from nas_prune.importance import compute_importance
from nas_prune.macs import count_macs, count_params, measure_macs, parse_macs
from nas_prune.model import build_generator
from nas_prune.plan import (
    PrunePlan,
    ThresholdFamily,
    arch_from_widths,
    complete_widths,
    macs_formula,
    plan_for_target,
    prunable_layers,
)
from nas_prune.search import search
from nas_prune.families.spade import SpadeArch, SpadeBlock, cat_teacher_arch
from nas_prune.families.spade.importance import branch_prefix
from nas_prune.families.spade.model import seeded_weights_
from nas_prune.families.spade.plan import stream_segments


def random_spade_arch(rng: random.Random) -> SpadeArch:
    """A random small SPADE architecture: learned shortcuts anywhere, zero-width branches,
    blocks without branches, modulation networks without branches."""
    mode = rng.choice(["normal", "more", "most"])
    ks = tuple(sorted(rng.sample([1, 3, 5], rng.randint(1, 3))))
    n = 8 if mode == "most" else 7
    stream = [rng.randint(1, 8) for _ in range(n + 1)]
    blocks = []
    for _ in range(n):
        def widths():
            return tuple(rng.choice([0, rng.randint(1, 4)]) for _ in ks)
        res, dw = (widths(), widths()) if rng.random() > 0.2 else ((0,) * len(ks),) * 2
        alive = any(res) or any(dw)
        mod = (widths(), widths()) if alive else ((0,) * len(ks),) * 2
        blocks.append(SpadeBlock(res, dw, *mod))
    return SpadeArch(label_nc=rng.randint(1, 5), output_nc=rng.choice([1, 3]), num_upsampling_layers=mode,
                     stream=tuple(stream), blocks=tuple(blocks), kernel_sizes=ks,
                     activation=rng.choice(["relu", "leaky_relu"]))


def small_teacher(ngf: int = 4, mode: str = "more", **kw) -> SpadeArch:
    kw.setdefault("label_nc", 5)
    kw.setdefault("channels_reduction_factor", 4)
    kw.setdefault("spade_hidden", 12)
    return cat_teacher_arch(ngf=ngf, num_upsampling_layers=mode, **kw)


@pytest.mark.parametrize("seed", range(4))
def test_analytic_macs_equal_fvcore_and_torchprofile(seed):
    rng = random.Random(seed)
    arch = random_spade_arch(rng)
    m = arch.size_multiple
    size = (m, m * (1 + seed % 2))
    model = build_generator(arch).eval()
    for convention in ("fvcore", "paper"):
        assert count_macs(arch, input_size=size, convention=convention) == measure_macs(
            model, input_size=size, convention=convention
        ), (convention, arch.to_dict())
    assert count_params(arch) == sum(p.numel() for p in model.parameters())


def test_cat_teacher_counts():
    """CAT's ngf-64 cityscapes teacher at 256x512: the figures measured on CAT's class
    (fvcore / torchprofile on InceptionSPADEGenerator, random weights)."""
    normal = cat_teacher_arch(ngf=64, num_upsampling_layers="normal")
    assert count_macs(normal, input_size="256x512", convention="fvcore") == 117_198_406_272
    assert count_macs(normal, input_size="256x512", convention="paper") == 117_079_377_664
    more = cat_teacher_arch(ngf=64, num_upsampling_layers="more")
    assert count_macs(more, input_size="256x512", convention="fvcore") == 110_012_669_984
    assert count_macs(more, input_size="256x512", convention="paper") == 109_894_454_464
    assert count_params(normal) == count_params(more) == 55_592_325
    with pytest.raises(NasPruneError, match="multiples of 64"):
        count_macs(more, input_size="256x480")


def test_macs_formula_equals_count_on_random_widths():
    rng = random.Random(3)
    for mode in ("normal", "more", "most"):
        teacher = small_teacher(ngf=4, mode=mode)
        layers = prunable_layers(teacher)
        m = teacher.size_multiple
        for _ in range(15):
            widths = {l.name: rng.randint(l.unit, l.width) // l.unit * l.unit if l.kind == "stream"
                      else rng.choice([0, rng.randint(0, l.width)]) for l in layers if l.follows is None}
            widths = complete_widths(teacher, widths)
            student = arch_from_widths(teacher, widths)
            for convention in ("fvcore", "paper"):
                formula = macs_formula(teacher, input_size=(m, 2 * m), convention=convention)
                assert formula(widths) == count_macs(student, input_size=(m, 2 * m), convention=convention)


def test_prunable_layers_are_cats():
    """What CAT thresholds: fc_norm (the stream, in steps of 16 / 32), the first norm of every
    block branch and of every modulation branch. The other stream segments follow stream.0."""
    teacher = cat_teacher_arch(ngf=64)
    layers = {l.name: l for l in prunable_layers(teacher)}
    assert layers["stream.0"].width == 1024 and layers["stream.0"].unit == 16 and layers["stream.0"].follows is None
    assert [(n, layers[n].width) for n in ("stream.1", "stream.2", "stream.3", "stream.4")] == [
        ("stream.1", 512), ("stream.2", 256), ("stream.3", 128), ("stream.4", 64)]
    assert all(layers[f"stream.{k}"].follows == "stream.0" for k in range(1, 5))
    thresholded = [l for l in layers.values() if l.follows is None]
    assert len(thresholded) == 1 + 7 * 4 * 3  # stream.0 + 7 blocks x {res, dw, spade_res, spade_dw} x 3 kernels
    assert layers["up_1.dw.2"].width == 42 and layers["up_3.spade_res.0"].width == 21
    assert prunable_layers(cat_teacher_arch(ngf=64, num_upsampling_layers="most"))[0].unit == 32


def test_gamma_scores_and_cats_threshold_rule():
    """fill=False is CAT's rule: stream = max(#(|gamma_fc_norm| > t) // 16, lb) * 16, branches #(|gamma| > t)."""
    teacher = small_teacher(ngf=4)
    model = randomize_(build_generator(teacher), 1)
    sd = model.state_dict()
    name, scores = compute_importance(None, teacher, sd)
    assert name == "gamma"
    assert torch.equal(scores["stream.0"], sd["fc_norm.weight"].abs())
    assert torch.equal(scores["up_0.spade_dw.1"], sd[f"{branch_prefix(teacher, 3, 'spade_dw', 1)}.0.norm.weight"].abs())
    assert branch_prefix(teacher, 3, "spade_dw", 1) == "up_0.spade.dw_ops.1"
    family = ThresholdFamily(scores, teacher, input_size=64, min_channels=1, convention="paper")
    for i in (1, family.n_candidates // 3, family.n_candidates // 2):
        t = family.threshold(i)
        widths = family.widths_at(i)
        count = int((sd["fc_norm.weight"].abs() > t).sum())
        assert widths["stream.0"] == max(count // 16, 1) * 16
        assert widths["stream.1"] == widths["stream.0"] // 2
        alive = {n: any(widths.get(f"{n}.{k}.{j}", 0) for k in ("res", "dw") for j in range(3))
                 for n in teacher.block_names}
        for layer in prunable_layers(teacher):
            if layer.kind in ("res", "dw") or (layer.kind.startswith("spade") and alive[teacher.block_names[layer.block]]):
                assert widths[layer.name] == int((scores[layer.name] > t).sum())
            elif layer.kind.startswith("spade"):
                assert widths[layer.name] == 0  # the block has no branch left: no modulation network


def masked_teacher_state(teacher: SpadeArch, sd: dict, plan: PrunePlan) -> dict:
    """Teacher weights in which everything the plan drops is inert: the student's outputs
    must then equal the teacher's (kept channels)."""
    sd = {k: v.clone() for k, v in sd.items()}
    seg_of = {i: n for n, seg in enumerate(stream_segments(teacher)) for i in seg}

    def dropped(i):
        keep = set(plan.kept[f"stream.{seg_of[i]}"])
        return [c for c in range(teacher.stream[i]) if c not in keep]

    last_key = {"res": "1.conv", "dw": "2.conv", "spade_res": "1", "spade_dw": "2"}
    student = plan.student_arch()
    for b, (name, block) in enumerate(zip(teacher.block_names, teacher.blocks)):
        for kind in ("res", "dw", "spade_res", "spade_dw"):
            for j, w in enumerate(block.widths(kind)):
                if not w:
                    continue
                p = branch_prefix(teacher, b, kind, j)
                kept = set(plan.kept[f"{name}.{kind}.{j}"])
                idle = kind.startswith("spade") and student.blocks[b].is_identity
                for c in range(w):
                    if c not in kept or idle:
                        sd[f"{p}.{last_key[kind]}.weight"][:, c] = 0
                if not kept or idle:
                    sd[f"{p}.{last_key[kind]}.bias"].zero_()
                if kind in ("res", "dw"):
                    sd[f"{p}.0.conv.weight"][:, dropped(b)] = 0
        if teacher.fin(b) != teacher.fout(b):
            sd[f"{name}.shortcut.1.conv.weight"][:, dropped(b)] = 0
    sd["conv_img.weight"][:, dropped(teacher.n_blocks)] = 0
    return sd


@pytest.mark.parametrize("seed", range(4))
def test_sliced_student_equals_masked_teacher(seed):
    rng = random.Random(seed)
    mode = ["normal", "more", "most", "more"][seed]
    teacher = small_teacher(ngf=4, mode=mode, activation=rng.choice(["relu", "leaky_relu"]))
    sd = randomize_(build_generator(teacher), seed).state_dict()
    kept = {}
    for layer in prunable_layers(teacher):
        if layer.follows is None:
            n = rng.randint(1, layer.width // layer.unit) * layer.unit if layer.kind == "stream" else \
                rng.choice([0, rng.randint(0, layer.width), layer.width])
            kept[layer.name] = sorted(rng.sample(range(layer.width), n))
    widths = complete_widths(teacher, {n: len(v) for n, v in kept.items()})
    for layer in prunable_layers(teacher):
        if layer.follows is not None:
            kept[layer.name] = sorted(rng.sample(range(layer.width), widths[layer.name]))
        elif len(kept[layer.name]) != widths[layer.name]:
            kept[layer.name] = []
    plan = PrunePlan.from_kept(teacher, kept)
    student = build_student(plan, sd).double()
    reference = build_generator(teacher).eval()
    reference.load_state_dict(masked_teacher_state(teacher, sd, plan))
    reference.double()
    m = teacher.size_multiple
    seg = torch.rand(2, teacher.label_nc, m, 2 * m, dtype=torch.float64)
    with torch.no_grad():
        s_out, s_feats = student.forward_with_features(seg, ["fc", "up_1"])
        t_out, t_feats = reference.forward_with_features(seg, ["fc", "up_1"])
    assert (s_out - t_out).abs().max().item() < 1e-9
    assert torch.equal(s_feats["fc"], t_feats["fc"][:, list(plan.kept["stream.0"])])
    up_1_out = teacher.block_names.index("up_1") + 1  # stream index written by up_1
    s1 = list(plan.kept[f"stream.{[n for n, seg_ in enumerate(stream_segments(teacher)) if up_1_out in seg_][0]}"])
    assert (s_feats["up_1"] - t_feats["up_1"][:, s1]).abs().max().item() < 1e-9


def test_keep_everything_reproduces_the_teacher():
    teacher = small_teacher(ngf=4)
    sd = randomize_(build_generator(teacher), 0).state_dict()
    plan = PrunePlan.from_kept(teacher, {l.name: list(range(l.width)) for l in prunable_layers(teacher)})
    assert plan.is_identity() and plan.student_arch() == teacher
    sliced = slice_state_dict(plan, sd)
    assert list(sliced) == list(sd) and all(torch.equal(sliced[k], sd[k]) for k in sd)


@pytest.fixture(scope="module")
def spade_teacher_file(tmp_path_factory):
    """A random ngf-8 CAT SPADE teacher (stream 128 .. 8, 8.2G MACs at 256x512), saved as CAT saves it."""
    arch = small_teacher(ngf=8, label_nc=6, channels_reduction_factor=6, spade_hidden=128)
    model = seeded_weights_(build_generator(arch), 7)
    path = tmp_path_factory.mktemp("spade") / "best_net_G.pth"
    torch.save(model.state_dict(), path)
    return path, arch


@pytest.mark.parametrize("target", ["2G", "0.5G"])
def test_search_lands_within_half_a_percent_under(spade_teacher_file, tmp_path, target):
    path, arch = spade_teacher_file
    verify = "fast" if target == "2G" else "off"  # the fvcore check is the same code for both
    res = search(teacher=path, target_macs=target, convention="paper", input_size="256x512", min_channels=2,
                 out=tmp_path / "s", verify=verify)
    goal = parse_macs(target)
    assert goal * 0.995 <= res.reached <= goal
    if verify == "fast":
        assert res.measured_fvcore == res.macs["fvcore"] and res.traced_size == (64, 128)
    student_arch, state, doc = read_student(tmp_path / "s")
    assert student_arch == res.student_arch and doc["provenance"]["teacher"]["layout"] == "cat_spade"
    assert doc["arch"]["family"] == "spade" and doc["macs"]["paper"] == res.reached
    resliced = reslice(res.teacher.state_dict, doc)
    assert all(torch.equal(resliced[k], state[k]) for k in state)
    model = load_student(tmp_path / "s")
    seg = torch.zeros(1, 6, 64, 128)
    seg[:, 2] = 1
    with torch.no_grad():
        assert torch.equal(model(seg), build_student(res.plan, res.teacher.state_dict)(seg))


def test_search_refuses_what_spade_cannot_do(spade_teacher_file, tmp_path):
    path, _ = spade_teacher_file
    with pytest.raises(NasPruneError, match="importance activation: not available for SPADE"):
        search(teacher=path, target_macs="1G", importance="activation", input_size="256x512", write=False)
    with pytest.raises(NasPruneError, match="multiples of 64"):
        search(teacher=path, target_macs="1G", input_size="256x500", write=False)
    with pytest.raises(NasPruneError, match="below the smallest reachable student"):
        search(teacher=path, target_macs="10M", input_size="256x512", write=False, verify="off")


def test_cli_profile_search_export(spade_teacher_file, tmp_path):
    path, arch = spade_teacher_file
    runner = CliRunner()
    res = runner.invoke(app, ["profile", str(path), "--input-size", "128x256", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["macs"]["fvcore"] == count_macs(arch, input_size=(128, 256))
    assert [s["stage"] for s in report["stages"]] == ["fc", *arch.block_names, "out"]
    assert any("assumed 'more'" in n for n in report["notes"])
    out = tmp_path / "student"
    res = runner.invoke(app, ["search", "--teacher", str(path), "--space", "cat_spade_cityscapes",
                              "--target-macs", "1G", "--convention", "paper", "--input-size", "256x512", "--out", str(out)])
    assert res.exit_code == 2 and "does not fit search space 'cat_spade_cityscapes'" in res.output
    res = runner.invoke(app, ["search", "--teacher", str(path), "--target-macs", "1G", "--convention", "paper",
                              "--input-size", "256x512", "--min-channels", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "MACs (paper)" in res.output and "up_1" in res.output
    res = runner.invoke(app, ["profile", str(out), "--input-size", "256x512", "--convention", "paper", "--json"])
    assert json.loads(res.output)["macs"]["paper"] <= 1_000_000_000
    onnx = tmp_path / "g.onnx"
    res = runner.invoke(app, ["export", str(out), "--out", str(onnx), "--input-size", "64x128", "--json"])
    assert res.exit_code == 0, res.output
    exported = json.loads(res.output)
    assert exported["max_abs_diff"] < 1e-4 and exported["checked"][1] == [2, 192, 384]
    res = runner.invoke(app, ["search", "--teacher", str(path), "--target-macs", "1G", "--trials", "2",
                              "--input-size", "256x512", "--out", str(tmp_path / "study")])
    assert res.exit_code == 2 and "not supported" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("target", ["30G", "5.6G"])
def test_cat_budgets_on_the_ngf64_teacher(tmp_path, target):
    """CAT's cityscapes budgets (paper convention, 256x512) on a random ngf-64 teacher."""
    arch = cat_teacher_arch(ngf=64)
    path = tmp_path / "G.pth"
    torch.save(seeded_weights_(build_generator(arch), 0).state_dict(), path)
    res = search(teacher=path, target_macs=target, convention="paper", input_size="256x512",
                 space="cat_spade_cityscapes", out=tmp_path / "s")
    goal = parse_macs(target)
    assert goal * 0.995 <= res.reached <= goal and res.measured_fvcore == res.macs["fvcore"]


@pytest.mark.slow
def test_ngf64_teacher_measured_counts():
    model = build_generator(cat_teacher_arch(ngf=64, num_upsampling_layers="normal")).eval()
    assert measure_macs(model, input_size="256x512", convention="fvcore") == 117_198_406_272
    assert measure_macs(model, input_size="256x512", convention="paper") == 117_079_377_664
