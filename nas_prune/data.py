"""Image datasets for distillation, in the pix2pix and CycleGAN folder layouts.

- ``aligned`` (pix2pix): ``DIR/train/``, ``DIR/test/`` (``val/`` is accepted for
  test); every image holds A and B side by side, A on the left.
- ``unaligned`` (CycleGAN): ``DIR/trainA/``, ``DIR/trainB/``, ``DIR/testA/``,
  ``DIR/testB/``; A and B are unrelated images of two domains.

``direction="BtoA"`` swaps the roles of A and B. Samples are dicts
``{"A": (C_in, S, S), "B": (C_out, S, S), "index": int}`` with values in [-1, 1].

Augmentation (training split) follows pix2pix: resize to ``load_size``, random
``crop_size`` crop, random horizontal flip; A and B of an aligned pair get the same
crop and flip. The randomness of sample ``i`` in epoch ``e`` comes from a generator
seeded with ``(seed, e, i)``, so a sample is the same whatever the worker count and
after ``--resume``. Evaluation splits are resized to ``crop_size`` without
randomness.

Only PIL, numpy and torch are used (no torchvision). Files that are not images, or
that PIL cannot decode, are skipped with one warning that counts them; a split
without any usable image is an error.

Every image is read upright (EXIF orientation applied, so the A|B halves of a pair are
cut from the picture as it is displayed), a decompression bomb is an error naming the file,
and images of more than 8 bits per channel are scaled to 8 bits, never clipped
(:func:`load_image`, :mod:`nas_prune.images`): 16-bit grayscale (PIL modes ``I;16``, ``I;16B``, ``I``: full
scale 65535), 32-bit float (``F``: full scale 1.0, or 255 / 65535 when the values
exceed it); 16-bit colour PNGs and TIFFs are read by PIL as 8-bit ``RGB`` already.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from nas_prune.errors import NasPruneError
from nas_prune.images import is_readable, open_image

__all__ = [
    "IMG_EXTENSIONS",
    "MODES",
    "DIRECTIONS",
    "PREPROCESS",
    "TransformConfig",
    "ImageDataset",
    "AlignedDataset",
    "UnalignedDataset",
    "open_dataset",
    "detect_layout",
    "EpochBatchSampler",
    "list_images",
    "load_image",
    "dataset_files",
    "fingerprint",
    "to_tensor",
]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
MODES = ("aligned", "unaligned")
DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS = ("resize_and_crop", "crop", "resize", "none", "scale_width")


@dataclass(frozen=True)
class TransformConfig:
    """How images become tensors.

    Attributes:
        load_size: side the image is resized to before cropping (pixels).
        crop_size: side of the random (train) crop; evaluation images are resized
            to this side. Must be divisible by 4 (the generator down-samples twice).
        preprocess: ``resize_and_crop`` (pix2pix default), ``crop`` (crop only),
            ``resize`` (to ``crop_size``, no crop), ``none`` (keep the size,
            trimmed to a multiple of 4) or ``scale_width`` (to a width of ``crop_size``
            keeping the aspect ratio, height ``int(crop_size * h / w)``, no crop; GauGAN's
            cityscapes setting, train and evaluation alike).
        flip: random horizontal flips in training.
    """

    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS:
            raise NasPruneError(f"preprocess {self.preprocess!r} is not one of {', '.join(PREPROCESS)}")
        if self.crop_size < 4 or self.crop_size % 4:
            raise NasPruneError(f"crop_size must be a positive multiple of 4, got {self.crop_size}")
        if self.preprocess == "resize_and_crop" and self.load_size < self.crop_size:
            raise NasPruneError(f"load_size ({self.load_size}) must be >= crop_size ({self.crop_size})")


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (recursive, sorted) and the other files skipped."""
    images, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            (images if p.suffix.lower() in IMG_EXTENSIONS else others).append(p)
    return images, others


