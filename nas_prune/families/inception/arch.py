"""Architectures of the inception-residual search space, as plain data.

An :class:`Arch` gives every width of a generator: the three stem convs, each
block's branch widths by kernel size, the two up-sampling ConvTransposes, plus
the norm, padding and in/out channels. It is all :func:`nas_prune.model.build_generator`
needs, and it serialises to the ``arch`` section of ``arch.json``.

Layout (CAT, CVPR 2021)::

    stem:  pad3 conv7x7 (in -> stem[0]), conv3x3/2 (-> stem[1]), conv3x3/2 (-> stem[2])
    block: x + norm( sum_k res_k(x) + sum_k dw_k(x) )      x has stem[2] channels
           res_k: conv kxk (C -> m) norm relu dropout conv kxk (m -> C)
           dw_k:  conv 1x1 (C -> m) norm relu dwconv kxk (m) norm relu dropout conv 1x1 (m -> C)
    head:  convT3x3/2 (-> head[0]), convT3x3/2 (-> head[1]), pad3 conv7x7 (-> out), tanh

A branch of width 0 does not exist; a block without branches is the identity.

``Arch.to_dict`` has no ``family`` field, as in every ``arch.json`` written so far: the
core reads a document without one as this family (:func:`nas_prune.arch.arch_from_dict`);
:meth:`Arch.from_dict` also accepts ``"family": "inception"``, and hands a document of
another family to that family's reader, as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_fields, int_list

FAMILY = "inception"
NORMS = ("instance", "batch")
PADDINGS = ("reflect", "replicate", "zero")


@dataclass(frozen=True)
class Block:
    """Branch widths of one inception-residual block.

    Attributes:
        res: width of the res branch for each of ``Arch.res_kernel_sizes`` (0 = absent).
        dw: width of the dw branch for each of ``Arch.dw_kernel_sizes`` (0 = absent).
    """

    res: tuple[int, ...]
    dw: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        """True when every branch has width 0, so the block returns its input."""
        return not any(self.res) and not any(self.dw)


@dataclass(frozen=True)
class Arch:
    """Every width of a generator in the space (see the module docstring for the layout).

    Attributes:
        input_nc: image channels in.
        output_nc: image channels out.
        stem: output widths of the 7x7 conv and the two stride-2 convs; ``stem[2]``
            is the residual-stream width that every block reads and writes.
        blocks: one :class:`Block` per inception-residual block.
        head: output widths of the two ConvTranspose layers.
        res_kernel_sizes: kernel size of each res branch slot, in module order.
        dw_kernel_sizes: kernel size of each dw branch slot, in module order.
        norm: ``"instance"`` (no running stats, CycleGAN teachers) or ``"batch"``
            (running stats, pix2pix teachers).
        affine: whether norms have gamma/beta.
        padding: padding of the 7x7 convs and of branch convs.
        dropout: dropout rate inside branches (training only).
    """

    input_nc: int
    output_nc: int
    stem: tuple[int, int, int]
    blocks: tuple[Block, ...]
    head: tuple[int, int]
    res_kernel_sizes: tuple[int, ...] = (1, 3, 5)
    dw_kernel_sizes: tuple[int, ...] = (1, 3, 5)
    norm: str = "instance"
    affine: bool = True
    padding: str = "reflect"
    dropout: float = 0.0

    family = FAMILY

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise NasPruneError(f"invalid architecture: {problems[0]}")

    @property
    def stream(self) -> int:
        """Residual-stream width (``stem[2]``)."""
        return self.stem[2]

    @property
    def use_bias(self) -> bool:
        """Convs carry a bias with instance norm and none with batch norm (as in CAT)."""
        return self.norm == "instance"

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def with_widths(
        self,
        *,
        stem: Iterable[int] | None = None,
        blocks: Iterable[Block] | None = None,
        head: Iterable[int] | None = None,
    ) -> "Arch":
        """Same space and settings, other widths."""
        return replace(
            self,
            stem=tuple(stem) if stem is not None else self.stem,
            blocks=tuple(blocks) if blocks is not None else self.blocks,
            head=tuple(head) if head is not None else self.head,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        return {
            "input_nc": self.input_nc,
            "output_nc": self.output_nc,
            "norm": self.norm,
            "affine": self.affine,
            "padding": self.padding,
            "dropout": self.dropout,
            "res_kernel_sizes": list(self.res_kernel_sizes),
            "dw_kernel_sizes": list(self.dw_kernel_sizes),
            "stem": list(self.stem),
            "blocks": [{"res": list(b.res), "dw": list(b.dw)} for b in self.blocks],
            "head": list(self.head),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "arch") -> "Arch":
        """Validate and build an Arch from :meth:`to_dict` output.

        Raises:
            NasPruneError: naming the first bad or unknown field, e.g. ``arch.blocks[3].res``.
        """
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{where}: expected an object, got {type(data).__name__}")
        if "family" in data:  # optional: absent means this family ("inception")
            if data["family"] != FAMILY:  # another family's document: its own reader (historical behaviour)
                from nas_prune.families import get_family

                if not isinstance(data["family"], str):
                    raise NasPruneError(f"{where}.family: expected a family name, got {data['family']!r}")
                try:
                    family = get_family(data["family"])
                except NasPruneError as err:
                    raise NasPruneError(f"{where}.family: {err}") from None
                return family.arch_from_dict(data, where=where)
            data = {k: v for k, v in data.items() if k != "family"}
        known = {
            "input_nc", "output_nc", "norm", "affine", "padding", "dropout",
            "res_kernel_sizes", "dw_kernel_sizes", "stem", "blocks", "head",
        }
        check_fields(data, where, known, known - {"dropout"})

        def ints(key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
            return int_list(where, key, value, length)

        res_ks = ints("res_kernel_sizes", data["res_kernel_sizes"])
        dw_ks = ints("dw_kernel_sizes", data["dw_kernel_sizes"])
        blocks_raw = data["blocks"]
        if not isinstance(blocks_raw, list):
            raise NasPruneError(f"{where}.blocks: expected a list")
        blocks = []
        for i, b in enumerate(blocks_raw):
            if not isinstance(b, Mapping) or set(b) != {"res", "dw"}:
                raise NasPruneError(f"{where}.blocks[{i}]: expected an object with 'res' and 'dw'")
            blocks.append(
                Block(
                    res=ints(f"blocks[{i}].res", b["res"], len(res_ks)),
                    dw=ints(f"blocks[{i}].dw", b["dw"], len(dw_ks)),
                )
            )
        for key in ("input_nc", "output_nc"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise NasPruneError(f"{where}.{key}: expected an integer")
        if not isinstance(data["affine"], bool):
            raise NasPruneError(f"{where}.affine: expected true or false")
        dropout = data.get("dropout", 0.0)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
            raise NasPruneError(f"{where}.dropout: expected a number")
        try:
            return cls(
                input_nc=data["input_nc"],
                output_nc=data["output_nc"],
                stem=ints("stem", data["stem"], 3),
                blocks=tuple(blocks),
                head=ints("head", data["head"], 2),
                res_kernel_sizes=res_ks,
                dw_kernel_sizes=dw_ks,
                norm=data["norm"],
                affine=data["affine"],
                padding=data["padding"],
                dropout=float(dropout),
            )
        except NasPruneError as err:
            raise NasPruneError(f"{where}: {str(err).removeprefix('invalid architecture: ')}") from None

    def summary(self) -> str:
        """One-line human description, e.g. ``stem 64/128/256 | 9 blocks (2 identity) | head 128/64``."""
        n_id = sum(b.is_identity for b in self.blocks)
        return (
            f"stem {'/'.join(map(str, self.stem))} | {self.n_blocks} blocks"
            f"{f' ({n_id} identity)' if n_id else ''} | head {'/'.join(map(str, self.head))}"
        )


def _problems(arch: Arch) -> Iterable[str]:
    """Yield a message for each invariant that ``arch`` breaks (first one is reported)."""
    if arch.norm not in NORMS:
        yield f"norm: {arch.norm!r} is not one of {', '.join(NORMS)}"
    if arch.padding not in PADDINGS:
        yield f"padding: {arch.padding!r} is not one of {', '.join(PADDINGS)}"
    if not 0.0 <= float(arch.dropout) < 1.0:
        yield f"dropout: {arch.dropout} is not in [0, 1)"
    for name in ("input_nc", "output_nc"):
        if getattr(arch, name) < 1:
            yield f"{name}: must be >= 1"
    if len(arch.stem) != 3 or any(w < 1 for w in arch.stem):
        yield f"stem: expected 3 widths >= 1, got {list(arch.stem)}"
    if len(arch.head) != 2 or any(w < 1 for w in arch.head):
        yield f"head: expected 2 widths >= 1, got {list(arch.head)}"
    for name in ("res_kernel_sizes", "dw_kernel_sizes"):
        ks = getattr(arch, name)
        if len(set(ks)) != len(ks):
            yield f"{name}: duplicate kernel size in {list(ks)}"
        if any(k < 1 or k % 2 == 0 for k in ks):
            yield f"{name}: kernel sizes must be odd and >= 1, got {list(ks)}"
    for i, b in enumerate(arch.blocks):
        if len(b.res) != len(arch.res_kernel_sizes):
            yield f"blocks[{i}].res: expected {len(arch.res_kernel_sizes)} widths, got {len(b.res)}"
        if len(b.dw) != len(arch.dw_kernel_sizes):
            yield f"blocks[{i}].dw: expected {len(arch.dw_kernel_sizes)} widths, got {len(b.dw)}"
        if any(w < 0 for w in (*b.res, *b.dw)):
            yield f"blocks[{i}]: widths must be >= 0"


#: The settings of an :class:`Arch` that are not widths: a student has its teacher's.
SETTINGS = ("input_nc", "output_nc", "res_kernel_sizes", "dw_kernel_sizes", "norm", "affine", "padding")


def fits_within(student: Arch, teacher: Arch) -> str | None:
    """Return why ``student`` is not a sub-network of ``teacher``, or None if it is.

    A student of a teacher's space has the same settings (in/out channels, kernel
    sizes, norm, padding, block count) and no width larger than the teacher's.
    """
    for name in SETTINGS:
        if getattr(student, name) != getattr(teacher, name):
            return f"{name} is {getattr(student, name)!r}, the teacher's is {getattr(teacher, name)!r}"
    if student.n_blocks != teacher.n_blocks:
        return f"{student.n_blocks} blocks, the teacher has {teacher.n_blocks}"
    for name in ("stem", "head"):
        for i, (s, t) in enumerate(zip(getattr(student, name), getattr(teacher, name))):
            if s > t:
                return f"{name}[{i}] is {s}, wider than the teacher's {t}"
    for i, (sb, tb) in enumerate(zip(student.blocks, teacher.blocks)):
        for kind in ("res", "dw"):
            for j, (s, t) in enumerate(zip(getattr(sb, kind), getattr(tb, kind))):
                if s > t:
                    return f"blocks[{i}].{kind}[{j}] is {s}, wider than the teacher's {t}"
    return None
