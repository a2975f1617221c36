"""Architectures of pix2pix's U-Net generator, as plain data.

A :class:`UnetArch` gives every width of a ``UnetGenerator`` of pytorch-CycleGAN-and-pix2pix
(its default pix2pix generator, ``--netG unet_256`` / ``unet_128``) or of any student pruned
from one; it is all :func:`nas_prune.families.unet.model.build_unet` needs and serialises to
the ``arch`` section of ``arch.json`` with ``"family": "unet"``.

Levels are numbered from the outside in: level 0 reads the image, level ``n - 1`` (the
innermost) is the bottleneck. With ``x_0`` the input image and ``x_{I+1}`` the output of level
I's down path (``down[I]`` channels at ``H / 2**(I+1)``)::

    level 0 (outermost)  down: conv4x4 s2 (input_nc -> down[0])                      no norm
                         up:   ReLU, convT4x4 s2 (down[0] + up[1] -> output_nc, bias), Tanh
    level I (middle)     down: LeakyReLU(0.2), conv4x4 s2 (down[I-1] -> down[I]), norm
                         up:   ReLU, convT4x4 s2 (down[I] + up[I+1] -> up[I]), norm [, Dropout(0.5)]
                         returns cat([x_I, up path], 1)
    level n-1 (inner)    down: LeakyReLU(0.2), conv4x4 s2 (down[n-2] -> down[n-1])  no norm
                         up:   ReLU, convT4x4 s2 (down[n-1] -> up[n-1]), norm
                         returns cat([x_{n-1}, up path], 1)

so level I's ConvTranspose reads the concatenation of level I+1's input (``down[I]`` channels)
and level I+1's up output (``up[I+1]`` channels). In the teacher ``up[I] = down[I-1]`` and the
widths are ngf, 2ngf, 4ngf, then 8ngf (``unet_256``: 8 levels, ``unet_128``: 7). Convs have a
bias only with instance norm (the outermost ConvTranspose always has one). Dropout follows the
up norm of the levels in ``dropout_levels`` (pix2pix: the 8ngf middle levels 4 .. n-2 when
``use_dropout``); it does not change any key, so checkpoints cannot show it.

``up`` is indexed by level minus one: ``up[0]`` is level 1's width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterable, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_fields, int_list

FAMILY = "unet"
NORMS = ("batch", "instance")
#: The settings of a :class:`UnetArch` that are not widths: a student has its teacher's.
SETTINGS = ("input_nc", "output_nc", "num_downs", "norm", "affine", "track_running_stats", "dropout_levels")


def pix2pix_dropout_levels(num_downs: int) -> tuple[int, ...]:
    """Levels with Dropout in pix2pix's ``UnetGenerator(use_dropout=True)``: the 8ngf middle
    levels built in its loop, 4 .. num_downs - 2 (none below 6 levels)."""
    return tuple(range(4, num_downs - 1))


def teacher_widths(ngf: int, num_downs: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(down, up)`` of pix2pix's U-Net: down ngf, 2ngf, 4ngf, 8ngf, ...; ``up[I-1] = down[I-1]``."""
    down = tuple(ngf * min(2 ** i, 8) for i in range(num_downs))
    return down, down[:-1]


