"""Architectures of CAT's inception SPADE generator (GauGAN teachers), as plain data.

A :class:`SpadeArch` gives every width of the generator; it is all
:func:`nas_prune.families.spade.model.build_spade_generator` needs, and it serialises to the
``arch`` section of ``arch.json`` with ``"family": "spade"`` (documents without a
``family`` field are the CycleGAN/pix2pix generators of :mod:`nas_prune.arch`).

Layout (CAT, CVPR 2021: ``InceptionSPADEGenerator``; widths of the ngf 64 teacher)::

    seg (N, label_nc, H, W)                     one-hot labels + instance edges (36 for cityscapes)
    fc       nearest-resize seg to the latent grid (H / 2**n, W / 2**n), conv3x3 (-> stream[0]), BN
    head_0   block at the latent grid                                   1024 -> 1024
    up       2x nearest
    G_middle_0                                                          1024 -> 1024
    (up)     only for num_upsampling_layers "more" / "most"
    G_middle_1                                                          1024 -> 1024
    up, up_0 .. up, up_3 (.. up, up_4 for "most")                 1024 -> 512 -> 256 -> 128 -> 64 (-> 32)
    out      leaky_relu(0.2), conv3x3 (-> output_nc), tanh

``n`` (the number of 2x upsamplings) is 5, 6 or 7 for ``normal`` / ``more`` / ``most``.
Block ``i`` reads ``stream[i]`` channels and writes ``stream[i + 1]``::

    block(x, seg) = shortcut(x) + sum_k res_k(h) + sum_k dw_k(h),   h = act(spade(x, seg))
    shortcut: BN (affine) -> conv1x1 (fin -> fout, no bias) when fin != fout, else the identity
    res_k:    conv kxk (fin -> m) BN act conv kxk (m -> fout)
    dw_k:     conv1x1 (fin -> m) BN act dwconv kxk (m) BN(no affine) act conv1x1 (m -> fout)
    spade(x, seg) = BN_no_affine(x) * (1 + gamma) + beta,  [gamma, beta] = sum_k sres_k(s) + sum_k sdw_k(s)
    s = seg resized (nearest) to x's size
    sres_k:   conv kxk (label_nc -> h) BN relu conv kxk (h -> 2 fin)
    sdw_k:    conv1x1 (label_nc -> h) BN relu dwconv kxk (h) BN relu conv1x1 (h -> 2 fin)

Branch widths are ``min(fin, fout) / 6`` in the blocks and ``128 / 6`` in the modulation
networks of CAT's teacher. A branch of width 0 does not exist. A block without res/dw
branches returns ``shortcut(x)`` and never runs its modulation network, so such a block
has none (its ``spade_*`` widths must be 0). A modulation network without branches gives
``gamma = beta = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from nas_prune.errors import NasPruneError

FAMILY = "spade"
UPSAMPLING = {"normal": 5, "more": 6, "most": 7}
ACTIVATIONS = ("leaky_relu", "relu")
SPADE_NORMS = ("batch",)
BRANCH_KINDS = ("res", "dw", "spade_res", "spade_dw")
#: The settings of a :class:`SpadeArch` that are not widths: a student has its teacher's.
SETTINGS = ("label_nc", "output_nc", "num_upsampling_layers", "kernel_sizes", "norm", "activation")


def block_names(num_upsampling_layers: str) -> tuple[str, ...]:
    """CAT's block names in forward order: head_0, G_middle_0/1, up_0..up_3 (+ up_4 for ``most``)."""
    ups = 5 if num_upsampling_layers == "most" else 4
    return ("head_0", "G_middle_0", "G_middle_1", *(f"up_{i}" for i in range(ups)))


@dataclass(frozen=True)
class SpadeBlock:
    """Branch widths of one SPADE inception-residual block, per kernel-size slot.

    Attributes:
        res / dw: widths of the block's res and dw branches (0 = absent).
        spade_res / spade_dw: widths of the modulation network's res and dw branches.
    """

    res: tuple[int, ...]
    dw: tuple[int, ...]
    spade_res: tuple[int, ...]
    spade_dw: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        """True when the block has no res/dw branch: it returns ``shortcut(x)`` (or ``x``)."""
        return not any(self.res) and not any(self.dw)

    @property
    def has_modulation(self) -> bool:
        """True when the modulation network has a branch (else gamma = beta = 0)."""
        return any(self.spade_res) or any(self.spade_dw)

    def widths(self, kind: str) -> tuple[int, ...]:
        return getattr(self, kind)


