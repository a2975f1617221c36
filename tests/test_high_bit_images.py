"""Images of more than 8 bits per channel are scaled to [-1, 1], not clipped to white."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from nas_prune.data import TransformConfig, load_image, open_dataset

EVAL = TransformConfig(load_size=8, crop_size=8, preprocess="none", flip=False)


def _png16(path, arr: np.ndarray) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour): grey (H, W) or RGB (H, W, 3)."""
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# (file writer, expected 8-bit value of every pixel); 30000 / 65535 of full scale is 116.7 -> 117
CASES = {
    "png I;16": (lambda p: _png16(p, np.full((8, 16), 30000, np.uint16)), 117),
    "png I;16 full scale": (lambda p: _png16(p, np.full((8, 16), 65535, np.uint16)), 255),
    "tiff I;16": (lambda p: Image.fromarray(np.full((8, 16), 30000, np.uint16)).save(p), 117),
    "tiff I;16B": (lambda p: Image.frombytes("I;16B", (16, 8), np.full((8, 16), 30000, ">u2").tobytes()).save(p), 117),
    "tiff I": (lambda p: Image.fromarray(np.full((8, 16), 30000, np.int32)).save(p), 117),
    "tiff F in [0, 1]": (lambda p: Image.fromarray(np.full((8, 16), 0.5, np.float32)).save(p), 128),
    "png RGB 16-bit": (lambda p: _png16(p, np.full((8, 16, 3), 30000, np.uint16)), 117),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_high_bit_depth_is_scaled(tmp_path, case):
    write, want = CASES[case]
    suffix = ".png" if case.startswith("png") else ".tif"
    path = tmp_path / f"img{suffix}"
    write(path)
    for mode in ("L", "RGB"):
        arr = np.asarray(load_image(path, mode))
        assert arr.dtype == np.uint8 and np.abs(arr.astype(int) - want).max() <= 1, (case, mode, arr.ravel()[:3])


def test_sixteen_bit_aligned_dataset_is_not_white(tmp_path):
    """A|B pairs stored as 16-bit PNGs: A at 30000/65535, B at 10000/65535 of full scale."""
    (tmp_path / "test").mkdir()
    pair = np.concatenate([np.full((8, 8), 30000, np.uint16), np.full((8, 8), 10000, np.uint16)], axis=1)
    _png16(tmp_path / "test" / "0.png", pair)
    sample = open_dataset(tmp_path, mode="aligned", split="test", transform=EVAL)[0]
    for side, value in (("A", 30000), ("B", 10000)):
        want = round(value / 65535 * 255) / 127.5 - 1.0
        assert torch.allclose(sample[side], torch.full_like(sample[side], want), atol=1e-6), side
