"""The ``module`` family's engine on generators of many shapes (tests/module_nets.py).

For each generator: the MACs target is met within 1% under it, the closed-form count equals
fvcore (and torchprofile for the paper convention) on the built student, the kept indices
cut the right weights (a teacher whose dropped channels are silenced computes exactly what
the student computes), the rebuild from the record gives the same outputs, and the ONNX
export matches.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import module_nets as mn
from nas_prune.errors import NasPruneError
from nas_prune.families.module import (
    check_record,
    default_taps,
    load_model_spec,
    load_weights,
    measure_macs,
    prune_module,
    rebuild,
    select_channels,
    trace_groups,
)

NETS = Path(mn.__file__)
SIZE = 32

#: spec name -> kwargs: 12-16-channel variants. One channel of a tiny generator can cost
#: more than 1% of its MACs (then no student lands within 1%); at these widths none does.
CASES = {
    "UNetSmall": {"ngf": 16},
    "ResnetSmall": {"ngf": 16},
    "RRDBSmall": {"nf": 16, "gc": 16},
    "MobileSmall": {"c": 12},
    "NormZoo": {"c": 16},
    "BlurNet": {"c": 16},
    "InplaceOnNormViews": {"c": 16},
}
#: generators whose norms do not mix channels (group norm does), for the silencing test
CHANNELWISE = ["UNetSmall", "ResnetSmall", "RRDBSmall", "MobileSmall", "BlurNet", "InplaceOnNormViews"]


def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking weights: norms with spread gammas and running stats, so scores differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "weight", None) is not None and m.weight.dim() == 1:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 1.5 + 0.1)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def _teacher(name: str, seed: int = 0):
    net, spec, sha = load_model_spec(f"{NETS}:{name}", args=CASES[name])
    torch.manual_seed(seed)
    for p in net.parameters():  # reinitialise deterministically
        if p.dim() > 1:
            nn.init.kaiming_uniform_(p, a=0.2)
    return _randomise(net, seed), spec, sha


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(CASES))
def pruned_case(request):
    """(name, teacher, trace, selection, student, record) at half the teacher's fvcore MACs."""
    name = request.param
    teacher, spec, sha = _teacher(name)
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(copy.deepcopy(teacher), x)
    target = trace.macs.teacher["fvcore"] // 2
    sel = select_channels(trace, target_macs=target)
    student, record = prune_module(trace.module, sel.kept, example_input=x, trace=trace,
                                   spec=spec, args=CASES[name], source_sha256=sha)
    return name, teacher, trace, sel, student.eval(), record


def test_target_met_within_one_percent(pruned_case):
    name, teacher, trace, sel, student, _ = pruned_case
    assert sel.macs <= sel.target
    assert (sel.target - sel.macs) / sel.target < 0.01, (name, sel.macs, sel.target)
    assert trace.macs.teacher["fvcore"] == measure_macs(teacher, _x())
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_no_further_unit_fits(pruned_case):
    """The fill pass is maximal: one more unit of any prunable group passes the target."""
    name, teacher, trace, sel, student, _ = pruned_case
    for g in trace.prunable:
        if sel.counts[g.id] + g.multiple <= g.channels:
            bigger = dict(sel.counts, **{g.id: sel.counts[g.id] + g.multiple})
            assert trace.macs.macs(bigger) > sel.target, g.id


def test_analytic_equals_fvcore_and_torchprofile(pruned_case):
    name, teacher, trace, sel, student, _ = pruned_case
    x = _x()
    assert trace.macs.macs(sel.counts, convention="fvcore") == measure_macs(student, x, convention="fvcore")
    assert trace.macs.macs(sel.counts, convention="paper") == measure_macs(student, x, convention="paper")
    assert trace.macs.teacher["paper"] == measure_macs(teacher, x, convention="paper")


