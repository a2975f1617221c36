"""Slicing teacher weights, the fvcore check, arch.json round trips, reslicing, strict reading."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from conftest import randomize_
from nas_prune.apply import build_student, slice_state_dict, trace_size, verify_macs
from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.export import (
    load_student,
    read_student,
    reslice,
    summary_markdown,
    validate_document,
    write_student,
)
from nas_prune.load import LoadedGenerator
from nas_prune.macs import count_macs, measure_macs
from nas_prune.model import build_generator
from nas_prune.plan import plan_for_target, prunable_layers
from nas_prune.outputs import MANIFEST
from nas_prune.search import arch_document, prune_to_target


def make_teacher(norm: str = "instance", affine: bool = True, seed: int = 0, res=(4, 0, 4), dw=(3, 3, 3)):
    """Tiny teacher with a missing branch slot, random weights and running stats."""
    arch = Arch(
        input_nc=3, output_nc=3, stem=(8, 12, 16), head=(12, 8), norm=norm, affine=affine,
        blocks=(Block(res=res, dw=dw), Block(res=(4, 4, 4), dw=(0, 3, 0)), Block(res=(2, 2, 2), dw=(2, 2, 2))),
    )
    model = randomize_(build_generator(arch), seed).eval()
    return arch, model


def loaded(arch: Arch, model, path="teacher.pth") -> LoadedGenerator:
    return LoadedGenerator(arch=arch, state_dict=model.state_dict(), layout="cat", sha256="0" * 64, path=path)


def scores_for(arch: Arch, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {l.name: torch.rand(l.width, generator=g) for l in prunable_layers(arch)}


X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1


@pytest.mark.parametrize("norm,affine", [("instance", True), ("batch", True), ("instance", False), ("batch", False)])
def test_target_equal_to_teacher_gives_identical_outputs(norm, affine):
    arch, model = make_teacher(norm, affine)
    macs = count_macs(arch, input_size=32)
    plan = plan_for_target(scores_for(arch), arch, target_macs=macs, input_size=32, min_channels=4)
    assert plan.is_identity()
    sd = slice_state_dict(plan, model.state_dict())
    assert sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    student = build_student(plan, model.state_dict())
    with torch.no_grad():
        assert torch.equal(student(X), model(X))


def masked_teacher(arch: Arch, model, plan):
    """The teacher with every pruned channel silenced (norm gamma = beta = 0).

    With instance norm the student must compute the same function: silenced channels
    output 0 after ReLU, the constants left by dropped branches' biases are removed by
    the block norm, and identity blocks get their block-norm beta zeroed.
    """
    masked = build_generator(arch)
    masked.load_state_dict(model.state_dict())
    masked.eval()
    sd = masked.state_dict()
    from nas_prune.importance import producer_keys

    def silence(norm_key, channels):
        for leaf in ("weight", "bias"):
            sd[f"{norm_key}.{leaf}"][channels] = 0.0

    for layer in prunable_layers(arch):
        dropped = sorted(set(range(layer.width)) - set(plan.kept[layer.name]))
        if not dropped:
            continue
        _, norm = producer_keys(arch, layer)
        silence(norm, dropped)
        if layer.kind == "dw":
            silence(norm[: -len(".0.1")] + ".2.1", dropped)
        if layer.name == "stem.2":
            for n, block in enumerate(arch.blocks):
                if not block.is_identity:
                    silence(f"features.{n}.pw_bn", dropped)
    student_arch = plan.student_arch()
    for n, block in enumerate(student_arch.blocks):
        if block.is_identity and not arch.blocks[n].is_identity:
            silence(f"features.{n}.pw_bn", list(range(arch.stream)))
    return masked


@pytest.mark.parametrize("seed", range(6))
def test_pruned_student_equals_masked_teacher(seed):
    """End-to-end check of every slice: convs, depthwise, norms, stream, ConvTranspose, final conv."""
    arch, model = make_teacher(seed=seed)
    rng = random.Random(seed)
    target = int(count_macs(arch, input_size=32) * rng.uniform(0.35, 0.8))
    plan = plan_for_target(scores_for(arch, seed), arch, target_macs=target, input_size=32, min_channels=3)
    assert not plan.is_identity()
    student = build_student(plan, model.state_dict())
    masked = masked_teacher(arch, model, plan)
    with torch.no_grad():
        assert torch.allclose(student(X), masked(X), atol=1e-4)


def test_batch_norm_running_stats_are_sliced():
    arch, model = make_teacher("batch", True)
    plan = plan_for_target(scores_for(arch), arch, target_macs=count_macs(arch, input_size=32) // 3,
                           input_size=32, min_channels=3)
    sd, tsd = slice_state_dict(plan, model.state_dict()), model.state_dict()
    kept = list(plan.kept["stem.1"])
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(sd[f"down_sampling.5.{leaf}"], tsd[f"down_sampling.5.{leaf}"][kept])
    assert torch.equal(sd["down_sampling.5.num_batches_tracked"], tsd["down_sampling.5.num_batches_tracked"])
    assert "down_sampling.1.bias" not in sd  # batch-norm teachers have bias-free convs
    c, h0 = list(plan.kept["stem.2"]), list(plan.kept["head.0"])
    assert torch.equal(sd["up_sampling.0.weight"], tsd["up_sampling.0.weight"][c][:, h0])


def test_fvcore_check_reduced_size_is_exact():
    arch, model = make_teacher()
    assert trace_size(arch, (256, 256)) == (32, 32, 8)
    assert trace_size(arch, (256, 512)) == (32, 64, 8)
    assert trace_size(arch, (36, 36)) == (36, 36, 1)
    h, w, s = trace_size(arch, (128, 64))
    assert (h, w, s) == (64, 32, 2)
    full = measure_macs(model, input_size=(128, 64))
    assert full == count_macs(arch, input_size=(128, 64))
    measured, traced = verify_macs(model, input_size=(128, 64), expected_fvcore=full)
    assert measured == full and traced == (64, 32)
    with pytest.raises(RuntimeError, match="disagrees with fvcore"):
        verify_macs(model, input_size=(128, 64), expected_fvcore=full + 1)


def test_fvcore_by_distinct_layers_equals_the_full_trace():
    """The fast check traces each distinct layer once; on random architectures of the space
    (identity blocks, repeated and zero-width branches, both norms, with and without affine,
    every padding) and on a pruned, rounded student, its count equals fvcore's whole-model trace."""
    from conftest import random_arch
    from nas_prune.apply import fvcore_by_distinct_layers

    rng = random.Random(7)
    cases = [random_arch(rng, max_blocks=3) for _ in range(6)]
    arch, model = make_teacher()
    plan = plan_for_target(scores_for(arch), arch, target_macs=count_macs(arch, input_size=32) // 2,
                           input_size=32, min_channels=4, round_to=2)
    cases.append(plan.student_arch())
    repeated = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), head=(8, 8), blocks=(Block(res=(2, 2, 2), dw=(2, 2, 2)),) * 4)
    cases.append(repeated)
    for case in cases:
        net = randomize_(build_generator(case)).eval()
        got, traced = fvcore_by_distinct_layers(net, input_size=(32, 32))
        assert got == measure_macs(net, input_size=32) == count_macs(case, input_size=32), case
        leaves = [m for m in net.modules() if next(m.children(), None) is None and m is not net]
        assert traced <= len(leaves)
    net = build_generator(repeated).eval()
    _, traced = fvcore_by_distinct_layers(net, input_size=(32, 32))
    assert traced < len([m for m in net.modules() if next(m.children(), None) is None]) / 2  # 4 equal blocks


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory):
    from nas_prune.search import export_result

    arch, model = make_teacher()
    result = prune_to_target(loaded(arch, model), target_macs=count_macs(arch, input_size=32) // 2,
                             input_size=32, min_channels=4, verify="fast")
    out = export_result(result, tmp_path_factory.mktemp("exported") / "student")
    return arch, model, result, out


