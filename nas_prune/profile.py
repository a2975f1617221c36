"""Profile a generator: params and MACs per stage (and per layer), in both conventions.

``MODEL`` may be a checkpoint (``.pth`` / ``.pt`` / ``.safetensors``), a search-space
YAML or a shipped space's name (profiles the space's teacher) or a student's ``arch.json`` / folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.macs import (
    CONVENTIONS,
    check_convention,
    count_params,
    layer_costs,
    measure_macs,
    parse_input_size,
    stage_totals,
    thop_macs,
)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def resolve_arch(source: str | os.PathLike, *, space_path: str | os.PathLike | None = None,
                 model: Any = None) -> tuple[Arch, str, Any]:
    """Find the architecture behind ``source`` (``model``: the user's code for a checkpoint,
    :class:`nas_prune.load.UserModel`).

    Returns:
        ``(arch, kind, loaded)`` where kind is ``space``, ``checkpoint`` or ``arch-json``
        and ``loaded`` is the :class:`~nas_prune.load.LoadedGenerator` for checkpoints
        (None otherwise).
    """
    from nas_prune.space import load_space

    from nas_prune.shipped import shipped_dir, shipped_names

    path = Path(source)
    if not path.exists():
        if str(source) in shipped_names("search_spaces"):
            path = shipped_dir("search_spaces") / f"{source}.yaml"
        else:
            raise NasPruneError(
                f"model not found: {path} (give a checkpoint, arch.json, search-space YAML or a shipped "
                f"space name: {', '.join(shipped_names('search_spaces'))})"
            )
    space = load_space(space_path) if space_path is not None else None
    if path.suffix in (".yaml", ".yml"):
        return load_space(path).teacher_arch(), "space", None
    if path.is_dir() or path.suffix == ".json":
        from nas_prune.export import read_student

        arch, _, _ = read_student(path)
        return arch, "arch-json", None
    if path.suffix in CHECKPOINT_SUFFIXES:
        from nas_prune.load import load_generator

        loaded = load_generator(path, space=space, model=model)
        return loaded.arch, "checkpoint", loaded
    raise NasPruneError(
        f"{path}: cannot profile a {path.suffix or 'suffix-less'} file; give a checkpoint "
        f"({', '.join(CHECKPOINT_SUFFIXES)}), a search-space .yaml or an arch.json"
    )


def profile(
    source: str | os.PathLike,
    *,
    input_size: int | str | tuple[int, int] = 256,
    convention: str = "fvcore",
    per_layer: bool = False,
    measure: bool = False,
    space_path: str | os.PathLike | None = None,
    latency: bool = False,
    runtime: str | None = None,
    threads: int | None = None,
    batch: int = 1,
    repeats: int = 20,
    model: Any = None,
) -> dict[str, Any]:
    """Profile ``source`` (see the module docstring) and return a JSON-ready report.

    Args:
        input_size: ``H`` or ``"HxW"``, divisible by 4 (SPADE generators: by ``2 ** n_upsampling``).
        convention: convention of the per-stage / per-layer rows; totals are given in both.
        per_layer: include one row per layer.
        measure: also trace a real forward pass with fvcore, torchprofile and thop and
            report their counts next to the analytic ones.
        latency: also time the model end to end on ``runtime`` (``torch-cpu`` by default;
            ``onnxruntime``, ``cuda``) with ``threads`` CPU threads and ``batch`` images,
            median of ``repeats`` passes after 3 warm-up passes
            (:func:`nas_prune.latency.runtime.measure_latency`). A named ``runtime``
            implies ``latency``.
        model: the user's generator code for a checkpoint ``source`` (:class:`nas_prune.load.UserModel`).

    Returns:
        ``{"model", "kind", "arch", "input_size", "params", "macs": {convention: total},
        "stages": [...], "layers": [...]?, "measured": {...}?, "latency": {...}?, "notes": [...]?}``
        (notes: what loading a checkpoint assumed or dropped).
    """
    check_convention(convention)
    size = parse_input_size(input_size)
    latency = latency or runtime is not None
    if not latency and (threads is not None or batch != 1):
        raise NasPruneError("--threads and --batch describe a latency measurement: add --latency")
    rt = None
    if latency:
        from nas_prune.latency.runtime import Runtime

        if repeats < 1:
            raise NasPruneError(f"latency repeats must be >= 1, got {repeats}")
        rt = Runtime(runtime or "torch-cpu", threads=threads, batch=batch)
    from nas_prune.load import code_options

    with code_options(model):
        return _profile(source, size=size, convention=convention, per_layer=per_layer, measure=measure,
                        space_path=space_path, rt=rt, repeats=repeats, model=model)


def _profile(source, *, size, convention, per_layer, measure, space_path, rt, repeats, model) -> dict[str, Any]:
    arch, kind, loaded = resolve_arch(source, space_path=space_path, model=model)
    from nas_prune.model import check_forward_memory, check_input_size

    check_input_size(arch, size)
    if measure:
        check_forward_memory(arch, size)
    costs = layer_costs(arch, input_size=size, convention=convention)
    report: dict[str, Any] = {
        "model": str(source),
        "kind": kind,
        "arch": arch.summary(),
        "input_size": [size[0], size[1]],
        "params": count_params(arch),
        "macs": {c: sum(x.macs for x in layer_costs(arch, input_size=size, convention=c)) for c in CONVENTIONS},
        "stage_convention": convention,
        "stages": [
            {"stage": stage, "macs": macs, "params": params}
            for stage, (macs, params) in stage_totals(costs).items()
        ],
    }
    if loaded is not None and loaded.notes:
        report["notes"] = list(loaded.notes)
    if per_layer:
        report["layers"] = [
            {"name": c.name, "stage": c.stage, "kind": c.kind, "macs": c.macs, "params": c.params} for c in costs
        ]
    if measure:
        from nas_prune.model import build_generator

        model = loaded.build() if loaded is not None else build_generator(arch).eval()
        report["measured"] = {
            "fvcore": measure_macs(model, input_size=size, convention="fvcore"),
            "paper (torchprofile)": measure_macs(model, input_size=size, convention="paper"),
            "thop": thop_macs(model, input_size=size),
            "params": sum(p.numel() for p in model.parameters()),
        }
    if rt is not None:
        from nas_prune.latency.runtime import measure_latency
        from nas_prune.model import build_generator

        model = loaded.build() if loaded is not None else build_generator(arch).eval()
        report["latency"] = measure_latency(model, input_size=size, runtime=rt, warmup=3, repeats=repeats).to_json()
    return report
