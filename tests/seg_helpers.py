"""Builders shared by the semantic-map (GauGAN / SPADE) tests: tiny weight files in the layouts
of torchvision's VGG19 and of the DRN-D segmenter, and tiny semantic-map datasets."""

from __future__ import annotations

from pathlib import Path

import torch

VGG_TINY = (4, 6, 8, 8, 8)


def vgg_state(widths=VGG_TINY, *, seed: int = 0, with_extras: bool = True) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's ``vgg19`` layout (``features.N``), with the keys the real
    file carries beyond relu5_1 (``features.30+``, ``classifier.*``) when ``with_extras``."""
    from nas_prune.gaugan.vgg import VGG19Features

    g = torch.Generator().manual_seed(seed)
    net = VGG19Features(widths)
    state = {k: torch.randn(v.shape, generator=g) * (2.0 / max(1, v[0].numel())) ** 0.5 if k.endswith("weight")
             else torch.randn(v.shape, generator=g) * 0.05 for k, v in net.state_dict().items()}
    if with_extras:
        w = widths[-1]
        state["features.30.weight"] = torch.randn(w, w, 3, 3, generator=g)
        state["features.30.bias"] = torch.zeros(w)
        state["classifier.0.weight"] = torch.randn(16, w, generator=g)
        state["classifier.0.bias"] = torch.zeros(16)
    return state


def save_vgg(folder: Path, widths=VGG_TINY, *, seed: int = 0) -> Path:
    path = Path(folder) / "vgg19-dcbb9e9d.pth"
    torch.save(vgg_state(widths, seed=seed), path)
    return path


def write_cityscapes(root: Path, *, n_train: int = 2, n_val: int = 2, size=(64, 32), seed: int = 0) -> Path:
    """A tiny tree in the official cityscapes layout: 2x2-pixel blocks of label ids 0..34 with
    instance ids, and photos whose red channel is ``7 * label`` (so pairing can be checked)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = "aachen" if split == "train" else "frankfurt"
            stem = f"{city}_{i:06d}_000019"
            lab = np.kron(rng.integers(0, 35, size=(h // 2, w // 2)), np.ones((2, 2), dtype=np.int64)).astype(np.uint8)
            inst = (lab.astype(np.int32) * 1000 + (np.arange(w)[None, :] >= w // 2)).astype(np.uint16)
            photo = np.stack([lab * 7, np.full_like(lab, 50), np.full_like(lab, 200)], axis=-1).astype(np.uint8)
            gt = root / "gtFine" / split / city
            im = root / "leftImg8bit" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            im.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab).save(gt / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(inst).save(gt / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(photo).save(im / f"{stem}_leftImg8bit.png")
    return root


def drn_state(*, classes: int = 5, seed: int = 0, layers=(1, 1, 1, 2, 1, 1, 1, 1), channels=(4, 4, 4, 4, 4, 4, 8, 8)):
    """A random tiny DRN-D segmenter state dict in the key layout of ``drn-d-105_ms_cityscapes.pth``."""
    from nas_prune.segmenter import DRNConfig, DRNSeg

    g = torch.Generator().manual_seed(seed)
    net = DRNSeg(DRNConfig(layers=tuple(layers), channels=tuple(channels), classes=classes))
    state = {}
    for k, v in net.state_dict().items():
        if k == "up.weight" or k.endswith("num_batches_tracked"):
            state[k] = v.clone()
        elif k.endswith("running_var") or (k.endswith("weight") and v.dim() == 1):
            state[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
        elif v.dim() == 4:
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.1
    return state


def save_drn(folder: Path, **kw) -> Path:
    path = Path(folder) / "drn-d-105_ms_cityscapes.pth"
    torch.save(drn_state(**kw), path)
    return path


def write_label_folder(root: Path, *, n_train: int = 4, n_test: int = 2, size: int = 32, n_labels: int = 5,
                       instances: bool = True, seed: int = 0) -> Path:
    """A tiny label-map folder dataset: 8x8-pixel blocks of labels, photos coloured by label, instance
    maps splitting each image in two."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_labels, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for sub in ("labels", "images") + (("instances",) if instances else ()):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lab = np.kron(rng.integers(0, n_labels, size=(size // 8, size // 8)), np.ones((8, 8), dtype=np.int64))
            Image.fromarray(lab.astype(np.uint8)).save(root / split / "labels" / f"{i:03d}.png")
            Image.fromarray(colours[lab].astype(np.uint8)).save(root / split / "images" / f"{i:03d}.png")
            if instances:
                inst = (np.arange(size)[None, :] >= size // 2) * np.ones((size, 1))
                Image.fromarray(inst.astype(np.uint8)).save(root / split / "instances" / f"{i:03d}.png")
    return root


def tiny_spade_arch(*, label_nc: int = 6, ngf: int = 2):
    """A tiny CAT inception SPADE teacher (``normal`` upsampling: inputs in multiples of 32)."""
    from nas_prune.families.spade import cat_teacher_arch

    return cat_teacher_arch(ngf=ngf, label_nc=label_nc, num_upsampling_layers="normal", channels_reduction_factor=2,
                            spade_hidden=4)


class TinyFeatures(torch.nn.Module):
    """Stand-in for the FID Inception net (tests monkeypatch ``nas_prune.inception.load_inception``):
    6 fixed random projections of 4x4 average pools."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(48, 6)
        self.requires_grad_(False)

    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1))
