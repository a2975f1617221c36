"""Package layout that pyproject.toml cannot say on its own.

The search spaces and recipes live at the repository's top level (``search_spaces/``,
``recipes/``) and ship inside the wheel as ``nas_prune/search_spaces`` and
``nas_prune/recipes``, so shipped names work from any folder after ``pip install .``.
Everything else about the package is in pyproject.toml.
"""

from setuptools import find_packages, setup

SHIPPED = {"nas_prune.search_spaces": "search_spaces", "nas_prune.recipes": "recipes"}

setup(
    packages=find_packages(include=["nas_prune", "nas_prune.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={name: ["*.yaml"] for name in SHIPPED},
)
