"""Build CAT's inception SPADE generator from a :class:`~nas_prune.families.spade.arch.SpadeArch`.

State-dict keys are exactly CAT's (``InceptionSPADEGenerator``), so CAT checkpoints load
unchanged and outputs are identical to CAT's class, bit for bit (a test compares with
reference outputs computed from CAT's published code)::

    fc, fc_norm                                   3x3 conv of the resized map, its BN
    B.res_ops.i.0.conv / .0.norm / .1.conv        res branch: conv kxk, BN, conv kxk
    B.dw_ops.i.0.conv / .0.norm                   dw branch: conv1x1, BN
    B.dw_ops.i.1.conv / .1.norm                   depthwise conv kxk, BN without affine
    B.dw_ops.i.2.conv                             conv1x1 back to fout
    B.shortcut.0 / B.shortcut.1.conv              learned shortcut: BN, conv1x1 (fin != fout)
    B.spade.param_free_norm                       BN without affine over fin
    B.spade.res_ops.i.0.conv / .0.norm / .1       modulation res branch (-> 2 fin)
    B.spade.dw_ops.i.0.conv / .0.norm / .1.conv / .1.norm / .2
    conv_img                                      final 3x3 conv

``B`` is a block name (``head_0``, ``G_middle_0``, ..., ``up_3``); ``i`` counts the
branches that exist, in kernel-size order. A block without res/dw branches has no
``spade`` (CAT keeps one that never runs; the loader drops it).

Departures from CAT's class, none of which changes an output:

* Norms are ``nn.BatchNorm2d`` with running statistics where CAT has its
  ``SynchronizedBatchNorm2d``: the same computation on one device, with the same keys.
  In eval mode both normalise with the running statistics read from the checkpoint; in
  training mode both use the batch's statistics and update the running ones. Across
  several GPUs, ``distill`` converts them to ``torch.nn.SyncBatchNorm`` (same keys) to
  synchronise the statistics as CAT does (:func:`nas_prune.device.sync_batch_norms`).
* CAT fixes the latent grid when the module is built (from ``crop_size`` and
  ``aspect_ratio``); here it is the input size divided by ``2 ** n_upsampling``, the
  same grid for the size CAT was configured with, and any other multiple works too.
* Spectral norm (CAT's ``spectral`` norm_G option, unused by its GauGAN scripts) is not
  supported.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_prune.errors import NasPruneError
from nas_prune.families.spade.arch import SpadeArch, SpadeBlock


class _ConvNormAct(nn.Module):
    """conv (pad (k-1)/2, zeros) -> norm -> activation; keys ``conv``, ``norm`` (CAT's ConvSyncBNReLU)."""

    def __init__(self, cin: int, cout: int, k: int, *, groups: int = 1, affine: bool = True, act: str = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, groups=groups, bias=True)
        self.norm = nn.BatchNorm2d(cout, affine=affine)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(self.norm(self.conv(x)), self.act)


class _Conv(nn.Module):
    """A conv under the key ``conv`` (CAT's ``Conv`` wrapper)."""

    def __init__(self, cin: int, cout: int, k: int, *, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _activate(x: torch.Tensor, act: str) -> torch.Tensor:
    # In place, as CAT's nn.ReLU(inplace=True) / nn.LeakyReLU(inplace=True) (slope 0.01).
    if act == "relu":
        return F.relu(x, inplace=True)
    return F.leaky_relu(x, 0.01, inplace=True)


def _branch_sum(ops: Iterable[nn.Module], res_count: int, x: torch.Tensor) -> torch.Tensor:
    """``sum(res(x)) + sum(dw(x))``, grouped as CAT adds them, so the float results are CAT's."""
    ops = list(ops)
    return sum([op(x) for op in ops[:res_count]]) + sum([op(x) for op in ops[res_count:]])


class SpadeModulation(nn.Module):
    """CAT's ``InceptionSPADE``: ``BN_no_affine(x) * (1 + gamma) + beta`` from the semantic map.

    Args:
        fin: channels of ``x``.
        label_nc: channels of the semantic map.
        kernel_sizes / res / dw: branch widths per kernel-size slot (0 = absent).
    """

    def __init__(self, fin: int, label_nc: int, kernel_sizes: Sequence[int], res: Sequence[int], dw: Sequence[int]):
        super().__init__()
        self.fin = fin
        self.param_free_norm = nn.BatchNorm2d(fin, affine=False)
        self.res_ops = nn.ModuleList(
            nn.Sequential(_ConvNormAct(label_nc, h, k), nn.Conv2d(h, 2 * fin, k, padding=(k - 1) // 2))
            for k, h in zip(kernel_sizes, res) if h > 0
        )
        self.dw_ops = nn.ModuleList(
            nn.Sequential(_ConvNormAct(label_nc, h, 1), _ConvNormAct(h, h, k, groups=h), nn.Conv2d(h, 2 * fin, 1))
            for k, h in zip(kernel_sizes, dw) if h > 0
        )

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if len(self.res_ops) == 0 and len(self.dw_ops) == 0:
            # CAT resizes seg for nothing (a traced graph drops it) and still multiplies by
            # (1 + 0): kept, so torchprofile counts this module as it counts CAT's.
            gamma = beta = 0
        else:
            seg = F.interpolate(seg, size=x.size()[2:], mode="nearest")
            tmp = _branch_sum((*self.res_ops, *self.dw_ops), len(self.res_ops), seg)
            gamma, beta = tmp[:, : self.fin], tmp[:, self.fin :]
        return normalized * (1 + gamma) + beta


class SpadeInceptionBlock(nn.Module):
    """CAT's ``SPADEInvertedResidualChannels``: ``shortcut(x) + branches(act(spade(x, seg)))``.

    Args:
        arch: the generator (kernel sizes, activation, label_nc).
        fin / fout: channels in and out (a learned shortcut when they differ).
        block: branch widths.
    """

    def __init__(self, arch: SpadeArch, fin: int, fout: int, block: SpadeBlock):
        super().__init__()
        ks, act = arch.kernel_sizes, arch.activation
        self.act = act
        self.res_ops = nn.ModuleList(
            nn.Sequential(_ConvNormAct(fin, m, k, act=act), _Conv(m, fout, k))
            for k, m in zip(ks, block.res) if m > 0
        )
        self.dw_ops = nn.ModuleList(
            nn.Sequential(_ConvNormAct(fin, m, 1, act=act), _ConvNormAct(m, m, k, groups=m, affine=False, act=act),
                          _Conv(m, fout, 1))
            for k, m in zip(ks, block.dw) if m > 0
        )
        self.shortcut = (
            nn.Sequential(nn.BatchNorm2d(fin, affine=True), _Conv(fin, fout, 1, bias=False)) if fin != fout else None
        )
        self.spade = (
            None if block.is_identity
            else SpadeModulation(fin, arch.label_nc, ks, block.spade_res, block.spade_dw)
        )

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if self.spade is None:
            return self.shortcut(x) if self.shortcut is not None else x
        h = _activate(self.spade(x, seg), self.act)
        h = _branch_sum((*self.res_ops, *self.dw_ops), len(self.res_ops), h)
        return h + self.shortcut(x) if self.shortcut is not None else h + x


class SpadeGenerator(nn.Module):
    """CAT's inception SPADE generator.

    ``forward(seg)``: ``seg`` is ``(N, label_nc, H, W)`` (one-hot labels, then the
    instance-edge channel), H and W multiples of ``arch.size_multiple`` (32 / 64 / 128 for
    normal / more / most); returns ``(N, output_nc, H, W)`` in [-1, 1].

    Attributes:
        arch: the :class:`SpadeArch` it was built from.
    """

    def __init__(self, arch: SpadeArch):
        super().__init__()
        self.arch = arch
        self.fc_norm = nn.BatchNorm2d(arch.stream[0], affine=True)
        self.fc = nn.Conv2d(arch.label_nc, arch.stream[0], 3, padding=1)
        for i, (name, block) in enumerate(zip(arch.block_names, arch.blocks)):
            self.add_module(name, SpadeInceptionBlock(arch, arch.fin(i), arch.fout(i), block))
        self.conv_img = nn.Conv2d(arch.stream[-1], arch.output_nc, 3, padding=1)
        self._ups = tuple(arch.upsampled_before(i) for i in range(arch.n_blocks))

    def _run(self, seg: torch.Tensor, wanted: set[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h, w = seg.shape[2], seg.shape[3]
        m = self.arch.size_multiple
        if not torch.jit.is_tracing() and (h % m or w % m):
            raise NasPruneError(
                f"SPADE generator input {h}x{w}: height and width must be multiples of {m} "
                f"(num_upsampling_layers {self.arch.num_upsampling_layers!r})"
            )
        n = self.arch.n_upsampling
        feats: dict[str, torch.Tensor] = {}
        x = F.interpolate(seg, size=(h >> n, w >> n))
        x = self.fc_norm(self.fc(x))
        if "fc" in wanted:
            feats["fc"] = x
        for name, up in zip(self.arch.block_names, self._ups):
            if up:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self._modules[name](x, seg)
            if name in wanted:
                feats[name] = x
        x = torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
        return x, feats

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        return self._run(seg, set())[0]

    def forward_with_features(
        self, seg: torch.Tensor, taps: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the generator and return the output with the activations named in ``taps``.

        Tap names: ``"fc"`` (after ``fc_norm``) and the block names (``head_0``,
        ``G_middle_0``, ``G_middle_1``, ``up_0`` .. ``up_3``, ``up_4`` for ``most``): each
        block's output. CAT distils at ``head_0``, ``G_middle_1`` and ``up_1``.

        Returns:
            ``(output, {tap: tensor})``; feature tensors are ``(N, C, h, w)``.
        """
        check_spade_taps(self.arch, taps)
        return self._run(seg, set(taps))


def spade_tap_names(arch: SpadeArch) -> list[str]:
    """Every valid tap of ``arch`` in forward order."""
    return ["fc", *arch.block_names]


def spade_tap_channels(arch: SpadeArch, tap: str) -> int:
    """Channels of the activation at ``tap``."""
    check_spade_taps(arch, (tap,))
    return arch.stream[0] if tap == "fc" else arch.stream[arch.block_names.index(tap) + 1]


def check_spade_taps(arch: SpadeArch, taps: Iterable[str]) -> None:
    """Raise NasPruneError naming the first tap that ``arch`` does not have."""
    valid = spade_tap_names(arch)
    for t in taps:
        if t not in valid:
            raise NasPruneError(f"unknown feature layer {t!r}: choose from {', '.join(valid)}")


def seeded_weights_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random weights in place, for tests and benchmarks without a trained teacher.

    Conv weights ~ N(0, 1 / fan-in) (activations stay O(1) through the blocks, so outputs are
    not saturated), norm gammas 1 +- 0.3 (distinct importance scores), biases and betas
    ~ N(0, 0.1), running means ~ N(0, 0.1), running variances in [0.5, 1.5).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.3 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model


def build_spade_generator(arch: SpadeArch) -> SpadeGenerator:
    """A freshly initialised :class:`SpadeGenerator` (PyTorch's default init, training mode)."""
    return SpadeGenerator(arch)
