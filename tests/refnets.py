"""Random weights and reference outputs of the evaluation and perceptual networks.

``tests/data/reference/`` holds outputs that the reference implementations (pytorch-fid's
``InceptionV3``, fyu/drn's ``DRNSeg``, torchvision's ``vgg19``) computed on random weights; how
they were made is in ``tests/data/reference/README.md``. The weights come from
:func:`random_state`, which depends only on the key names, the shapes and a seed (NumPy's legacy
``RandomState``, whose streams NumPy keeps fixed across releases), so the full-width FID
Inception (21.8M parameters, too large to keep in the repository) is regenerated here bit for bit
instead of being stored. The smaller DRN-D-105 and VGG19 are stored as state dicts.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "reference"


def _draw(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """One tensor's values, float32: He-scaled normal convs, norm scales in [0.5, 1.5], small shifts."""
    rng = np.random.RandomState((zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF)
    size = int(np.prod(shape)) if shape else 1
    if key.endswith("running_var"):
        v = rng.uniform(0.5, 2.0, size)
    elif key.endswith("weight") and len(shape) == 1:  # a norm's scale
        v = rng.uniform(0.5, 1.5, size)
    elif key.endswith("weight") and len(shape) == 4:  # a conv: keep activations O(1) through depth
        fan_in = int(np.prod(shape[1:]))
        v = rng.standard_normal(size) * np.sqrt(2.0 / fan_in)
    elif key.endswith("weight"):  # a linear layer
        v = rng.standard_normal(size) * 0.01
    else:  # biases, running means
        v = rng.standard_normal(size) * 0.1
    return v.astype(np.float32).reshape(shape)


def random_state(shapes: Mapping[str, tuple[int, ...]], seed: int, *,
                 keep: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A random float32 state dict for ``shapes`` (key -> shape), independent of key order.

    ``num_batches_tracked`` keys are zeros (int64); keys in ``keep`` take the given tensor
    (e.g. DRNSeg's fixed bilinear ``up.weight``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if keep is not None and key in keep:
            out[key] = keep[key].detach().clone()
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
        else:
            out[key] = torch.from_numpy(_draw(key, tuple(int(s) for s in shape), seed))
    return out


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys and the float32 bytes of every tensor (num_batches_tracked left out)."""
    h = hashlib.sha256()
    for key in sorted(state):
        if key.endswith("num_batches_tracked"):
            continue
        h.update(key.encode())
        h.update(state[key].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, *, rel: float = 1e-4, name: str = "") -> float:
    """``|actual - expected| <= rel * max|expected|`` elementwise; returns the max difference over that scale.

    One tolerance per tensor, scaled to its magnitude: float32 reorderings of a deep network give
    differences around 1e-6 of the largest value, a different layer gives differences of order 1.
    """
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    scale = float(expected.abs().max())
    assert scale > 0, f"{name}: reference is all zeros"
    err = float((actual.double() - expected.double()).abs().max()) / scale
    assert err <= rel, f"{name}: max |diff| = {err:.3g} x max|reference| (allowed {rel:g})"
    return err
