"""Search spaces: YAML files describing a teacher and its students (shipped ones in ``search_spaces/``).

A space names the teacher's settings; ``space.teacher_arch()`` gives the full-width
teacher and every student of the space fits within it (:func:`nas_prune.arch.fits_within`).
The ``family`` key picks the generator family that reads the rest of the file
(``inception`` when absent, as in every space written before families; ``spade``,
``unet``, ...); :mod:`nas_prune.families.inception.space` shows a file.

Validation is strict: an unknown key or a bad value is an error naming the file and
the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families import get_family
from nas_prune.families.common import read_fields  # noqa: F401  (historical name)
from nas_prune.families.inception.space import SearchSpace  # noqa: F401  (historical name)

#: The family of a space file without a ``family`` key.
DEFAULT_FAMILY = "inception"


def load_space(path: str | os.PathLike) -> Any:
    """Read and validate a search-space YAML file, given by path or by shipped name.

    ``path`` is a YAML file, or the name of a space shipped in ``search_spaces/``
    (``cat_inception``, ``resnet_9blocks``...; :func:`nas_prune.shipped.resolve_shipped`).

    The ``family`` key names the generator family whose space reads the file (its
    :meth:`~nas_prune.families.base.GeneratorFamily.space_from_dict`); without it, the
    inception-residual family (:class:`SearchSpace`).

    Raises:
        NasPruneError: missing file, YAML syntax error (with line), or a bad field.
    """
    from nas_prune.fileio import read_yaml
    from nas_prune.shipped import resolve_shipped

    path, _ = resolve_shipped("search_spaces", path)
    data = read_yaml(path, what="search space")
    if not isinstance(data, Mapping):
        raise NasPruneError(f"{path}: expected a mapping at the top level")
    name = data.get("family", DEFAULT_FAMILY)
    try:
        family = get_family(name) if isinstance(name, str) else None
    except NasPruneError:
        family = None
    if family is None:
        from nas_prune.families import families

        raise NasPruneError(f"{path}: family: {name!r} is not one of {', '.join(f.name for f in families())}")
    return family.space_from_dict(data, source=str(path))


def shipped_spaces_dir() -> Path:
    """Folder of the search spaces shipped with nas-prune."""
    from nas_prune.shipped import shipped_dir

    return shipped_dir("search_spaces")


def shipped_space_of(arch: Any) -> str | None:
    """Name of the shipped search space whose teacher is exactly ``arch``, else None.

    Lets a search without ``--space`` still record which space a teacher belongs to
    (``"space"`` in arch.json) when the teacher is one of the shipped ones.
    """
    folder = shipped_spaces_dir()
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            space = load_space(path)
        except NasPruneError:
            continue
        if space.teacher_arch() == arch:
            return space.name
    return None
