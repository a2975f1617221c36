"""The seeded models and config shared by tests/ddp_worker.py and the single-process reference."""

from __future__ import annotations

import torch

from nas_prune.arch import Arch, Block
from nas_prune.distill import DistillConfig
from nas_prune.model import build_generator

# Instance norm everywhere, no dropout, per-element mean losses (L1, LSGAN, MSE, AKDG): two
# processes on half batches then average their gradients exactly as one process on the whole
# batch computes them, so the runs can be compared.
T_ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 2, head=(16, 8))
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2, 0, 2), dw=(0, 2, 2))] * 2, head=(8, 4))


def student_and_teacher():
    torch.manual_seed(0)
    teacher = build_generator(T_ARCH).eval()
    torch.manual_seed(1)
    return teacher, build_generator(S_ARCH)


def ddp_config(**kw) -> DistillConfig:
    base = dict(mode="aligned", epochs=1, epochs_decay=1, load_size=36, crop_size=32, workers=0, ndf=8, d_norm="instance",
                distill={"mse": 1.0, "akdg": 1.0}, distill_options={"akdg": {"ndf": 8}}, progress=False, log_every=1,
                eval_every=10**6, save_every=10**6, grid_every=10**6)
    return DistillConfig(**{**base, **kw})
