"""The interface every distillation method implements, and the registry of methods.

A distillation method is a :class:`DistillTerm`: an ``nn.Module`` that turns one
:class:`KDBatch` (the input, the teacher's and the student's outputs and the feature
maps at the term's taps) into a scalar the student minimises. The training loop in
:mod:`nas_prune.distill` adds ``weight * term(batch)`` to the generator loss for
each ``(weight, term)`` that :func:`build_terms` returns; the weight is never
applied inside a term.

Extra learnable parts of a method:

- :meth:`DistillTerm.generator_parameters` (e.g. the 1x1 adapters of GAN
  Compression's MSE, :func:`student_adapter`; ACKD's fusion blocks) are trained by
  the student's optimiser.
- :meth:`DistillTerm.discriminator_parameters` (e.g. AKDG's distillation
  discriminator) get their own Adam step on :meth:`DistillTerm.discriminator_loss`
  after each generator step.

Terms that compare teacher and student activations derive from :class:`FeatureTerm`:
empty taps mean :func:`default_feature_taps` (CAT's layers), and every tap is checked
against both architectures.

Every term's ``state_dict`` and optimiser state goes into the training checkpoint,
so a resumed run continues exactly.

Example::

    @register_term("mine")
    class Mine(DistillTerm):
        def __init__(self, *, teacher_arch, student_arch, taps, scale=1.0):
            super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)
            self.scale = scale

        def forward(self, batch):
            return self.scale * (batch.s_out - batch.t_out).abs().mean()
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import torch
from torch import nn

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.model import check_taps

__all__ = [
    "KDBatch",
    "DistillTerm",
    "FeatureTerm",
    "register_term",
    "build_terms",
    "known_terms",
    "term_class",
    "default_feature_taps",
    "tap_channels",
    "student_adapter",
]


@dataclass
class KDBatch:
    """Everything a distillation term may look at for one training step.

    Attributes:
        real_a: input of teacher and student, ``(N, C_in, H, W)`` in [-1, 1].
        real_b: target image ``(N, C_out, H, W)`` for paired data, None for unpaired.
        t_out: teacher output ``(N, C_out, H, W)`` in [-1, 1], detached.
        s_out: student output, same shape, with gradient.
        t_feats: teacher activations ``{tap: (N, C_t, h, w)}``, detached.
        s_feats: student activations ``{tap: (N, C_s, h, w)}``, with gradient; the
            channel counts of teacher and student usually differ.
    """

    real_a: torch.Tensor
    real_b: torch.Tensor | None
    t_out: torch.Tensor
    s_out: torch.Tensor
    t_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    s_feats: dict[str, torch.Tensor] = field(default_factory=dict)

    def detached(self) -> "KDBatch":
        """A copy whose student tensors are detached (for discriminator losses)."""
        return KDBatch(
            real_a=self.real_a,
            real_b=self.real_b,
            t_out=self.t_out,
            s_out=self.s_out.detach(),
            t_feats=self.t_feats,
            s_feats={k: v.detach() for k, v in self.s_feats.items()},
        )


class DistillTerm(nn.Module):
    """One distillation signal between teacher and student.

    Subclasses set ``name`` (done by :func:`register_term`), implement
    :meth:`forward`, and take their own options as extra keyword arguments of
    ``__init__`` (options unknown to the constructor are rejected by
    :func:`build_terms`).

    Args:
        teacher_arch: the teacher's architecture (channel counts at each tap).
        student_arch: the student's architecture.
        taps: feature layers this term reads (names as in
            :meth:`nas_prune.model.Generator.forward_with_features`); may be empty
            for terms that only look at outputs.
    """

    name: str = ""

    def __init__(self, *, teacher_arch: Arch, student_arch: Arch, taps: Sequence[str] = ()):
        super().__init__()
        self.teacher_arch = teacher_arch
        self.student_arch = student_arch
        self.taps: tuple[str, ...] = tuple(taps)

    def forward(self, batch: KDBatch) -> torch.Tensor:  # pragma: no cover - abstract
        """The loss the student minimises (a scalar tensor), before weighting."""
        raise NotImplementedError

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Extra parameters trained with the student (none by default)."""
        return iter(())

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained by a separate optimiser step (none by default)."""
        return iter(())

    def discriminator_loss(self, batch: KDBatch) -> torch.Tensor | None:
        """Loss of the term's own discriminator on ``batch.detached()``; None if it has none."""
        return None

    def has_discriminator(self) -> bool:
        """True when the term trains parameters of its own in a separate step."""
        return any(True for _ in self.discriminator_parameters())


def default_feature_taps(arch: Arch) -> tuple[str, ...]:
    """CAT's layers, scaled to the depth: the stem and the blocks at 1/3, 2/3, 3/3.

    For 9 blocks that is ``stem, block3, block6, block9`` as in CAT; for fewer
    blocks the positions are rounded and duplicates dropped; with no block, the stem only.
    Every family chooses its own (SPADE generators: CAT's SPADE layers ``head_0, G_middle_1,
    up_1``; :meth:`nas_prune.families.base.GeneratorFamily.default_taps`).
    """
    from nas_prune.model import default_taps

    return tuple(default_taps(arch))


