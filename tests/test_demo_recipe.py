"""The CI-sized demo recipe end to end: stopped by SIGTERM mid-distill, resumed, skipped when done."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nas_prune import threads
from nas_prune.cli import app
from nas_prune.recipe_run import run_recipe
from nas_prune.shipped import shipped_dir

DEMO_CI = shipped_dir("recipes") / "demo_ci.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run demo_ci, send it SIGTERM (as docker stop, systemd or Slurm do) at distill step 2, run it
    again; return what each run saw."""
    from nas_prune.interrupt import Interrupted

    run_dir = tmp_path_factory.mktemp("demo") / "run"
    overrides = [f"run_dir={run_dir}"]
    first_steps, second_steps, logs = [], [], []

    def stop_at_2(step, losses):
        first_steps.append(step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by nas_prune.interrupt

    with pytest.raises(Interrupted) as stopped:
        run_recipe(DEMO_CI, overrides=overrides, hooks={"distill": stop_at_2}, log=logs.append)
    assert stopped.value.signum == signal.SIGTERM and stopped.value.exit_code == 143
    interrupted = json.loads((run_dir / "distill" / "stage.json").read_text())
    interrupted["status.json"] = json.loads((run_dir / "distill" / "status.json").read_text())
    second = run_recipe(DEMO_CI, overrides=overrides, hooks={"distill": lambda s, v: second_steps.append(s)},
                        log=logs.append)
    return {"run_dir": run_dir, "overrides": overrides, "first_steps": first_steps, "second_steps": second_steps,
            "interrupted": interrupted, "second": second, "logs": logs}


def test_interrupted_distill_resumes_instead_of_starting_over(demo_run):
    assert demo_run["first_steps"] == [1, 2]
    assert demo_run["interrupted"]["status"] == "interrupted"
    assert demo_run["interrupted"]["signal"] == "SIGTERM"
    assert demo_run["interrupted"]["summary"]["step"] == 2
    status = demo_run["interrupted"]["status.json"]
    assert (status["state"], status["step"], status["reason"]) == ("interrupted", 2, "SIGTERM")
    actions = {o.stage: o.action for o in demo_run["second"].stages}
    assert actions["dataset"] == actions["train_teacher"] == actions["prune"] == "skipped"
    assert actions["distill"] == "resumed"
    assert demo_run["second_steps"] == [3, 4]  # continued from the checkpoint of step 2
    assert actions["baseline"] == actions["evaluate"] == actions["export"] == actions["report"] == "ran"
    state = json.loads((demo_run["run_dir"] / "distill" / "stage.json").read_text())
    assert state["status"] == "done" and state["summary"]["step"] == 4 and state["summary"]["finished"]
    assert any("interrupted by SIGTERM at step 2" in line for line in demo_run["logs"])


def test_outputs(demo_run):
    from nas_prune.load import load_generator
    from nas_prune.train_teacher import TeacherConfig, teacher_arch

    run = demo_run["run_dir"]
    teacher = load_generator(run / "train_teacher" / "teacher.safetensors")
    assert teacher.arch == teacher_arch(TeacherConfig(ngf=8, n_blocks=3))
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    rows = metrics["models"]
    assert list(rows) == ["teacher", "pruned (no fine-tuning)", "student, no distillation", "student, distilled"]
    assert metrics["n_images"] == 4
    for name, row in rows.items():
        assert 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1
        if name != "teacher":
            assert row["macs_fvcore"] <= 2_500_000 < rows["teacher"]["macs_fvcore"]
            assert "psnr_ref" in row
    export = json.loads((run / "export" / "export.json").read_text())
    assert export["format"] == "onnx" and export["max_abs_diff"] <= 1e-4
    assert (run / "export" / "generator.onnx").is_file()
    report = (run / "report" / "report.md").read_text()
    assert "| student, distilled |" in report and "![test images](grid.png)" in report
    assert "The *pruned* column is the student straight out of one-step pruning" in report
    assert "pruned (no fine-tuning) is the sliced student before any training" in report
    # whether distillation beat the baseline, with the numbers of the table and what they are worth
    d, b = rows["student, distilled"], rows["student, no distillation"]
    assert f"PSNR {d['psnr']:.2f} vs {b['psnr']:.2f} dB ({d['psnr'] - b['psnr']:+.2f})" in report
    assert "single training run with a single seed" in report and "thresholds chosen, not measured" in report
    # the settings that ran, not the recipe's description: --set changes and defaults included
    assert "| distill | gcka 1, aligned, lambda_recon 100, lsgan, 1 + 1 epochs, 4 steps, batch 4, crop 32" in report
    assert "| baseline | no distillation, aligned, lambda_recon 100, lsgan, 1 + 1 epochs, 4 steps" in report
    assert "| prune | to 2.5M MACs (fvcore) at input 32, min_channels 4; 1 torch thread (set) |" in report
    grid = np.asarray(Image.open(run / "report" / "grid.png"))
    # a header row of labels, 4 rows of 32 px and 6 columns (input, 4 models, target), 2 px gaps
    head = grid.shape[0] - (4 * 34 + 2)
    assert grid.shape[1:] == (6 * 34 + 2, 3) and 8 <= head <= 20
    for j in range(6):  # every column has dark label pixels over it
        assert (grid[:head, 2 + j * 34: 2 + j * 34 + 32] < 128).any(), j
    for stage in ("train_teacher", "prune", "distill", "baseline", "evaluate", "export"):
        assert json.loads((run / stage / "stage.json").read_text())["threads"] == {"threads": 1, "source": "set",
                                                                                 "cores": threads.usable_cores()}
    assert "threads" not in json.loads((run / "dataset" / "stage.json").read_text())
    assert "[train_teacher] torch threads: 1 thread (as set)" in demo_run["logs"]
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings["stages"]) == {"dataset", "train_teacher", "prune", "distill", "baseline", "evaluate", "export", "report"}


