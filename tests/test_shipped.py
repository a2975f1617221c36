"""Recipes and search spaces ship inside the package and are found by name from any folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.recipe import load_recipe
from nas_prune.shipped import resolve_shipped, shipped_dir, shipped_names
from nas_prune.space import load_space


def test_shipped_files_live_in_the_package():
    import nas_prune

    package = shipped_dir("recipes").parent
    assert package == __import__("pathlib").Path(nas_prune.__file__).resolve().parent
    assert {"demo", "demo_ci", "horse2zebra", "map2aerial", "cityscapes"} <= set(shipped_names("recipes"))
    assert {"cat_inception", "cat_inception_pix2pix", "resnet_9blocks"} <= set(shipped_names("search_spaces"))


def test_pyproject_ships_them_as_package_data():
    import tomllib

    root = shipped_dir("recipes").parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["nas_prune"]
    assert "recipes/*.yaml" in patterns and "search_spaces/*.yaml" in patterns
    assert not (root / "recipes").exists() and not (root / "search_spaces").exists()  # one copy only


def test_names_work_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe("horse2zebra", overrides=["data=d", "teacher=t.pth"])
    assert r.name == "horse2zebra" and r.path == shipped_dir("recipes") / "horse2zebra.yaml"
    assert load_recipe("demo.yaml").name == "demo"
    assert load_space("cat_inception").name == "cat_inception"
    result = CliRunner().invoke(app, ["validate", "demo"])
    assert result.exit_code == 0, result.output
    assert f"file: {shipped_dir('recipes') / 'demo.yaml'}" in result.output
    result = CliRunner().invoke(app, ["profile", "resnet_9blocks", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["macs"]["fvcore"] == 49_681_530_880


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("name: mine\nrun_dir: runs/mine\nstages:\n  dataset: {}\n", encoding="utf-8")
    assert load_recipe("demo.yaml").name == "mine"
    assert load_recipe("demo").name == "demo"  # a bare name without the file's suffix is the shipped one
    path, shipped = resolve_shipped("search_spaces", shipped_dir("search_spaces") / "cat_inception.yaml")
    assert not shipped and path.name == "cat_inception.yaml"


def test_unknown_names_list_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NasPruneError, match=r"recipe not found: hors2zebra .*horse2zebra"):
        load_recipe("hors2zebra")
    with pytest.raises(NasPruneError, match=r"search space not found: recipes/cat\.yaml .*cat_inception"):
        load_space("recipes/cat.yaml")
    result = CliRunner().invoke(app, ["search", "--teacher", "t.pth", "--target-macs", "1G", "--space", "nope"])
    assert result.exit_code == 2
