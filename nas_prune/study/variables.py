"""Search variables of a study: layer groups, their multipliers, objectives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

OBJECTIVES = ("quality", "latency")
DEFAULT_RANGE = (0.5, 2.0)


def search_groups(arch: Arch) -> dict[str, tuple[str, ...]]:
    """``{variable name: prunable layer names}`` for ``arch``: the groups of layers whose
    scores one study variable scales (the family's choice:
    :meth:`nas_prune.families.base.GeneratorFamily.search_groups`). Groups that would hold no
    layer are left out.
    """
    from nas_prune.families import family_of

    groups = family_of(arch).search_groups(arch)
    return {name: tuple(names) for name, names in groups.items() if names}


def layer_multipliers(groups: Mapping[str, Sequence[str]], params: Mapping[str, float]) -> dict[str, float]:
    """Product of the factors of the groups each layer belongs to."""
    out: dict[str, float] = {}
    for name, layers in groups.items():
        factor = float(params.get(name, 1.0))
        for layer in layers:
            out[layer] = out.get(layer, 1.0) * factor
    return out


def scaled_scores(
    scores: Mapping[str, Any], groups: Mapping[str, Sequence[str]], params: Mapping[str, float]
) -> dict[str, "np.ndarray"]:
    """Importance scores with each layer's multiplier applied (float64 numpy arrays)."""
    import numpy as np

    mult = layer_multipliers(groups, params)
    out = {}
    for name, value in scores.items():
        arr = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value, float)
        out[name] = arr * mult.get(name, 1.0)
    return out


def parse_objectives(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"quality"`` or ``"quality,latency"`` (or a sequence) -> validated tuple.

    Raises:
        NasPruneError: unknown or repeated objective, or no ``quality``.
    """
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    for item in items:
        if item not in OBJECTIVES:
            raise NasPruneError(f"--objectives: unknown objective {item!r}: choose quality or quality,latency")
    if len(set(items)) != len(items):
        raise NasPruneError(f"--objectives: {','.join(items)} repeats an objective")
    if not items or items[0] != "quality":
        raise NasPruneError("--objectives: expected quality or quality,latency")
    return tuple(items)


def study_requested(
    *,
    trials: int | None,
    score: str = "zero-shot",
    objectives: str | Sequence[str] = ("quality",),
    score_size: int | str | tuple[int, int] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    pick: int | None = None,
) -> bool:
    """Whether ``nas-prune search`` runs an Optuna study: ``trials`` is set.

    The other arguments are the options only a study reads, at their defaults unless
    the user set them.

    Raises:
        NasPruneError: a study option is set without ``trials`` (naming the option).
    """
    if trials is not None:
        return True
    items = [v.strip() for v in (objectives.split(",") if isinstance(objectives, str) else objectives)]
    study_only = {
        "--score": str(score).strip() != "zero-shot",
        "--objectives": items != ["quality"],
        "--score-size": score_size is not None,
        "--storage": storage is not None,
        "--study-name": study_name is not None,
        "--pick": pick is not None,
    }
    for option, used in study_only.items():
        if used:
            raise NasPruneError(f"{option} needs --trials N")
    return False
