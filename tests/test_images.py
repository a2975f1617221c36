"""Every image is read upright (EXIF orientation), converted, and decompression bombs are named errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from nas_prune.data import TransformConfig, open_dataset
from nas_prune.errors import NasPruneError
from nas_prune.images import open_image

TF = TransformConfig(load_size=32, crop_size=32, preprocess="resize", flip=False)
ORIENTATION = 0x0112
# EXIF orientation -> what the camera stored, given the upright picture (the inverse of exif_transpose)
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          2: Image.Transpose.FLIP_LEFT_RIGHT}


def _pair() -> Image.Image:
    """An upright 64x32 A|B pair: A (left) dark red, B (right) light blue."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (200, 20, 20)
    arr[:, 32:] = (20, 20, 230)
    return Image.fromarray(arr)


def _save_oriented(im: Image.Image, path, orientation: int, fmt: str) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored = im.transpose(STORED[orientation]) if orientation in STORED else im
    stored.save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", [3, 6, 8, 2])
@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png")])
def test_paired_halves_come_from_the_upright_image(tmp_path, orientation, fmt, ext):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        _save_oriented(_pair(), tmp_path / split / f"0.{ext}", orientation, fmt)
    sample = open_dataset(tmp_path, mode="aligned", split="test", transform=TF)[0]
    red_a, blue_a = float(sample["A"][0].mean()), float(sample["A"][2].mean())
    red_b, blue_b = float(sample["B"][0].mean()), float(sample["B"][2].mean())
    assert red_a > 0.4 and blue_a < -0.6, (red_a, blue_a)  # A is the red half
    assert blue_b > 0.6 and red_b < -0.6, (red_b, blue_b)  # B is the blue half


def test_open_image_applies_orientation_and_keeps_the_mode_when_asked(tmp_path):
    label = Image.fromarray(np.arange(6 * 4, dtype=np.uint8).reshape(4, 6), "L")
    _save_oriented(label, tmp_path / "l.png", 6, "PNG")
    assert Image.open(tmp_path / "l.png").size == (4, 6)  # stored sideways
    got = open_image(tmp_path / "l.png")
    assert got.mode == "L" and np.array_equal(np.asarray(got), np.asarray(label))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 30000, np.uint16)).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I;16")
    got = np.asarray(open_image(tmp_path / "g.png", "RGB"))
    assert got.shape == (4, 4, 3) and (got == round(30000 / 65535 * 255)).all()


def test_palette_with_transparency_converts_without_a_warning(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.info["transparency"] = b"\x00\xff" + b"\xff" * 254
    im.save(tmp_path / "p.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = np.asarray(open_image(tmp_path / "p.png", "RGB"))
    assert tuple(got[0, 1]) == (0, 0, 255)


@pytest.mark.parametrize("pixels", [1000, 1500])  # over twice the limit (Pillow raises), over it (Pillow warns)
def test_decompression_bombs_are_named_errors(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600 if pixels == 1500 else 400)
    side = int(pixels ** 0.5) + 1
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        Image.fromarray(np.zeros((side, side * 2), np.uint8)).save(tmp_path / split / "0.png")
    with pytest.raises(NasPruneError, match=r"test/0\.png: refused as a decompression bomb"):
        open_dataset(tmp_path, mode="aligned", split="test", transform=TF)
    with pytest.raises(NasPruneError, match=r"0\.png: refused as a decompression bomb"):
        open_image(tmp_path / "train" / "0.png", "RGB")


def test_a_truncated_image_is_named_when_read(tmp_path):
    Image.fromarray(np.zeros((32, 64, 3), np.uint8) + 7).save(tmp_path / "x.jpg")
    raw = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "x.jpg").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(NasPruneError, match=r"x\.jpg: cannot be read as an image"):
        open_image(tmp_path / "x.jpg", "RGB")
    with pytest.raises(NasPruneError, match=r"image not found: .*y\.png"):
        open_image(tmp_path / "y.png", "RGB")


def test_semantic_photo_stored_sideways_pairs_with_its_upright_label_map(tmp_path):
    from seg_helpers import write_cityscapes

    from nas_prune.data_seg import open_seg_dataset

    root = write_cityscapes(tmp_path / "cs", n_train=1, n_val=1)
    photo = next((root / "leftImg8bit" / "val").rglob("*.png"))
    upright = Image.open(photo).convert("RGB")
    _save_oriented(upright, photo, 8, "PNG")  # same pixels, stored rotated with an orientation tag
    ds = open_seg_dataset(root, split="test", label_nc=35, transform=TransformConfig(load_size=64, crop_size=64,
                                                                                   preprocess="none", flip=False))
    sample = ds[0]
    red = (sample["B"][0] + 1) * 127.5
    assert np.allclose(red.numpy(), (sample["A"][0] * 7).numpy(), atol=1)  # photo's red channel is 7 * label
