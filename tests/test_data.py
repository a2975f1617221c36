"""Datasets (pix2pix / CycleGAN layouts), transforms, batching, and the demo dataset."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from nas_prune.data import EpochBatchSampler, TransformConfig, batches_per_epoch, open_dataset
from nas_prune.demo_data import make_demo_dataset
from nas_prune.errors import NasPruneError

TF = TransformConfig(load_size=20, crop_size=16)


def pair_image(i: int, w: int = 24, h: int = 24) -> Image.Image:
    """A|B image: A is a ramp, B is the same ramp scaled to 0.5 and tinted by ``i``."""
    ramp = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))
    a = np.stack([ramp, ramp[::-1], np.full_like(ramp, 10 * i)], axis=2)
    b = a * 0.5
    return Image.fromarray(np.concatenate([a, b], axis=1).astype(np.uint8))


@pytest.fixture
def aligned(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            pair_image(i).save(tmp_path / split / f"{i}.png")
    return tmp_path


def test_aligned_pairs_share_crop_and_flip(aligned):
    ds = open_dataset(aligned, mode="aligned", transform=TF, seed=3)
    assert len(ds) == 6
    for key in [(0, i) for i in range(6)] + [(5, i) for i in range(6)]:
        s = ds[key]
        assert s["A"].shape == s["B"].shape == (3, 16, 16)
        assert s["A"].min() >= -1 and s["A"].max() <= 1
        # B is A at half intensity: equal crop and flip keep that relation pixel for pixel
        a01, b01 = (s["A"] + 1) / 2, (s["B"] + 1) / 2
        assert torch.allclose(b01, a01 * 0.5, atol=0.03)


def test_randomness_is_a_function_of_seed_epoch_index(aligned):
    ds = open_dataset(aligned, mode="aligned", transform=TF, seed=3)
    again = open_dataset(aligned, mode="aligned", transform=TF, seed=3)
    assert torch.equal(ds[(2, 1)]["A"], again[(2, 1)]["A"])
    assert any(not torch.equal(ds[(0, i)]["A"], ds[(1, i)]["A"]) for i in range(6))
    other = open_dataset(aligned, mode="aligned", transform=TF, seed=4)
    assert any(not torch.equal(ds[(0, i)]["A"], other[(0, i)]["A"]) for i in range(6))


def test_direction_and_test_split(aligned):
    fwd = open_dataset(aligned, mode="aligned", split="test", transform=TF)
    rev = open_dataset(aligned, mode="aligned", split="test", direction="BtoA", transform=TF)
    assert torch.equal(fwd[1]["A"], rev[1]["B"]) and torch.equal(fwd[1]["B"], rev[1]["A"])
    assert torch.equal(fwd[(0, 1)]["A"], fwd[(7, 1)]["A"])  # no randomness in evaluation
    assert fwd[0]["A"].shape == (3, 16, 16)


def test_skipped_files_are_counted_and_empty_split_fails(aligned):
    (aligned / "train" / "notes.txt").write_text("hello")
    (aligned / "train" / "broken.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match=r"skipped 2 of 8 files \(1 unreadable, 1 not images"):
        ds = open_dataset(aligned, mode="aligned", transform=TF)
    assert len(ds) == 6
    for f in (aligned / "test").iterdir():
        f.unlink()
    with pytest.raises(NasPruneError, match="test split .* has no usable images"):
        open_dataset(aligned, mode="aligned", split="test", transform=TF)


def test_layout_errors(tmp_path, aligned):
    with pytest.raises(NasPruneError, match="data directory not found"):
        open_dataset(tmp_path / "missing", mode="aligned")
    with pytest.raises(NasPruneError, match="has the aligned layout .* use --mode aligned"):
        open_dataset(aligned, mode="unaligned")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasPruneError, match="no dataset found"):
        open_dataset(tmp_path / "empty", mode="aligned")
    with pytest.raises(NasPruneError, match="crop_size must be a positive multiple of 4"):
        TransformConfig(crop_size=30)


@pytest.fixture
def unaligned(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n, gray in (("trainA", 5, False), ("trainB", 3, False), ("testA", 2, False), ("testB", 2, True)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            arr = rng.integers(0, 256, (20, 20) if gray else (20, 20, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / folder / f"{i}.jpg")
    return tmp_path


def test_unaligned_layout(unaligned, aligned):
    ds = open_dataset(unaligned, mode="unaligned", transform=TF, seed=0)
    assert len(ds) == 5
    s = ds[(0, 4)]
    assert s["A"].shape == s["B"].shape == (3, 16, 16)
    test = open_dataset(unaligned, mode="unaligned", split="test", transform=TF)
    assert test[1]["B"].shape == (3, 16, 16)  # grayscale files are converted to RGB
    rev = open_dataset(unaligned, mode="unaligned", split="test", direction="BtoA", transform=TF)
    assert torch.equal(rev[0]["B"], test[0]["A"])
    with pytest.raises(NasPruneError, match="has the unaligned layout .* use --mode unaligned"):
        open_dataset(unaligned, mode="aligned")


def test_epoch_batch_sampler_shards_and_resumes():
    full = EpochBatchSampler(10, batch_size=2, epoch=3, seed=1)
    batches = full.batches()
    assert len(batches) == 5 == batches_per_epoch(10, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert batches != EpochBatchSampler(10, batch_size=2, epoch=4, seed=1).batches()
    resumed = EpochBatchSampler(10, batch_size=2, epoch=3, seed=1, start_batch=2)
    assert [[i for _, i in b] for b in resumed] == batches[2:]
    assert all(e == 3 for b in resumed for e, _ in b) and len(resumed) == 3
    ranks = [EpochBatchSampler(8, batch_size=2, epoch=0, seed=0, rank=r, world=2).batches() for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == batches_per_epoch(8, batch_size=2, world=2) == 2
    idx0, idx1 = {i for b in ranks[0] for i in b}, {i for b in ranks[1] for i in b}
    assert not idx0 & idx1 and idx0 | idx1 == set(range(8))  # disjoint shards covering the data
    # 7 items: ranks are padded by wrapping (as DistributedSampler) so both see 2 full batches
    padded = [EpochBatchSampler(7, batch_size=2, epoch=0, seed=0, rank=r, world=2).batches() for r in (0, 1)]
    assert [len(b) for b in padded] == [2, 2]
    assert {i for r in padded for b in r for i in b} == set(range(7))
    assert len(EpochBatchSampler(5, batch_size=2, epoch=0, seed=0).batches()) == 2  # incomplete batch dropped


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_dataset_is_deterministic_and_loads(tmp_path):
    a = make_demo_dataset(tmp_path / "a", size=32, n_train=10, n_test=4, seed=5)
    b = make_demo_dataset(tmp_path / "b", size=32, n_train=10, n_test=4, seed=5)
    c = make_demo_dataset(tmp_path / "c", size=32, n_train=10, n_test=4, seed=6)
    assert digest(a) == digest(b) != digest(c)
    assert len(list((a / "train").glob("*.png"))) == 10 and len(list((a / "test").glob("*.png"))) == 4
    with Image.open(next((a / "test").glob("*.png"))) as im:
        assert im.size == (64, 32)
        arr = np.asarray(im.convert("RGB"))
    edges = arr[:, :32]
    assert set(np.unique(edges)) <= {0, 255}  # binary edge map, black edges on white
    ds = open_dataset(a, mode="aligned", split="test", transform=TransformConfig(load_size=32, crop_size=32))
    assert ds[0]["B"].std() > 0.05  # a real photo crop, not a flat image
    gray = make_demo_dataset(tmp_path / "g", size=32, n_train=2, n_test=2, task="colorize")
    with Image.open(next((gray / "train").glob("*.png"))) as im:
        left = np.asarray(im.convert("RGB"))[:, :32].astype(int)
    assert np.array_equal(left[..., 0], left[..., 1]) and np.array_equal(left[..., 1], left[..., 2])
    with pytest.raises(NasPruneError, match="multiple of 4"):
        make_demo_dataset(tmp_path / "x", size=30)
