"""The generator-family protocol: everything the core asks of a kind of generator.

A *family* is one kind of generator nas-prune understands (CAT's inception-residual
generators with the classic ResNet as one of their points, CAT's inception SPADE
generators, pix2pix's U-Net, ...). The core (load, search, plan, apply, macs, export,
profile, distill, evaluate, deploy, latency, study) never tests a family's name or type:
it looks the family up in the registry (:mod:`nas_prune.families`) and calls the methods
below. A family is one package under ``nas_prune/families/`` (or any importable package
named by a ``nas_prune.families`` entry point) holding one :class:`GeneratorFamily`
subclass registered with :func:`nas_prune.families.register_family`;
``docs/families.md`` walks through writing one.

Vocabulary shared with the core:

* an **arch** is a frozen dataclass of the family (every width and setting; JSON via
  :meth:`GeneratorFamily.arch_to_dict` / :meth:`GeneratorFamily.arch_from_dict`) whose
  class attribute ``family`` is the family's registered name;
* a **prunable layer** (:class:`nas_prune.families.common.PrunableLayer`) is a set of
  channels that one global importance threshold prunes; ``widths`` map layer names to
  kept channel counts, and a plan's ``kept`` maps them to kept teacher channel indices;
* a **layer cost** (:class:`nas_prune.families.common.LayerCost`) is one module's MACs
  in a convention (``fvcore`` or ``paper``) and its parameters;
* a **tap** is a named feature map the distillation losses read (``forward_with_features``
  of the built module returns them).

Methods without a default must be implemented; the defaults say what they assume.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.families.common import LayerCost, PrunableLayer

#: What a family's data is: RGB(ish) image folders, or semantic label maps.
DATA_KINDS = ("images", "semantic")

#: ``--allow-changed-source`` for the run in progress: families that build generators from
#: the user's code (:attr:`GeneratorFamily.from_code`) build an architecture whose source
#: file changed since it was made only while this is True.
CHANGED_SOURCE_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("changed_source_allowed", default=False)


@contextlib.contextmanager
def changed_source_allowed(allowed: bool = True) -> Iterator[None]:
    """Set :data:`CHANGED_SOURCE_ALLOWED` while the body runs (a command's whole run)."""
    token = CHANGED_SOURCE_ALLOWED.set(bool(allowed))
    try:
        yield
    finally:
        CHANGED_SOURCE_ALLOWED.reset(token)


class GeneratorFamily:
    """One kind of generator, as the core sees it. Subclass, fill in, register.

    Class attributes:
        name: registered name, also ``arch.family`` and the ``family`` field of
            ``arch.json`` and of search-space YAML files.
        title: human name for messages and tables (``"U-Net (pix2pix)"``).
        layouts: checkpoint layouts the family reads (``detect_layout`` returns one).
        native_layout: the layout of the state dicts nas-prune writes for it
            (``student.safetensors``); the built module's own keys.
        layout_hint: how its checkpoints' keys look, for the unknown-layout error.
        data_kind: ``"images"`` (paired or unpaired image folders) or ``"semantic"``
            (label maps in, images out).
        default_objective: the distillation objective ``--objective auto`` picks.
        settings: names of the arch's non-width settings; a student shares every one
            with its teacher.
        sync_batchnorm: convert the student's batch norms to SyncBatchNorm under DDP.
        latency_units: True when the per-layer latency table knows the family's layers
            (:meth:`latency_unit_grids`); otherwise latency targets use the
            family-independent end-to-end model.
        trains_teachers: ``train-teacher`` can train a teacher of this family from its space.
        from_code: the family builds generators from the user's code (``--model``) instead
            of recognising a checkpoint's layout (:meth:`load_code`); at most one family does.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    layouts: ClassVar[tuple[str, ...]] = ()
    native_layout: ClassVar[str] = ""
    layout_hint: ClassVar[str] = ""
    data_kind: ClassVar[str] = "images"
    default_objective: ClassVar[str] = "pix2pix"
    settings: ClassVar[tuple[str, ...]] = ()
    sync_batchnorm: ClassVar[bool] = False
    latency_units: ClassVar[bool] = False
    trains_teachers: ClassVar[bool] = False
    from_code: ClassVar[bool] = False

    # ---------------------------------------------------------------- checkpoints
    def detect_layout(self, keys: Sequence[str]) -> str | None:
        """The layout of a state dict with these keys (one of :attr:`layouts`), or None."""
        raise NotImplementedError

    def refuse_layout(self, layout: str) -> str | None:
        """Why a recognised layout cannot be loaded (a one-line reason), or None."""
        return None

    def load_state(self, tensors: Mapping[str, "torch.Tensor"], *, path, layout: str, space: Any,
                   like: Any, notes: list[str]) -> tuple[Any, dict[str, "torch.Tensor"]]:
        """``(arch, state_dict)`` from a checkpoint's tensors in one of :attr:`layouts`.

        The state dict must load strictly into ``build(arch)``. Settings the tensors
        cannot show come from ``space`` (one of this family's spaces, or None), then from
        ``like`` (a student arch of this family, or None); every assumption is appended to
        ``notes``. Missing or misshapen tensors raise NasPruneError naming the keys.
        """
        raise NotImplementedError

    def load_code(self, tensors: Mapping[str, "torch.Tensor"], *, path, model: str, args: Mapping[str, Any],
                  allow_changed_source: bool, input_size: tuple[int, int] | None, keep: Sequence[str] = (),
                  notes: list[str]) -> tuple[Any, dict[str, "torch.Tensor"]]:
        """``(arch, state_dict)`` of the user's generator ``model`` (an import spec) built with
        ``args`` and loaded strictly with ``tensors`` (only when :attr:`from_code`).

        ``input_size`` (H, W) is where the module may be traced (None: the family's default);
        ``keep`` names modules whose channels are never pruned (``search --keep``).
        """
        raise NasPruneError(f"{self.title} generators are not built from code")

    # ---------------------------------------------------------------- architectures
    arch_type: ClassVar[type] = object

    def arch_from_dict(self, data: Mapping[str, Any], *, where: str = "arch") -> Any:
        """Validate ``data`` (an ``arch`` section of arch.json) and return the arch.

        Raises:
            NasPruneError: naming the first bad or unknown field (``arch.levels[2]``).
        """
        return self.arch_type.from_dict(data, where=where)  # type: ignore[attr-defined]

    def arch_to_dict(self, arch: Any) -> dict[str, Any]:
        """JSON-ready dict that :meth:`arch_from_dict` inverts (with a ``family`` field)."""
        return {"family": self.name, **arch.to_dict()} if "family" not in arch.to_dict() else arch.to_dict()

    def fits_within(self, student: Any, teacher: Any) -> str | None:
        """Why ``student`` is not a sub-network of ``teacher`` (same settings, no wider layer), or None."""
        raise NotImplementedError

    def describe(self, arch: Any) -> str:
        """One line for tables and logs (``levels 8 | 64/128/256/512... | batch norm``)."""
        return arch.summary()

    def table_rows(self, arch: Any) -> list[tuple[str, str, str]]:
        """``[(row name, widths text, stage)]`` for tables, in forward order; ``stage`` is the
        :attr:`LayerCost.stage` of the row's layers."""
        raise NotImplementedError

    def space_from_dict(self, data: Mapping[str, Any], *, source: str) -> Any:
        """A search space of this family from a YAML document (``family: <name>``).

        The space has ``name``, ``family`` and ``teacher_arch()``; unknown keys are errors
        naming the field and ``source``.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------- modules
    def build(self, arch: Any) -> "torch.nn.Module":
        """The nn.Module of ``arch`` (fresh weights). It has ``.arch`` and
        ``forward_with_features(x, taps) -> (out, {tap: feature})``."""
        raise NotImplementedError

    def module_types(self) -> tuple[type, ...]:
        """The nn.Module classes :meth:`build` returns (to tell a built generator from a path)."""
        return ()

    def input_channels(self, arch: Any) -> int:
        """Channels of the network's input tensor (image channels, or label channels)."""
        return arch.input_nc

    def example_input(self, arch: Any, size: tuple[int, int], *, batch: int = 1,
                      generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """A valid input of ``size`` = (H, W): uniform in [-1, 1] for image families."""
        import torch

        x = torch.rand(batch, self.input_channels(arch), *size, generator=generator)
        return x * 2 - 1

    def input_size_limits(self, arch: Any) -> list[tuple[int, str]]:
        """``(side, reason)`` pairs bounding the input size from below, largest first."""
        raise NotImplementedError

    def size_multiple(self, arch: Any) -> int:
        """H and W must be multiples of this (4 for the inception generators)."""
        return 4

    def check_input_size(self, arch: Any, size: tuple[int, int], *, option: str = "--input-size",
                         extra: Iterable[tuple[int, str]] = ()) -> None:
        """Raise NasPruneError when ``arch`` cannot run at ``size``, stating the minimum.

        The default checks :meth:`size_multiple` and every limit as a smallest side.
        """
        h, w = size
        m = self.size_multiple(arch)
        if h % m or w % m:
            raise NasPruneError(f"{option} {h}x{w} does not fit this model: a {self.title} "
                                f"needs multiples of {m}")
        for side, why in sorted([*self.input_size_limits(arch), *extra], key=lambda t: -t[0]):
            if h < side or w < side:
                raise NasPruneError(f"{option} {h}x{w} is too small for this model: {why}; "
                                    f"use a size >= {side} (and divisible by {m})")

    def min_input_size(self, arch: Any) -> tuple[int, int]:
        """The smallest (H, W) the network runs at."""
        m = self.size_multiple(arch)
        side = max([m, *(s for s, _ in self.input_size_limits(arch))])
        side = -(-side // m) * m
        return side, side

    #: Every op fvcore counts runs inside a leaf module (so each distinct layer can be
    #: traced once: :func:`nas_prune.apply.fvcore_by_distinct_layers`).
    fvcore_by_leaves: ClassVar[bool] = False

    def trace_size(self, arch: Any, size: tuple[int, int], *, min_side: int = 32) -> tuple[int, int, int]:
        """``(h, w, s)``: a smaller input whose fvcore count times ``s**2`` is the one at ``size``
        exactly (``s == 1``: none). Default: no smaller size."""
        return size[0], size[1], 1

    def forward_bytes(self, arch: Any, size: tuple[int, int], *, batch: int = 1) -> int:
        """Rough peak bytes of one float32 inference pass (tells what cannot fit)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- taps
    def tap_names(self, arch: Any) -> list[str]:
        """Every valid distillation tap of ``arch``, in forward order."""
        raise NotImplementedError

    def default_taps(self, arch: Any) -> list[str]:
        """The taps distillation uses when none are given."""
        raise NotImplementedError

    def tap_channels(self, arch: Any, tap: str) -> int:
        """Channels of the feature map at ``tap``."""
        raise NotImplementedError

    def check_taps(self, arch: Any, taps: Iterable[str]) -> None:
        """Raise NasPruneError naming the first tap ``arch`` does not have."""
        valid = self.tap_names(arch)
        for t in taps:
            if t not in valid:
                shown = ", ".join(valid) if len(valid) <= 8 else f"{valid[0]} .. {valid[-1]}"
                raise NasPruneError(f"unknown feature layer {t!r}: choose from {shown}")

    # ---------------------------------------------------------------- MACs
    def layer_costs(self, arch: Any, size: tuple[int, int], convention: str) -> list["LayerCost"]:
        """Every layer's MACs for one image of ``size`` in ``convention``, and its params.

        ``fvcore``: equal to ``fvcore.nn.FlopCountAnalysis`` of ``build(arch).eval()``;
        ``paper``: equal to ``torchprofile.profile_macs`` (ConvTranspose over its output).
        """
        raise NotImplementedError

    def count_params(self, arch: Any) -> int:
        """Learnable parameters of ``build(arch)`` (buffers excluded)."""
        h, w = self.min_input_size(arch)
        return sum(c.params for c in self.layer_costs(arch, (h, w), "fvcore"))

    # ---------------------------------------------------------------- pruning
    def prunable_layers(self, arch: Any) -> list["PrunableLayer"]:
        """Every prunable layer of ``arch`` in forward order."""
        raise NotImplementedError

    def arch_from_widths(self, teacher: Any, widths: Mapping[str, int]) -> Any:
        """The student of ``teacher`` with these widths (names of :meth:`prunable_layers`)."""
        raise NotImplementedError

    def arch_from_kept(self, teacher: Any, kept: Mapping[str, Sequence[int]]) -> Any:
        """The student of ``teacher`` keeping these teacher channel indices per prunable layer.

        Default: only the counts matter (:meth:`arch_from_widths`); a family whose
        architecture records the indices themselves overrides it.
        """
        return self.arch_from_widths(teacher, {name: len(idx) for name, idx in kept.items()})

    def student_widths(self, student: Any, teacher: Any) -> dict[str, int]:
        """``{layer: width}`` of a student of ``teacher`` (inverse of :meth:`arch_from_widths`)."""
        raise NotImplementedError

    def macs_formula(self, teacher: Any, *, input_size: tuple[int, int],
                     convention: str) -> Callable[[Mapping[str, int]], int]:
        """A callable ``widths -> MACs`` equal to ``layer_costs`` of ``arch_from_widths``.

        It must be non-decreasing in every width: the threshold search relies on it.
        The default builds the arch and sums its costs; families give a closed form.
        """
        def formula(widths: Mapping[str, int]) -> int:
            arch = self.arch_from_widths(teacher, self.complete_widths(teacher, widths))
            return sum(c.macs for c in self.layer_costs(arch, input_size, convention))

        return formula

    def complete_widths(self, teacher: Any, widths: Mapping[str, int]) -> dict[str, int]:
        """``widths`` with the layers that follow others (``PrunableLayer.follows``) filled in."""
        return dict(widths)

    def layer_rule(self, layer: "PrunableLayer", teacher: Any, *, min_channels: int,
                   round_to: int | None) -> tuple[int, int]:
        """``(step, floor)``: a thresholded layer's width is a multiple of ``step``, >= ``floor``.

        Default: layers with a floor keep ``min(min_channels, width)`` rounded up to a
        step; others may reach 0.
        """
        step = round_to or 1
        return step, (min(layer.width, -(-min_channels // step) * step) if layer.has_floor else 0)

    def search_groups(self, arch: Any) -> dict[str, tuple[str, ...]]:
        """``{variable: prunable layer names}``: the layers whose scores one Optuna study
        variable scales together (``search --trials``).

        Default: one group per layer kind, and the layers of the first, middle and last
        thirds of the forward order.
        """
        layers = self.prunable_layers(arch)
        groups: dict[str, list[str]] = {}
        for layer in layers:
            groups.setdefault(layer.kind, []).append(layer.name)
        n = len(layers)
        for k, name in enumerate(("early", "middle", "late")):
            groups[name] = [l.name for l in layers[k * n // 3:(k + 1) * n // 3]]
        return {g: tuple(v) for g, v in groups.items() if v}

    def smallest_student_text(self, teacher: Any, *, min_channels: int, round_to: int | None) -> str:
        """What the smallest reachable student is, in words, for the "target below the smallest
        reachable student" error (default: every layer at its floor)."""
        rounded = f" rounded to {round_to}" if round_to else ""
        return f"every prunable layer at its floor, --min-channels {min_channels}{rounded}"

    # ---------------------------------------------------------------- importance
    criteria: ClassVar[tuple[str, ...]] = ("gamma", "l1")
    #: Criteria that run the network on calibration inputs (the core supplies them).
    calibrated_criteria: ClassVar[tuple[str, ...]] = ()

    def default_criterion(self, arch: Any) -> str:
        """The criterion ``--importance auto`` picks (|gamma| where norms are affine)."""
        return "gamma"

    def importance(self, criterion: str, arch: Any, state_dict: Mapping[str, "torch.Tensor"], *,
                   calib: "torch.Tensor | None" = None) -> dict[str, "torch.Tensor"]:
        """One 1-D score tensor per prunable layer (one score per teacher channel).

        ``calib`` is a batch of calibration inputs for activation-based criteria.
        """
        raise NotImplementedError

    def slice_state_dict(self, plan: Any, teacher_state_dict: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        """The student's weights: the teacher's, cut to ``plan.kept`` (``{layer: indices}``),
        loading strictly into ``build(plan.student_arch())``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- latency
    def latency_unit_grids(self, teacher: Any, *, input_size: tuple[int, int], min_channels: int) -> Any:
        """The per-layer latency table's units for ``teacher``'s students (only when
        :attr:`latency_units` is True; see :mod:`nas_prune.latency.table`).

        The object has ``teacher``, ``kinds`` (``{kind: (axes, (h, w))}``, axes of
        :class:`nas_prune.families.units.Axis`), ``units()``, ``unit(kind, widths)``,
        ``build(unit) -> (module, input shape)``, ``parts(dense, widths) -> (ends, blocks)``
        (the two sums of unit costs the predictor scales), ``arch_widths(arch)`` and
        ``calibration_archs(min_channels)`` (the whole generators it is calibrated on).
        Without units, latency targets use :class:`nas_prune.latency.table.MacsGrids`.
        """
        raise NasPruneError(f"per-layer latency tables are not available for {self.title} generators")