def _scan(folder: Path, *, split: str) -> list[Path]:
    """Usable images of one split folder; warns once about skipped files.

    Raises:
        NasPruneError: the folder is missing or has no usable image.
    """
    if not folder.is_dir():
        raise NasPruneError(f"split folder not found: {folder}")
    images, others = list_images(folder)
    good = [p for p in images if is_readable(p)]
    corrupt = len(images) - len(good)
    if corrupt or others:
        first = next((p for p in images if p not in set(good)), None) or others[0]
        warnings.warn(
            f"{folder}: skipped {corrupt + len(others)} of {len(images) + len(others)} files "
            f"({corrupt} unreadable, {len(others)} not images; e.g. {first.name})",
            stacklevel=3,
        )
    if not good:
        raise NasPruneError(f"{split} split {folder} has no usable images")
    return good


def detect_layout(root: Path) -> str | None:
    """``"aligned"`` if ``root`` has ``train/``, ``"unaligned"`` if it has ``trainA/``, else None."""
    if (root / "trainA").is_dir() or (root / "testA").is_dir():
        return "unaligned"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "aligned"
    return None


def load_image(path: str | os.PathLike, mode: str) -> Image.Image:
    """Read ``path`` as an 8-bit ``mode`` (``L`` or ``RGB``) image, upright, high bit depths scaled
    (:func:`nas_prune.images.open_image`)."""
    return open_image(path, mode)


def _load_rgb(path: Path, channels: int) -> Image.Image:
    return load_image(path, "L" if channels == 1 else "RGB")