def test_finished_run_is_skipped_and_changes_rerun_only_what_they_touch(demo_run):
    run = demo_run["run_dir"]
    result = CliRunner().invoke(app, ["run", str(DEMO_CI), "--set", f"run_dir={run}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped") >= 8
    onnx_mtime = (run / "export" / "generator.onnx").stat().st_mtime_ns
    second = run_recipe(DEMO_CI, overrides=[*demo_run["overrides"], "evaluate.batch_size=2"], log=lambda s: None)
    actions = {o.stage: o.action for o in second.stages}
    assert actions == {"dataset": "skipped", "train_teacher": "skipped", "prune": "skipped", "distill": "skipped",
                       "baseline": "skipped", "evaluate": "ran", "export": "skipped", "report": "ran"}
    assert (run / "export" / "generator.onnx").stat().st_mtime_ns == onnx_mtime


def test_changed_outputs_rerun_and_a_failed_stage_is_recorded(demo_run):
    """A finished stage whose output was truncated runs again; a stage that fails says so in stage.json."""
    from nas_prune.export import load_student

    run = demo_run["run_dir"]
    weights = run / "distill" / "final" / "student.safetensors"
    half = weights.read_bytes()[: weights.stat().st_size // 2]
    weights.write_bytes(half)
    logs: list[str] = []
    result = run_recipe(DEMO_CI, overrides=demo_run["overrides"], log=logs.append)
    actions = {o.stage: o.action for o in result.stages}
    assert actions["distill"] != "skipped" and actions["baseline"] == "skipped"
    assert actions["evaluate"] == actions["export"] == actions["report"] == "ran"  # they read the distilled student
    assert any("student.safetensors changed size" in line for line in logs)
    load_student(run / "distill" / "final")  # whole again
    kept = list((run / "distill").glob("changed-*/final/student.safetensors"))
    assert len(kept) == 1 and kept[0].read_bytes() == half  # the changed file is set aside, not deleted

    with pytest.raises(Exception, match="crop_size 8x8 is too small"):
        run_recipe(DEMO_CI, overrides=[*demo_run["overrides"], "evaluate.crop_size=8"], log=logs.append)
    state = json.loads((run / "evaluate" / "stage.json").read_text())
    assert state["status"] == "failed" and "stages.evaluate.crop_size 8x8 is too small" in state["error"]
    again = run_recipe(DEMO_CI, overrides=demo_run["overrides"], log=lambda s: None)
    assert again.outcome("evaluate").action == "ran"


def test_prune_with_an_optuna_study(demo_run):
    """Runs last: it replaces the prune stage of the shared run with a 2-trial study."""
    run = demo_run["run_dir"]
    drop = ["distill=null", "baseline=null", "evaluate=null", "export=null", "report=null"]
    result = run_recipe(DEMO_CI, overrides=[*demo_run["overrides"], "prune.study.trials=2", *drop], log=lambda s: None)
    assert result.outcome("prune").action == "ran"
    assert result.outcome("train_teacher").action == "skipped"
    study = run / "prune" / "student"  # the study folder is the student folder
    assert (study / "study.db").is_file() and (study / "trials.csv").is_file()
    assert len((study / "trials.csv").read_text().strip().splitlines()) == 3  # header + 2 trials
    from nas_prune.export import read_student

    arch, state, doc = read_student(run / "prune" / "student")
    assert state is not None and doc["macs"]["fvcore"] <= 2_500_000


@pytest.mark.parametrize("distilled, baseline, verdict", [
    ((21.65, 0.6069), (21.59, 0.6090), "scored about the same as the undistilled baseline"),  # the demo's numbers
    ((22.40, 0.6300), (21.59, 0.6090), "beat the undistilled baseline"),
    ((20.90, 0.5800), (21.59, 0.6090), "scored below the undistilled baseline"),
    ((22.40, 0.5800), (21.59, 0.6090), "one metric higher, the other lower"),
])
def test_report_says_whether_distillation_beat_the_baseline(distilled, baseline, verdict):
    from nas_prune.report import distillation_note

    rows = {"student, distilled": {"psnr": distilled[0], "ssim": distilled[1]},
            "student, no distillation": {"psnr": baseline[0], "ssim": baseline[1]}}
    note = distillation_note(rows)
    assert verdict in note and "single seed" in note and "below 0.5 dB PSNR and 0.01 SSIM" in note
    assert f"PSNR {distilled[0]:.2f} vs {baseline[0]:.2f} dB" in note
    assert distillation_note({"student, distilled": rows["student, distilled"]}) is None  # no baseline: no note