def test_every_group_has_a_criterion_and_the_output_is_whole(pruned_case):
    name, teacher, trace, sel, student, record = pruned_case
    out_groups = [g for g in trace.groups.values() if g.reason == "the model's output channels"]
    assert len(out_groups) == 1
    assert student(_x()).shape == teacher(_x()).shape
    for g in trace.prunable:
        assert g.criterion in ("gamma", "l1") and len(g.scores) == g.channels
        assert record["groups"][g.id]["criterion"] == g.criterion
    has_affine_norm = any(getattr(m, "weight", None) is not None for m in teacher.modules()
                          if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)))
    assert any(g.criterion == "gamma" for g in trace.prunable) == has_affine_norm


def test_summary_rows_name_criterion_or_reason(pruned_case):
    from nas_prune.families.module import group_rows

    name, teacher, trace, sel, student, _ = pruned_case
    rows = {r["group"]: r for r in group_rows(trace, sel)}
    assert set(rows) == set(trace.groups)
    for g in trace.groups.values():
        r = rows[g.id]
        assert (r["criterion"] is None) == (not g.prunable) and (r["left whole"] is None) == g.prunable
        assert r["kept"] == (len(sel.kept[g.id]) if g.prunable else r["channels"])


def test_rebuild_from_record_gives_the_same_outputs(pruned_case, tmp_path):
    name, teacher, trace, sel, student, record = pruned_case
    text = json.dumps(record)
    rebuilt = rebuild(json.loads(text))
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in student.state_dict().items()}
    rebuilt.load_state_dict(student.state_dict())
    x = _x(3)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), student(x))


