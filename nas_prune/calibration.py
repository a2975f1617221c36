"""Calibration images: the few inputs the teacher is run on while pruning.

Two consumers read them, from one option (``--calib-data DIR``, library keyword
``calib_data``; ``--calib-images N`` / ``calib_images`` sets how many):

- the ``activation`` importance criterion (:func:`nas_prune.importance.activation`),
  at the MACs input size;
- the fidelity scores of an Optuna study (:mod:`nas_prune.scores`), at ``score_size``;
  ``finetune:`` scores also train on further images of the same source.

Policy (:func:`calibration_images`)
    With a folder: its image files (suffixes :data:`nas_prune.data.IMG_EXTENSIONS`),
    searched recursively in sorted order (:func:`nas_prune.data.list_images`: the
    files of a folder, then its subfolders by name; hidden files skipped), converted
    to grey or RGB to match the teacher's ``input_nc``, resized bicubically to
    ``(H, W)`` without cropping, scaled to [-1, 1]. The first ``n_images`` files are
    the calibration batch; a folder with fewer is an error. Training images are the
    files after them.

    Without a folder: seeded random square crops of the real photos bundled with
    scikit-image (:func:`nas_prune.demo_data.demo_photos`), which carry the edges and
    textures a generator sees far better than noise; without scikit-image (the
    ``demo`` extra), or for a teacher that takes neither 1 nor 3 channels, seeded
    uniform noise in [-1, 1]. Real images of the teacher's own domain give the most
    meaningful scores: pass ``--calib-data`` when you have them.

The returned description (``8 images from data/horses``, ``8 crops of scikit-image's
sample photos (no --calib-data given)``, ...) says which source was used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["calibration_images"]


def calibration_images(
    arch: Arch,
    *,
    source: str | os.PathLike | None = None,
    n_images: int = 8,
    n_train: int = 0,
    input_size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> tuple["torch.Tensor", "torch.Tensor | None", str]:
    """Calibration images ``(n_images, input_nc, H, W)`` in [-1, 1] (module docstring).

    Args:
        arch: the teacher (``input_nc`` sets grey or RGB).
        source: a folder of images, or None for the fallback.
        n_images: calibration images (>= 1).
        n_train: further images wanted for training (0: none). From a folder they are
            the files after the first ``n_images``; fewer than 2 left gives none.
        input_size: ``(H, W)`` every image is resized to.
        seed: seed of the photo crops / noise (unused with a folder).

    Returns:
        ``(images, train images (M, C, H, W) or None, description of the source)``.

    Raises:
        NasPruneError: ``n_images`` < 1, missing folder, no or too few image files in
            it, unreadable image, a teacher whose ``input_nc`` image files cannot give.
    """
    import torch

    if n_images < 1:
        raise NasPruneError(f"--calib-images must be >= 1, got {n_images}")
    C = arch.input_nc
    if source is not None:
        return _from_folder(Path(source), C, n_images, n_train, input_size)
    if C in (1, 3):
        photos = _photo_crops(C, n_images + n_train, input_size, seed)
        if photos is not None:
            train = photos[n_images:] if n_train >= 2 else None
            return photos[:n_images], train, f"{n_images} crops of scikit-image's sample photos (no --calib-data given)"
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n_images + n_train, C, *input_size, generator=g) * 2 - 1
    why = "scikit-image is not installed" if C in (1, 3) else f"the teacher takes {C} channels"
    return noise[:n_images], (noise[n_images:] if n_train >= 2 else None), (
        f"{n_images} seeded uniform-noise images (no --calib-data given and {why})"
    )


def _from_folder(
    folder: Path, channels: int, n_images: int, n_train: int, size: tuple[int, int]
) -> tuple["torch.Tensor", "torch.Tensor | None", str]:
    from nas_prune.data import IMG_EXTENSIONS, list_images

    if not folder.is_dir():
        raise NasPruneError(f"--calib-data: folder not found: {folder}")
    if channels not in (1, 3):
        raise NasPruneError(f"--calib-data: the teacher takes {channels} channels; image files give 1 or 3")
    files, _ = list_images(folder)
    if not files:
        raise NasPruneError(f"--calib-data: no image files ({', '.join(IMG_EXTENSIONS)}) in {folder}")
    if len(files) < n_images:
        raise NasPruneError(
            f"--calib-data: {folder} has {len(files)} image files, at least {n_images} are needed "
            "(add images or lower --calib-images)"
        )
    images = _load(files[:n_images], channels, size)
    rest = files[n_images : n_images + n_train]
    train = _load(rest, channels, size) if len(rest) >= 2 else None
    return images, train, f"{n_images} images from {folder}"


def _load(files: list[Path], channels: int, size: tuple[int, int]) -> "torch.Tensor":
    """Read, convert, resize (bicubic, to ``size`` = (H, W)) and stack image files."""
    import torch
    from PIL import Image

    from nas_prune.data import load_image, to_tensor

    H, W = size
    mode = "L" if channels == 1 else "RGB"
    batch = []
    for path in files:
        try:
            batch.append(to_tensor(load_image(path, mode).resize((W, H), Image.BICUBIC)))
        except NasPruneError as err:  # names the file
            raise NasPruneError(f"--calib-data: {err}") from None
    return torch.stack(batch)


def _photo_crops(channels: int, n: int, size: tuple[int, int], seed: int) -> "torch.Tensor | None":
    """``n`` seeded random square crops of the demo photos, or None without scikit-image.

    The first crops take the photos in order, later ones a random photo; a crop's
    side is between half and all of the photo's shorter side.
    """
    try:
        import skimage  # noqa: F401
    except ImportError:
        return None
    import numpy as np
    import torch
    from PIL import Image

    from nas_prune.data import to_tensor
    from nas_prune.demo_data import demo_photos

    H, W = size
    rng = np.random.default_rng(seed)
    mode = "L" if channels == 1 else "RGB"
    photos = demo_photos()
    batch = []
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))] if i >= len(photos) else photos[i]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).convert(mode).resize((W, H), Image.BICUBIC)
        batch.append(to_tensor(crop))
    return torch.stack(batch)
