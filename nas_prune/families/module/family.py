"""``ModuleFamily``: any generator class of the user's, behind the family protocol.

The engine (:mod:`.trace`, :mod:`.macs`, :mod:`.prune`) does the work; this module maps it
onto :class:`nas_prune.families.base.GeneratorFamily` so every command runs on it:

* **prunable layers** are the prunable channel groups; a layer's name is the group id
  (``<root module path>:out``), its width the group's root channels, its ``unit`` the root
  channels pruned together (``r*r`` before a PixelShuffle, times a group norm's groups).
  Every group keeps at least one unit and ``--min-channels`` channels (rounded up to units):
  the family cannot tell a stem from a branch, so it has no stem/head floor of its own.
* **MACs** come from the closed form of one trace per input size (exact for fvcore and
  torchprofile at that size); :meth:`layer_costs` is coarse, one row per top-level child
  (``(fixed)`` holds ops whose cost no group changes, ``(top)`` those outside every child).
* **importance**: ``gamma`` is |gamma| of the affine norms a group passes through and, for
  groups without one, the normalised L1 of the producing convs (the table names the
  criterion per group); ``l1`` uses L1 everywhere.
* **taps** are module paths; the default ones are the top-level children at about 1/4, 1/2
  and 3/4 of the MACs (:func:`.prune.default_taps`). A module that runs twice gives its last output.
* **input sizes**: what a user's module accepts is not known from its code, so
  :meth:`check_input_size` runs it (a trace at that size, kept for the MACs) instead of
  checking limits; :meth:`input_size_limits` is empty.

Importing the user's code runs it (``--model``); weights are always loaded safely.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from typing import Any, Callable, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families import GeneratorFamily, register_family
from nas_prune.families.common import LayerCost, PrunableLayer, check_state
from nas_prune.families.module.arch import ModuleArch, module_fits_within
from nas_prune.families.module.teacher import (CRITERION, DEFAULT_TRACE_SIDE, SHAPES, TEMPLATES, allowed, fresh,
                                               teacher_kept, trace_of, unit_of)

def _forward_with_features(self, x, taps: Sequence[str]):
    """``(output, {tap: feature})``: the outputs of the modules at the paths ``taps``."""
    feats: dict = {}
    mods = dict(self.named_modules())
    handles = []
    for t in taps:
        if t not in mods:
            raise NasPruneError(f"unknown feature layer {t!r}: not a module path of the model")
        handles.append(mods[t].register_forward_hook(lambda m, i, o, _t=t: feats.__setitem__(_t, o)))
    try:
        out = self(x)
    finally:
        for h in handles:
            h.remove()
    missing = [t for t in taps if t not in feats]
    if missing:
        raise NasPruneError(f"feature layer {missing[0]!r} did not run in the forward pass")
    return out, {t: feats[t] for t in taps}


def _input_channels(module) -> int:
    """Channels of the first conv / linear layer a module registers (its image input)."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return int(m.in_channels)
        if isinstance(m, torch.nn.Linear):
            return int(m.in_features)
    raise NasPruneError("--model: the module has no conv layer to take an image")