def test_onnx_export_matches(pruned_case, tmp_path):
    import numpy as np
    import onnxruntime as ort

    name, teacher, trace, sel, student, _ = pruned_case
    x = _x(4)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, (x,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False)
        expected = student(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_analytic_equals_counters_on_random_students(name):
    """Random kept subsets (whole units, multiples of group norm's groups), not the search's."""
    import random

    teacher, _, _ = _teacher(name, seed=2)
    x = torch.zeros(1, 3, SIZE, SIZE)
    rng = random.Random(name)
    for _ in range(2):
        trace = trace_groups(copy.deepcopy(teacher), x, probe=False)
        kept, counts = {}, {}
        for g in trace.prunable:
            k = rng.randrange(1, g.channels // g.multiple + 1) * g.multiple
            units = rng.sample(range(g.channels), k)
            kept[g.id] = sorted(r for u in units for r in g.units[u])
            counts[g.id] = k
        student, _ = prune_module(trace.module, kept, example_input=x, trace=trace)
        for c in ("fvcore", "paper"):
            assert trace.macs.macs(counts, convention=c) == measure_macs(student, _x(), convention=c), c


@pytest.mark.parametrize("name", CHANNELWISE)
def test_kept_indices_cut_the_right_weights(name):
    """Silence the dropped channels in the teacher (zero every conv input weight that reads
    them): it must then compute what the student computes, to rounding."""
    teacher, _, _ = _teacher(name, seed=5)
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(copy.deepcopy(teacher), x)
    sel = select_channels(trace, target_macs=trace.macs.teacher["fvcore"] * 6 // 10)
    silenced = copy.deepcopy(teacher)
    mods = dict(silenced.named_modules())
    dropped_any = False
    for (node, space), items in trace.node_items.items():
        m = node.module
        if space != "in" or not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        target = mods[trace.graph._module2name[m]]
        for gid, positions, roots in items:
            keep = set(sel.kept.get(gid, roots))
            drop = [q for q, r in zip(positions, roots) if r not in keep]
            with torch.no_grad():
                if drop:
                    dropped_any = True
                    if isinstance(target, nn.ConvTranspose2d):
                        target.weight[drop] = 0
                    else:
                        target.weight[:, drop] = 0
    assert dropped_any
    student, _ = prune_module(trace.module, sel.kept, example_input=x, trace=trace)
    xi = _x(7)
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(xi), silenced(xi), atol=1e-5, rtol=1e-4)


def test_paper_convention_target():
    teacher, _, _ = _teacher("UNetSmall")
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(teacher, x)
    target = trace.macs.teacher["paper"] * 4 // 10
    sel = select_channels(trace, target_macs=target, convention="paper")
    assert target * 0.99 < sel.macs <= target
    student, _ = prune_module(teacher, sel.kept, example_input=x, trace=trace)
    assert measure_macs(student, _x(), convention="paper") == sel.macs


def test_threshold_without_fill_keeps_units_above_it():
    teacher, _, _ = _teacher("ResnetSmall")
    trace = trace_groups(teacher, torch.zeros(1, 3, SIZE, SIZE))
    target = trace.macs.teacher["fvcore"] // 2
    plain = select_channels(trace, target_macs=target, fill=False)
    filled = select_channels(trace, target_macs=target)
    assert plain.filled == 0 and plain.macs <= filled.macs <= target
    for g in trace.prunable:
        above = sum(s > plain.threshold for s in g.scores)
        assert plain.counts[g.id] == max(1, above)
        top = sorted(range(g.channels), key=lambda u: -g.scores[u])[: plain.counts[g.id]]
        assert plain.kept[g.id] == sorted(top)


def test_pixel_shuffle_prunes_in_blocks_and_blur_buffer_is_sliced():
    net, _, _ = _teacher("MobileSmall")
    trace = trace_groups(net, torch.zeros(1, 3, SIZE, SIZE))
    up = trace.groups["up.0:out"]
    assert up.channels == 12 and all(len(u) == 4 for u in up.units)
    blur, _, _ = _teacher("BlurNet")
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(blur, x)
    sel = select_channels(trace, target_macs=trace.macs.teacher["fvcore"] // 2)
    student, _ = prune_module(blur, sel.kept, example_input=x, trace=trace)
    assert student.blur.shape == (len(sel.kept["c1:out"]), 1, 3, 3)
    assert sel.counts["c1:out"] < 16


def test_instance_norm_running_stats_are_sliced():
    net, _, _ = _teacher("NormZoo")
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    assert trace.groups["c1:out"].multiple == 2  # GroupNorm(2, c)
    sel = select_channels(trace, target_macs=trace.macs.teacher["fvcore"] // 2)
    assert sel.counts["c1:out"] % 2 == 0
    student, _ = prune_module(net, sel.kept, example_input=x, trace=trace)
    assert student.n3.running_mean.shape == (len(sel.kept["c3:out"]),)


def test_stored_width_blur_group_is_left_whole_and_listed():
    net = _randomise(mn.StoredWidthBlur(8))
    trace = trace_groups(net, torch.zeros(1, 3, SIZE, SIZE))
    g = trace.groups["c1:out"]
    assert not g.prunable and "breaks the forward pass" in g.reason
    assert trace.groups["c2:out"].prunable


@pytest.mark.parametrize("cls, whole, prunable, reason", [
    (mn.SqueezeExcite, ["c1:out"], ["fc1:out", "c2:out"], "reshaped"),
    (mn.FunctionalShuffle, ["c1:out"], ["c3:out"], "channel count changes across PixelShuffleBackward0 (32 -> 8)"),
    (mn.GroupNormOverConcat, ["c1:out", "c2:out"], [], "group norm gn over channels of several groups"),
    (mn.BufferAdd, ["c1:out"], [], "buffer ramp (8, 32, 32) used in add"),
])
def test_what_cannot_be_pruned_is_left_whole_and_listed(cls, whole, prunable, reason):
    net = _randomise(cls())
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    for gid in whole:
        assert not trace.groups[gid].prunable and reason in trace.groups[gid].reason
    assert sorted(g.id for g in trace.prunable) == sorted(prunable)
    assert trace.macs.teacher["fvcore"] == measure_macs(net, _x())
    if prunable:
        sel = select_channels(trace, target_macs=max(trace.macs.teacher["fvcore"] * 7 // 10, trace.macs.macs(
            {gid: 1 for gid in prunable})))
        student, _ = prune_module(net, sel.kept, example_input=x, trace=trace)
        assert measure_macs(student, _x()) == sel.macs
        assert measure_macs(student, _x(), convention="paper") == trace.macs.macs(sel.counts, convention="paper")


class _AreaThenMatmul(nn.Module):
    def __init__(self, matmul: bool = False):
        super().__init__()
        self.matmul = matmul
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.ConvTranspose2d(8, 3, 4, 2, 1)

    def forward(self, x):
        a = nn.functional.interpolate(torch.relu(self.c1(x)), scale_factor=0.5, mode="area")
        a = self.c2(a)
        if self.matmul:
            a = a + torch.matmul(a, a.transpose(2, 3)) * 0.01
        return self.out(a)


def test_area_interpolation_counts_and_unsupported_ops_are_named():
    net = _randomise(_AreaThenMatmul())
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    sel = select_channels(trace, target_macs=trace.macs.teacher["fvcore"] * 6 // 10)
    for c in ("fvcore", "paper"):
        assert trace.macs.teacher[c] == measure_macs(net, _x(), convention=c)
    student, _ = prune_module(net, sel.kept, example_input=x, trace=trace)
    for c in ("fvcore", "paper"):
        assert trace.macs.macs(sel.counts, convention=c) == measure_macs(student, _x(), convention=c)
    with pytest.raises(NasPruneError, match="the module uses matmul: the module family counts MACs only of"):
        trace_groups(_AreaThenMatmul(matmul=True), x)


def test_frozen_weights_trace_the_same():
    net, _, _ = _teacher("UNetSmall")
    x = torch.zeros(1, 3, SIZE, SIZE)
    free = trace_groups(copy.deepcopy(net), x)
    net.requires_grad_(False)
    frozen = trace_groups(net, x)
    assert [g.id for g in frozen.prunable] == [g.id for g in free.prunable] and len(free.prunable) == 5
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(NasPruneError, match=r"expected one image"):
        trace_groups(net, torch.zeros(2, 3, SIZE, SIZE))


def test_learned_scale_is_sliced_and_tuple_outputs_work():
    net = _randomise(mn.LearnedScale())
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    assert trace.groups["c1:out"].prunable
    kept = [0, 3, 5, 6, 9, 15]
    expected = net.scale[0, kept, 0, 0].detach().clone()
    shift = net.shift[0, kept, 0, 0].clone()
    student, record = prune_module(net, {"c1:out": kept}, example_input=x, trace=trace)
    assert torch.equal(student.scale[0, :, 0, 0], expected) and torch.equal(student.shift[0, :, 0, 0], shift)
    assert record["kept"] == {"c1:out": kept, "c2:out": list(range(16))}
    y, m = student(_x())
    assert y.shape == (1, 3, SIZE, SIZE) and m.dim() == 0
    assert measure_macs(student, _x(), convention="paper") == trace.macs.macs({"c1:out": 6}, convention="paper")


def test_keep_leaves_groups_whole():
    net, _, _ = _teacher("UNetSmall")
    trace = trace_groups(net, torch.zeros(1, 3, SIZE, SIZE), keep=["down1"])
    assert trace.groups["down1.0:out"].reason == "kept (--keep down1)"
    assert trace.groups["inc.0:out"].reason == "kept (--keep down1)"  # down1 reads it: left unchanged
    assert trace.groups["up1.0:out"].prunable
    with pytest.raises(NasPruneError, match="--keep nope: no module"):
        trace_groups(net, torch.zeros(1, 3, SIZE, SIZE), keep=["nope"])


def test_nothing_prunable_and_unreachable_target_are_one_line_errors():
    trace = trace_groups(mn.NothingPrunable(), torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(NasPruneError, match="nothing in the module is prunable"):
        select_channels(trace, target_macs=1)
    net, _, _ = _teacher("UNetSmall")
    trace = trace_groups(net, torch.zeros(1, 3, SIZE, SIZE))
    smallest = trace.macs.macs({g.id: 1 for g in trace.prunable})
    with pytest.raises(NasPruneError, match=f"smallest student.*{smallest:,} MACs") as err:
        select_channels(trace, target_macs=smallest - 1)
    assert "\n" not in str(err.value)
    assert select_channels(trace, target_macs=smallest).macs == smallest


def test_default_taps_are_top_level_children_in_run_order():
    net, _, _ = _teacher("ResnetSmall")
    trace = trace_groups(net, torch.zeros(1, 3, SIZE, SIZE))
    taps = default_taps(trace)
    children = [n for n, _ in net.named_children()]
    assert taps and all(t in children for t in taps) and "head" not in taps
    assert taps == sorted(taps, key=children.index)
    unet, _, _ = _teacher("UNetSmall")
    taps = default_taps(trace_groups(unet, torch.zeros(1, 3, SIZE, SIZE)))
    assert len(taps) >= 2 and "outc" not in taps


# ---- import specs, weights, records ---------------------------------------------------


def test_factory_with_a_non_json_norm_argument():
    net, spec, sha = load_model_spec(f"{NETS}:define_G", args={"ngf": 8})
    assert isinstance(net.stem[2], nn.InstanceNorm2d) and spec.endswith("module_nets.py:define_G")
    assert len(sha) == 64
    with pytest.raises(NasPruneError, match="--model-args: not JSON"):
        load_model_spec(f"{NETS}:define_G", args={"norm_layer": nn.BatchNorm2d})
    with pytest.raises(NasPruneError, match=r"--model-args do not fit define_G\(ngf"):
        load_model_spec(f"{NETS}:define_G", args={"width": 8})


def test_package_module_spec(tmp_path):
    pkg = tmp_path / "mygans"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(NETS, pkg / "nets.py")
    net, spec, sha = load_model_spec("mygans.nets:UNetSmall", args={"ngf": 8}, cwd=tmp_path)
    assert spec == "mygans.nets:UNetSmall" and isinstance(net, nn.Module)
    relative, rspec, _ = load_model_spec("mygans/nets.py:ResnetSmall", cwd=tmp_path)
    assert rspec == f"{(pkg / 'nets.py').resolve()}:ResnetSmall"


@pytest.mark.parametrize("spec, message", [
    ("nets_without_name", "expected FILE.py:NAME"),
    ("missing.py:G", "no such file"),
    ("no_such_package_xyz.nets:G", "cannot import 'no_such_package_xyz.nets'"),
    ("{nets}:NoSuchClass", "'NoSuchClass' is not defined"),
    ("{nets}:ZOO", "is a dict, not a class or function"),
    ("{nets}:_blur_kernel", "returned a Tensor, not an nn.Module"),
])
def test_bad_specs_are_one_line_errors(spec, message, tmp_path):
    args = {"c": 4} if spec.endswith("_blur_kernel") else None
    with pytest.raises(NasPruneError, match=message) as err:
        load_model_spec(spec.format(nets=NETS), args=args, cwd=tmp_path)
    assert "\n" not in str(err.value)


def test_import_failure_is_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\nraise ValueError('bad config\\nsecond line')\n")
    with pytest.raises(NasPruneError, match="importing it failed: ValueError: bad config second line"):
        load_model_spec("broken.py:G", cwd=tmp_path)


def test_load_weights_safely_and_lists_mismatches(tmp_path):
    from safetensors.torch import save_file

    net = mn.UNetSmall(8)
    sd = net.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for f in ("w.pth", "w.safetensors"):
        other = mn.UNetSmall(8)
        load_weights(other, tmp_path / f)
        assert all(torch.equal(other.state_dict()[k], v) for k, v in sd.items())
    bad = dict(sd)
    bad.pop("inc.0.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["outc.0.bias"] = torch.zeros(5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(NasPruneError, match=r"missing 1: inc.0.weight; unexpected 1: extra.weight; "
                                            r"shape mismatch 1: outc.0.bias \(5,\) vs \(3,\)"):
        load_weights(mn.UNetSmall(8), tmp_path / "bad.pth")
    torch.save({"net": mn.UNetSmall(8)}, tmp_path / "pickled.pth")
    with pytest.raises(NasPruneError, match="safe loading refused it"):
        load_weights(mn.UNetSmall(8), tmp_path / "pickled.pth")


def test_changed_source_is_refused_naming_both_hashes(tmp_path):
    nets = tmp_path / "nets.py"
    shutil.copy(NETS, nets)
    net, spec, sha = load_model_spec("nets.py:UNetSmall", args={"ngf": 8}, cwd=tmp_path)
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    sel = select_channels(trace, target_macs=trace.macs.teacher["fvcore"] // 2)
    student, record = prune_module(net, sel.kept, example_input=x, trace=trace, spec=spec,
                                   args={"ngf": 8}, source_sha256=sha)
    check_record(record)
    nets.write_text(nets.read_text() + "\n# edited\n")
    with pytest.raises(NasPruneError, match=f"sha256 {sha[:16]}... then, [0-9a-f]{{16}}... now.*--allow-changed-source"):
        rebuild(record)
    again = rebuild(record, allow_changed_source=True)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in student.state_dict().items()}


def test_bad_records_name_the_field():
    good = {"format": "nas-prune-module-record", "version": 1, "model": "n.py:G", "args": {},
            "input_size": [1, 3, 32, 32], "kept": {}, "keep": []}
    check_record(good)
    for key, value, message in [("version", 9, "version 9"), ("input_size", [1, 3], "'input_size'"),
                                ("kept", {"a:out": ["x"]}, r"kept\['a:out'\]"), ("args", [], "'args'")]:
        with pytest.raises(NasPruneError, match=message):
            check_record({**good, key: value})


def test_bad_kept_channels_are_refused():
    net, _, _ = _teacher("UNetSmall")
    x = torch.zeros(1, 3, SIZE, SIZE)
    trace = trace_groups(net, x)
    with pytest.raises(NasPruneError, match="another module object"):
        prune_module(copy.deepcopy(net), {}, example_input=x, trace=trace)
    everything = select_channels(trace, target_macs=trace.macs.teacher["fvcore"])
    assert everything.threshold is None and everything.macs == trace.macs.teacher["fvcore"]
    with pytest.raises(NasPruneError, match="no group 'nope:out'"):
        prune_module(net, {"nope:out": [0]}, example_input=x, trace=trace)
    with pytest.raises(NasPruneError, match="not prunable"):
        prune_module(net, {"outc.0:out": [0, 1]}, example_input=x, trace=trace)
    with pytest.raises(NasPruneError, match="keeps no channel"):
        prune_module(net, {"inc.0:out": []}, example_input=x, trace=trace)
    mobile, _, _ = _teacher("MobileSmall")
    mtrace = trace_groups(mobile, x)
    with pytest.raises(NasPruneError, match="together"):
        prune_module(mobile, {"up.0:out": list(range(1, 48))}, example_input=x, trace=mtrace)


@pytest.mark.slow
def test_bench_tiny(tmp_path):
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(root / "results/any_generator/bench.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| \w+Small|\| NormZoo|\| BlurNet", line)]
    assert len(rows) == 6
    spread = r"[\d.]+ / [\d.]+ / [\d.]+"
    assert all(re.search(rf"\| \d+\.\d\d% \|.*\| {spread} \| {spread} \| [\d.]+x \|", r) for r in rows)
    assert all(re.search(r"\| same, [\d.]+ \|$", r) for r in rows)  # the command's path keeps the engine's student
    assert re.search(r"load average \(1/5/15 min\) at the start: .* other processes kept [\d.]+ cores busy", md)


def test_load_weights_refuses_integer_weights(tmp_path):
    """The engine's own reader checks dtypes as every loaded checkpoint is checked."""
    sd = {k: v.to(torch.int64) if v.is_floating_point() else v for k, v in mn.UNetSmall(8).state_dict().items()}
    torch.save(sd, tmp_path / "int.pth")
    with pytest.raises(NasPruneError, match="int64"):
        load_weights(mn.UNetSmall(8), tmp_path / "int.pth")
