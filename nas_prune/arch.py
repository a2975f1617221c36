"""Architectures as data: the family-independent entry points.

An architecture is a frozen dataclass of its generator family (every width and
setting) whose class attribute ``family`` names the family in the registry
(:mod:`nas_prune.families`). This module reads and compares architectures of any
family; the inception-residual dataclasses themselves (:class:`Arch`, :class:`Block`)
live in :mod:`nas_prune.families.inception.arch` and are re-exported here under their
historical names.

``arch.json`` documents written before families existed have no ``family`` field: they
are inception-residual generators (:data:`DEFAULT_FAMILY`).
"""

from __future__ import annotations

from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families import family_of, get_family
from nas_prune.families.common import check_fields, int_list
from nas_prune.families.inception.arch import NORMS, PADDINGS, SETTINGS, Arch, Block

__all__ = [
    "Arch", "Block", "DEFAULT_FAMILY", "NORMS", "PADDINGS", "SETTINGS", "arch_from_dict", "arch_to_dict",
    "check_fields", "describe", "fits_within", "int_list", "settings_differ",
]

#: The family of a document without a ``family`` field (every arch.json before families).
DEFAULT_FAMILY = "inception"


def arch_from_dict(data: Mapping[str, Any], *, where: str = "arch") -> Any:
    """Validate an ``arch`` section of arch.json and build the architecture of its family.

    Raises:
        NasPruneError: not an object, an unknown family, or the first bad field
            (``arch.blocks[3].res``).
    """
    if not isinstance(data, Mapping):
        raise NasPruneError(f"{where}: expected an object, got {type(data).__name__}")
    name = data.get("family", DEFAULT_FAMILY)
    if not isinstance(name, str):
        raise NasPruneError(f"{where}.family: expected a family name, got {name!r}")
    try:
        family = get_family(name)
    except NasPruneError as err:
        raise NasPruneError(f"{where}.family: {err}") from None
    return family.arch_from_dict(data, where=where)


def arch_to_dict(arch: Any) -> dict[str, Any]:
    """The JSON form of ``arch`` that :func:`arch_from_dict` reads back."""
    return family_of(arch).arch_to_dict(arch)


def describe(arch: Any) -> str:
    """One-line description of ``arch`` for tables and logs."""
    return family_of(arch).describe(arch)


def settings_differ(student: Any, other: Any) -> tuple[str, object, object] | None:
    """``(field, student's value, other's value)`` of the first non-width setting that differs, or None.

    A difference of family is reported as the field ``family``.
    """
    if student.family != other.family:
        return "family", student.family, other.family
    for name in family_of(student).settings:
        if getattr(student, name) != getattr(other, name):
            return name, getattr(student, name), getattr(other, name)
    return None


def fits_within(student: Any, teacher: Any) -> str | None:
    """Why ``student`` is not a sub-network of ``teacher``, or None if it is.

    A student of a teacher's space is of the same family, has the same settings and no
    width larger than the teacher's (the family decides what that means).
    """
    if student.family != teacher.family:
        return f"a {student.family} generator, the teacher is a {teacher.family} generator"
    return family_of(student).fits_within(student, teacher)
