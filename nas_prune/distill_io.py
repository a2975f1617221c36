"""Inputs and outputs of a distillation run: resolving the teacher and the student
(paths, loaded checkpoints, modules), writing student folders and image grids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas_prune.arch import Arch, fits_within
from nas_prune.errors import NasPruneError


def _generators() -> tuple[type, ...]:
    """Module classes of the generators nas-prune builds (CAT inception, CAT SPADE)."""
    from nas_prune.model import Generator
    from nas_prune.spade.model import SpadeGenerator

    return Generator, SpadeGenerator


def _archs() -> tuple[type, ...]:
    from nas_prune.spade.arch import SpadeArch

    return Arch, SpadeArch


def resolve_teacher(teacher: Any):
    """(Generator in eval mode, Arch, sha256 or None) from a path, LoadedGenerator or module."""
    if teacher is None:
        return None, None, None
    if isinstance(teacher, _generators()):
        return teacher, teacher.arch, None
    if hasattr(teacher, "build") and hasattr(teacher, "arch"):
        return teacher.build(), teacher.arch, getattr(teacher, "sha256", None)
    if isinstance(teacher, (str, os.PathLike)):
        from nas_prune.load import load_generator

        loaded = load_generator(teacher)
        return loaded.build(), loaded.arch, loaded.sha256
    raise NasPruneError(f"teacher: expected a checkpoint path or a Generator, got {type(teacher).__name__}")


def read_student_file(path: Path) -> tuple[Arch, dict | None, dict | None]:
    """(arch, weights or None, arch.json document) of a student folder or bare arch.json."""
    from nas_prune.export import read_student

    arch, state, doc = read_student(path)
    return arch, state, doc


def resolve_student(student: Any, teacher_arch: Arch | None):
    """(Generator, had_weights, arch.json document or None) from a path, Arch or Generator.

    The student must fit the teacher's space (:func:`nas_prune.arch.fits_within`).
    """
    from nas_prune.model import build_generator

    state, doc = None, None
    if isinstance(student, _generators()):
        model, arch = student, student.arch
        state = "module"
    elif isinstance(student, _archs()):
        arch = student
    elif isinstance(student, (str, os.PathLike)):
        arch, state, doc = read_student_file(Path(student))
    else:
        raise NasPruneError(f"student: expected a folder, an arch.json, an Arch or a Generator, got {type(student).__name__}")
    if teacher_arch is not None:
        why = fits_within(arch, teacher_arch)
        if why is not None:
            raise NasPruneError(f"student architecture is not in the teacher's space: {why}")
    if state == "module":
        return model, True, None
    model = build_generator(arch)
    if state is not None:  # read_student checked every key and shape against the arch
        model.load_state_dict(state)
    return model, state is not None, doc


# ----------------------------------------------------------------------------- helpers


class Features:
    """Callable module wrapper so DDP sees ``forward_with_features`` as ``forward``."""

    @staticmethod
    def make(generator, taps: Sequence[str]):
        import torch

        class WithFeatures(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.g = generator

            def forward(self, x):
                return self.g.forward_with_features(x, taps)

        return WithFeatures()


def save_student(model, arch: Arch, folder: Path, document: Mapping[str, Any] | None) -> None:
    """Write a student folder (``arch.json`` + ``student.safetensors``) with :func:`nas_prune.export.write_student`.

    The architecture document of the input student (space, MACs, provenance) is kept:
    fine-tuning changes the weights, not the architecture.
    """
    from nas_prune.export import FORMAT, VERSION, write_student

    doc = dict(document) if document is not None else {"format": FORMAT, "version": VERSION, "space": None}
    doc["arch"] = arch.to_dict()
    write_student(folder, document=doc, state_dict=model.state_dict(), force=True)


def to_uint8_grid(rows: list[list], path: Path) -> None:
    """Write rows of ``(C, H, W)`` tensors in [-1, 1] as one PNG (atomic)."""
    import numpy as np
    from PIL import Image

    from nas_prune.fileio import atomic_path

    def img(t):
        a = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8)
        a = a.numpy().transpose(1, 2, 0)
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a

    grid = np.concatenate([np.concatenate([img(t) for t in row], axis=1) for row in rows], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")