@pytest.fixture
def exported(exported_once, tmp_path):
    """A fresh copy of the exported student folder per test (tests corrupt it)."""
    arch, model, result, out = exported_once
    return arch, model, result, shutil.copytree(out, tmp_path / "student")


def test_export_round_trip_identical_outputs(exported):
    arch, model, result, out = exported
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "arch.json", "student.safetensors", "summary.md"]
    doc = json.loads((out / "arch.json").read_text())
    assert doc["format"] == "nas-prune-arch" and doc["version"] == 1
    assert doc["macs"]["fvcore"] == doc["macs"]["measured"]["macs"] == result.macs["fvcore"]
    assert doc["macs"]["input_size"] == [32, 32]
    assert doc["provenance"]["teacher"]["sha256"] == "0" * 64
    assert doc["provenance"]["target"] == {"macs": result.target_macs, "convention": "fvcore"}
    in_memory = build_generator(result.student_arch)
    in_memory.load_state_dict(result.state_dict)
    in_memory.eval()
    rebuilt = load_student(out)
    with torch.no_grad():
        assert torch.equal(rebuilt(X), in_memory(X))
    arch2, sd2, meta = read_student(out / "arch.json")
    assert arch2 == result.student_arch and meta["params"] == result.params
    assert all(torch.equal(sd2[k], v) for k, v in result.state_dict.items())
    assert "| block 1 |" in summary_markdown(doc)