def tap_channels(arch: Arch, tap: str) -> int:
    """Channel count of the activation at ``tap`` (see ``Generator.forward_with_features``).

    ``stem`` and every ``blockN`` carry the residual stream (``arch.stem[2]``
    channels, 1/4 of the input resolution); ``up1`` has ``arch.head[0]`` channels
    at 1/2 resolution.
    """
    from nas_prune.model import tap_channels as channels

    return channels(arch, tap)


def student_adapter(teacher_arch: Arch, student_arch: Arch, tap: str) -> nn.Conv2d:
    """A fresh 1x1 conv (with bias) mapping the student's activation at ``tap`` to the teacher's width.

    ``(N, C_s, h, w) -> (N, C_t, h, w)``; GAN Compression's feature adapter (Li et al.,
    CVPR 2020, Eq. 3), trained with the student and thrown away after training.
    """
    return nn.Conv2d(tap_channels(student_arch, tap), tap_channels(teacher_arch, tap), 1)


class FeatureTerm(DistillTerm):
    """A term that compares teacher and student activations at feature taps.

    Args:
        teacher_arch / student_arch: see :class:`DistillTerm`.
        taps: feature layers; empty means :func:`default_feature_taps` of the teacher.

    Raises:
        NasPruneError: a tap that the teacher or the student does not have.
    """

    default_taps = staticmethod(default_feature_taps)

    def __init__(self, *, teacher_arch: Arch, student_arch: Arch, taps: Sequence[str] = ()):
        taps = tuple(taps) or default_feature_taps(teacher_arch)
        check_taps(teacher_arch, taps)
        check_taps(student_arch, taps)
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=taps)


_T = TypeVar("_T", bound=type[DistillTerm])
_REGISTRY: dict[str, type[DistillTerm]] = {}


def register_term(name: str) -> Callable[[_T], _T]:
    """Class decorator registering a :class:`DistillTerm` subclass under ``name``."""

    def decorate(cls: _T) -> _T:
        if not (isinstance(cls, type) and issubclass(cls, DistillTerm)):
            raise TypeError(f"register_term({name!r}) decorates DistillTerm subclasses, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"distillation term {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def known_terms() -> list[str]:
    """Names of the registered distillation terms, sorted."""
    return sorted(_REGISTRY)


def term_class(name: str) -> type[DistillTerm]:
    """The class registered as ``name``.

    Raises:
        NasPruneError: ``name`` is unknown (the message lists the known names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NasPruneError(
            f"unknown distillation method {name!r}: choose from {', '.join(known_terms()) or '(none)'}"
        ) from None


def build_terms(
    spec: Mapping[str, float],
    *,
    teacher_arch: Arch,
    student_arch: Arch,
    taps: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> list[tuple[float, DistillTerm]]:
    """Instantiate the distillation terms named in ``spec``.

    Args:
        spec: ``{name: weight}``, e.g. ``{"gcka": 1.0, "crd": 1.0}``; a weight of 0
            drops the term.
        teacher_arch / student_arch: passed to every term.
        taps: feature layers for terms that read features; None lets each term use
            its own default (``default_taps(teacher_arch)`` if it defines one).
        options: ``{name: {option: value}}`` passed as keyword arguments to that
            term's constructor; unknown options are errors.

    Returns:
        ``[(weight, term), ...]`` in the order of ``spec``.

    Raises:
        NasPruneError: unknown name, negative or non-finite weight, options for a term
            not in ``spec``, or an option the term does not take.
    """
    options = dict(options or {})
    stray = sorted(set(options) - set(spec))
    if stray:
        raise NasPruneError(f"distillation options given for {stray[0]!r}, which is not among the methods used")
    terms: list[tuple[float, DistillTerm]] = []
    for name, weight in spec.items():
        cls = term_class(name)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise NasPruneError(f"distillation weight for {name!r}: expected a number, got {weight!r}") from None
        if not (weight >= 0.0 and weight != float("inf")):
            raise NasPruneError(f"distillation weight for {name!r}: must be a finite number >= 0, got {weight}")
        if weight == 0.0:
            continue
        opts = dict(options.get(name, {}))
        check_options(cls, name, opts)
        term_taps = taps
        if term_taps is None:
            default = getattr(cls, "default_taps", None)
            term_taps = tuple(default(teacher_arch)) if callable(default) else ()
        terms.append((weight, cls(teacher_arch=teacher_arch, student_arch=student_arch, taps=tuple(term_taps), **opts)))
    return terms


def check_options(cls: type[DistillTerm], name: str, opts: Mapping[str, object]) -> None:
    """Reject options that ``cls.__init__`` does not accept, naming them and the valid ones."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    reserved = {"self", "teacher_arch", "student_arch", "taps"}
    valid = [p for p in params if p not in reserved]
    for key in opts:
        if key in reserved or key not in params:
            raise NasPruneError(
                f"distillation option {name}.{key}: unknown option "
                f"(valid: {', '.join(valid) or 'none'})"
            )


def all_taps(terms: Iterable[tuple[float, DistillTerm]]) -> tuple[str, ...]:
    """Union of the taps the terms need, in first-seen order."""
    seen: dict[str, None] = {}
    for _, term in terms:
        for t in term.taps:
            seen.setdefault(t, None)
    return tuple(seen)
