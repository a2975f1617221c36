"""SPADE search spaces: YAML files with ``family: spade`` (e.g. the shipped ``cat_spade_cityscapes``)::

    name: cat_spade_cityscapes
    family: spade
    ngf: 64
    label_nc: 36                      # 35 cityscapes labels + 1 instance-edge channel
    num_upsampling_layers: more       # normal | more | most
    kernel_sizes: [1, 3, 5]
    channels_reduction_factor: 6
    spade_hidden: 128                 # CAT's nhidden: modulation branches are 128 / 6 = 21 wide
    channels: null                    # CAT's --channels: one width per kernel size (/ factor) for
                                      # every block and modulation branch; null: widths above
    activation: leaky_relu            # leaky_relu (CAT's GauGAN training) | relu

Validation is strict: an unknown key or a bad value is an error naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import read_fields
from nas_prune.families.spade.arch import ACTIVATIONS, FAMILY, SPADE_NORMS, UPSAMPLING, SpadeArch, cat_teacher_arch

_FIELDS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    # field: (type, default or ... when required)
    "name": (str, ...),
    "family": (str, ...),
    "description": (str, ""),
    "ngf": (int, ...),
    "label_nc": (int, ...),
    "output_nc": (int, 3),
    "num_upsampling_layers": (str, ...),
    "kernel_sizes": (list, ...),
    "channels_reduction_factor": (int, ...),
    "spade_hidden": (int, 128),
    "channels": ((list, type(None)), None),
    "norm": (str, "batch"),
    "activation": (str, "leaky_relu"),
}


@dataclass(frozen=True)
class SpadeSpace:
    """A CAT inception SPADE teacher family (module docstring); :meth:`teacher_arch` is its teacher."""

    name: str
    family: str
    ngf: int
    label_nc: int
    num_upsampling_layers: str
    kernel_sizes: tuple[int, ...]
    channels_reduction_factor: int
    spade_hidden: int = 128
    channels: tuple[int, ...] | None = None
    output_nc: int = 3
    norm: str = "batch"
    activation: str = "leaky_relu"
    description: str = ""

    def teacher_arch(self) -> SpadeArch:
        """The full-width teacher (:func:`nas_prune.families.spade.arch.cat_teacher_arch`)."""
        return cat_teacher_arch(
            ngf=self.ngf, label_nc=self.label_nc, output_nc=self.output_nc,
            num_upsampling_layers=self.num_upsampling_layers, kernel_sizes=self.kernel_sizes,
            channels_reduction_factor=self.channels_reduction_factor, spade_hidden=self.spade_hidden,
            channels=self.channels, activation=self.activation,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "description"}
        out["kernel_sizes"] = list(self.kernel_sizes)
        out["channels"] = None if self.channels is None else list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "search space") -> "SpadeSpace":
        """Validate ``data`` strictly; errors read ``<source>: <field>: <problem>``."""
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{source}: expected a mapping at the top level")
        values = read_fields(data, _FIELDS, source)
        if values["family"] != FAMILY:
            raise NasPruneError(f"{source}: family: expected {FAMILY!r}, got {values['family']!r}")
        ks = values["kernel_sizes"]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1 for k in ks):
            raise NasPruneError(f"{source}: kernel_sizes: expected odd integers >= 1, got {ks}")
        if len(set(ks)) != len(ks):
            raise NasPruneError(f"{source}: kernel_sizes: duplicate kernel size in {ks}")
        values["kernel_sizes"] = tuple(ks)
        ch = values["channels"]
        if ch is not None:
            if len(ch) != len(ks) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in ch):
                raise NasPruneError(f"{source}: channels: expected one integer >= 0 per kernel size {list(ks)}, got {ch}")
            values["channels"] = tuple(ch)
        for key in ("ngf", "label_nc", "output_nc", "channels_reduction_factor", "spade_hidden"):
            if values[key] < 1:
                raise NasPruneError(f"{source}: {key}: must be >= 1, got {values[key]}")
        for key, choices in (("num_upsampling_layers", tuple(UPSAMPLING)), ("norm", SPADE_NORMS),
                             ("activation", ACTIVATIONS)):
            if values[key] not in choices:
                raise NasPruneError(f"{source}: {key}: {values[key]!r} is not one of {', '.join(choices)}")
        if values["num_upsampling_layers"] == "most" and values["ngf"] % 2:
            raise NasPruneError(f"{source}: ngf: must be even for num_upsampling_layers 'most' (up_4 has ngf / 2)")
        return cls(**values)
