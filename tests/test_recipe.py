"""Recipes: every shipped recipe validates; strict errors name file and field; --set overrides."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.recipe import STAGES, apply_overrides, load_recipe, stage_options
from nas_prune.recipe_run import run_recipe
from nas_prune.shipped import shipped_dir

RECIPES = sorted(shipped_dir("recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"demo", "demo_ci", "horse2zebra", "map2aerial", "cityscapes"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates_and_names_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# Run: nas-prune run {path.stem}")
    r = load_recipe(path)
    assert r.stages and list(r.stages) == [s for s in STAGES if s in r.stages]
    result = CliRunner().invoke(app, ["validate", str(path)])
    from nas_prune.recipe import placeholders

    left = placeholders(r)
    if not left:  # the demos run as they are
        assert result.exit_code == 0, result.output
        assert "valid recipe" in result.output
        return
    # the paper recipes carry placeholders: validate names every one by its recipe key, one line each
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines[0].startswith("error: "), result.output
    assert len(lines) == (1 if len(left) == 1 else 1 + len(left)), result.output
    assert all(line.startswith("  - ") and "replace the placeholder" in line for line in lines[1:]), result.output
    for key, _ in left:
        where = key if key in ("data", "teacher", "student", "space") else f"stages.{key}"
        assert f"{where}: replace the placeholder" in result.output and f"--set {key}=" in result.output


def test_paper_settings():
    h2z = load_recipe(RECIPES[0].parent / "horse2zebra.yaml")
    assert h2z.stages["prune"]["target_macs"] == "2.6G" and h2z.stages["prune"]["convention"] == "paper"
    d = h2z.stages["distill"]
    assert (d["epochs"], d["epochs_decay"], d["batch_size"], d["lambda_recon"], d["gan_mode"]) == (500, 500, 80, 5.0, "lsgan")
    # CAT sums the KA of its 4 GPUs (lambda_distill 1, 1.3, 0.5); nas-prune averages per-device KA: 4x
    assert d["distill"] == {"gcka": 4.0} and d["distill_taps"] == ["stem", "block3", "block6", "block9"]
    m2a = load_recipe(RECIPES[0].parent / "map2aerial.yaml").stages
    assert (m2a["prune"]["target_macs"], m2a["distill"]["epochs_decay"], m2a["distill"]["distill"]) == ("4.6G", 1000, {"gcka": 5.2})
    cs = load_recipe(RECIPES[0].parent / "cityscapes.yaml").stages
    assert (cs["prune"]["target_macs"], cs["distill"]["epochs_decay"], cs["distill"]["distill"]) == ("5.6G", 750, {"gcka": 2.0})


def test_stage_options_come_from_the_library():
    from nas_prune.distill import DistillConfig
    from nas_prune.search import search
    from nas_prune.train_teacher import TeacherConfig

    assert set(stage_options("distill")) == {f.name for f in dataclasses.fields(DistillConfig)}
    assert set(stage_options("train_teacher")) == {f.name for f in dataclasses.fields(TeacherConfig)}
    kw = {p.name for p in inspect.signature(search).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert set(stage_options("prune")) == (kw - {"teacher", "out", "force", "write", "space"}) | {"study"}
    assert stage_options("prune")["target_macs"] is None  # --target-macs and/or --target-latency


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
name: t
run_dir: runs/t
data: data
teacher: t.pth
stages:
  prune: {target_macs: 1G}
  distill: {epochs: 2}
"""


@pytest.mark.parametrize("text, message", [
    (BASE + "colour: red\n", r"r.yaml: colour: unknown key"),
    (BASE.replace("prune:", "prun:"), r"r.yaml: stages.prun: unknown stage; did you mean 'prune'\?"),
    (BASE.replace("epochs: 2", "epoch: 2"), r"r.yaml: stages.distill.epoch: unknown option; did you mean 'epochs'\?"),
    (BASE.replace("epochs: 2", "epochs: two"), r"r.yaml: stages.distill.epochs: expected int, got 'two'"),
    (BASE.replace("epochs: 2", "distill_taps: stem"), r"r.yaml: stages.distill.distill_taps: expected tuple"),
    (BASE.replace("epochs: 2", "flip: 1"), r"r.yaml: stages.distill.flip: expected bool"),
    (BASE.replace("{target_macs: 1G}", "{target_macs: 1G, input_size: true}"), r"stages.prune.input_size: expected int \| str"),
    (BASE.replace("epochs: 2", "batch_size: 1"), r"r.yaml: stages.distill.batch_size: must be >= 2"),
    (BASE.replace("{target_macs: 1G}", "{convention: fvcore}"), r"r.yaml: stages.prune.target_macs: missing required option"),
    (BASE.replace("1G", "lots"), r"r.yaml: stages.prune.target_macs: "),
    (BASE.replace("data: data\n", ""), r"r.yaml: data: stages.distill needs a dataset"),
    (BASE.replace("teacher: t.pth\n", ""), r"r.yaml: teacher: stages.prune needs a teacher"),
    (BASE.replace("name: t\n", ""), r"r.yaml: name: missing required key"),
    (BASE + "  export: {format: tensorrt}\n", r"r.yaml: stages.export.format: 'tensorrt'"),
    (BASE + "  evaluate: {inceptoin: x}\n", r"r.yaml: stages.evaluate.inceptoin: unknown option; did you mean 'inception'\?"),
    (BASE.replace("{target_macs: 1G}", "{target_macs: 1G, study: {trails: 3}}"), r"r.yaml: stages.prune.study.trails: unknown option"),
    ("name: [", r"r.yaml: not valid YAML at line"),
    (BASE + "threads: 0\n", r"r.yaml: threads: expected a number of threads >= 1 or auto, got 0"),
    (BASE + "threads: many\n", r"r.yaml: threads: expected a number of threads >= 1 or auto, got 'many'"),
])
def test_strict_errors_name_file_and_field(tmp_path, text, message):
    with pytest.raises(NasPruneError, match=message):
        load_recipe(_write(tmp_path, text))