@register_family
class ModuleFamily(GeneratorFamily):
    """Any ``nn.Module`` generator, pruned through its traced channel groups."""

    name = "module"
    title = "module (--model)"
    layouts = ("module",)
    native_layout = "module"
    layout_hint = "or any other generator: give its code with --model FILE.py:NAME"  # never recognised by keys
    data_kind = "images"
    default_objective = "pix2pix"
    settings = ()
    from_code = True
    arch_type = ModuleArch
    fvcore_by_leaves = False  # the user's forward may count ops outside leaf modules
    criteria = ("gamma", "l1")

    # checkpoints
    def detect_layout(self, keys: Sequence[str]) -> str | None:
        return None

    def load_state(self, tensors, *, path, layout, space, like, notes):
        raise NasPruneError(f"{path}: a module generator is loaded with --model SPEC")

    def load_code(self, tensors, *, path, model, args, allow_changed_source, input_size, keep=(), notes):
        import torch

        from nas_prune.families.module.spec import load_model_spec

        with torch.device("cpu"):
            module, spec, sha = load_model_spec(model, args=args)
        state = check_state(module.state_dict(), tensors, path,
                            what=f"weights do not match the module built by --model {model}")
        module.load_state_dict(state, strict=True)
        h, w = input_size or (DEFAULT_TRACE_SIDE, DEFAULT_TRACE_SIDE)
        c = _input_channels(module)
        arch = ModuleArch(model=spec, args_json=json.dumps(dict(args), sort_keys=True), source_sha256=sha,
                          input_size=(1, c, h, w), keep=tuple(keep), kept=(), allow_changed_source=allow_changed_source)
        trace = trace_of(arch, module=module)
        arch = dataclasses.replace(arch, kept=teacher_kept(trace))
        notes.append(f"built {spec}({', '.join(f'{k}={v!r}' for k, v in dict(args).items())}) from your code "
                     f"(sha256 {sha[:16]}...), traced at {c}x{h}x{w}: {len(trace.prunable)} prunable groups, "
                     f"{len(trace.groups) - len(trace.prunable)} left whole")
        return arch, state

    # architectures
    def arch_to_dict(self, arch: ModuleArch) -> dict[str, Any]:
        return arch.to_dict()

    def fits_within(self, student: ModuleArch, teacher: ModuleArch) -> str | None:
        return module_fits_within(student, teacher)

    def table_rows(self, arch: ModuleArch) -> list[tuple[str, str, str]]:
        """One row per top-level child holding channel groups (its stage in :meth:`layer_costs`):
        each group's kept channels and criterion, or ``whole`` and why it is left whole."""
        trace = trace_of(arch)
        kept = arch.widths
        forced = CRITERION.get(arch.code_key())
        rows: dict[str, list[str]] = {}
        for g in trace.groups.values():
            if g.prunable:
                crit = "l1" if forced == "l1" else g.criterion
                text = f"{g.id} {kept.get(g.id, sum(len(u) for u in g.units))} ({crit})"
            else:
                text = f"{g.id} {sum(len(u) for u in g.units)} (whole: {g.reason})"
            rows.setdefault(self._stage_of(trace, g.root), []).append(text)
        return [(stage, "; ".join(texts), stage) for stage, texts in rows.items()]

    @staticmethod
    def _stage_of(trace, path: str) -> str:
        from nas_prune.families.module.trace import _top_children

        for name, _ in _top_children(trace.module):
            if path == name or path.startswith(name + "."):
                return name
        return "(top)"

    def space_from_dict(self, data, *, source: str):
        raise NasPruneError(f"{source}: module generators have no search-space files; give --model SPEC")

    # modules
    def build(self, arch: ModuleArch):
        import copy

        import torch

        from nas_prune.families.module.prune import prune_module

        key = (arch, allowed(arch))
        template = TEMPLATES.get(key)
        if template is None:
            module = fresh(arch)
            full = dict(teacher_kept(trace_of(arch)))
            if any(tuple(idx) != full.get(g) for g, idx in arch.kept):
                with torch.device("cpu"):
                    module, _ = prune_module(module, arch.kept_dict, example_input=torch.zeros(arch.input_size),
                                             keep=list(arch.keep))
            template = TEMPLATES.put(key, module)
        module = copy.deepcopy(template).train()
        module.arch = arch
        module.forward_with_features = types.MethodType(_forward_with_features, module)
        return module

    def input_channels(self, arch: ModuleArch) -> int:
        return arch.input_nc

    def input_size_limits(self, arch: ModuleArch) -> list[tuple[int, str]]:
        """Unknown from the code: :meth:`check_input_size` runs the module instead."""
        return []

    def check_input_size(self, arch: ModuleArch, size, *, option: str = "--input-size", extra=()) -> None:
        """Trace the module at ``size`` (the MACs need that trace anyway); ``extra`` limits as usual."""
        h, w = size
        for side, why in sorted(extra, key=lambda t: -t[0]):
            if h < side or w < side:
                raise NasPruneError(f"{option} {h}x{w} is too small: {why}; use a size >= {side}")
        try:
            trace_of(arch, (h, w))
        except NasPruneError as err:
            raise NasPruneError(str(err).replace("--input-size", option, 1)) from None

    def size_multiple(self, arch: ModuleArch) -> int:
        """``2**k`` for a module whose smallest feature map is ``2**k`` times smaller than its
        input at the traced size (4 at least: the commands' sizes are multiples of 4)."""
        _, _, h0, w0 = arch.input_size
        sides = [min(h0 // s[2], w0 // s[3]) for s in self._shapes(arch).values() if len(s) == 4 and s[2] and s[3]]
        f = max(sides, default=1)
        f = 1 << (max(f, 1).bit_length() - 1)  # the power of two at or below it
        return max(4, f)

    def min_input_size(self, arch: ModuleArch) -> tuple[int, int]:
        """The traced size (known to run; smaller ones may too)."""
        return int(arch.input_size[2]), int(arch.input_size[3])

    def _shapes(self, arch: ModuleArch) -> dict[str, tuple]:
        import torch

        if arch in SHAPES:
            return SHAPES[arch]
        net = self.build(arch).eval()
        shapes: dict[str, tuple] = {}
        handles = [m.register_forward_hook(lambda m, i, o, _n=n: shapes.__setitem__(_n, tuple(o.shape)))
                   for n, m in net.named_modules() if n]
        try:
            with torch.no_grad():
                net(torch.zeros(arch.input_size))
        finally:
            for h in handles:
                h.remove()
        return SHAPES.put(arch, shapes)

    def forward_bytes(self, arch: ModuleArch, size, *, batch: int = 1) -> int:
        """float32 bytes of the input and every top-level child's output at once (a U-Net's
        skips all alive), scaled from the traced size by area: a rough peak."""
        from nas_prune.families.module.trace import _top_children

        shapes = self._shapes(arch)
        _, c, h0, w0 = arch.input_size
        elems = c * h0 * w0 + sum(math.prod(shapes[n]) for n, _ in _top_children(trace_of(arch).module)
                                  if n in shapes)
        return int(4 * batch * elems * (size[0] * size[1]) / (h0 * w0))

    # taps
    def tap_names(self, arch: ModuleArch) -> list[str]:
        return [n for n, _ in trace_of(arch).module.named_modules() if n]

    def default_taps(self, arch: ModuleArch) -> list[str]:
        from nas_prune.families.module.prune import default_taps

        return default_taps(trace_of(arch))

    def tap_channels(self, arch: ModuleArch, tap: str) -> int:
        self.check_taps(arch, [tap])
        shape = self._shapes(arch).get(tap)
        if shape is None or len(shape) < 2:
            raise NasPruneError(f"feature layer {tap!r} gives no feature map (shape {shape})")
        return int(shape[1])

    # MACs
    def _counts(self, trace, arch: ModuleArch):
        import numpy as np

        widths = arch.widths
        model = trace.macs
        return np.array([widths.get(g, trace.groups[g].channels * unit_of(trace.groups[g])) // unit_of(trace.groups[g])
                         for g in model.group_ids], dtype=np.int64)

    def layer_costs(self, arch: ModuleArch, size, convention: str) -> list[LayerCost]:
        """One row per top-level child: its MACs (closed form at ``size``) and parameters."""
        from nas_prune.families.module.trace import _top_children

        trace = trace_of(arch, size)
        by_child = trace.macs.macs_by_child(self._counts(trace, arch), convention)
        params: dict[str, int] = {}
        children = [n for n, _ in _top_children(trace.module)]
        for pname, p in self._student_params(arch):
            owner = next((c for c in children if pname.startswith(c + ".")), "(top)")
            params[owner] = params.get(owner, 0) + p
        order = [c for c in children if c in by_child or c in params]
        order += [c for c in by_child if c not in order and c is not None]
        rows = [LayerCost(c, c, "module", int(by_child.get(c, 0)), params.get(c, 0)) for c in order]
        if None in by_child or "(top)" in params:
            rows.append(LayerCost("(top)", "(top)", "module", int(by_child.get(None, 0)), params.get("(top)", 0)))
        return rows

    def _student_params(self, arch: ModuleArch) -> list[tuple[str, int]]:
        key = ("params", arch)
        if key not in SHAPES:
            SHAPES.put(key, [(n, p.numel()) for n, p in self.build(arch).named_parameters()])
        return SHAPES[key]

    def count_params(self, arch: ModuleArch) -> int:
        return sum(p for _, p in self._student_params(arch))

    # pruning
    def prunable_layers(self, arch: ModuleArch) -> list[PrunableLayer]:
        trace = trace_of(arch)
        widths = arch.widths
        return [PrunableLayer(name=g.id, kind="group", width=widths.get(g.id, g.channels * unit_of(g)), index=i,
                              unit=unit_of(g) * g.multiple, floor=True)
                for i, g in enumerate(trace.prunable)]

    def layer_rule(self, layer, teacher, *, min_channels: int, round_to: int | None) -> tuple[int, int]:
        """Widths in whole units (and multiples of ``round_to``); every group keeps at least one
        unit and ``min_channels`` channels rounded up to a step (at most all of them)."""
        step = math.lcm(layer.unit, round_to or 1)
        return step, min(layer.width, max(step, -(-min_channels // step) * step))

    def smallest_student_text(self, teacher, *, min_channels: int, round_to: int | None) -> str:
        return (f"every group at {min_channels} channels or one unit"
                f"{f', rounded to {round_to}' if round_to else ''}; the output channels and --keep modules whole")

    def arch_from_widths(self, teacher: ModuleArch, widths: Mapping[str, int]) -> ModuleArch:
        """The first ``width`` root channels (whole units, in unit order) of every group."""
        trace = trace_of(teacher)
        kept = {}
        for g in trace.prunable:
            w = widths.get(g.id, g.channels * unit_of(g))
            kept[g.id] = sorted(r for u in g.units[: w // unit_of(g)] for r in u)
        return teacher.with_kept(kept)

    def arch_from_kept(self, teacher: ModuleArch, kept: Mapping[str, Sequence[int]]) -> ModuleArch:
        """The student keeping exactly these root channels (whole units: checked)."""
        trace = trace_of(teacher)
        for g in trace.prunable:
            idx = set(kept.get(g.id, ()))
            for unit in g.units:
                if 0 < len(idx & set(unit)) < len(unit):
                    raise NasPruneError(f"kept.{g.id}: channels {unit} must be kept or dropped together")
        return teacher.with_kept({g: sorted(int(i) for i in kept[g]) for g, _ in teacher.kept})

    def student_widths(self, student: ModuleArch, teacher: ModuleArch) -> dict[str, int]:
        return student.widths

    def macs_formula(self, teacher: ModuleArch, *, input_size, convention: str) -> Callable:
        """The engine's closed form at ``input_size``: one matrix-vector product per call."""
        import numpy as np

        trace = trace_of(teacher, input_size)
        model = trace.macs
        units = [unit_of(trace.groups[g]) for g in model.group_ids]
        full = [trace.groups[g].channels * u for g, u in zip(model.group_ids, units)]

        def formula(widths: Mapping[str, int]) -> int:
            k = np.array([widths.get(g, f) // u for g, f, u in zip(model.group_ids, full, units)], dtype=np.int64)
            return model.macs_vec(k, convention)

        return formula

    def search_groups(self, arch: ModuleArch) -> dict[str, tuple[str, ...]]:
        """One study variable per top-level child holding prunable groups (at most 8; else
        early / middle / late thirds of the groups)."""
        trace = trace_of(arch)
        by_stage: dict[str, list[str]] = {}
        for g in trace.prunable:
            by_stage.setdefault(self._stage_of(trace, g.root), []).append(g.id)
        if 1 < len(by_stage) <= 8:
            return {s: tuple(v) for s, v in by_stage.items()}
        return super().search_groups(arch)

    # importance
    def default_criterion(self, arch: ModuleArch) -> str:
        return "gamma"

    def importance(self, criterion: str, arch: ModuleArch, state_dict, *, calib=None):
        """One score per root channel of each prunable group (a unit's channels share its score).

        Raises:
            NasPruneError: nothing in the module is prunable (the groups left whole named).
        """
        import torch

        from nas_prune.families.module.importance import score_groups
        from nas_prune.families.module.trace import trace_groups

        if criterion not in self.criteria:
            raise NasPruneError(f"importance {criterion!r} is not available for module generators: choose gamma or l1")
        module = fresh(arch)
        module.load_state_dict(check_state(module.state_dict(), state_dict, "teacher"), strict=True)
        trace = trace_groups(module, torch.zeros(arch.input_size), keep=list(arch.keep))
        if not trace.prunable:
            reasons = sorted({g.reason for g in trace.groups.values() if g.reason})
            raise NasPruneError("nothing in the module is prunable"
                                + (f" (groups left whole: {'; '.join(reasons)[:300]})" if reasons else ""))
        if criterion == "l1":
            score_groups(trace, prefer="l1")
        CRITERION[arch.code_key()] = criterion
        scores = {}
        for g in trace.prunable:
            s = torch.zeros(g.channels * unit_of(g), dtype=torch.float64)
            for u, unit in enumerate(g.units):
                s[list(unit)] = float(g.scores[u])
            scores[g.id] = s
        return scores

    def slice_state_dict(self, plan, teacher_state_dict):
        """Prune the teacher-shaped module, loaded with the teacher's weights, to ``plan.kept``."""
        import torch

        from nas_prune.families.module.prune import prune_module

        teacher = plan.teacher
        module = fresh(teacher)
        module.load_state_dict(check_state(module.state_dict(), teacher_state_dict, "teacher"), strict=True)
        kept = {g: [int(i) for i in idx] for g, idx in plan.kept.items()}
        module, _ = prune_module(module, kept, example_input=torch.zeros(teacher.input_size), keep=list(teacher.keep))
        return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
