"""The inception-residual family: CAT's generators, with the classic ResNet as one of their points.

Generator = stem (7x7 conv, two stride-2 3x3 convs), a stack of inception-residual blocks,
head (two stride-2 ConvTransposes, 7x7 conv, tanh); see :mod:`.arch` for the layout.
Checkpoints in CAT's layout and pytorch-CycleGAN-and-pix2pix ResNet generators load
(:mod:`.load`); the prunable layers are the stem convs, the first conv of every res
branch, the 1x1 conv of every dw branch and the ConvTransposes (:mod:`.plan`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families import register_family
from nas_prune.families.base import GeneratorFamily
from nas_prune.families.inception.arch import SETTINGS, Arch, Block, fits_within

__all__ = ["Arch", "Block", "InceptionFamily"]


@register_family
class InceptionFamily(GeneratorFamily):
    """CAT's inception-residual generators (CycleGAN and pix2pix teachers, classic ResNet)."""

    name = "inception"
    title = "CycleGAN/pix2pix"
    layouts = ("cat", "resnet")
    native_layout = "cat"
    layout_hint = ("CAT (down_sampling.*, features.*, up_sampling.*), pytorch-CycleGAN-and-pix2pix ResNet "
                   "(model.N.*)")
    data_kind = "images"
    default_objective = "pix2pix"
    settings = SETTINGS
    arch_type = Arch
    latency_units = True
    fvcore_by_leaves = True
    trains_teachers = True
    criteria = ("gamma", "l1", "activation")
    calibrated_criteria = ("activation",)

    # checkpoints
    def detect_layout(self, keys):
        from nas_prune.families.inception.load import detect

        return detect(list(keys))

    def load_state(self, tensors, *, path, layout, space, like, notes):
        from nas_prune.families.inception.load import load_state

        return load_state(dict(tensors), path, space, layout, notes)

    # architectures and spaces
    def arch_to_dict(self, arch: Arch) -> dict[str, Any]:
        return arch.to_dict()  # no "family" field: the default family, as every arch.json before families

    def fits_within(self, student, teacher):
        return fits_within(student, teacher)

    def space_from_dict(self, data: Mapping[str, Any], *, source: str):
        from nas_prune.families.inception.space import SearchSpace

        if "family" in data:
            if data["family"] != self.name:
                raise NasPruneError(f"{source}: family: expected {self.name!r}, got {data['family']!r}")
            data = {k: v for k, v in data.items() if k != "family"}
        return SearchSpace.from_dict(data, source=source)

    def table_rows(self, arch: Arch) -> list[tuple[str, str, str]]:
        from nas_prune.families.inception.plan import describe_block

        return ([("stem", " / ".join(map(str, arch.stem)), "stem")]
                + [(f"block {n + 1}", describe_block(arch, n), f"block{n + 1}") for n in range(arch.n_blocks)]
                + [("head", " / ".join(map(str, arch.head)), "head")])

    # modules
    def build(self, arch):
        from nas_prune.families.inception.model import build_generator

        return build_generator(arch)

    def module_types(self) -> tuple[type, ...]:
        from nas_prune.families.inception.model import Generator

        return (Generator,)

    def input_size_limits(self, arch):
        from nas_prune.families.inception.model import input_size_limits

        return input_size_limits(arch)

    def check_input_size(self, arch, size, *, option="--input-size", extra: Iterable = ()):
        from nas_prune.families.inception.model import check_input_size

        check_input_size(arch, size, option=option, extra=extra)

    def min_input_size(self, arch):
        limits = self.input_size_limits(arch)
        side = max([4, *(s for s, _ in limits)])
        side = -(-side // 4) * 4
        return side, side

    def trace_size(self, arch, size, *, min_side=32):
        """Every layer costs a fixed amount per output pixel at full, 1/2 or 1/4 resolution
        (ConvTransposes per input pixel in fvcore), so ``H = s*h``, ``W = s*w`` with ``h, w``
        divisible by 4 scale exactly; ``min(h, w) >= min_side`` keeps the stream resolution
        above every reflection pad."""
        H, W = size
        pads = [(k - 1) // 2 for k in (*arch.res_kernel_sizes, *arch.dw_kernel_sizes)]
        side = max(min_side, 4 * (max(pads, default=0) + 1))
        best = (H, W, 1)
        for s in range(2, min(H, W) + 1):
            h, w = H // s, W // s
            if H % s or W % s or h % 4 or w % 4 or min(h, w) < side:
                continue
            best = (h, w, s)
        return best

    def forward_bytes(self, arch, size, *, batch=1):
        from nas_prune.families.inception.model import forward_bytes

        return forward_bytes(arch, size, batch=batch)

    # taps
    def tap_names(self, arch):
        from nas_prune.families.inception.model import tap_names

        return tap_names(arch)

    def check_taps(self, arch, taps):
        from nas_prune.families.inception.model import check_taps

        check_taps(arch, taps)

    def default_taps(self, arch):
        """CAT's layers, scaled to the depth: the stem and the blocks at 1/3, 2/3, 3/3.

        For 9 blocks that is ``stem, block3, block6, block9`` as in CAT; for fewer blocks
        the positions are rounded and duplicates dropped; with no block, the stem only.
        """
        n = arch.n_blocks
        taps = ["stem"]
        for k in (1, 2, 3):
            i = max(1, round(n * k / 3))
            if n and f"block{i}" not in taps:
                taps.append(f"block{i}")
        return taps

    def tap_channels(self, arch, tap):
        """``stem`` and every ``blockN`` carry the residual stream (``arch.stem[2]`` channels,
        1/4 of the input resolution); ``up1`` has ``arch.head[0]`` channels at 1/2 resolution."""
        self.check_taps(arch, (tap,))
        return arch.head[0] if tap == "up1" else arch.stream

    # MACs
    def layer_costs(self, arch, size, convention):
        from nas_prune.families.inception.macs import iter_costs

        return list(iter_costs(arch, size, convention))

    def count_params(self, arch):
        from nas_prune.families.inception.macs import iter_costs

        return sum(c.params for c in iter_costs(arch, (4, 4), "fvcore"))

    # pruning
    def prunable_layers(self, arch):
        from nas_prune.families.inception.plan import prunable_layers

        return prunable_layers(arch)

    def arch_from_widths(self, teacher, widths):
        from nas_prune.families.inception.plan import arch_from_widths

        return arch_from_widths(teacher, widths)

    def student_widths(self, student, teacher):
        from nas_prune.families.inception.plan import student_widths

        return student_widths(student, teacher)

    def macs_formula(self, teacher, *, input_size, convention):
        from nas_prune.families.inception.plan import MacsFormula

        return MacsFormula(teacher, input_size=input_size, convention=convention)

    def smallest_student_text(self, teacher, *, min_channels, round_to):
        rounded = f" rounded to {round_to}" if round_to else ""
        return f"every branch dropped, stem/head at {min_channels} channels{rounded}"

    def search_groups(self, arch):
        from nas_prune.families.inception.plan import search_groups

        return search_groups(arch)

    def default_criterion(self, arch):
        """``gamma`` when the norms are affine (CAT teachers), else ``l1`` (classic ResNet)."""
        return "gamma" if arch.affine else "l1"

    def importance(self, criterion, arch, state_dict, *, calib=None):
        from nas_prune.families.inception.importance import CRITERIA

        if criterion == "activation":
            return CRITERIA[criterion](arch, state_dict, images=calib)
        return CRITERIA[criterion](arch, state_dict)

    def slice_state_dict(self, plan, teacher_state_dict):
        from nas_prune.families.inception.slicing import slice_state_dict

        return slice_state_dict(plan, teacher_state_dict)

    # latency
    def latency_unit_grids(self, teacher, *, input_size, min_channels):
        from nas_prune.families.inception.latency import UnitGrids

        return UnitGrids(teacher, input_size=input_size, min_channels=min_channels)