def test_cli_validate_error_is_one_line(tmp_path):
    path = _write(tmp_path, BASE.replace("epochs: 2", "epoch: 2"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {path}: stages.distill.epoch: unknown option; did you mean 'epochs'?"]
    result = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "recipe not found" in result.output


def test_overrides():
    raw = {"name": "t", "stages": {"distill": {"epochs": 2, "distill": {"gcka": 1.0}}, "baseline": {}}}
    out = apply_overrides(raw, ["distill.epochs=5", "distill.distill.crd=0.5", "run_dir=runs/x",
                                "prune.study.trials=20", "baseline=null", "distill.distill_taps=[stem, block3]"])
    assert out["stages"]["distill"] == {"epochs": 5, "distill": {"gcka": 1.0, "crd": 0.5}, "distill_taps": ["stem", "block3"]}
    assert out["run_dir"] == "runs/x" and out["stages"]["prune"] == {"study": {"trials": 20}}
    assert "baseline" not in out["stages"]
    assert raw["stages"]["distill"]["epochs"] == 2  # the input is not modified
    with pytest.raises(NasPruneError, match="expected KEY=VALUE"):
        apply_overrides(raw, ["distill.epochs"])
    with pytest.raises(NasPruneError, match="distill.epochs is not a mapping"):
        apply_overrides(raw, ["distill.epochs.x=1"])


def test_set_is_validated_like_the_file(tmp_path):
    path = _write(tmp_path, BASE)
    r = load_recipe(path, overrides=["distill.epochs=7", "prune.target_macs=2.6G", "prune.input_size=64x96",
                                     "distill.lambda_recon=5", "distill.distill_taps=[stem, block1]"])
    assert r.stages["distill"]["epochs"] == 7 and r.stages["prune"]["target_macs"] == "2.6G"
    assert r.stages["prune"]["input_size"] == "64x96" and r.stages["distill"]["lambda_recon"] == 5
    with pytest.raises(NasPruneError, match="stages.distill.epochz: unknown option"):
        load_recipe(path, overrides=["distill.epochz=7"])


def test_placeholders_load_but_neither_validate_nor_run(tmp_path):
    from nas_prune.recipe import placeholders

    h2z = RECIPES[0].parent / "horse2zebra.yaml"
    assert [k for k, _ in placeholders(load_recipe(h2z))] == ["data", "teacher", "evaluate.inception"]
    with pytest.raises(NasPruneError, match=r"3 settings would stop the run: data: replace the placeholder .*"
                                            r"teacher: replace the placeholder .*--set teacher=\.\.\.\).*"
                                            r"stages\.evaluate\.inception: replace the placeholder"):
        run_recipe(h2z, overrides=[f"run_dir={tmp_path / 'run'}"], log=lambda s: None)
    assert not (tmp_path / "run").exists()  # stopped before the first stage


def test_cli_run_prints_stage_names(tmp_path, monkeypatch):
    import nas_prune.recipe_run as recipe_mod

    def fake_run(path, *, overrides, log):
        log("[distill] resuming from its checkpoint -> runs/x/distill")
        return recipe_mod.RunResult(run_dir=tmp_path, stages=[], seconds=0.0)

    monkeypatch.setattr(recipe_mod, "run_recipe", fake_run)
    result = CliRunner().invoke(app, ["run", "whatever.yaml"])
    assert result.exit_code == 0 and "[distill] resuming" in result.output


def test_report_options_are_write_reports_options():
    """The recipe reads the report stage's options from ReportOptions; write_report takes the same."""
    import dataclasses
    import inspect

    from nas_prune.report import write_report
    from nas_prune.report_options import ReportOptions

    params = {p.name: p.default for p in inspect.signature(write_report).parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.name not in ("run_dir", "out", "data", "models")}
    assert params == {f.name: f.default for f in dataclasses.fields(ReportOptions)}
    assert stage_options("report") == params
