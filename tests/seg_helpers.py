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
