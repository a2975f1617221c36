"""Fidelity scores, calibration images and latency (nas_prune.scores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_
from nas_prune.apply import build_student
from nas_prune.calibration import calibration_images
from nas_prune.errors import NasPruneError
from nas_prune.importance import gamma
from nas_prune.model import build_generator
from nas_prune.plan import plan_for_target
from nas_prune.macs import count_macs
from nas_prune.scores import (
    FidelityProbe,
    ScoreSpec,
    finetune,
    measure_latency,
    parse_score,
)


@pytest.fixture
def teacher(tiny_arch):
    return randomize_(build_generator(tiny_arch), seed=3).eval()


@pytest.fixture
def images(tiny_arch):
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g) * 2 - 1


def _student(teacher, fraction):
    arch = teacher.arch
    sd = teacher.state_dict()
    target = int(count_macs(arch, input_size=32) * fraction)
    plan = plan_for_target(gamma(arch, sd), arch, target_macs=target, input_size=32, min_channels=4)
    return build_student(plan, sd)


def test_parse_score():
    assert parse_score("zero-shot") == ScoreSpec("zero-shot")
    assert parse_score("finetune:25") == ScoreSpec("finetune", 25)
    assert str(parse_score("finetune:25")) == "finetune:25"
    for bad in ("finetune", "finetune:0", "finetune:x", "finetune:-3", "zero", "one-shot"):
        with pytest.raises(NasPruneError, match="--score"):
            parse_score(bad)


def test_teacher_scores_perfect_and_pruned_students_less(teacher, images):
    probe = FidelityProbe(teacher, images)
    assert probe.taps == ("stem", "block1", "block2", "block3")
    same = probe.score(_student(teacher, 1.0))  # keeps every channel: the teacher itself
    assert same.psnr == pytest.approx(100.0)  # identical outputs hit the max_db cap
    assert same.gcka == pytest.approx(1.0, abs=1e-6)
    half = probe.score(_student(teacher, 0.5))
    small = probe.score(_student(teacher, 0.35))
    assert half.psnr < 60 and small.psnr < 60
    assert 0 < small.gcka < 1 and 0 < half.gcka < 1
    assert set(half.per_tap) == set(probe.taps)
    assert half.gcka == pytest.approx(np.mean(list(half.per_tap.values())))
    assert half.value("psnr") == half.psnr and half.value("gcka") == half.gcka


def test_probe_rejects_bad_images(teacher):
    with pytest.raises(NasPruneError, match="N >= 2"):
        FidelityProbe(teacher, torch.zeros(1, 3, 32, 32))
    with pytest.raises(NasPruneError, match="divisible by 4"):
        FidelityProbe(teacher, torch.zeros(2, 3, 30, 32))


def test_finetune_raises_fidelity_and_reports(teacher, images):
    g = torch.Generator().manual_seed(1)
    train = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    probe = FidelityProbe(teacher, images)
    student = _student(teacher, 0.4)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = probe.score(student)
    reports = []
    after, steps = finetune(student, probe, steps=40, train_images=train, lr=2e-3,
                            on_report=lambda s, f: reports.append((s, f.psnr)) and False)
    assert steps == 40
    assert [s for s, _ in reports] == [10, 20, 30, 40]
    assert after.psnr == pytest.approx(reports[-1][1])
    assert after.psnr > before.psnr + 0.5
    assert not student.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_finetune_stops_when_told(teacher, images):
    probe = FidelityProbe(teacher, images)
    fid, steps = finetune(_student(teacher, 0.4), probe, steps=40, report_every=5,
                          on_report=lambda s, f: s >= 10)
    assert steps == 10 and fid is not None


def test_calibration_from_folder_recursive(tmp_path, tiny_arch):
    rng = np.random.default_rng(0)
    for i in range(5):
        sub = tmp_path / "data" / ("trainA" if i < 3 else "testA")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    ev, train, text = calibration_images(tiny_arch, source=tmp_path / "data", n_images=2, n_train=3,
                                         input_size=(16, 24))
    assert ev.shape == (2, 3, 16, 24) and train.shape == (3, 3, 16, 24)
    assert ev.min() >= -1 and ev.max() <= 1
    assert "2 images from" in text
    # sorted by path: testA/3.png, testA/4.png come first
    first = np.asarray(Image.open(tmp_path / "data" / "testA" / "3.png").convert("RGB").resize((24, 16), Image.BICUBIC))
    assert torch.allclose(ev[0], torch.from_numpy(first / 127.5 - 1.0).permute(2, 0, 1).float(), atol=1e-5)
    ev, train, _ = calibration_images(tiny_arch, source=tmp_path / "data", n_images=4, n_train=8,
                                      input_size=(16, 16))
    assert train is None  # only one file left over: not enough to train on
    with pytest.raises(NasPruneError, match=r"--calib-data: .* has 5 image files, at least 6 are needed"):
        calibration_images(tiny_arch, source=tmp_path / "data", n_images=6)
    with pytest.raises(NasPruneError, match="folder not found"):
        calibration_images(tiny_arch, source=tmp_path / "missing")


def test_calibration_fallback_is_photos_and_deterministic(tiny_arch):
    a, ta, text = calibration_images(tiny_arch, n_images=3, n_train=2, input_size=(32, 32), seed=5)
    b, _, _ = calibration_images(tiny_arch, n_images=3, n_train=2, input_size=(32, 32), seed=5)
    assert "scikit-image" in text
    assert a.shape == (3, 3, 32, 32) and ta.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)
    assert a.std() > 0.1  # real image content, not a constant


def test_measure_latency(teacher):
    threads = torch.get_num_threads()
    lat = measure_latency(teacher, input_size=(32, 32), threads=1, warmup=1, repeats=5)
    assert len(lat.samples_ms) == 5
    assert lat.median_ms == pytest.approx(float(np.median(lat.samples_ms)))
    assert lat.median_ms > 0
    assert lat.device.startswith("cpu (") and lat.device.endswith(", 1 threads)")
    assert lat.runtime == "torch-cpu" and lat.threads == 1
    assert lat.input_shape == (1, 3, 32, 32)
    assert torch.get_num_threads() == threads
    with pytest.raises(NasPruneError, match="repeats"):
        measure_latency(teacher, repeats=0)
