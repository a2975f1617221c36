"""Generator families and their registry (the core's only way to reach a family).

A family registers itself when its package is imported, as timm's ``register_model``
does::

    from nas_prune.families import GeneratorFamily, register_family

    @register_family
    class UnetFamily(GeneratorFamily):
        name = "unet"
        ...

The core asks :func:`get_family` (by registered name: ``arch.family``, the ``family``
field of arch.json and search spaces) or :func:`family_of` (for an arch), and
:func:`detect_layout` for a checkpoint's keys. The shipped families (:data:`BUILTIN`)
are imported on first lookup, so importing nas-prune stays cheap; third-party families
are found through the ``nas_prune.families`` entry-point group (each entry point names
a module that registers its family on import).
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families.base import DATA_KINDS, GeneratorFamily

__all__ = [
    "BUILTIN", "DATA_KINDS", "GeneratorFamily", "code_family", "detect_layout", "families", "family_of",
    "get_family", "register_family",
]

#: Shipped families: registered name -> module that registers it. Order matters only
#: for layout detection (first match wins; layouts of different families do not overlap).
BUILTIN = {
    "inception": "nas_prune.families.inception",
    "spade": "nas_prune.families.spade",
    "unet": "nas_prune.families.unet",
    "module": "nas_prune.families.module",
}
ENTRY_POINT_GROUP = "nas_prune.families"

_REGISTRY: dict[str, GeneratorFamily] = {}
_loaded = False


def register_family(cls: type[GeneratorFamily]) -> type[GeneratorFamily]:
    """Class decorator: register one instance of a :class:`GeneratorFamily` subclass under ``cls.name``.

    Raises:
        NasPruneError: no name, or the name is taken by another class.
    """
    if not isinstance(cls, type) or not issubclass(cls, GeneratorFamily):
        raise NasPruneError(f"register_family: {cls!r} is not a GeneratorFamily subclass")
    if not cls.name:
        raise NasPruneError(f"register_family: {cls.__name__} has no name")
    old = _REGISTRY.get(cls.name)
    if old is not None and type(old).__qualname__ != cls.__qualname__:
        raise NasPruneError(f"register_family: {cls.name!r} is already {type(old).__name__}")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN.values():
        importlib.import_module(module)
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except Exception as err:  # a broken plug-in must not break the shipped families
                import warnings

                warnings.warn(f"generator family plug-in {ep.name!r} ({ep.value}) failed to import: {err}",
                              stacklevel=2)
    except Exception:  # pragma: no cover - metadata unavailable
        pass


def families() -> list[GeneratorFamily]:
    """Every registered family, shipped ones first."""
    _load_all()
    return list(_REGISTRY.values())


def get_family(name: str) -> GeneratorFamily:
    """The family registered as ``name``.

    Raises:
        NasPruneError: an unknown name, listing the known ones.
    """
    if name not in _REGISTRY:
        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        else:
            _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(f.name for f in families())
        raise NasPruneError(f"unknown generator family {name!r}: choose from {known}") from None


def code_family() -> GeneratorFamily:
    """The family that builds generators from the user's code (:attr:`GeneratorFamily.from_code`)."""
    for fam in families():
        if fam.from_code:
            return fam
    raise NasPruneError("no generator family builds models from code (--model)")  # pragma: no cover


def family_of(arch: Any) -> GeneratorFamily:
    """The family of an architecture object (its class attribute ``family``)."""
    name = getattr(arch, "family", None)
    if not isinstance(name, str):
        raise NasPruneError(f"not a generator architecture: {type(arch).__name__}")
    return get_family(name)


def detect_layout(keys: Sequence[str] | Iterable[str]) -> tuple[GeneratorFamily, str] | None:
    """``(family, layout)`` of a checkpoint with these keys, or None for an unknown layout."""
    keys = list(keys)
    for fam in families():
        layout = fam.detect_layout(keys)
        if layout is not None:
            return fam, layout
    return None


def layout_hints() -> str:
    """Every family's key pattern, for the unknown-layout error."""
    return ", ".join(f.layout_hint for f in families() if f.layout_hint)


def data_kind(obj: Any) -> str | None:
    """The data kind (``"images"`` or ``"semantic"``) of an arch, a search space or a built
    generator (anything with ``family`` or ``arch.family``); None when it has neither."""
    name = getattr(obj, "family", None)
    if name is None:
        name = getattr(getattr(obj, "arch", None), "family", None)
    if not isinstance(name, str):
        return None
    return get_family(name).data_kind


def module_types() -> tuple[type, ...]:
    """The nn.Module classes every registered family builds."""
    return tuple(t for f in families() for t in f.module_types())