@dataclass(frozen=True)
class SpadeArch:
    """Every width of an inception SPADE generator (module docstring gives the layout).

    Attributes:
        label_nc: semantic-map channels in (labels + instance edges; 36 for cityscapes).
        output_nc: image channels out.
        num_upsampling_layers: ``normal`` / ``more`` / ``most`` (5 / 6 / 7 upsamplings).
        stream: ``stream[0]`` is the width of ``fc``; ``stream[i + 1]`` the output width
            of block ``i``. A block with ``stream[i] != stream[i + 1]`` has a learned shortcut.
        blocks: one :class:`SpadeBlock` per block, in :func:`block_names` order.
        kernel_sizes: kernel size of each branch slot (res, dw and both modulation kinds).
        norm: the param-free norm (``batch``; CAT's sync batch norm is batch norm at inference).
        activation: the blocks' activation, ``leaky_relu`` (slope 0.01, CAT's GauGAN training
            default) or ``relu``; the modulation networks always use ReLU.
    """

    label_nc: int
    output_nc: int
    num_upsampling_layers: str
    stream: tuple[int, ...]
    blocks: tuple[SpadeBlock, ...]
    kernel_sizes: tuple[int, ...] = (1, 3, 5)
    norm: str = "batch"
    activation: str = "leaky_relu"

    family = FAMILY

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise NasPruneError(f"invalid architecture: {problems[0]}")

    @property
    def input_nc(self) -> int:
        """Input channels (the semantic map's ``label_nc``), as generic code asks for it."""
        return self.label_nc

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_upsampling(self) -> int:
        """Number of 2x upsamplings from the latent grid to the output (5, 6 or 7)."""
        return UPSAMPLING[self.num_upsampling_layers]

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2 ** n_upsampling``)."""
        return 2 ** self.n_upsampling

    @property
    def block_names(self) -> tuple[str, ...]:
        return block_names(self.num_upsampling_layers)

    def fin(self, i: int) -> int:
        return self.stream[i]

    def fout(self, i: int) -> int:
        return self.stream[i + 1]

    def block_scales(self) -> tuple[int, ...]:
        """Per block, its resolution as a multiple of the latent grid (1, 2, 2 or 4, ...)."""
        scales, s = [], 1
        for name in self.block_names:
            if name == "G_middle_0" or name.startswith("up_"):
                s *= 2
            elif name == "G_middle_1" and self.num_upsampling_layers != "normal":
                s *= 2
            scales.append(s)
        return tuple(scales)

    def upsampled_before(self, i: int) -> bool:
        """Whether a 2x upsampling runs just before block ``i``."""
        scales = self.block_scales()
        return i > 0 and scales[i] != scales[i - 1]

    def with_widths(
        self, *, stream: Iterable[int] | None = None, blocks: Iterable[SpadeBlock] | None = None
    ) -> "SpadeArch":
        """Same settings, other widths."""
        return replace(
            self,
            stream=tuple(stream) if stream is not None else self.stream,
            blocks=tuple(blocks) if blocks is not None else self.blocks,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        return {
            "family": FAMILY,
            "label_nc": self.label_nc,
            "output_nc": self.output_nc,
            "num_upsampling_layers": self.num_upsampling_layers,
            "norm": self.norm,
            "activation": self.activation,
            "kernel_sizes": list(self.kernel_sizes),
            "stream": list(self.stream),
            "blocks": [
                {"name": name, **{kind: list(b.widths(kind)) for kind in BRANCH_KINDS}}
                for name, b in zip(self.block_names, self.blocks)
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "arch") -> "SpadeArch":
        """Validate and build from :meth:`to_dict` output.

        Raises:
            NasPruneError: naming the first bad or unknown field, e.g. ``arch.blocks[3].spade_dw``.
        """
        if not isinstance(data, Mapping):
            raise NasPruneError(f"{where}: expected an object, got {type(data).__name__}")
        from nas_prune.families.common import check_fields, int_list

        known = {"family", "label_nc", "output_nc", "num_upsampling_layers", "norm", "activation",
                 "kernel_sizes", "stream", "blocks"}
        check_fields(data, where, known, known)
        if data["family"] != FAMILY:
            raise NasPruneError(f"{where}.family: expected {FAMILY!r}, got {data['family']!r}")

        def ints(key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
            return int_list(where, key, value, length)

        for key in ("label_nc", "output_nc"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise NasPruneError(f"{where}.{key}: expected an integer")
        for key, choices in (("num_upsampling_layers", tuple(UPSAMPLING)), ("norm", SPADE_NORMS),
                             ("activation", ACTIVATIONS)):
            if data[key] not in choices:
                raise NasPruneError(f"{where}.{key}: {data[key]!r} is not one of {', '.join(choices)}")
        ks = ints("kernel_sizes", data["kernel_sizes"])
        names = block_names(data["num_upsampling_layers"])
        raw = data["blocks"]
        if not isinstance(raw, list) or len(raw) != len(names):
            raise NasPruneError(
                f"{where}.blocks: expected a list of {len(names)} blocks ({', '.join(names)}) for "
                f"num_upsampling_layers {data['num_upsampling_layers']!r}"
            )
        blocks = []
        for i, b in enumerate(raw):
            if not isinstance(b, Mapping) or not set(BRANCH_KINDS) <= set(b) or set(b) - {*BRANCH_KINDS, "name"}:
                raise NasPruneError(f"{where}.blocks[{i}]: expected an object with {', '.join(BRANCH_KINDS)} (and name)")
            if "name" in b and b["name"] != names[i]:
                raise NasPruneError(f"{where}.blocks[{i}].name: expected {names[i]!r}, got {b['name']!r}")
            blocks.append(SpadeBlock(**{kind: ints(f"blocks[{i}].{kind}", b[kind], len(ks)) for kind in BRANCH_KINDS}))
        try:
            return cls(
                label_nc=data["label_nc"],
                output_nc=data["output_nc"],
                num_upsampling_layers=data["num_upsampling_layers"],
                stream=ints("stream", data["stream"], len(names) + 1),
                blocks=tuple(blocks),
                kernel_sizes=ks,
                norm=data["norm"],
                activation=data["activation"],
            )
        except NasPruneError as err:
            raise NasPruneError(f"{where}: {str(err).removeprefix('invalid architecture: ')}") from None

    def summary(self) -> str:
        """One line, e.g. ``SPADE (more) stream 1024/1024/1024/1024/512/256/128/64 | 7 blocks``."""
        n_id = sum(b.is_identity for b in self.blocks)
        return (
            f"SPADE ({self.num_upsampling_layers}) stream {'/'.join(map(str, self.stream))} | "
            f"{self.n_blocks} blocks{f' ({n_id} without branches)' if n_id else ''}"
        )

    def describe_block(self, i: int) -> str:
        """``1024->512 res k3:24 k5:10, dw k1:6; spade res k3:8`` or ``1024->512 no branches``."""
        b = self.blocks[i]
        head = f"{self.fin(i)}->{self.fout(i)}"
        if b.is_identity:
            return f"{head} no branches"
        groups = []
        for kinds in (("res", "dw"), ("spade_res", "spade_dw")):
            parts = []
            for kind in kinds:
                kept = [f"k{k}:{w}" for k, w in zip(self.kernel_sizes, b.widths(kind)) if w]
                if kept:
                    parts.append(f"{kind.replace('_', ' ')} {' '.join(kept)}")
            if parts:
                groups.append(", ".join(parts))
        return f"{head} " + "; ".join(groups)


def _problems(arch: SpadeArch) -> Iterable[str]:
    """Yield a message for each invariant that ``arch`` breaks (the first one is reported)."""
    if arch.num_upsampling_layers not in UPSAMPLING:
        yield f"num_upsampling_layers: {arch.num_upsampling_layers!r} is not one of {', '.join(UPSAMPLING)}"
        return
    if arch.norm not in SPADE_NORMS:
        yield f"norm: {arch.norm!r} is not one of {', '.join(SPADE_NORMS)}"
    if arch.activation not in ACTIVATIONS:
        yield f"activation: {arch.activation!r} is not one of {', '.join(ACTIVATIONS)}"
    for name in ("label_nc", "output_nc"):
        if getattr(arch, name) < 1:
            yield f"{name}: must be >= 1"
    ks = arch.kernel_sizes
    if len(set(ks)) != len(ks):
        yield f"kernel_sizes: duplicate kernel size in {list(ks)}"
    if any(k < 1 or k % 2 == 0 for k in ks):
        yield f"kernel_sizes: kernel sizes must be odd and >= 1, got {list(ks)}"
    names = block_names(arch.num_upsampling_layers)
    if len(arch.blocks) != len(names):
        yield f"blocks: expected {len(names)} blocks for {arch.num_upsampling_layers!r}, got {len(arch.blocks)}"
    if len(arch.stream) != len(names) + 1 or any(w < 1 for w in arch.stream):
        yield f"stream: expected {len(names) + 1} widths >= 1, got {list(arch.stream)}"
    for i, b in enumerate(arch.blocks):
        for kind in BRANCH_KINDS:
            w = b.widths(kind)
            if len(w) != len(ks):
                yield f"blocks[{i}].{kind}: expected {len(ks)} widths, got {len(w)}"
            if any(v < 0 for v in w):
                yield f"blocks[{i}].{kind}: widths must be >= 0"
        if b.is_identity and b.has_modulation:
            yield (f"blocks[{i}]: a block without res/dw branches never runs its modulation network; "
                   "its spade_res/spade_dw widths must be 0")


def spade_fits_within(student: SpadeArch, teacher: SpadeArch) -> str | None:
    """Why ``student`` is not a sub-network of ``teacher`` (same settings, no wider layer), or None."""
    for name in SETTINGS:
        if getattr(student, name) != getattr(teacher, name):
            return f"{name} is {getattr(student, name)!r}, the teacher's is {getattr(teacher, name)!r}"
    for i, (s, t) in enumerate(zip(student.stream, teacher.stream)):
        if s > t:
            return f"stream[{i}] is {s}, wider than the teacher's {t}"
    for name, sb, tb in zip(student.block_names, student.blocks, teacher.blocks):
        for kind in BRANCH_KINDS:
            for j, (s, t) in enumerate(zip(sb.widths(kind), tb.widths(kind))):
                if s > t:
                    return f"{name}.{kind}[{j}] is {s}, wider than the teacher's {t}"
    return None


def cat_teacher_arch(
    *,
    ngf: int = 64,
    label_nc: int = 36,
    output_nc: int = 3,
    num_upsampling_layers: str = "more",
    kernel_sizes: Iterable[int] = (1, 3, 5),
    channels_reduction_factor: int = 6,
    spade_hidden: int = 128,
    channels: Iterable[int] | None = None,
    activation: str = "leaky_relu",
) -> SpadeArch:
    """The full-width teacher CAT builds for these options (``InceptionSPADEGenerator``).

    Streams ``16, 16, 16, 16, 8, 4, 2, 1 (, 1/2)`` times ``ngf``; block branches
    ``min(fin, fout) // channels_reduction_factor``; modulation branches
    ``spade_hidden // channels_reduction_factor`` (CAT's ``nhidden`` is 128). CAT's
    ``--channels c_1 .. c_K`` option (one per kernel size) replaces both by
    ``c_j // channels_reduction_factor`` in every block and modulation network.
    """
    if num_upsampling_layers not in UPSAMPLING:
        raise NasPruneError(
            f"num_upsampling_layers: {num_upsampling_layers!r} is not one of {', '.join(UPSAMPLING)}"
        )
    ks = tuple(kernel_sizes)
    names = block_names(num_upsampling_layers)
    fixed = None
    if channels is not None:
        fixed = tuple(c // channels_reduction_factor for c in channels)
        if len(fixed) != len(ks):
            raise NasPruneError(f"channels: expected one per kernel size {list(ks)}, got {list(channels)}")
    stream = [16 * ngf, 16 * ngf, 16 * ngf, 16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
    if num_upsampling_layers == "most":
        stream.append(ngf // 2)
    h = spade_hidden // channels_reduction_factor
    blocks = []
    for i in range(len(names)):
        m = min(stream[i], stream[i + 1]) // channels_reduction_factor
        res = fixed or (m,) * len(ks)
        mod = fixed or (h,) * len(ks)
        if not any(res):  # a block without branches has no modulation network
            mod = (0,) * len(ks)
        blocks.append(SpadeBlock(res=res, dw=res, spade_res=mod, spade_dw=mod))
    return SpadeArch(label_nc=label_nc, output_nc=output_nc, num_upsampling_layers=num_upsampling_layers,
                     stream=tuple(stream), blocks=tuple(blocks), kernel_sizes=ks, activation=activation)
