"""Files shipped with the package: recipes and search spaces, found by name or by path.

They live at the repository's top level (``recipes/*.yaml``, ``search_spaces/*.yaml``) and
the wheel installs them inside the package as ``nas_prune/recipes`` and
``nas_prune/search_spaces`` (``setup.py``), so ``nas-prune run demo`` and ``--space
cat_inception`` work from any folder once nas-prune is installed, from a wheel or from a
source checkout. A path to an existing file always wins over a shipped name, so a user's
own ``demo.yaml`` in the working folder is the one used.
"""

from __future__ import annotations

import os
from pathlib import Path

from nas_prune.errors import NasPruneError

__all__ = ["KINDS", "shipped_dir", "shipped_names", "resolve_shipped"]

# kind -> (folder inside the package, what it is called in messages)
KINDS = {"recipes": "recipe", "search_spaces": "search space"}
_SUFFIXES = ("", ".yaml", ".yml")


def shipped_dir(kind: str) -> Path:
    """Folder of the shipped files of ``kind`` (``recipes`` or ``search_spaces``).

    Inside the installed package (a wheel install), else at the top of the source checkout
    the package was imported from (an editable install or a clone on ``sys.path``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of shipped file {kind!r}")
    package = Path(__file__).resolve().parent
    installed = package / kind
    if installed.is_dir():
        return installed
    return package.parent / kind


def shipped_names(kind: str) -> list[str]:
    """Names (file stems) of the shipped files of ``kind``, sorted."""
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _is_bare_name(text: str) -> bool:
    """Whether ``text`` can only be a name: no folder part and a YAML suffix or none."""
    return ("/" not in text and os.sep not in text and (os.altsep is None or os.altsep not in text)
            and Path(text).suffix in _SUFFIXES)


def resolve_shipped(kind: str, name_or_path: str | os.PathLike) -> tuple[Path, bool]:
    """The file behind ``name_or_path``: ``(path, shipped)``.

    An existing file is returned as it is (``shipped`` False). Otherwise a bare name
    (``horse2zebra``, ``cat_inception.yaml``) is looked up among the shipped files.

    Raises:
        NasPruneError: neither a file nor a shipped name; the message lists the shipped names.
    """
    what = KINDS[kind]
    path = Path(name_or_path)
    if path.is_file():
        return path, False
    text = str(name_or_path)
    if _is_bare_name(text):
        candidate = shipped_dir(kind) / f"{Path(text).stem}.yaml"
        if candidate.is_file():
            return candidate, True
    names = ", ".join(shipped_names(kind)) or "none"
    if path.is_dir():
        raise NasPruneError(f"{what} {text} is a folder; give a YAML file or a shipped name ({names})")
    if path.exists():  # a device, FIFO or socket: reading it would block or never end
        raise NasPruneError(f"{what} {text} is not a regular file (a device, FIFO or socket); give a YAML file")
    raise NasPruneError(f"{what} not found: {text} (no such file, and the shipped {what}s are: {names})")