def check_data_folder(root: Path, expected: str) -> None:
    """Raise NasPruneError unless ``root`` is an existing folder (a file is named as a file)."""
    if root.is_file():
        raise NasPruneError(f"data {root} is a file, not a dataset folder (expected {expected})")
    if not root.is_dir():
        raise NasPruneError(f"data directory not found: {root}")


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor ``(C, H, W)`` in [-1, 1]."""
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class _Params:
    """Random choices for one sample: crop corner and flip."""

    x: int
    y: int
    flip: bool


class ImageDataset(torch.utils.data.Dataset):
    """Base of the two layouts: transforms and per-sample seeded randomness.

    Index with an int (epoch 0) or with ``(epoch, index)`` as
    :class:`EpochBatchSampler` does.
    """

    def __init__(self, *, train: bool, transform: TransformConfig, seed: int, input_nc: int, output_nc: int):
        self.train = train
        self.transform = transform
        self.seed = int(seed)
        self.input_nc = input_nc
        self.output_nc = output_nc

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def _resized(self, im: Image.Image) -> Image.Image:
        t = self.transform
        if t.preprocess == "scale_width":
            return im.resize((t.crop_size, int(t.crop_size * im.height / im.width)), Image.BICUBIC)
        if not self.train:
            if t.preprocess == "none":
                return im.crop((0, 0, im.width // 4 * 4, im.height // 4 * 4))
            return im.resize((t.crop_size, t.crop_size), Image.BICUBIC)
        if t.preprocess == "resize_and_crop":
            return im.resize((t.load_size, t.load_size), Image.BICUBIC)
        if t.preprocess == "resize":
            return im.resize((t.crop_size, t.crop_size), Image.BICUBIC)
        if t.preprocess == "none":
            return im.crop((0, 0, im.width // 4 * 4, im.height // 4 * 4))
        return im

    def _params(self, size: tuple[int, int], rng: np.random.Generator) -> _Params:
        t = self.transform
        w, h = size
        x = y = 0
        if self.train and t.preprocess in ("resize_and_crop", "crop"):
            if w < t.crop_size or h < t.crop_size:
                raise NasPruneError(f"an image of {w}x{h} is smaller than crop_size {t.crop_size}")
            x = int(rng.integers(0, w - t.crop_size + 1))
            y = int(rng.integers(0, h - t.crop_size + 1))
        flip = bool(self.train and t.flip and rng.random() < 0.5)
        return _Params(x, y, flip)

    def _finish(self, im: Image.Image, p: _Params) -> torch.Tensor:
        """Crop and flip an image already passed through :meth:`_resized`."""
        t = self.transform
        if self.train and t.preprocess in ("resize_and_crop", "crop"):
            im = im.crop((p.x, p.y, p.x + t.crop_size, p.y + t.crop_size))
        if p.flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(im)

    @staticmethod
    def _split_key(key: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(key, tuple):
            return int(key[0]), int(key[1])
        return 0, int(key)


class AlignedDataset(ImageDataset):
    """pix2pix layout: each file is ``A|B`` side by side (A left, unless ``BtoA``).

    Args:
        folder: the split folder (e.g. ``DIR/train``).
        direction: ``AtoB`` or ``BtoA``.
        train: random crop/flip (True) or deterministic resize (False).
        transform: sizes and preprocessing.
        seed: base seed of the per-sample randomness.
        input_nc / output_nc: channels of A / B (1 loads grayscale).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        direction: str = "AtoB",
        train: bool = True,
        transform: TransformConfig = TransformConfig(),
        seed: int = 0,
        input_nc: int = 3,
        output_nc: int = 3,
    ):
        super().__init__(train=train, transform=transform, seed=seed, input_nc=input_nc, output_nc=output_nc)
        self.folder = Path(folder)
        self.files = _scan(self.folder, split="train" if train else "test")
        self.swap = direction == "BtoA"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = self._split_key(key)
        path = self.files[index]
        im = load_image(path, "RGB")
        w, h = im.size
        if w < 2:
            raise NasPruneError(f"{path}: too narrow to hold an A|B pair")
        left, right = im.crop((0, 0, w // 2, h)), im.crop((w // 2, 0, w // 2 * 2, h))
        a_img, b_img = (right, left) if self.swap else (left, right)
        a_img = a_img.convert("L") if self.input_nc == 1 else a_img
        b_img = b_img.convert("L") if self.output_nc == 1 else b_img
        a_img, b_img = self._resized(a_img), self._resized(b_img)
        p = self._params(a_img.size, self._rng(epoch, index))
        return {"A": self._finish(a_img, p), "B": self._finish(b_img, p), "index": index}


class UnalignedDataset(ImageDataset):
    """CycleGAN layout: ``A`` images from ``folder_a``, ``B`` images from ``folder_b``.

    The A image is the indexed one; its B partner is drawn at random (training) or
    taken in order, cycling (evaluation). Length is the number of A images.
    """

    def __init__(
        self,
        folder_a: str | os.PathLike,
        folder_b: str | os.PathLike,
        *,
        direction: str = "AtoB",
        train: bool = True,
        transform: TransformConfig = TransformConfig(),
        seed: int = 0,
        input_nc: int = 3,
        output_nc: int = 3,
    ):
        super().__init__(train=train, transform=transform, seed=seed, input_nc=input_nc, output_nc=output_nc)
        if direction == "BtoA":
            folder_a, folder_b = folder_b, folder_a
        split = "train" if train else "test"
        self.files_a = _scan(Path(folder_a), split=split)
        self.files_b = _scan(Path(folder_b), split=split)

    def __len__(self) -> int:
        return len(self.files_a)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = self._split_key(key)
        rng = self._rng(epoch, index)
        j = int(rng.integers(0, len(self.files_b))) if self.train else index % len(self.files_b)
        a_img = self._resized(_load_rgb(self.files_a[index], self.input_nc))
        b_img = self._resized(_load_rgb(self.files_b[j], self.output_nc))
        pa = self._params(a_img.size, rng)
        pb = self._params(b_img.size, rng)
        return {"A": self._finish(a_img, pa), "B": self._finish(b_img, pb), "index": index}


def dataset_files(ds) -> list[Path]:
    """The files a dataset reads: images (A and B folders of an unaligned one), or the label,
    image and instance maps of a semantic-map dataset (:mod:`nas_prune.data_seg`)."""
    names = ("files", "files_a", "files_b", "label_paths", "image_paths", "instance_paths")
    return [Path(f) for name in names for f in (getattr(ds, name, None) or [])]


def fingerprint(files: Sequence[Path], root: str | os.PathLike) -> dict:
    """What identifies a file list cheaply: count, total bytes and a hash of (name, size) pairs.

    Names are taken relative to ``root``, so the same data in a moved folder match;
    contents are not read (a file changed in place at the same size is not noticed).
    """
    import hashlib

    h = hashlib.sha256()
    total = 0
    for f in sorted(Path(f) for f in files):
        size = f.stat().st_size
        total += size
        try:
            name = f.relative_to(root).as_posix()
        except ValueError:
            name = f.as_posix()
        h.update(f"{name}\0{size}\n".encode())
    return {"files": len(files), "bytes": total, "sha256": h.hexdigest()}


def open_dataset(
    root: str | os.PathLike,
    *,
    mode: str,
    split: str = "train",
    direction: str = "AtoB",
    transform: TransformConfig = TransformConfig(),
    seed: int = 0,
    input_nc: int = 3,
    output_nc: int = 3,
) -> ImageDataset:
    """Open the ``split`` (``train`` or ``test``) of a dataset folder.

    Raises:
        NasPruneError: missing folder, bad mode/direction, a layout that does not
            match ``mode``, a missing split, or a split without usable images.
    """
    root = Path(root)
    if mode not in MODES:
        raise NasPruneError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if direction not in DIRECTIONS:
        raise NasPruneError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if split not in ("train", "test"):
        raise NasPruneError(f"split {split!r} is not one of train, test")
    check_data_folder(root, "a folder with train/ and test/, or trainA/ trainB/ testA/ testB/")
    layout = detect_layout(root)
    if layout is None:
        raise NasPruneError(
            f"{root}: no dataset found (expected train/ and test/ for --mode aligned, "
            f"or trainA/ trainB/ testA/ testB/ for --mode unaligned)"
        )
    if layout != mode:
        hint = "train/, test/" if layout == "aligned" else "trainA/, trainB/"
        raise NasPruneError(f"{root} has the {layout} layout ({hint}) but --mode is {mode}; use --mode {layout}")
    train = split == "train"
    kw = dict(direction=direction, train=train, transform=transform, seed=seed, input_nc=input_nc, output_nc=output_nc)
    if mode == "aligned":
        folder = root / split
        if split == "test" and not folder.is_dir() and (root / "val").is_dir():
            folder = root / "val"
        if not folder.is_dir():
            raise NasPruneError(f"{root}: missing {split}/ folder for the aligned layout")
        return AlignedDataset(folder, **kw)
    fa, fb = root / f"{split}A", root / f"{split}B"
    for f in (fa, fb):
        if not f.is_dir():
            raise NasPruneError(f"{root}: missing {f.name}/ folder for the unaligned layout")
    return UnalignedDataset(fa, fb, **kw)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys: a seeded shuffle per epoch, sharded over ranks.

    The permutation of epoch ``e`` depends only on ``(seed, e)``; rank ``r`` of
    ``world`` takes every ``world``-th index (like ``DistributedSampler``, padded by
    wrapping so all ranks get the same number of batches). Incomplete last batches
    are dropped (GCKA needs full batches and BatchNorm dislikes single samples).
    ``start_batch`` skips the first batches of the epoch, which is how a resumed run
    continues mid-epoch with the same data order.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        epoch: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        start_batch: int = 0,
        drop_last: bool = True,
    ):
        self.n, self.batch_size, self.epoch, self.seed = n, batch_size, epoch, seed
        self.shuffle, self.rank, self.world, self.start_batch, self.drop_last = shuffle, rank, world, start_batch, drop_last

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = math.ceil(self.n / self.world)
        total = per_rank * self.world
        order = (order * math.ceil(total / max(1, len(order))))[:total]
        return order[self.rank : total : self.world]

    def batches(self) -> list[list[int]]:
        idx = self._indices()
        out = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches()[self.start_batch :]:
            yield [(self.epoch, i) for i in batch]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start_batch)


def batches_per_epoch(n: int, *, batch_size: int, world: int = 1, drop_last: bool = True) -> int:
    """Number of batches each rank sees per epoch (see :class:`EpochBatchSampler`)."""
    per_rank = math.ceil(n / world)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def collate(samples: Sequence[dict]) -> dict:
    """Stack samples into ``{"A": (N, C, H, W), "B": (N, C, H, W), "index": (N,)}``.

    Other tensor entries of the samples (e.g. the ``instance`` maps of
    :mod:`nas_prune.data_seg`) are stacked under their own keys.
    """
    out = {
        "A": torch.stack([s["A"] for s in samples]),
        "B": torch.stack([s["B"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
    }
    for key, value in samples[0].items():
        if key not in out and isinstance(value, torch.Tensor):
            out[key] = torch.stack([s[key] for s in samples])
    return out