def test_reslice_reproduces_exported_weights_exactly(exported):
    arch, model, result, out = exported
    _, weights, _ = read_student(out)
    again = reslice(model.state_dict(), out)
    assert again.keys() == weights.keys()
    assert all(torch.equal(again[k], weights[k]) for k in weights)


def corrupt(out, edit):
    doc = json.loads((out / "arch.json").read_text())
    edit(doc)
    (out / "arch.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(format="other"), "format: expected 'nas-prune-arch'"),
        (lambda d: d.update(version=2), "version: version 2 is not supported"),
        (lambda d: d.update(extra=1), "extra: unknown field"),
        (lambda d: d.pop("arch"), "arch: missing field"),
        (lambda d: d["arch"].update(stem=[8, 8]), "arch.stem: expected 3 values"),
        (lambda d: d["arch"]["blocks"][1].update(res="x"), r"arch.blocks\[1\].res: expected a list of integers"),
        (lambda d: d["macs"].update(fvcore=d["macs"]["fvcore"] + 1), "macs.fvcore: .* does not match the architecture"),
        (lambda d: d["macs"].update(input_size=[30, 30]), "macs.input_size: .*divisible by 4"),
        (lambda d: d.update(params=1), "params: 1 does not match"),
        (lambda d: d["provenance"]["kept"].update({"stem.0": [0, 1]}), "provenance.kept.stem.0: 2 indices but the arch has width"),
        (lambda d: d["provenance"]["kept"].pop("head.1"), "provenance.kept.head.1: missing"),
        (lambda d: d["provenance"]["target"].update(convention="flops"), "provenance.target.convention"),
        (lambda d: d["provenance"]["teacher"]["arch"].update(stem=[4, 4, 4]), "arch: not a student of provenance.teacher.arch"),
        (lambda d: d["provenance"].update(round_to="8"), "provenance.round_to: expected an integer"),
    ],
)
def test_malformed_arch_json_names_the_field(exported, edit, message):
    out = exported[3]
    corrupt(out, edit)
    with pytest.raises(NasPruneError, match=message):
        read_student(out)


def test_weights_that_do_not_fit_are_refused(exported, tmp_path):
    from safetensors.torch import save_file

    _, _, result, out = exported
    sd = dict(result.state_dict)
    sd["down_sampling.1.weight"] = torch.zeros(1, 3, 7, 7)
    save_file(sd, str(out / "student.safetensors"))
    with pytest.raises(NasPruneError, match=r"shape mismatch: down_sampling\.1\.weight \(1, 3, 7, 7\)"):
        read_student(out)
    del sd["down_sampling.1.weight"], sd["up_sampling.7.bias"]
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(out / "student.safetensors"))
    with pytest.raises(NasPruneError, match=r"missing keys: down_sampling\.1\.weight, up_sampling\.7\.bias; "
                                            r"unexpected keys: extra\.weight"):
        read_student(out)
    (out / "student.safetensors").write_bytes(b"garbage")
    with pytest.raises(NasPruneError, match="not a readable safetensors file"):
        read_student(out)
    arch, state, _ = read_student(out, load_weights=False)
    assert state is None and arch == result.student_arch
    with pytest.raises(NasPruneError, match="not valid JSON"):
        (out / "arch.json").write_text("{")
        read_student(out)


def test_hand_written_arch_json_without_provenance(tmp_path):
    arch, _ = make_teacher()
    doc = {"format": "nas-prune-arch", "version": 1, "arch": arch.to_dict()}
    validate_document(doc)
    (tmp_path / "arch.json").write_text(json.dumps(doc))
    a, sd, _ = read_student(tmp_path / "arch.json")
    assert a == arch and sd is None
    with pytest.raises(NasPruneError, match="provenance: missing"):
        reslice({}, tmp_path / "arch.json")


def test_write_is_atomic_and_refuses_existing_folder(exported, tmp_path):
    _, _, result, out = exported
    doc = arch_document(result)
    before = (out / "arch.json").read_text()
    with pytest.raises(NasPruneError, match="output folder exists and is not empty.*--force"):
        write_student(out, document=doc, state_dict=result.state_dict)
    bad = dict(doc, version=7)
    with pytest.raises(NasPruneError, match="version"):
        write_student(out, document=bad, state_dict=result.state_dict, force=True)
    assert (out / "arch.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no temp folders left
    write_student(out, document=doc, state_dict=None, force=True)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "arch.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
