"""Search spaces: YAML files describing a teacher family (shipped ones in ``nas_prune/search_spaces/``).

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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.arch import NORMS, PADDINGS, Arch, Block
from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    from nas_prune.spade.space import SpadeSpace

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


def read_fields(
    data: Mapping[str, Any], fields: Mapping[str, tuple[Any, Any]], source: str
) -> dict[str, Any]:
    """Every field of ``fields`` (``{name: (type, default or ...)}``) read from ``data``, type-checked.

    Raises:
        NasPruneError: ``<source>: <key>: unknown key`` / ``missing required key`` / ``expected <type>``.
    """
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NasPruneError(f"{source}: {unknown[0]}: unknown key (known keys: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for key, (typ, default) in fields.items():
        if key not in data:
            if default is ...:
                raise NasPruneError(f"{source}: {key}: missing required key")
            values[key] = default
            continue
        value = data[key]
        bad_bool = isinstance(value, bool) and typ is not bool
        if bad_bool or not isinstance(value, typ):
            if isinstance(typ, type):
                want = typ.__name__
            else:
                want = "list or null" if type(None) in typ else "number"
            raise NasPruneError(f"{source}: {key}: expected {want}, got {value!r}")
        values[key] = value
    return values


def load_space(path: str | os.PathLike) -> "SearchSpace | SpadeSpace":
    """Read and validate a search-space YAML file, given by path or by shipped name.

    ``path`` is a YAML file, or the name of a space shipped in ``nas_prune/search_spaces/``
    (``cat_inception``, ``resnet_9blocks``...; :func:`nas_prune.shipped.resolve_shipped`).

    ``family: spade`` files describe CAT's inception SPADE teachers
    (:class:`nas_prune.spade.space.SpadeSpace`); files without ``family`` the
    CycleGAN/pix2pix generators (:class:`SearchSpace`).

    Raises:
        NasPruneError: missing file, YAML syntax error (with line), or a bad field.
    """
    from nas_prune.fileio import read_yaml
    from nas_prune.shipped import resolve_shipped

    path, _ = resolve_shipped("search_spaces", path)
    data = read_yaml(path, what="search space")
    if isinstance(data, Mapping) and "family" in data:
        from nas_prune.spade.space import SpadeSpace

        if data["family"] == "spade":
            return SpadeSpace.from_dict(data, source=str(path))
        if data["family"] != "inception":
            raise NasPruneError(f"{path}: family: {data['family']!r} is not one of inception, spade")
        data = {k: v for k, v in data.items() if k != "family"}
    return SearchSpace.from_dict(data, source=str(path))


def shipped_spaces_dir() -> Path:
    """Folder of the search spaces shipped with nas-prune (``nas_prune/search_spaces/``)."""
    from nas_prune.shipped import shipped_dir

    return shipped_dir("search_spaces")


def shipped_space_of(arch: Arch) -> str | None:
    """Name of the shipped search space whose teacher is exactly ``arch``, else None.

    Lets a search without ``--space`` still record which space a teacher belongs to
    (``"space"`` in arch.json) when the teacher is one of the shipped ones.
    """
    folder = shipped_spaces_dir()
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            space = load_space(path)
        except NasPruneError:
            continue
        if space.teacher_arch() == arch:
            return space.name
    return None
