"""The one way nas-prune opens an image file: oriented, converted, bounded.

Every image nas-prune reads (training and evaluation data, semantic label and instance
maps, calibration images) goes through :func:`open_image`, which

* refuses decompression bombs with a one-line error naming the file: an image with more
  pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89 million by default; Pillow
  warns above it and raises above twice it, and both count here: a training image that
  large is a mistake or an attack, and decoding it would take gigabytes). A user who set
  ``MAX_IMAGE_PIXELS = None`` turned the check off for both;
* applies the EXIF orientation (``ImageOps.exif_transpose``), so a camera JPEG stored
  sideways is read as it is displayed, and the A|B halves of a paired image are cut from
  the upright picture;
* converts to the mode asked for, scaling more than 8 bits per channel to 8 bits rather
  than clipping (:func:`to_8bit`: 16-bit grayscale ``I;16*`` and ``I`` have full scale
  65535; float ``F`` full scale 1.0, or 255 / 65535 when its values exceed it; Pillow
  reads 16-bit colour PNGs and TIFFs as 8-bit ``RGB`` already), and palette images with
  transparency through ``RGBA`` (Pillow warns when converting them straight to ``RGB``).

Unreadable files raise :class:`NasPruneError` naming the file; :func:`is_readable` is the
cheap check that dataset scans use to skip them (it still raises for bombs: a bomb is
never skipped silently).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nas_prune.errors import NasPruneError

__all__ = ["open_image", "is_readable", "to_8bit", "ImageBombError", "HIGH_BIT_MODES"]

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")

#: What Pillow and its decoders raise for a file that is not a (complete) image.
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError,
               TypeError, struct.error)


class ImageBombError(NasPruneError):
    """An image over Pillow's pixel limit (module docstring)."""


def to_8bit(im: Image.Image) -> Image.Image:
    """``im`` with more than 8 bits per channel scaled to an 8-bit ``L`` image; others unchanged.

    Integer modes (``I;16*``, ``I``) have full scale 65535 (16-bit files). Float (``F``)
    images have full scale 1.0, or 255 / 65535 when their largest value exceeds it.
    PIL's own ``convert`` clips such images to white, which is why this exists.
    """
    if im.mode not in HIGH_BIT_MODES:
        return im
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        top = float(np.nanmax(arr)) if arr.size else 0.0
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    else:
        full = 65535.0
    arr = np.nan_to_num(arr / full * 255.0, nan=0.0)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


def _bomb(path: Path, err: Exception) -> ImageBombError:
    limit = Image.MAX_IMAGE_PIXELS
    return ImageBombError(
        f"{path}: refused as a decompression bomb: {err}. Images over {limit:,} pixels are not read "
        "(resize it, or remove it from the data)"
    )


def _open(path: Path) -> Image.Image:
    """``Image.open`` with the bomb warning raised as an error (module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb(path, err) from None
        except FileNotFoundError:
            raise NasPruneError(f"image not found: {path}") from None
        except _UNREADABLE as err:
            raise NasPruneError(f"{path}: cannot be read as an image ({err or type(err).__name__})") from None


def open_image(path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """Read ``path`` upright (EXIF orientation applied), decoded, in ``mode``.

    Args:
        path: an image file.
        mode: ``"RGB"`` or ``"L"`` (8 bits, high bit depths scaled by :func:`to_8bit`), any
            other Pillow mode (plain ``convert``), or None to keep the file's mode (label maps).

    Raises:
        NasPruneError: missing, unreadable or truncated file, a decompression bomb, or a mode
            Pillow cannot convert it to; the message names the file.
    """
    path = Path(path)
    im = _open(path)
    try:
        with im:
            im.load()
            out = ImageOps.exif_transpose(im)
            if mode is None:
                return out if out is not im else im.copy()
            if mode in ("RGB", "L"):
                out = to_8bit(out)
                if out.mode == "P" and "transparency" in out.info:
                    out = out.convert("RGBA")
            return out.convert(mode) if out.mode != mode else (out if out is not im else im.copy())
    except NasPruneError:
        raise
    except _UNREADABLE as err:
        raise NasPruneError(f"{path}: cannot be read as an image ({err or type(err).__name__})") from None


def is_readable(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a complete image (``verify``, no decoding).

    Raises:
        NasPruneError: the image is a decompression bomb (never skipped silently).
    """
    path = Path(path)
    try:
        with _open(path) as im:
            im.verify()
        return True
    except ImageBombError:
        raise
    except (NasPruneError, *_UNREADABLE):
        return False
