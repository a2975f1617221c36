"""Scores of generated photos on a semantic-map test split: FID features, mIoU, PSNR/SSIM to a reference.

Shared by evaluation during GauGAN distillation (:func:`nas_prune.gaugan.run.evaluate`) and
``nas-prune evaluate`` on SPADE generators (:mod:`nas_prune.gaugan.evaluate`), so both give
the same numbers. FID is :func:`nas_prune.evaluate.frechet_distance` on the Inception features
of :mod:`nas_prune.inception`; mIoU follows :mod:`nas_prune.miou` with the ground truth at the
label files' resolution (cityscapes label ids mapped to the 19 train ids; label-map folders
compared as they are).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SemanticScores", "ground_truth"]


def ground_truth(dataset, index: int) -> np.ndarray:
    """Class ids of sample ``index`` at its label file's resolution (cityscapes: train ids, 255 ignored)."""
    labels = dataset.full_label(index)
    if dataset.layout == "cityscapes":
        from nas_prune.miou import cityscapes_train_ids

        return cityscapes_train_ids(labels)
    return labels


class SemanticScores:
    """Accumulates the scores of one generator's outputs over a split, batch by batch.

    Args:
        dataset: the :class:`nas_prune.data_seg.SegDataset` the batches come from.
        fid_net: Inception feature extractor (inputs in [-1, 1]) or None (no FID).
        segmenter: :class:`nas_prune.segmenter.DRNSeg` or None (no mIoU).
    """

    def __init__(self, *, dataset, fid_net=None, segmenter=None):
        from nas_prune.miou import ConfusionMatrix

        self.dataset, self.fid_net, self.segmenter = dataset, fid_net, segmenter
        self.confusion = ConfusionMatrix(segmenter.config.classes) if segmenter is not None else None
        self.fake_feats: list[np.ndarray] = []
        self.real_feats: list[np.ndarray] = []
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, indices, fake: torch.Tensor, *, real: torch.Tensor | None = None,
            reference: torch.Tensor | None = None) -> None:
        """Score ``fake`` ``(N, 3, h, w)`` in [-1, 1] of dataset samples ``indices``.

        ``real``: the real photos, for FID's real features (omit when they come from elsewhere);
        ``reference``: another model's outputs (e.g. the teacher's) for ``psnr_ref`` / ``ssim_ref``.
        """
        from nas_prune.metrics import psnr, ssim
        from nas_prune.miou import predict, segment_scores
        from nas_prune.segmenter import CITYSCAPES_MEAN, CITYSCAPES_STD

        fake = fake.float()
        n = fake.shape[0]
        if reference is not None:
            self.sums["psnr_ref"] = self.sums.get("psnr_ref", 0.0) + psnr(fake, reference.float()) * n
            if min(fake.shape[-2:]) >= 11:
                self.sums["ssim_ref"] = self.sums.get("ssim_ref", 0.0) + ssim(fake, reference.float()) * n
        if self.fid_net is not None:
            with torch.autocast(device_type=fake.device.type, enabled=False):
                self.fake_feats.append(self.fid_net(fake).double().cpu().numpy())
                if real is not None:
                    self.real_feats.append(self.fid_net(real.float()).double().cpu().numpy())
        if self.segmenter is not None:
            with torch.autocast(device_type=fake.device.type, enabled=False):
                scores = segment_scores(self.segmenter, fake, mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD)
            for i, idx in enumerate(indices):
                gt = ground_truth(self.dataset, int(idx))
                self.confusion.update(predict(scores[i:i + 1], gt.shape)[0], gt)
        self.count += n

    def fid(self, real_feats: np.ndarray | None = None) -> float:
        """FID of the accumulated outputs against ``real_feats`` (default: the real photos added)."""
        from nas_prune.fid import frechet_distance

        real = real_feats if real_feats is not None else np.concatenate(self.real_feats)
        return frechet_distance(real, np.concatenate(self.fake_feats))

    def result(self) -> dict[str, float]:
        """``psnr_ref`` / ``ssim_ref`` (means), ``fid`` (when real photos were added), ``miou`` (x 100)."""
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        if self.fid_net is not None and self.real_feats:
            out["fid"] = self.fid()
        if self.confusion is not None:
            out["miou"] = self.confusion.miou()
        return out
