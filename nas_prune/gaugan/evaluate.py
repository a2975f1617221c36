"""``nas-prune evaluate`` for SPADE generators: FID / KID, mIoU and fidelity to a reference on semantic maps.

:func:`nas_prune.evaluate.evaluate` hands SPADE models here. The split is read with
:mod:`nas_prune.data_seg` (cityscapes or label-map folder layout) and scaled to a width of
``crop_size`` keeping the aspect ratio (GauGAN's ``scale_width``: ``--crop-size 512`` gives
CAT's and GAN Compression's 256x512 cityscapes setting). Scores come from
:class:`nas_prune.gaugan.scores.SemanticScores`, the code distillation evaluates with:
FID/KID on Inception features of the real photos and the outputs, mIoU of the outputs under
the segmenter (:mod:`nas_prune.miou`), PSNR/SSIM to the reference model's outputs.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from nas_prune.errors import NasPruneError

__all__ = ["evaluate_semantic"]


def _size_of(net, size) -> dict[str, float]:
    from nas_prune.macs import count_macs, count_params

    row: dict[str, float] = {}
    try:
        row["macs_fvcore"] = count_macs(net.arch, input_size=size, convention="fvcore")
        row["macs_paper"] = count_macs(net.arch, input_size=size, convention="paper")
        row["params"] = count_params(net.arch)
    except NasPruneError:  # no analytic count for this family: parameters from the module
        row["params"] = sum(p.numel() for p in net.parameters())
    return row


def evaluate_semantic(
    *,
    nets: Mapping[str, Any],
    data: str | os.PathLike,
    split: str,
    crop_size: int,
    batch_size: int,
    max_images: int | None,
    reference: str | None,
    inception,
    real_stats: str | os.PathLike | None,
    save_real_stats: str | os.PathLike | None,
    segmenter: str | os.PathLike | None,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    device: str,
):
    """Score SPADE generators ``nets`` (``{name: module}``) on the ``split`` of semantic-map ``data``.

    ``inception``: a loaded Inception extractor or None. Other arguments as
    :func:`nas_prune.evaluate.evaluate`; returns its :class:`~nas_prune.evaluate.EvalResult`.
    """
    import torch

    from nas_prune.data import TransformConfig, collate
    from nas_prune.data_seg import open_seg_dataset, to_semantics
    from nas_prune.fid import EvalResult, add_fid_kid, load_stats
    from nas_prune.gaugan.scores import SemanticScores

    first = next(iter(nets.values())).arch
    ds = open_seg_dataset(data, split=split, label_nc=first.label_nc,
                          transform=TransformConfig(crop_size=crop_size, preprocess="scale_width", flip=False))
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n < 1:
        raise NasPruneError(f"{data}: the {split} split is empty")
    if inception is not None and n < 2:
        raise NasPruneError("FID/KID need at least 2 test images")
    seg_net = None
    if segmenter is not None:
        from nas_prune.segmenter import load_segmenter

        seg_net = load_segmenter(segmenter, device=device)
    real_given = load_stats(real_stats) if real_stats is not None else None
    scores = {name: SemanticScores(dataset=ds, fid_net=inception, segmenter=seg_net) for name in nets}
    real_list: list[np.ndarray] = []
    size = None
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = collate([ds[j] for j in range(i, min(n, i + batch_size))])
            sem = to_semantics(batch, n_labels=ds.n_labels, device=device)
            size = tuple(sem.shape[-2:])
            m = first.size_multiple
            if size[0] % m or size[1] % m:
                raise NasPruneError(f"{data}: maps come out {size[1]}x{size[0]} at --crop-size {crop_size}; "
                                    f"these SPADE generators need sides that are multiples of {m}")
            outs = {name: net(sem).float() for name, net in nets.items()}
            idx = batch["index"].tolist()
            for name, y in outs.items():
                ref = outs[reference] if reference is not None and name != reference else None
                scores[name].add(idx, y, reference=ref)
            if inception is not None and real_given is None:
                real_list.append(inception(batch["B"].to(device)).double().cpu().numpy())

    rows: dict[str, dict[str, float]] = {}
    for name, net in nets.items():
        r = scores[name].result()
        rows[name] = {**_size_of(net, size), **r}
    notes: list[str] = []
    stats_path = None
    if inception is not None:
        stats_path = add_fid_kid(
            rows, {name: np.concatenate(scores[name].fake_feats) for name in nets}, real_list=real_list,
            real_given=real_given, real_stats=real_stats, save_real_stats=save_real_stats,
            meta={"data": str(data), "split": split, "crop_size": crop_size, "n": n, "layout": ds.layout},
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, notes=notes)
    if seg_net is not None:
        notes.append(f"mIoU: {seg_net.config.name} segmenter, {seg_net.config.classes} classes, at the label files' "
                     f"resolution ({'cityscapes train ids' if ds.layout == 'cityscapes' else 'label values as classes'})")
    return EvalResult(rows=rows, n_images=n, input_size=size, reference=reference, real_stats=stats_path, notes=notes)


def is_spade(model) -> bool:
    """Whether a loaded generator is a SPADE generator (semantic-map input)."""
    from nas_prune.families import data_kind

    return data_kind(model) == "semantic"
