"""Semantic-map datasets: cityscapes and label-map folder layouts, transforms, one-hot + instance edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nas_prune.data import TransformConfig, collate
from nas_prune.data_seg import detect_seg_layout, instance_edges, open_seg_dataset, to_semantics
from nas_prune.errors import NasPruneError
from seg_helpers import write_cityscapes

SW = TransformConfig(crop_size=32, preprocess="scale_width", flip=False)


def test_instance_edges_by_hand():
    inst = torch.tensor([[1, 1, 2],
                         [1, 1, 2],
                         [3, 3, 3]]).reshape(1, 1, 3, 3)
    # a pixel is an edge when its left/right/up/down neighbour has another id
    expected = torch.tensor([[0, 1, 1],
                             [1, 1, 1],
                             [1, 1, 1]], dtype=torch.float32)
    torch.testing.assert_close(instance_edges(inst)[0, 0], expected)
    assert instance_edges(torch.full((1, 1, 4, 4), 7)).sum() == 0


def test_cityscapes_layout(tmp_path):
    root = write_cityscapes(tmp_path / "cs", size=(64, 32))
    assert detect_seg_layout(root) == "cityscapes"
    ds = open_seg_dataset(root, split="train", label_nc=36, transform=SW)
    assert (ds.layout, ds.n_labels, ds.instances, len(ds)) == ("cityscapes", 35, True, 2)
    s = ds[0]
    assert s["A"].shape == (1, 16, 32) and s["B"].shape == (3, 16, 32) and s["instance"].shape == (1, 16, 32)
    full = ds.full_label(0)
    assert full.shape == (32, 64)
    # 2x2 blocks, halved with nearest neighbours: the sample is the block map
    np.testing.assert_array_equal(s["A"][0].numpy(), full[::2, ::2])
    # the photo of the same frame, resized bicubic to 32x16; its red channel is 7 * label
    with Image.open(ds.image_paths[0]) as im:
        assert np.array_equal(np.asarray(im)[..., 0], 7 * full)
        ref = np.asarray(im.convert("RGB").resize((32, 16), Image.BICUBIC), dtype=np.float32)
    np.testing.assert_allclose((s["B"].numpy().transpose(1, 2, 0) + 1) * 127.5, ref, atol=1e-3)
    test = open_seg_dataset(root, split="test", label_nc=35, transform=SW)  # val, without instances
    assert not test.instances and "instance" not in test[0] and "frankfurt" in test.label_paths[0].name
    batch = collate([ds[0], ds[1]])
    sem = to_semantics(batch, n_labels=35)
    assert sem.shape == (2, 36, 16, 32)
    assert torch.equal(sem[:, :35].argmax(1), batch["A"][:, 0]) and torch.equal(sem[:, :35].sum(1), torch.ones(2, 16, 32))
    torch.testing.assert_close(sem[:, 35:], instance_edges(batch["instance"]))
    # instance ids change at the middle column and between label blocks: both give edges
    assert sem[0, 35, :, 15:17].min() == 1


def test_cityscapes_errors(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    with pytest.raises(NasPruneError, match="cityscapes maps have 35 labels .* takes 37 input channels"):
        open_seg_dataset(root, split="train", label_nc=37, transform=SW)
    img = next((root / "leftImg8bit" / "train").rglob("*.png"))
    img.unlink()
    with pytest.raises(NasPruneError, match="no matching aachen_000000_000019_leftImg8bit.png"):
        open_seg_dataset(root, split="train", label_nc=36, transform=SW)
    with pytest.raises(NasPruneError, match="no semantic-map dataset found"):
        open_seg_dataset(tmp_path, split="train", label_nc=36)
    (tmp_path / "maps.png").write_bytes(b"")
    with pytest.raises(NasPruneError, match="maps.png is a file, not a dataset folder"):
        open_seg_dataset(tmp_path / "maps.png", split="train", label_nc=36)


def _folder(root, split, n, *, size=(8, 8), max_label=4, instances=True):
    rng = np.random.default_rng(len(split))
    for sub in ("labels", "images") + (("instances",) if instances else ()):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = rng.integers(0, max_label + 1, size=size[::-1]).astype(np.uint8)
        Image.fromarray(lab).save(root / split / "labels" / f"im{i}.png")
        Image.fromarray(np.stack([lab * 50] * 3, -1).astype(np.uint8)).save(root / split / "images" / f"im{i}.png")
        if instances:
            Image.fromarray((np.arange(size[0])[None, :] // 4 * np.ones((size[1], 1))).astype(np.uint8)).save(
                root / split / "instances" / f"im{i}.png")


def test_folder_layout_label_count_from_the_generator(tmp_path):
    root = tmp_path / "f"
    _folder(root, "train", 3)
    _folder(root, "val", 2, instances=False)
    assert detect_seg_layout(root) == "folder"
    tf = TransformConfig(crop_size=8, preprocess="resize", flip=True)
    ds = open_seg_dataset(root, split="train", label_nc=6, transform=tf)
    assert (ds.layout, ds.n_labels, ds.instances) == ("folder", 5, True)  # 6 channels = 5 labels + edges
    # a flip moves map, instance map and photo together
    for epoch in range(6):
        s = ds[(epoch, 0)]
        np.testing.assert_array_equal(s["A"][0].numpy() * 50, np.round((s["B"][0].numpy() + 1) * 127.5), err_msg="pair")
    flips = {bool(ds[(e, 0)]["instance"][0, 0, 0] == 1) for e in range(12)}
    assert flips == {True, False}
    test = open_seg_dataset(root, split="test", label_nc=5, transform=tf)
    assert (test.n_labels, test.instances, len(test)) == (5, False, 2)
    with pytest.raises(NasPruneError, match=r"label 4 is outside 0..3 \(4 labels: the generator's input channels minus the instance-edge"):
        open_seg_dataset(root, split="train", label_nc=5, transform=tf)[0]
    (root / "train" / "instances" / "im1.png").unlink()
    with pytest.raises(NasPruneError, match="no instance map im1.png"):
        open_seg_dataset(root, split="train", label_nc=6, transform=tf)


def test_scale_width_for_image_folders(tmp_path):
    from nas_prune.data import open_dataset

    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        Image.fromarray(np.zeros((16, 64, 3), np.uint8)).save(tmp_path / split / "a.png")  # A|B, each 32x16
    tf = TransformConfig(crop_size=16, preprocess="scale_width")
    for split in ("train", "test"):
        s = open_dataset(tmp_path, mode="aligned", split=split, transform=tf)[0]
        assert s["A"].shape == (3, 8, 16) and s["B"].shape == (3, 8, 16)
