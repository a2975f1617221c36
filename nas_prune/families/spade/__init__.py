"""CAT's inception SPADE generator (GauGAN teachers): architecture, model, loading.

Public API::

    from nas_prune.families.spade import SpadeArch, SpadeBlock, SpadeGenerator, build_spade_generator
    arch = cat_teacher_arch(ngf=64, num_upsampling_layers="more")     # CAT's cityscapes teacher
    g = build_spade_generator(arch)                                   # or load_generator(path).build()
    out = g(seg)                                  # seg: (N, 36, 256, 512) one-hot + instance edges
    out, feats = g.forward_with_features(seg, ["head_0", "G_middle_1", "up_1"])

Checkpoints in CAT's layout load through :func:`nas_prune.load.load_generator` like
every other generator (layout ``cat_spade``). The family registers itself as ``spade``
(:class:`SpadeFamily`); the core reaches it only through the registry.
"""

from __future__ import annotations

from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families import register_family
from nas_prune.families.base import GeneratorFamily

from nas_prune.families.spade.arch import SpadeArch, SpadeBlock, block_names, cat_teacher_arch
from nas_prune.families.spade.model import (
    SpadeGenerator,
    build_spade_generator,
    check_spade_taps,
    spade_tap_channels,
    spade_tap_names,
)
from nas_prune.families.spade.space import SpadeSpace

__all__ = [
    "SpadeArch",
    "SpadeFamily",
    "SpadeBlock",
    "SpadeGenerator",
    "SpadeSpace",
    "block_names",
    "build_spade_generator",
    "cat_teacher_arch",
    "check_spade_taps",
    "spade_tap_channels",
    "spade_tap_names",
]


