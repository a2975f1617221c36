"""U-Net search spaces: YAML files with ``family: unet`` (the shipped ``unet_256``)::

    name: unet_256
    family: unet
    ngf: 64
    num_downs: 8
    norm: batch
    affine: true
    track_running_stats: true
    dropout: true

The teacher is pix2pix's ``UnetGenerator(input_nc, output_nc, num_downs, ngf, norm, use_dropout)``
(:func:`nas_prune.families.unet.arch.teacher_arch`); every student has its settings and no
wider level. Unknown keys and bad values are errors naming the field and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import read_fields
from nas_prune.families.unet.arch import FAMILY, NORMS, UnetArch, teacher_arch

_FIELDS: dict[str, tuple[Any, Any]] = {
    "name": (str, ...),
    "family": (str, ...),
    "description": (str, ""),
    "input_nc": (int, 3),
    "output_nc": (int, 3),
    "ngf": (int, ...),
    "num_downs": (int, ...),
    "norm": (str, ...),
    "affine": (bool, ...),
    "track_running_stats": (bool, ...),
    "dropout": (bool, ...),
}


@dataclass(frozen=True)
class UnetSpace:
    """A pix2pix U-Net teacher and its students (module docstring)."""

    name: str
    family: str
    ngf: int
    num_downs: int
    norm: str
    affine: bool
    track_running_stats: bool
    dropout: bool
    input_nc: int = 3
    output_nc: int = 3
    description: str = ""

    def teacher_arch(self) -> UnetArch:
        """The full-width teacher of this space."""
        return teacher_arch(ngf=self.ngf, num_downs=self.num_downs, input_nc=self.input_nc,
                            output_nc=self.output_nc, norm=self.norm, affine=self.affine,
                            track_running_stats=self.track_running_stats, dropout=self.dropout,
                            space=self.name)

    def to_dict(self) -> dict[str, Any]:
        """The YAML document's fields."""
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "search space") -> "UnetSpace":
        """Validate a YAML document (module docstring).

        Raises:
            NasPruneError: ``<source>: <field>: ...`` for the first bad, missing or unknown field.
        """
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{source}: expected a mapping of fields")
        v = read_fields(data, _FIELDS, source)
        if v["family"] != FAMILY:
            raise NasPruneError(f"{source}: family: expected {FAMILY!r}, got {v['family']!r}")
        for key in ("input_nc", "output_nc", "ngf"):
            if v[key] < 1:
                raise NasPruneError(f"{source}: {key}: must be >= 1, got {v[key]}")
        if v["num_downs"] < 2:
            raise NasPruneError(f"{source}: num_downs: a U-Net needs at least 2 levels, got {v['num_downs']}")
        if v["norm"] not in NORMS:
            raise NasPruneError(f"{source}: norm: expected one of {', '.join(NORMS)}, got {v['norm']!r}")
        if v["norm"] == "batch" and not v["track_running_stats"]:
            raise NasPruneError(f"{source}: track_running_stats: batch norm keeps running statistics")
        return cls(**v)
