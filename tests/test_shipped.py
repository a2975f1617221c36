"""Recipes and search spaces ship inside the package and are found by name from any folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.recipe import load_recipe
from nas_prune.shipped import resolve_shipped, shipped_dir, shipped_names
from nas_prune.space import load_space


def test_shipped_files_live_at_the_top_of_the_checkout():
    """search_spaces/ and recipes/ sit beside nas_prune/, tests/ and results/, one copy only."""
    import nas_prune

    root = Path(nas_prune.__file__).resolve().parents[1]
    assert shipped_dir("recipes") == root / "recipes" and shipped_dir("search_spaces") == root / "search_spaces"
    assert not (root / "nas_prune" / "recipes").exists() and not (root / "nas_prune" / "search_spaces").exists()
    assert {"demo", "demo_ci", "horse2zebra", "map2aerial", "cityscapes"} <= set(shipped_names("recipes"))
    assert {"cat_inception", "cat_inception_pix2pix", "resnet_9blocks"} <= set(shipped_names("search_spaces"))


def test_a_wheel_ships_them_inside_the_package(tmp_path):
    """A real, non-editable wheel install: the names resolve from another folder, inside the installed package."""
    import shutil
    import subprocess
    import sys
    import zipfile

    import nas_prune

    root = Path(nas_prune.__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    for name in ("nas_prune", "search_spaces", "recipes"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("nas_prune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nas_prune/search_spaces/cat_inception.yaml" in names and "nas_prune/recipes/demo.yaml" in names
    assert not any(n.startswith(("search_spaces/", "recipes/")) for n in names)
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, sys, nas_prune\n"
            "from nas_prune.shipped import shipped_dir\n"
            "from nas_prune.space import load_space\n"
            "from nas_prune.recipe import load_recipe\n"
            "print(json.dumps([nas_prune.__file__, str(shipped_dir('search_spaces')), str(shipped_dir('recipes')),\n"
            "                  load_space('cat_inception').name, load_recipe('demo').name]))\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    module, spaces, recipes, space, recipe = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(module).resolve().is_relative_to(site.resolve())
    assert Path(spaces).resolve() == (site / "nas_prune" / "search_spaces").resolve()
    assert Path(recipes).resolve() == (site / "nas_prune" / "recipes").resolve()
    assert (space, recipe) == ("cat_inception", "demo")


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
