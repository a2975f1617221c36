"""Three promises of the README, each tested where a plausible change would break it.

- One-step pruning: "a fill pass then adds the next channels by score while they fit" (across
  layers, highest score first; not one layer after another).
- Distillation: "``--resume`` refuses ... other data (file names and sizes) than the run started
  with" (a file replaced by another of the same name but a different size is other data).
- Latency targets: "the student is then timed end to end (median of 20 passes after 3 warm-up
  passes)".
"""

from __future__ import annotations

import json
import random
import shutil
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_arch, randomize_
from nas_prune.arch import Arch, Block
from nas_prune.data import fingerprint
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill
from nas_prune.errors import NasPruneError
from nas_prune.latency.runtime import Runtime
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.plan import arch_from_widths, plan_for_target, prunable_layers
from nas_prune.search import search

# ----------------------------------------------------------------------------- fill by score


def _teacher(seed: int) -> Arch:
    rng = random.Random(seed)
    arch = random_arch(rng, max_width=12, max_blocks=4)
    return arch.with_widths(stem=[rng.randint(4, 12) for _ in range(3)], head=[rng.randint(4, 12) for _ in range(2)])


def _fill_order_violations(seed: int) -> tuple[int, int]:
    """``(checked, violated)`` over random teachers and targets of the rule below."""
    teacher = _teacher(seed)
    layers = prunable_layers(teacher)
    g = torch.Generator().manual_seed(seed)
    scores = {l.name: torch.rand(l.width, generator=g) for l in layers}  # no ties
    ranked = {n: np.sort(s.numpy())[::-1] for n, s in scores.items()}
    lo = count_macs(arch_from_widths(teacher, {l.name: 3 if l.has_floor else 0 for l in layers}), input_size=32)
    hi = count_macs(teacher, input_size=32)
    checked = violated = 0
    for target in np.random.default_rng(seed).integers(lo, hi, size=6):
        try:
            base = plan_for_target(scores, teacher, target_macs=int(target), input_size=32, min_channels=3, fill=False)
        except NasPruneError:
            continue
        full = plan_for_target(scores, teacher, target_macs=int(target), input_size=32, min_channels=3, fill=True)
        # the channels the fill added, with their scores
        added = [(ranked[n][r], n, r) for n in full.widths for r in range(base.widths[n], full.widths[n])]
        for n, w in full.widths.items():
            if w >= len(ranked[n]):
                continue
            s = ranked[n][w]  # the best channel of layer n that the fill left out
            # when its turn came (in descending score order) the student held the threshold student
            # plus every added channel that scores higher; it was left out, so it did not fit then
            then = dict(base.widths)
            for sa, na, r in added:
                if sa > s:
                    then[na] = max(then[na], r + 1)
            then[n] = max(then[n], w) + 1
            checked += 1
            if count_macs(arch_from_widths(teacher, then), input_size=32) <= target:
                violated += 1
    return checked, violated


def test_fill_adds_channels_by_score_across_layers():
    checked = violated = 0
    for seed in range(12):
        c, v = _fill_order_violations(seed)
        checked, violated = checked + c, violated + v
    assert checked > 50
    assert violated == 0, f"{violated} of {checked} left-out channels would have fitted when their score came up"


def test_fill_takes_the_best_channel_of_a_later_layer_first():
    """Hand-made case. Below the threshold come, by score: a stem channel that does not fit, the
    best branch channel (in the later block), then branch channels of the earlier block; the budget
    has room for one branch channel. By score, the fill takes the later block's channel; a fill
    going one layer after another would spend the room on the earlier block."""
    teacher = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(Block(res=(0, 8, 0), dw=(0, 0, 0)),) * 2,
                   head=(8, 8), res_kernel_sizes=(1, 3, 5), dw_kernel_sizes=(1, 3, 5))
    names = [l.name for l in prunable_layers(teacher)]
    assert names == ["stem.0", "stem.1", "stem.2", "blocks.0.res.1", "blocks.1.res.1", "head.0", "head.1"]
    scores = {n: torch.linspace(1.0, 0.9, 8) for n in names}
    scores["stem.1"][7] = 0.6  # costs about 2.5 branch channels: never fits
    scores["blocks.0.res.1"] = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.30, 0.29, 0.28, 0.27])
    scores["blocks.1.res.1"] = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.50, 0.10, 0.10, 0.10])
    widths = {n: 8 for n in names}
    widths.update({"stem.1": 7, "blocks.0.res.1": 4, "blocks.1.res.1": 4})
    macs = lambda w: count_macs(arch_from_widths(teacher, w), input_size=32)  # noqa: E731
    base, one = macs(widths), macs(dict(widths, **{"blocks.1.res.1": 5}))
    target = one + (one - base) // 2  # room for one branch channel, not two
    assert macs(dict(widths, **{"stem.1": 8})) > target
    plan = plan_for_target(scores, teacher, target_macs=target, input_size=32, min_channels=4, fill=False)
    assert plan.widths == widths  # the threshold student: every channel scoring above 0.6
    plan = plan_for_target(scores, teacher, target_macs=target, input_size=32, min_channels=4, fill=True)
    assert plan.widths == dict(widths, **{"blocks.1.res.1": 5}) and plan.filled == 1
    assert plan.kept["blocks.1.res.1"] == (0, 1, 2, 3, 4)


