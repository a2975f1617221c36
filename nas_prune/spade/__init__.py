"""CAT's inception SPADE generator (GauGAN teachers): architecture, model, loading.

Public API::

    from nas_prune.spade import SpadeArch, SpadeBlock, SpadeGenerator, build_spade_generator
    arch = cat_teacher_arch(ngf=64, num_upsampling_layers="more")     # CAT's cityscapes teacher
    g = build_spade_generator(arch)                                   # or load_generator(path).build()
    out = g(seg)                                  # seg: (N, 36, 256, 512) one-hot + instance edges
    out, feats = g.forward_with_features(seg, ["head_0", "G_middle_1", "up_1"])

Checkpoints in CAT's layout load through :func:`nas_prune.load.load_generator` like
every other generator (layout ``cat_spade``).
"""

from nas_prune.spade.arch import SpadeArch, SpadeBlock, block_names, cat_teacher_arch
from nas_prune.spade.model import (
    SpadeGenerator,
    build_spade_generator,
    check_spade_taps,
    spade_tap_channels,
    spade_tap_names,
)
from nas_prune.spade.space import SpadeSpace

__all__ = [
    "SpadeArch",
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