@dataclass(frozen=True)
class UnetArch:
    """Every width and setting of one U-Net generator (module docstring).

    Attributes:
        input_nc / output_nc: image channels in and out (fixed by pruning).
        down: output channels of each level's down conv, level 0 .. n-1 (n = ``num_downs``).
        up: output channels of each level's ConvTranspose, levels 1 .. n-1 (level 0 writes
            the ``output_nc`` image).
        norm: ``batch`` or ``instance``.
        affine: the norms have weight and bias (gamma, beta).
        track_running_stats: the norms keep running statistics and use them in eval mode
            (always for batch norm; instance norm only when built so).
        dropout_levels: levels whose up path ends with Dropout(0.5) (middle levels only).
        space: the search space the arch belongs to ("" when unknown).
    """

    family: ClassVar[str] = FAMILY

    input_nc: int
    output_nc: int
    down: tuple[int, ...]
    up: tuple[int, ...]
    norm: str = "batch"
    affine: bool = True
    track_running_stats: bool = True
    dropout_levels: tuple[int, ...] = ()
    space: str = ""

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise NasPruneError(f"arch: {problem}")

    @property
    def num_downs(self) -> int:
        """Number of levels (stride-2 downsamplings)."""
        return len(self.down)

    @property
    def use_bias(self) -> bool:
        """Convs (and every ConvTranspose but the outermost) have a bias: pix2pix's ``use_bias``."""
        return self.norm == "instance"

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of ``2 ** num_downs`` (each level halves, then doubles back)."""
        return 2 ** self.num_downs

    def up_width(self, level: int) -> int:
        """Output channels of level ``level``'s ConvTranspose (``output_nc`` for level 0)."""
        return self.output_nc if level == 0 else self.up[level - 1]

    def down_in(self, level: int) -> int:
        """Input channels of level ``level``'s down conv."""
        return self.input_nc if level == 0 else self.down[level - 1]

    def up_in(self, level: int) -> int:
        """Input channels of level ``level``'s ConvTranspose: down[I] + up[I+1] (down[n-1] innermost)."""
        if level == self.num_downs - 1:
            return self.down[level]
        return self.down[level] + self.up[level]

    def has_down_norm(self, level: int) -> bool:
        """Middle levels only: the outermost and innermost down convs have no norm."""
        return 0 < level < self.num_downs - 1

    def with_widths(self, down: Iterable[int], up: Iterable[int]) -> "UnetArch":
        """This arch with other widths (same settings)."""
        return replace(self, down=tuple(down), up=tuple(up))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``family: unet``); :meth:`from_dict` inverts it."""
        return {
            "family": FAMILY,
            "space": self.space,
            "input_nc": self.input_nc,
            "output_nc": self.output_nc,
            "down": list(self.down),
            "up": list(self.up),
            "norm": self.norm,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dropout_levels": list(self.dropout_levels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "arch") -> "UnetArch":
        """Validate an ``arch`` section and build the arch.

        Raises:
            NasPruneError: naming the first bad, missing or unknown field (``arch.down``).
        """
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{where}: expected a mapping")
        known = {"family", "space", "input_nc", "output_nc", "down", "up", "norm", "affine",
                 "track_running_stats", "dropout_levels"}
        check_fields(data, where, known, known - {"space", "family"})
        if data.get("family", FAMILY) != FAMILY:
            raise NasPruneError(f"{where}.family: expected {FAMILY!r}, got {data.get('family')!r}")
        for key in ("input_nc", "output_nc"):
            v = data[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NasPruneError(f"{where}.{key}: expected a positive integer, got {v!r}")
        for key in ("affine", "track_running_stats"):
            if not isinstance(data[key], bool):
                raise NasPruneError(f"{where}.{key}: expected true or false, got {data[key]!r}")
        if data["norm"] not in NORMS:
            raise NasPruneError(f"{where}.norm: expected one of {', '.join(NORMS)}, got {data['norm']!r}")
        space = data.get("space", "")
        if not isinstance(space, str):
            raise NasPruneError(f"{where}.space: expected a string, got {space!r}")
        down = int_list(where, "down", data["down"])
        up = int_list(where, "up", data["up"])
        drop = int_list(where, "dropout_levels", data["dropout_levels"])
        values = dict(input_nc=data["input_nc"], output_nc=data["output_nc"], down=down, up=up,
                      norm=data["norm"], affine=data["affine"],
                      track_running_stats=data["track_running_stats"], dropout_levels=drop, space=space)
        arch = object.__new__(cls)
        for k, v in values.items():
            object.__setattr__(arch, k, v)
        for problem in _problems(arch):
            field = problem.split(":")[0]
            raise NasPruneError(f"{where}.{field}" + problem[len(field):])
        return arch

    def summary(self) -> str:
        """One line: levels, widths, norm, dropout."""
        norm = self.norm + (" norm" if self.affine else " norm (no affine)")
        if self.norm == "instance" and self.track_running_stats:
            norm += " with running stats"
        drop = f"dropout at {','.join(map(str, self.dropout_levels))}" if self.dropout_levels else "no dropout"
        return (f"U-Net {self.num_downs} levels | down {'/'.join(map(str, self.down))} | "
                f"up {'/'.join(map(str, self.up))} | {norm} | {drop}")


def _problems(arch: UnetArch) -> Iterable[str]:
    """Each problem as ``field: message`` (the first is raised)."""
    n = len(arch.down)
    if n < 2:
        yield f"down: a U-Net needs at least 2 levels, got {n}"
    if any(w < 1 for w in arch.down):
        yield "down: every width must be >= 1"
    if len(arch.up) != max(n - 1, 0):
        yield f"up: expected {max(n - 1, 0)} widths (levels 1 .. {n - 1}), got {len(arch.up)}"
    if any(w < 1 for w in arch.up):
        yield "up: every width must be >= 1"
    if arch.norm not in NORMS:
        yield f"norm: expected one of {', '.join(NORMS)}, got {arch.norm!r}"
    if arch.norm == "batch" and not arch.track_running_stats:
        yield "track_running_stats: batch norm keeps running statistics (pix2pix's BatchNorm2d)"
    bad = [lv for lv in arch.dropout_levels if not 0 < lv < n - 1]
    if bad:
        yield f"dropout_levels: level {bad[0]} is not a middle level (1 .. {n - 2})"
    if list(arch.dropout_levels) != sorted(set(arch.dropout_levels)):
        yield "dropout_levels: expected ascending levels without repeats"


def teacher_arch(*, ngf: int = 64, num_downs: int = 8, input_nc: int = 3, output_nc: int = 3,
                 norm: str = "batch", affine: bool = True, track_running_stats: bool = True,
                 dropout: bool = True, space: str = "") -> UnetArch:
    """pix2pix's ``UnetGenerator(input_nc, output_nc, num_downs, ngf, norm, use_dropout)``."""
    down, up = teacher_widths(ngf, num_downs)
    return UnetArch(input_nc=input_nc, output_nc=output_nc, down=down, up=up, norm=norm, affine=affine,
                    track_running_stats=track_running_stats,
                    dropout_levels=pix2pix_dropout_levels(num_downs) if dropout else (), space=space)


def settings_differ(a: UnetArch, b: UnetArch) -> tuple[str, Any, Any] | None:
    """The first setting (:data:`SETTINGS`) where ``a`` and ``b`` differ, as ``(name, a's, b's)``."""
    for name in SETTINGS:
        x = a.num_downs if name == "num_downs" else getattr(a, name)
        y = b.num_downs if name == "num_downs" else getattr(b, name)
        if x != y:
            return name, x, y
    return None


def unet_fits_within(student: UnetArch, teacher: UnetArch) -> str | None:
    """Why ``student`` is not a sub-network of ``teacher``, or None."""
    diff = settings_differ(student, teacher)
    if diff:
        return f"{diff[0]} is {diff[1]!r}, the teacher's is {diff[2]!r}"
    for i, (s, t) in enumerate(zip(student.down, teacher.down)):
        if s > t:
            return f"down.{i} has {s} channels, the teacher's {t}"
    for i, (s, t) in enumerate(zip(student.up, teacher.up), start=1):
        if s > t:
            return f"up.{i} has {s} channels, the teacher's {t}"
    return None
