"""Search spaces of the inception-residual family (YAML without ``family``, or ``family: inception``).

A space names the teacher's settings; :meth:`SearchSpace.teacher_arch` gives the
full-width teacher and every student of the space is an :class:`~nas_prune.arch.Arch`
that :func:`~nas_prune.arch.fits_within` it. Example (``cat_inception``)::

    name: cat_inception
    ngf: 64
    n_blocks: 9
    res_kernel_sizes: [1, 3, 5]
    dw_kernel_sizes: [1, 3, 5]
    channels_reduction_factor: 6
    norm: instance
    affine: true
    padding: reflect

Validation is strict: an unknown key or a bad value is an error naming the file and
the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import read_fields
from nas_prune.families.inception.arch import NORMS, PADDINGS, Arch, Block


_FIELDS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    # field: (type, default or ... when required)
    "name": (str, ...),
    "description": (str, ""),
    "input_nc": (int, 3),
    "output_nc": (int, 3),
    "ngf": (int, ...),
    "n_blocks": (int, ...),
    "res_kernel_sizes": (list, ...),
    "dw_kernel_sizes": (list, ...),
    "channels_reduction_factor": (int, ...),
    "norm": (str, ...),
    "affine": (bool, ...),
    "padding": (str, "reflect"),
    "dropout": ((int, float), 0.0),
}


@dataclass(frozen=True)
class SearchSpace:
    """A teacher family: settings shared by the teacher and all its students.

    Attributes:
        name: short identifier, recorded in ``arch.json``.
        ngf: base width; the stem is ngf / 2ngf / 4ngf and the head 2ngf / ngf.
        n_blocks: number of inception-residual blocks.
        res_kernel_sizes / dw_kernel_sizes: branch kernel sizes (a list may be empty).
        channels_reduction_factor: teacher branch width is ``4 * ngf // factor``.
    """

    family = "inception"

    name: str
    ngf: int
    n_blocks: int
    res_kernel_sizes: tuple[int, ...]
    dw_kernel_sizes: tuple[int, ...]
    channels_reduction_factor: int
    norm: str
    affine: bool
    padding: str = "reflect"
    input_nc: int = 3
    output_nc: int = 3
    dropout: float = 0.0
    description: str = ""

    def teacher_arch(self) -> Arch:
        """The full-width teacher of this space."""
        c = 4 * self.ngf
        m = c // self.channels_reduction_factor
        block = Block(res=tuple(m for _ in self.res_kernel_sizes), dw=tuple(m for _ in self.dw_kernel_sizes))
        return Arch(
            input_nc=self.input_nc,
            output_nc=self.output_nc,
            stem=(self.ngf, 2 * self.ngf, c),
            blocks=tuple(block for _ in range(self.n_blocks)),
            head=(2 * self.ngf, self.ngf),
            res_kernel_sizes=self.res_kernel_sizes,
            dw_kernel_sizes=self.dw_kernel_sizes,
            norm=self.norm,
            affine=self.affine,
            padding=self.padding,
            dropout=self.dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ngf": self.ngf,
            "n_blocks": self.n_blocks,
            "res_kernel_sizes": list(self.res_kernel_sizes),
            "dw_kernel_sizes": list(self.dw_kernel_sizes),
            "channels_reduction_factor": self.channels_reduction_factor,
            "norm": self.norm,
            "affine": self.affine,
            "padding": self.padding,
            "input_nc": self.input_nc,
            "output_nc": self.output_nc,
            "dropout": self.dropout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "search space") -> "SearchSpace":
        """Validate ``data`` strictly; errors read ``<source>: <field>: <problem>``."""
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{source}: expected a mapping at the top level")
        values = read_fields(data, _FIELDS, source)
        for key in ("res_kernel_sizes", "dw_kernel_sizes"):
            ks = values[key]
            if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1 for k in ks):
                raise NasPruneError(f"{source}: {key}: kernel sizes must be odd integers >= 1, got {ks}")
            if len(set(ks)) != len(ks):
                raise NasPruneError(f"{source}: {key}: duplicate kernel size in {ks}")
            values[key] = tuple(ks)
        if not values["res_kernel_sizes"] and not values["dw_kernel_sizes"]:
            raise NasPruneError(f"{source}: res_kernel_sizes: a space needs at least one branch kernel size")
        for key in ("ngf", "n_blocks", "channels_reduction_factor", "input_nc", "output_nc"):
            low = 0 if key == "n_blocks" else 1
            if values[key] < low:
                raise NasPruneError(f"{source}: {key}: must be >= {low}, got {values[key]}")
        if 4 * values["ngf"] // values["channels_reduction_factor"] < 1:
            raise NasPruneError(
                f"{source}: channels_reduction_factor: {values['channels_reduction_factor']} leaves "
                f"branches of width 0 at ngf {values['ngf']}"
            )
        if values["norm"] not in NORMS:
            raise NasPruneError(f"{source}: norm: {values['norm']!r} is not one of {', '.join(NORMS)}")
        if values["padding"] not in PADDINGS:
            raise NasPruneError(f"{source}: padding: {values['padding']!r} is not one of {', '.join(PADDINGS)}")
        if not 0.0 <= values["dropout"] < 1.0:
            raise NasPruneError(f"{source}: dropout: must be in [0, 1), got {values['dropout']}")
        values["dropout"] = float(values["dropout"])
        return cls(**values)
