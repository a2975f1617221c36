"""The U-Net family: pix2pix's default generator (pytorch-CycleGAN-and-pix2pix ``UnetGenerator``).

One package, registered as ``unet``:

* :mod:`.arch`: :class:`UnetArch` (levels, widths, norm, dropout) and its JSON form;
* :mod:`.model`: the key-compatible nn.Module with ``forward_with_features``;
* :mod:`.macs`: analytic MACs/params in both conventions (== fvcore, == torchprofile);
* :mod:`.plan`: prunable layers ``down.I`` / ``up.I``, the skip coupling, weight slicing;
* :mod:`.importance`: ``gamma`` / ``l1`` / ``activation``;
* :mod:`.load`: layout recognition and arch inference from a checkpoint's shapes;
* :mod:`.space`: ``family: unet`` search spaces (the shipped ``unet_256``).

Taps (distillation): ``down.I`` (I = 0 .. n-1) and ``up.I`` (I = 1 .. n-1), see
:mod:`.model`. Default taps: ``down.1``, ``down.3``, ``up.3``, ``up.1`` (clamped to the levels an
arch has): two encoder and two decoder levels, mirroring CAT's four taps spread along its
generator. For the ngf-64 ``unet_256`` they are 128 channels at 1/4 of the input side, 512 at
1/16, 256 at 1/8 and 64 at 1/2. Left out: ``down.0`` (the raw first conv, before any norm) and
the innermost levels (1x1 .. 8x8 maps at 256x256, little spatial structure to align).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families import GeneratorFamily, register_family
from nas_prune.families.unet import arch as _arch
from nas_prune.families.unet.arch import SETTINGS, UnetArch
from nas_prune.families.unet.space import UnetSpace

__all__ = ["UnetArch", "UnetFamily", "UnetSpace"]


@register_family
class UnetFamily(GeneratorFamily):
    """pix2pix's U-Net generators and their pruned students."""

    name = "unet"
    title = "U-Net (pix2pix)"
    layouts = ("pix2pix-unet",)
    native_layout = "pix2pix-unet"
    layout_hint = "pix2pix U-Net (model.model.0.weight, model.model.1.model.1.weight, ...)"
    data_kind = "images"
    default_objective = "pix2pix"
    settings = SETTINGS
    sync_batchnorm = True
    latency_units = False
    trains_teachers = False
    fvcore_by_leaves = True  # convs, ConvTransposes and norms are leaves; the concatenations are free
    arch_type = UnetArch
    criteria = ("gamma", "l1", "activation")
    calibrated_criteria = ("activation",)

    # checkpoints
    def detect_layout(self, keys: Sequence[str]) -> str | None:
        from nas_prune.families.unet.load import detect_layout

        return detect_layout(keys)

    def load_state(self, tensors, *, path, layout, space, like, notes):
        from nas_prune.families.unet.load import load_state

        return load_state(tensors, path=path, layout=layout, space=space, like=like, notes=notes)

    # architectures
    def arch_to_dict(self, arch: UnetArch) -> dict[str, Any]:
        return arch.to_dict()

    def fits_within(self, student: UnetArch, teacher: UnetArch) -> str | None:
        return _arch.unet_fits_within(student, teacher)

    def space_from_dict(self, data: Mapping[str, Any], *, source: str) -> UnetSpace:
        return UnetSpace.from_dict(data, source=source)

    def table_rows(self, arch: UnetArch) -> list[tuple[str, str, str]]:
        """One row per level, outside in: ``down width / up width`` (level 0's up width is the image's)."""
        return [(f"level {i}", f"{arch.down[i]} / {arch.up_width(i)}", f"level{i}") for i in range(arch.num_downs)]

    # modules
    def build(self, arch: UnetArch):
        from nas_prune.families.unet.model import build_unet

        return build_unet(arch)

    def module_types(self) -> tuple[type, ...]:
        from nas_prune.families.unet.model import UnetGenerator

        return (UnetGenerator,)

    def trace_size(self, arch: UnetArch, size: tuple[int, int], *, min_side: int = 32) -> tuple[int, int, int]:
        """Every layer's fvcore count is a fixed amount per pixel of a map ``2**k`` times smaller
        than the input, so ``H = s*h``, ``W = s*w`` with ``h, w`` multiples of ``2**num_downs``
        scale exactly by ``s**2``; the smallest such ``h, w`` >= ``min_side``."""
        H, W = size
        m = arch.size_multiple
        side = max(min_side, m)
        best = (H, W, 1)
        for s in range(2, min(H, W) + 1):
            h, w = H // s, W // s
            if H % s or W % s or h % m or w % m or min(h, w) < side:
                continue
            best = (h, w, s)
        return best

    def input_size_limits(self, arch: UnetArch) -> list[tuple[int, str]]:
        """One limit: ``2**num_downs``, where the innermost down conv writes a 1x1 map. That map
        has no norm; the smallest normalised maps are 2x2 (the innermost up norm and level
        n-2's down norm), so every norm runs at the smallest size: instance norm without
        running statistics has 4 values per channel and image, batch norm in training has
        4 per channel even at batch 1, and the tracked norms use their running statistics in
        eval mode. Odd sizes at any level would break a concatenation, hence
        :meth:`size_multiple`."""
        m = arch.size_multiple
        return [(m, f"its {arch.num_downs} stride-2 levels halve the input down to a 1x1 bottleneck at {m}x{m}")]

    def size_multiple(self, arch: UnetArch) -> int:
        return arch.size_multiple

    def layer_rule(self, layer, teacher: UnetArch, *, min_channels: int, round_to: int | None) -> tuple[int, int]:
        """Every level keeps ``min(min_channels, width)`` rounded up to a step, and at least one
        channel (a level cannot vanish: its skip and its up path need channels)."""
        step = round_to or 1
        return step, min(layer.width, max(step, -(-min_channels // step) * step))

    def forward_bytes(self, arch: UnetArch, size: tuple[int, int], *, batch: int = 1) -> int:
        """float32 bytes of every feature map of one inference pass that is alive at the
        deepest point (the skips of every level, the input, the output), a rough peak."""
        h, w = size
        n = arch.num_downs
        elems = arch.input_nc * h * w + arch.output_nc * h * w
        for i in range(n):  # skips (x_{i+1}) and the up outputs kept for the concatenations
            px = (h >> (i + 1)) * (w >> (i + 1))
            elems += arch.down[i] * px
            elems += 2 * arch.up_in(i) * px  # the concatenation and its ReLU'd copy feeding convT i
        return 4 * batch * elems

    # taps
    def tap_names(self, arch: UnetArch) -> list[str]:
        n = arch.num_downs
        return [f"down.{i}" for i in range(n)] + [f"up.{i}" for i in reversed(range(1, n))]

    def default_taps(self, arch: UnetArch) -> list[str]:
        n = arch.num_downs
        a, b = min(1, n - 1), min(3, n - 1)
        taps = [f"down.{a}", f"down.{b}", f"up.{b}", f"up.{a}"]
        return list(dict.fromkeys(taps))

    def tap_channels(self, arch: UnetArch, tap: str) -> int:
        self.check_taps(arch, [tap])
        kind, i = tap.split(".")
        return arch.down[int(i)] if kind == "down" else arch.up[int(i) - 1]

    # MACs
    def layer_costs(self, arch: UnetArch, size: tuple[int, int], convention: str):
        from nas_prune.families.unet.macs import layer_costs

        return layer_costs(arch, size, convention)

    def count_params(self, arch: UnetArch) -> int:
        m = arch.size_multiple
        return sum(c.params for c in self.layer_costs(arch, (m, m), "fvcore"))

    # pruning
    def prunable_layers(self, arch: UnetArch):
        from nas_prune.families.unet.plan import prunable_layers

        return prunable_layers(arch)

    def arch_from_widths(self, teacher: UnetArch, widths: Mapping[str, int]) -> UnetArch:
        from nas_prune.families.unet.plan import arch_from_widths

        return arch_from_widths(teacher, widths)

    def student_widths(self, student: UnetArch, teacher: UnetArch) -> dict[str, int]:
        from nas_prune.families.unet.plan import student_widths

        return student_widths(student, teacher)

    def macs_formula(self, teacher: UnetArch, *, input_size: tuple[int, int], convention: str) -> Callable:
        from nas_prune.families.unet.macs import macs_formula

        return macs_formula(teacher, input_size=input_size, convention=convention)

    def complete_widths(self, teacher: UnetArch, widths: Mapping[str, int]) -> dict[str, int]:
        return dict(widths)  # no layer follows another: every width is thresholded

    def search_groups(self, arch: UnetArch) -> dict[str, tuple[str, ...]]:
        """Study variables (``search --trials``): ``down`` (every encoder layer), ``up`` (every
        decoder layer), and ``outer`` / ``middle`` / ``inner``: both layers of the levels in the
        outer, middle and inner thirds of the depth (an Optuna trial can then move channels
        between encoder and decoder, and between resolutions)."""
        n = arch.num_downs
        groups: dict[str, list[str]] = {"down": [f"down.{i}" for i in range(n)], "up": [f"up.{i}" for i in range(1, n)]}
        for k, name in enumerate(("outer", "middle", "inner")):
            levels = range(k * n // 3, (k + 1) * n // 3)
            groups[name] = [f"down.{i}" for i in levels] + [f"up.{i}" for i in levels if i > 0]
        return {g: tuple(v) for g, v in groups.items() if v}

    # importance
    def default_criterion(self, arch: UnetArch) -> str:
        from nas_prune.families.unet.importance import default_criterion

        return default_criterion(arch)

    def importance(self, criterion: str, arch: UnetArch, state_dict, *, calib=None):
        from nas_prune.families.unet.importance import compute_importance

        return compute_importance(criterion, arch, state_dict, calib=calib)

    def slice_state_dict(self, plan: Any, teacher_state_dict):
        from nas_prune.families.unet.plan import slice_state_dict

        return slice_state_dict(plan, teacher_state_dict)