@register_family
class SpadeFamily(GeneratorFamily):
    """CAT's inception SPADE generators (GauGAN teachers): semantic maps in, images out."""

    name = "spade"
    title = "CAT SPADE"
    layouts = ("cat_spade", "gaugan")
    native_layout = "cat_spade"
    layout_hint = "CAT SPADE (fc.*, head_0.*, ..., conv_img.*)"
    data_kind = "semantic"
    default_objective = "gaugan"
    sync_batchnorm = True
    arch_type = SpadeArch
    criteria = ("gamma", "l1")

    def detect_layout(self, keys):
        from nas_prune.families.spade.load import is_cat_spade, is_gaugan

        keys = list(keys)
        if is_gaugan(keys):
            return "gaugan"
        if is_cat_spade(keys):
            return "cat_spade"
        return None

    def refuse_layout(self, layout):
        from nas_prune.families.spade.load import GAUGAN_REASON

        return GAUGAN_REASON if layout == "gaugan" else None

    def load_state(self, tensors, *, path, layout, space, like, notes):
        from nas_prune.families.spade.load import infer_spade_arch, spade_state

        arch = infer_spade_arch(tensors, path, space, notes, like=like)
        if like is not None and space is None:
            notes.append(f"num_upsampling_layers {arch.num_upsampling_layers!r} and activation {arch.activation!r} "
                         "from the student's architecture")
        return arch, spade_state(dict(tensors), arch, path, notes)

    def fits_within(self, student, teacher):
        from nas_prune.families.spade.arch import spade_fits_within

        return spade_fits_within(student, teacher)

    @property
    def settings(self):  # type: ignore[override]
        from nas_prune.families.spade.arch import SETTINGS

        return SETTINGS

    def space_from_dict(self, data: Mapping[str, Any], *, source: str):
        return SpadeSpace.from_dict(data, source=source)

    def table_rows(self, arch):
        return ([("fc", str(arch.stream[0]), "fc")]
                + [(name, arch.describe_block(i), name) for i, name in enumerate(arch.block_names)]
                + [("conv_img", f"{arch.stream[-1]} -> {arch.output_nc}", "out")])

    # modules
    def build(self, arch):
        return build_spade_generator(arch)

    def module_types(self):
        return (SpadeGenerator,)

    def input_channels(self, arch):
        return arch.label_nc

    def example_input(self, arch, size, *, batch=1, generator=None):
        """One-hot label maps in blocks of 8 pixels, with an edge channel, as the generator sees them."""
        import torch

        g = generator
        h, w = size
        labels = torch.randint(0, arch.label_nc - 1 if arch.label_nc > 1 else 1, (batch, 1, h // 8, w // 8),
                               generator=g)
        labels = labels.repeat_interleave(8, 2).repeat_interleave(8, 3)
        seg = torch.zeros(batch, arch.label_nc, h, w).scatter_(1, labels, 1.0)
        if arch.label_nc > 1:
            seg[:, -1] = (torch.rand(batch, h, w, generator=g) < 0.05).float()
        return seg

    def size_multiple(self, arch):
        return arch.size_multiple

    def input_size_limits(self, arch):
        m = arch.size_multiple
        return [(m, f"a SPADE generator ({arch.num_upsampling_layers}) needs multiples of {m}")]

    def check_input_size(self, arch, size, *, option="--input-size", extra=()):
        h, w = size
        for side, why in self.input_size_limits(arch):
            if h % side or w % side:
                raise NasPruneError(f"{option} {h}x{w} does not fit this model: {why}")

    def min_input_size(self, arch):
        return arch.size_multiple, arch.size_multiple

    def trace_size(self, arch, size, *, min_side=32):
        """Every op's cost is proportional to the pixels of a grid that is a fixed fraction of
        the input (convs zero-padded), so multiples of ``arch.size_multiple`` scale exactly."""
        H, W = size
        m = arch.size_multiple
        best = (H, W, 1)
        for s in range(2, min(H, W) // m + 1):
            if H % s == 0 and W % s == 0 and (H // s) % m == 0 and (W // s) % m == 0:
                best = (H // s, W // s, s)
        return best

    def forward_bytes(self, arch, size, *, batch=1):
        h, w = size
        width = max(arch.label_nc, arch.output_nc, *arch.stream[-2:])
        return 3 * 4 * batch * h * w * width

    # taps
    def tap_names(self, arch):
        return spade_tap_names(arch)

    def check_taps(self, arch, taps):
        check_spade_taps(arch, taps)

    def default_taps(self, arch):
        """CAT's SPADE distiller's layers."""
        return ["head_0", "G_middle_1", "up_1"]

    def tap_channels(self, arch, tap):
        return spade_tap_channels(arch, tap)

    # MACs
    def layer_costs(self, arch, size, convention):
        from nas_prune.families.spade.macs import spade_costs

        return spade_costs(arch, size, convention)

    def count_params(self, arch):
        from nas_prune.families.spade.macs import spade_params

        return spade_params(arch)

    # pruning
    def prunable_layers(self, arch):
        from nas_prune.families.spade.plan import spade_prunable_layers

        return spade_prunable_layers(arch)

    def arch_from_widths(self, teacher, widths):
        from nas_prune.families.spade.plan import spade_arch_from_widths

        return spade_arch_from_widths(teacher, widths)

    def student_widths(self, student, teacher):
        from nas_prune.families.spade.plan import spade_student_widths

        return spade_student_widths(student, teacher)

    def macs_formula(self, teacher, *, input_size, convention):
        from nas_prune.families.spade.plan import SpadeMacsFormula

        return SpadeMacsFormula(teacher, input_size=input_size, convention=convention)

    def complete_widths(self, teacher, widths):
        from nas_prune.families.spade.plan import spade_complete_widths

        return spade_complete_widths(teacher, widths)

    def layer_rule(self, layer, teacher, *, min_channels, round_to):
        from nas_prune.families.spade.plan import spade_layer_rule

        return spade_layer_rule(layer, min_channels, round_to, teacher)

    def default_criterion(self, arch):
        return "gamma"

    def smallest_student_text(self, teacher, *, min_channels, round_to):
        rounded = f" rounded to {round_to}" if round_to else ""
        return (f"every branch dropped, the stream at its floor (--min-channels {min_channels} times the "
                f"granularity that keeps its segments in proportion){rounded}")

    def importance(self, criterion, arch, state_dict, *, calib=None):
        from nas_prune.families.spade.importance import spade_importance

        return spade_importance(criterion, arch, state_dict)

    def slice_state_dict(self, plan, teacher_state_dict):
        from nas_prune.families.spade.apply import spade_slice_state_dict

        return spade_slice_state_dict(plan, teacher_state_dict)
