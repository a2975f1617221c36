"""A small real-image paired dataset built from scikit-image's bundled photos.

:func:`make_demo_dataset` writes an ``aligned`` (pix2pix) dataset: ``train/`` and
``test/`` folders of PNGs, each ``A|B`` side by side, where B is a square crop of a
real photo resized to ``size`` and A is derived from B:

- ``task="edges"`` (default): a Canny edge map of B, black edges on white, like
  edges2shoes / edges2handbags;
- ``task="colorize"``: B in grayscale.
- ``task="segmentation"``: a label map of B, its luminance quantised into ``labels``
  equal bins (label ``min(labels - 1, floor(gray * labels))``); written in the
  label-map folder layout of :mod:`nas_prune.data_seg` (``train/labels/*.png`` index maps,
  ``train/images/*.png`` photos, the same under ``test/``) for SPADE generators with
  ``label_nc = labels`` (no instance maps).

Photos: astronaut, chelsea, coffee, rocket, camera, immunohistochemistry,
hubble_deep_field, retina (all shipped inside scikit-image; nothing is
downloaded). To keep the test split honest, each photo is cut into a left part
(the first ``train_fraction`` of its width), where the training crops come from,
and the rest, where the test crops come from; train and test never share pixels.
The output is a deterministic function of the arguments (same files, same bytes).

Needs the ``demo`` extra (scikit-image, scipy).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nas_prune.errors import NasPruneError

__all__ = ["make_demo_dataset", "demo_photos", "DEMO_PHOTOS", "DEMO_TASKS"]

DEMO_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
DEMO_TASKS = ("edges", "colorize", "segmentation")


def demo_photos() -> list[np.ndarray]:
    """The photos of :data:`DEMO_PHOTOS` as ``(H, W, 3)`` uint8 arrays (grey ones repeated to RGB).

    Raises:
        NasPruneError: scikit-image is not installed.
    """
    try:
        from skimage import data as skdata
    except ImportError:  # pragma: no cover - depends on the environment
        raise NasPruneError("the demo dataset needs scikit-image: pip install 'nas-prune[demo]'") from None
    out = []
    for name in DEMO_PHOTOS:
        im = np.asarray(getattr(skdata, name)())
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(im[:, :, :3]).astype(np.uint8))
    return out


def _make_a(b: np.ndarray, task: str) -> np.ndarray:
    """Input image (H, W, 3) uint8 derived from the photo crop ``b``."""
    from skimage.color import rgb2gray
    from skimage.feature import canny

    gray = rgb2gray(b)
    if task == "colorize":
        g = np.clip(np.round(gray * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    edges = canny(gray, sigma=1.0)
    img = np.where(edges, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def _crop(photo: np.ndarray, x0: int, x1: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop inside columns [x0, x1) resized to ``size`` (H, W, 3 uint8)."""
    from PIL import Image

    h = photo.shape[0]
    max_side = min(h, x1 - x0)
    min_side = min(max_side, max(size, int(0.25 * min(h, photo.shape[1]))))
    side = int(rng.integers(min_side, max_side + 1))
    x = int(rng.integers(x0, x1 - side + 1))
    y = int(rng.integers(0, h - side + 1))
    patch = Image.fromarray(photo[y : y + side, x : x + side])
    return np.asarray(patch.resize((size, size), Image.BICUBIC))


def make_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    size: int = 64,
    n_train: int = 200,
    n_test: int = 40,
    seed: int = 0,
    task: str = "edges",
    train_fraction: float = 0.7,
    labels: int = 8,
) -> Path:
    """Write the demo dataset to ``out_dir`` (``train/`` and ``test/``) and return it.

    Args:
        out_dir: folder to create; existing ``train/`` / ``test/`` PNGs of the same
            names are overwritten.
        size: side of A and of B in pixels (each PNG is ``2*size`` wide); a multiple of 4.
        n_train / n_test: number of pairs per split, spread round-robin over the photos.
        seed: seed of the crop positions and sizes.
        task: ``"edges"`` (edge map -> photo), ``"colorize"`` (grayscale -> photo) or
            ``"segmentation"`` (label map -> photo).
        train_fraction: share of each photo's width reserved for training crops.
        labels: number of labels of the segmentation task (2 .. 256).

    Returns:
        ``Path(out_dir)``, usable as ``--data`` with ``--mode aligned`` (segmentation: as
        semantic-map data).

    Raises:
        NasPruneError: bad size, counts, task or fraction.
    """
    if task not in DEMO_TASKS:
        raise NasPruneError(f"demo task {task!r} is not one of {', '.join(DEMO_TASKS)}")
    if size < 16 or size % 4:
        raise NasPruneError(f"demo size must be a multiple of 4 and >= 16, got {size}")
    if n_train < 1 or n_test < 1:
        raise NasPruneError("demo dataset: n_train and n_test must be >= 1")
    if not 0.2 <= train_fraction <= 0.9:
        raise NasPruneError(f"demo train_fraction must be in [0.2, 0.9], got {train_fraction}")
    if not 2 <= labels <= 256:
        raise NasPruneError(f"demo labels must be in [2, 256], got {labels}")
    from PIL import Image

    from nas_prune.fileio import atomic_path

    out = Path(out_dir)
    photos = demo_photos()
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            k = i % len(photos)
            photo = photos[k]
            cut = int(round(photo.shape[1] * train_fraction))
            x0, x1 = (0, cut) if split == "train" else (cut, photo.shape[1])
            b = _crop(photo, x0, x1, size, rng)
            name = f"{i:05d}_{DEMO_PHOTOS[k]}.png"
            if task == "segmentation":
                for sub, img in (("labels", _label_map(b, labels)), ("images", b)):
                    (folder / sub).mkdir(exist_ok=True)
                    with atomic_path(folder / sub / name) as tmp:
                        Image.fromarray(img).save(tmp, format="PNG")
                continue
            pair = np.concatenate([_make_a(b, task), b], axis=1)
            with atomic_path(folder / name) as tmp:
                Image.fromarray(pair).save(tmp, format="PNG")
    return out


def _label_map(b: np.ndarray, labels: int) -> np.ndarray:
    """Luminance of ``b`` quantised into ``labels`` equal bins: ``(H, W)`` uint8 label ids."""
    from skimage.color import rgb2gray

    return np.minimum(labels - 1, np.floor(rgb2gray(b) * labels)).astype(np.uint8)
