"""mIoU of generated photos under a segmenter, as CAT and GAN Compression report cityscapes.

Protocol (their ``metric/cityscapes_mIoU.py``, with the DRN-D-105 of :mod:`nas_prune.segmenter`):

1. the generator's output (``(N, 3, h, w)`` in [-1, 1], 256x512 for cityscapes) becomes an
   8-bit image as for saving: ``uint8(clip((x + 1) / 2 * 255, 0, 255))`` (truncation);
2. the segmenter sees it at that size, as RGB / 255 normalised with the cityscapes mean/std;
3. its class scores are resized bilinearly to the resolution of the ground-truth label file
   (2048x1024 for cityscapes) and the arg-max is the prediction;
4. predictions and ground truth accumulate one confusion matrix ``hist[true, pred]`` over the
   split; pixels whose ground truth is not a class (255, "ignore") are skipped;
5. per-class ``IoU = hist[c, c] / (row_c + col_c - hist[c, c])``; mIoU is the mean over the
   classes that occur (in the ground truth or the predictions; others are NaN and left out),
   x 100.

Ground truth: cityscapes ``*_gtFine_labelIds.png`` map to the 19 train ids
(:data:`CITYSCAPES_TRAIN_IDS`, the ``trainId`` column of cityscapesScripts' label table,
which CAT's ``*_gtFine_trainIds.png`` files hold); in the label-map folder layout the label
values are the class ids directly (values outside the segmenter's classes are ignored).

Step 3 uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` on the
scores where CAT resizes the log-softmax channel by channel with PIL's bilinear filter: for
upscaling the two resamplers give the same values up to float rounding (a test checks it), and
the arg-max of a bilinear resize is the same for scores and log-softmax (the log-sum-exp term is
shared by all classes of a pixel). The one departure: CAT rounds mIoU to 2 decimals; the value
here is unrounded.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nas_prune.errors import NasPruneError

__all__ = ["CITYSCAPES_TRAIN_IDS", "CITYSCAPES_CLASSES", "ConfusionMatrix", "cityscapes_train_ids", "predict", "segment",
           "segment_scores", "to_uint8"]

IGNORE = 255
#: label id -> train id (19 classes; 255 = ignored), from cityscapesScripts' ``labels.py``.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> train ids (0..18, 255 for the ignored ids)."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    for k, v in CITYSCAPES_TRAIN_IDS.items():
        lut[k] = v
    ids = np.asarray(label_ids, dtype=np.int64)
    return np.where((ids >= 0) & (ids < 256), lut[np.clip(ids, 0, 255)], IGNORE)


class ConfusionMatrix:
    """``hist[true, pred]`` pixel counts over ``n`` classes; ground truth outside ``0..n-1`` is skipped."""

    def __init__(self, n: int):
        if n < 1:
            raise NasPruneError(f"mIoU needs at least one class, got {n}")
        self.n = n
        self.hist = np.zeros((n, n), dtype=np.int64)

    def update(self, pred, true) -> None:
        """Add one prediction / ground-truth pair of the same shape (arrays or tensors of class ids)."""
        p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.int64).ravel()
        t = np.asarray(true.cpu() if isinstance(true, torch.Tensor) else true, dtype=np.int64).ravel()
        if p.shape != t.shape:
            raise NasPruneError(f"mIoU: prediction and ground truth sizes differ ({p.size} vs {t.size} pixels)")
        k = (t >= 0) & (t < self.n)
        self.hist += np.bincount(self.n * t[k] + p[k], minlength=self.n**2).reshape(self.n, self.n)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class in [0, 1]; NaN for a class absent from both ground truth and predictions."""
        h = self.hist.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.diag(h) / (h.sum(1) + h.sum(0) - np.diag(h))

    def miou(self) -> float:
        """Mean IoU over the classes that occur, x 100 (NaN if no pixel was counted)."""
        iou = self.per_class_iou()
        return float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator outputs in [-1, 1] -> 8-bit values as saved images hold them (truncation, as CAT's ``tensor2im``)."""
    return ((images.float() + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)


def segment_scores(segmenter, images: torch.Tensor, *, mean, std) -> torch.Tensor:
    """Class scores ``(N, classes, h, w)`` of generator outputs ``images`` ``(N, 3, h, w)`` in [-1, 1].

    The images are quantised to 8 bits (:func:`to_uint8`) and normalised with ``mean`` / ``std``
    (of RGB in [0, 1]) first; ``h`` and ``w`` must be multiples of 8 (the segmenter's stride).
    """
    x = to_uint8(images).float() / 255.0
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    h, w = x.shape[-2:]
    if h % 8 or w % 8:
        raise NasPruneError(f"mIoU: generated images of {h}x{w}; the segmenter needs sides that are multiples of 8")
    return segmenter((x - m) / s)


def predict(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Arg-max class ids ``(N, H, W)`` of ``scores`` resized bilinearly to ``size = (H, W)``."""
    if tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return scores.argmax(dim=1)


def segment(segmenter, images: torch.Tensor, *, size: tuple[int, int], mean, std) -> torch.Tensor:
    """Predicted class ids ``(N, H, W)`` at ``size = (H, W)`` for generator outputs ``images`` in [-1, 1]."""
    return predict(segment_scores(segmenter, images, mean=mean, std=std), size)