# ----------------------------------------------------------------------------- resume: names and sizes


def test_fingerprint_covers_names_and_sizes(tmp_path):
    a = make_demo_dataset(tmp_path / "a", size=32, n_train=3, n_test=1, seed=0)
    files = sorted(p for p in a.rglob("*.png"))
    before = fingerprint(files, a)
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)
    assert fingerprint(sorted(moved.rglob("*.png")), moved) == before  # a moved copy is the same data
    # same names, same count; one file rewritten with other content and a different size
    victim = files[0]
    size = victim.stat().st_size
    Image.new("RGB", Image.open(victim).size, (7, 7, 7)).save(victim)
    assert victim.stat().st_size != size
    after = fingerprint(files, a)
    assert after["files"] == before["files"] and after["sha256"] != before["sha256"]
    # a renamed file at the same size is other data too
    victim.rename(victim.with_name("renamed.png"))
    renamed = fingerprint(sorted(a.rglob("*.png")), a)
    assert renamed["bytes"] == after["bytes"] and renamed["sha256"] != after["sha256"]


@pytest.mark.filterwarnings("ignore:the student has no weights")
def test_resume_refuses_data_whose_file_sizes_changed(tmp_path):
    data = make_demo_dataset(tmp_path / "data", size=32, n_train=4, n_test=2, seed=0)
    t_arch = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(Block(res=(0, 4, 0), dw=(0, 4, 0)),), head=(8, 8))
    s_arch = t_arch.with_widths(stem=(4, 8, 8), blocks=[Block(res=(0, 2, 0), dw=(0, 2, 0))], head=(4, 4))
    torch.manual_seed(0)
    teacher = build_generator(t_arch).eval()
    cfg = DistillConfig(mode="aligned", epochs=1, epochs_decay=0, batch_size=2, load_size=32, crop_size=32,
                        workers=0, ndf=8, progress=False, log_every=1, max_steps=1)
    out = tmp_path / "run"
    distill(teacher=teacher, student=s_arch, data=data, out=out, config=cfg)
    shutil.copytree(out, tmp_path / "control")  # the same data resume
    assert distill(teacher=teacher, student=s_arch, data=data, out=tmp_path / "control", resume=True,
                   config=cfg.replace(max_steps=2)).step == 2
    # the same file names, one training image replaced by another one of a different size
    victim = sorted((data / "train").glob("*.png"))[0]
    size = victim.stat().st_size
    Image.new("RGB", Image.open(victim).size, (7, 7, 7)).save(victim)
    assert victim.stat().st_size != size
    with pytest.raises(NasPruneError, match=r"resume: the data differ"):
        distill(teacher=teacher, student=s_arch, data=data, out=out, resume=True, config=cfg.replace(max_steps=2))


# ----------------------------------------------------------------------------- latency: 3 warm-up, median of 20


class ScriptedRuntime(Runtime):
    """``torch-cpu`` whose clock each pass of a whole generator advances by a scripted duration:
    the first passes of a prepared generator take ``warm_ms`` each (as cold caches and allocator
    growth make real first passes slow), pass ``j`` after them takes ``10 + j`` ms."""

    def __init__(self, *, warm_passes: int, warm_ms: float = 1000.0):
        super().__init__("torch-cpu", threads=1)
        self.now, self.warm_passes, self.warm_ms = 0.0, warm_passes, warm_ms
        self.passes: list[int] = []  # passes per prepared generator

    def device(self):
        return "scripted cpu (1 threads)"

    def clock(self):
        return self.now

    def prepare(self, module, example):
        assert hasattr(module, "arch"), "only whole generators are timed here"
        self.passes.append(0)
        k = len(self.passes) - 1

        def run():
            self.passes[k] += 1
            n = self.passes[k]
            self.now += (self.warm_ms if n <= self.warm_passes else 10.0 + (n - self.warm_passes)) / 1000.0

        return run


def test_end_to_end_latency_is_the_median_of_20_passes_after_3_warm_up(tmp_path):
    arch = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 2, head=(8, 8))
    teacher = tmp_path / "t.pth"
    torch.save(randomize_(build_generator(arch), 1).state_dict(), teacher)
    target = count_macs(arch, input_size=32) * 6 // 10
    rt = ScriptedRuntime(warm_passes=3)
    result = search(teacher=teacher, target_macs=target, input_size=32, min_channels=4, out=tmp_path / "out",
                    latency_cache=tmp_path / "cache", runtime=rt)
    assert rt.passes == [23]  # one student: 3 untimed passes, then 20 timed ones
    measured = result.latency.measured
    assert list(measured.samples_ms) == pytest.approx([10.0 + j for j in range(1, 21)])  # no warm-up pass timed
    assert measured.median_ms == pytest.approx(statistics.median(10.0 + j for j in range(1, 21)))
    doc = json.loads((tmp_path / "out" / "arch.json").read_text())["latency"]["measured"]
    assert doc["runs"] == 20 and doc["warmup"] == 3
    assert doc["min_ms"] == pytest.approx(11.0) and doc["max_ms"] == pytest.approx(30.0)
