"""The U-Net generator as an nn.Module whose state-dict keys are pix2pix's.

pytorch-CycleGAN-and-pix2pix nests one ``UnetSkipConnectionBlock`` per level, each holding
an ``nn.Sequential`` called ``model``; the generator's own ``model`` is the outermost block.
:class:`UnetLevel` keeps the same nesting and the same Sequential indices, so a pix2pix
checkpoint loads strictly into :func:`build_unet` with no key mapping::

    outermost (level 0):  0 conv | 1 level 1 | 2 ReLU | 3 convT | 4 Tanh
    middle level I:       0 LeakyReLU | 1 conv | 2 norm | 3 level I+1 | 4 ReLU | 5 convT | 6 norm [| 7 Dropout]
    innermost (n-1):      0 LeakyReLU | 1 conv | 2 ReLU | 3 convT | 4 norm

Keys: level 0's Sequential is ``model.model``, level 1's ``model.model.1.model`` and level
I >= 2's is level I-1's followed by ``.3.model`` (``model.model.1.model.3.model.3.model``...).

The activations are in-place, as pix2pix's are: torchprofile does not count an in-place
LeakyReLU (it charges one MAC per element of an out-of-place one), so the paper-convention
count of this module is that of the original class. In-place LeakyReLU rewrites the tensor its
level then concatenates as the skip (the skip carries LeakyReLU(x), as in pix2pix); taps of
down outputs are therefore cloned before the next level rewrites them.

Taps (``forward_with_features``): ``down.I`` is level I's down output after its norm (the
conv output at levels 0 and n-1), ``I = 0 .. n-1``; ``up.I`` is level I's up output after
its norm and before Dropout, ``I = 1 .. n-1``.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nas_prune.families.unet.arch import UnetArch


def seq_prefix(level: int) -> str:
    """State-dict prefix of level ``level``'s Sequential (``model.model``, ``model.model.1.model``, ...)."""
    if level == 0:
        return "model.model"
    return "model.model.1.model" + ".3.model" * (level - 1)


def module_keys(arch: UnetArch, level: int) -> dict[str, str | None]:
    """Module paths of level ``level``'s ``conv``, ``down_norm``, ``convT`` and ``up_norm`` (None: absent)."""
    p = seq_prefix(level)
    n = arch.num_downs
    if level == 0:
        return {"conv": f"{p}.0", "down_norm": None, "convT": f"{p}.3", "up_norm": None}
    if level == n - 1:
        return {"conv": f"{p}.1", "down_norm": None, "convT": f"{p}.3", "up_norm": f"{p}.4"}
    return {"conv": f"{p}.1", "down_norm": f"{p}.2", "convT": f"{p}.5", "up_norm": f"{p}.6"}


def make_norm(arch: UnetArch, channels: int) -> nn.Module:
    """The arch's norm over ``channels`` channels."""
    if arch.norm == "batch":
        return nn.BatchNorm2d(channels, affine=arch.affine)
    return nn.InstanceNorm2d(channels, affine=arch.affine, track_running_stats=arch.track_running_stats)


class UnetLevel(nn.Module):
    """One level of the U-Net: down path, the next level, up path (module docstring).

    Args:
        arch: the whole generator's arch.
        level: this level's index (0 = outermost).
    """

    def __init__(self, arch: UnetArch, level: int):
        super().__init__()
        n = arch.num_downs
        self.level = level
        self.outermost = level == 0
        self.innermost = level == n - 1
        conv = nn.Conv2d(arch.down_in(level), arch.down[level], kernel_size=4, stride=2, padding=1,
                         bias=arch.use_bias)
        convT = nn.ConvTranspose2d(arch.up_in(level), arch.up_width(level), kernel_size=4, stride=2,
                                   padding=1, bias=True if self.outermost else arch.use_bias)
        if self.outermost:
            layers = [conv, UnetLevel(arch, 1), nn.ReLU(True), convT, nn.Tanh()]
            taps = {0: "down.0"}
        elif self.innermost:
            layers = [nn.LeakyReLU(0.2, True), conv, nn.ReLU(True), convT, make_norm(arch, arch.up_width(level))]
            taps = {1: f"down.{level}", 4: f"up.{level}"}
        else:
            layers = [nn.LeakyReLU(0.2, True), conv, make_norm(arch, arch.down[level]), UnetLevel(arch, level + 1),
                      nn.ReLU(True), convT, make_norm(arch, arch.up_width(level))]
            if level in arch.dropout_levels:
                layers.append(nn.Dropout(0.5))
            taps = {2: f"down.{level}", 6: f"up.{level}"}
        self.model = nn.Sequential(*layers)
        self._taps = taps

    def run(self, x: torch.Tensor, feats: dict[str, torch.Tensor] | None, wanted: frozenset[str]) -> torch.Tensor:
        """Forward through this level (and the inner ones), recording wanted taps in ``feats``."""
        h = x
        for i, m in enumerate(self.model):
            h = m.run(h, feats, wanted) if isinstance(m, UnetLevel) else m(h)
            name = self._taps.get(i)
            if feats is not None and name in wanted:
                feats[name] = h.clone() if name.startswith("down.") else h  # an in-place activation follows
        return h if self.outermost else torch.cat([x, h], 1)


class UnetGenerator(nn.Module):
    """pix2pix's U-Net generator (key-compatible), built from a :class:`UnetArch`.

    Input ``(N, input_nc, H, W)`` in [-1, 1], H and W multiples of ``2 ** num_downs``;
    output ``(N, output_nc, H, W)`` in [-1, 1] (Tanh).
    """

    def __init__(self, arch: UnetArch):
        super().__init__()
        self.arch = arch
        self.model = UnetLevel(arch, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.run(x, None, frozenset())

    def forward_with_features(self, x: torch.Tensor, taps: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(output, {tap: feature map})`` for the requested taps (names in the module docstring)."""
        wanted = frozenset(taps)
        feats: dict[str, torch.Tensor] = {}
        out = self.model.run(x, feats, wanted)
        return out, {t: feats[t] for t in taps}


def build_unet(arch: UnetArch) -> UnetGenerator:
    """A fresh :class:`UnetGenerator` of ``arch`` (torch's default initialisation)."""
    return UnetGenerator(arch)
