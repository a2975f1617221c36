"""Optuna studies around the one-step solution (nas_prune.study, nas-prune search --trials)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.calibration import calibration_images
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.export import read_student, reslice
from nas_prune.load import load_generator
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.plan import prunable_layers
from nas_prune.scores import FidelityProbe
from nas_prune.search import search
from nas_prune.study import (
    open_storage,
    parse_objectives,
    pareto_front,
    run_study,
    scaled_scores,
    search_groups,
)

TARGET = 2_000_000  # fvcore MACs at 32x32; the tiny teacher has 4.2M
COMMON = dict(target_macs=TARGET, input_size=32, min_channels=4, calib_images=4, latency_repeats=2,
              latency_threads=1, device="cpu")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def teacher_file(tmp_path, tiny_arch) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save(randomize_(build_generator(tiny_arch), seed=1).state_dict(), path)
    return path


def _trials(out: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


# ----------------------------------------------------------------------------- search variables


def test_groups_partition_the_layers(tiny_arch):
    groups = search_groups(tiny_arch)
    assert list(groups) == ["stem", "stream", "head", "res_k1", "res_k3", "res_k5", "dw_k1", "dw_k3",
                            "dw_k5", "early", "middle", "late"]
    assert groups["stream"] == ("stem.2",)
    assert groups["early"] == tuple(f"blocks.0.{k}.{j}" for k in ("res", "dw") for j in range(3))
    names = [l.name for l in prunable_layers(tiny_arch)]
    depth = {"early", "middle", "late"}
    for name in names:
        kinds = [g for g, members in groups.items() if name in members and g not in depth]
        assert len(kinds) == 1, name
        in_depth = [g for g in depth if name in groups[g]]
        assert len(in_depth) == (1 if name.startswith("blocks.") else 0), name


def test_groups_skip_missing_kernels_and_empty_thirds(tiny_arch):
    from nas_prune.arch import Block

    arch = tiny_arch.with_widths(blocks=[Block(res=(0, 4, 0), dw=(4, 0, 0))] * 2)
    groups = search_groups(arch)
    assert set(groups) == {"stem", "stream", "head", "res_k3", "dw_k1", "early", "middle"}


def test_multipliers_scale_whole_layers(tiny_arch):
    sd = randomize_(build_generator(tiny_arch)).state_dict()
    from nas_prune.importance import gamma

    base = gamma(tiny_arch, sd)
    groups = search_groups(tiny_arch)
    ones = scaled_scores(base, groups, {g: 1.0 for g in groups})
    assert all((ones[k] == base[k].double().numpy()).all() for k in base)
    scaled = scaled_scores(base, groups, {"res_k3": 2.0, "late": 0.5, "stream": 1.5})
    assert (scaled["blocks.0.res.1"] == 2.0 * ones["blocks.0.res.1"]).all()
    assert (scaled["blocks.2.res.1"] == 1.0 * ones["blocks.2.res.1"]).all()  # 2.0 * 0.5
    assert (scaled["blocks.2.dw.0"] == 0.5 * ones["blocks.2.dw.0"]).all()
    assert (scaled["stem.2"] == 1.5 * ones["stem.2"]).all()


def test_parse_objectives():
    assert parse_objectives("quality") == ("quality",)
    assert parse_objectives("quality, latency") == ("quality", "latency")
    for bad, msg in (("latency", "expected quality"), ("quality,speed", "unknown objective 'speed'"),
                     ("quality,quality", "repeats"), ("", "unknown objective")):
        with pytest.raises(NasPruneError, match=msg):
            parse_objectives(bad)


# ----------------------------------------------------------------------------- a study


def test_study_exports_valid_students_at_the_target(tmp_path, teacher_file):
    out = tmp_path / "study"
    result = run_study(teacher=teacher_file, trials=4, out=out, study_name="s", **COMMON)
    trials = _trials(out, "s")
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    loaded = load_generator(teacher_file)
    for t in trials:  # every candidate meets the budget, none rejected for it
        assert t.user_attrs["macs"] <= TARGET
    # trial 0 is the one-step solution: same widths as `nas-prune search` with the same options
    assert trials[0].params == {g: 1.0 for g in search_groups(loaded.arch)}
    one = search(teacher=teacher_file, target_macs=TARGET, input_size=32, min_channels=4, write=False)
    key = ",".join(str(one.plan.widths[l.name]) for l in prunable_layers(loaded.arch))
    assert trials[0].user_attrs["widths"] == key and result.one_step.number == 0
    # the export is the best trial, a valid student folder with its provenance
    assert result.picked.quality == max(t.values[0] for t in trials)
    arch, state, doc = read_student(result.student_dir)
    assert count_macs(arch, input_size=32) <= TARGET
    study = doc["provenance"]["study"]
    assert study["trial"] == result.picked.number and study["score"] == "zero-shot"
    assert study["params"] == trials[result.picked.number].params
    resliced = reslice(loaded.state_dict, doc)
    assert all(torch.equal(resliced[k], state[k]) for k in state)
    # the exported student scores what its trial scored
    images, _, _ = calibration_images(loaded.arch, n_images=4, input_size=(32, 32))
    student = build_generator(arch)
    student.load_state_dict(state)
    fid = FidelityProbe(loaded.build(), images).score(student)
    assert fid.psnr == pytest.approx(result.picked.psnr, abs=1e-4)  # dB, float32 outputs
    assert (out / "trials.csv").read_text().count("\n") == 5
    assert result.plot is None  # one objective: no Pareto plot


def test_same_widths_are_scored_once(tmp_path, teacher_file):
    # multipliers this close to 1 cannot reorder the channels: every trial is the one-step student
    result = run_study(teacher=teacher_file, trials=4, out=tmp_path / "s", study_name="c",
                       multiplier_range=(0.99999, 1.00001), **COMMON)
    trials = _trials(tmp_path / "s", "c")
    assert result.evaluated == [0]
    assert [t.user_attrs.get("cached_from") for t in trials] == [None, 0, 0, 0]
    assert len({t.values[0] for t in trials}) == 1
    assert len(result.front) == 1


def test_two_objectives_pareto_front_pick_and_plot(tmp_path, teacher_file):
    out = tmp_path / "p"
    result = run_study(teacher=teacher_file, trials=6, out=out, study_name="p",
                       objectives="quality,latency", pick=0, **COMMON)
    front = result.front
    assert front == sorted(front, key=lambda r: r.latency_ms)
    done = [r for r in result.trials if r.state == "COMPLETE"]
    for r in front:  # nobody dominates a front member
        assert not any(o.quality >= r.quality and o.latency_ms <= r.latency_ms
                       and (o.quality, o.latency_ms) != (r.quality, r.latency_ms) for o in done)
    for r in done:  # everyone else is dominated or equals a front member
        assert r in front or any(f.quality >= r.quality and f.latency_ms <= r.latency_ms for f in front)
    assert result.picked == front[0]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(NasPruneError, match=rf"--pick {len(front)}: the Pareto front has {len(front)} trials"):
        run_study(teacher=teacher_file, trials=6, out=out, study_name="p",
                  objectives="quality,latency", pick=len(front), **COMMON)


def test_pareto_front_dedupes_students():
    from nas_prune.study import TrialRecord

    def rec(n, q, lat, w):
        return TrialRecord(n, "COMPLETE", {}, q, q, 0.9, lat, 1, 1, w, False, None, "")

    records = [rec(0, 10, 5, "a"), rec(1, 10, 4, "a"), rec(2, 12, 6, "b"), rec(3, 9, 3, "c"), rec(4, 8, 7, "d")]
    assert [r.number for r in pareto_front(records, objectives=("quality", "latency"))] == [3, 0, 2]
    assert [r.number for r in pareto_front(records, objectives=("quality",))] == [2, 0, 3, 4]


def test_resume_does_not_repeat_and_checks_options(tmp_path, teacher_file):
    out = tmp_path / "r"
    first = run_study(teacher=teacher_file, trials=3, out=out, study_name="r", **COMMON)
    before = {t.number: (t.values, t.datetime_complete) for t in _trials(out, "r")}
    second = run_study(teacher=teacher_file, trials=5, out=out, study_name="r", **COMMON)
    after = _trials(out, "r")
    assert first.ran == [0, 1, 2] and second.ran == [3, 4]
    assert len(after) == 5 and all(t.state.name == "COMPLETE" for t in after)
    assert {t.number: (t.values, t.datetime_complete) for t in after[:3]} == before
    third = run_study(teacher=teacher_file, trials=5, out=out, study_name="r", **COMMON)
    assert third.ran == [] and len(_trials(out, "r")) == 5
    with pytest.raises(NasPruneError, match="was created with score = \"zero-shot\""):
        run_study(teacher=teacher_file, trials=5, out=out, study_name="r", score="finetune:2", **COMMON)


def test_bad_options(tmp_path, teacher_file):
    for trials in (0, -1):
        with pytest.raises(NasPruneError, match="--trials must be an integer >= 1"):
            run_study(teacher=teacher_file, trials=trials, out=tmp_path / "x", **COMMON)
    with pytest.raises(NasPruneError, match="--pick must be >= 0"):
        run_study(teacher=teacher_file, trials=1, pick=-1, out=tmp_path / "x", **COMMON)
    with pytest.raises(NasPruneError, match="multiplier range"):
        run_study(teacher=teacher_file, trials=1, multiplier_range=(1.5, 2), out=tmp_path / "x", **COMMON)


@pytest.mark.parametrize(
    "url, msg",
    [
        ("notaurl", "not a database URL"),
        ("foo://bar", "cannot open the storage"),
        ("sqlite://", "in-memory"),
        ("sqlite:////no/such/dir/s.db", "folder /no/such/dir does not exist"),
        ("postgresql://u:secret@127.0.0.1:1/db", "postgresql://u:\\*\\*\\*@127.0.0.1:1/db"),
        ("journal:/no/such/dir/j.log", "folder /no/such/dir does not exist"),
    ],
)
def test_bad_storage_urls(tmp_path, url, msg):
    with pytest.raises(NasPruneError, match=msg) as err:
        open_storage(url, out=tmp_path)
    assert "secret" not in str(err.value)


def test_journal_storage_and_finetune_reports(tmp_path, teacher_file):
    journal = tmp_path / "j.log"
    result = run_study(teacher=teacher_file, trials=3, out=tmp_path / "j", study_name="j",
                       storage=f"journal:{journal}", score="finetune:4", **COMMON)
    assert journal.is_file() and result.storage == f"journal:{journal}"
    study = optuna.load_study(study_name="j", storage=open_storage(f"journal:{journal}", out=tmp_path).storage)
    trials = study.get_trials()
    assert len(trials) == 3
    evaluated = [t for t in trials if t.user_attrs.get("evaluated")]
    # every trial was fine-tuned here or reused the score of an identical student
    assert sorted(t.number for t in evaluated) == sorted(result.evaluated) and 0 in result.evaluated
    for t in trials:
        if t not in evaluated:
            hit = trials[t.user_attrs["cached_from"]]
            assert hit in evaluated and t.user_attrs["widths"] == hit.user_attrs["widths"]
            assert t.values == hit.values and not t.intermediate_values
    for t in evaluated:  # finetune trials report after each step, for trial pruning
        assert t.state == optuna.trial.TrialState.COMPLETE  # 3 trials: too few for the pruner to stop one
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        assert all(math.isfinite(v) for v in t.intermediate_values.values())
        assert t.values[0] == pytest.approx(t.intermediate_values[4])


# ----------------------------------------------------------------------------- processes

WORKER = """
import json, os, sys, time, torch
torch.set_num_threads(1)
from nas_prune.study import run_study
from nas_prune.study.worker import _Study
kw, gate = json.loads(sys.argv[1]), json.loads(sys.argv[2])
calls = []
evaluate = _Study.evaluate

def gated(self, study, trial):
    # Test hooks, so that the scenario does not depend on timing: "meet" holds this worker's
    # first trial until every worker holds one; "hold" marks the given call and waits to be killed.
    calls.append(trial.number)
    folder = gate.get("dir")
    if gate.get("meet") and len(calls) == 1:
        open(os.path.join(folder, f"ready-{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 600
        while sum(n.startswith("ready-") for n in os.listdir(folder)) < gate["meet"]:
            assert time.monotonic() < deadline, "the other workers never started a trial"
            time.sleep(0.05)
    if gate.get("hold") == len(calls):
        open(os.path.join(folder, "held"), "w").write(str(trial.number))
        while True:
            time.sleep(1)
    return evaluate(self, study, trial)

_Study.evaluate = gated
r = run_study(**kw)
print(json.dumps({"ran": r.ran, "evaluated": r.evaluated}))
"""


def _worker(gate: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
    gate = {k: (str(v) if isinstance(v, Path) else v) for k, v in (gate or {}).items()}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(kw), json.dumps(gate)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Poll until ``path`` exists; fail with the worker's stderr if it ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode} before {path.name}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)


def test_two_workers_share_one_storage(tmp_path, teacher_file):
    out = tmp_path / "w"
    gate = tmp_path / "gate"
    gate.mkdir()
    kw = dict(teacher=teacher_file, trials=6, out=out, study_name="w", score="finetune:3", **COMMON)
    # each worker's first trial waits until the other holds one too: both take part however
    # slowly either starts
    procs = [_worker(gate={"dir": gate, "meet": 2}, **kw) for _ in range(2)]
    outputs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    trials = _trials(out, "w")
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    ran = sorted(outputs[0]["ran"] + outputs[1]["ran"])
    assert ran == list(range(6))  # every trial run by exactly one worker
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert pids == {p.pid for p in procs}  # both took part
    evaluated = [t for t in trials if t.user_attrs.get("evaluated")]
    assert len({t.user_attrs["widths"] for t in evaluated}) == len(evaluated)  # no student scored twice
    assert sum(t.params == {g: 1.0 for g in t.params} for t in trials) >= 1


def test_killed_worker_is_resumed(tmp_path, teacher_file):
    out = tmp_path / "k"
    kw = dict(teacher=teacher_file, trials=2, out=out, study_name="k", score="finetune:4", **COMMON)
    # the worker finishes trial 0, then stops inside trial 1 until it is killed there
    proc = _worker(gate={"dir": tmp_path, "hold": 2}, **kw)
    try:
        _wait_for(tmp_path / "held", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    before = {t.number: (t.state.name, t.values, t.datetime_complete) for t in _trials(out, "k")}
    killed = [n for n, (s, _, _) in before.items() if s == "RUNNING"]
    done = [n for n, (s, _, _) in before.items() if s == "COMPLETE"]
    assert killed == [int((tmp_path / "held").read_text())] and done == [0]

    result = run_study(**kw)
    after = _trials(out, "k")
    finished = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    assert after[killed[0]].state.name == "FAIL"  # the interrupted trial ...
    retry = [t for t in after if t.system_attrs.get("failed_trial") == killed[0]]
    # ... is run again with its parameters (a worker killed while Optuna was still writing them
    # leaves only some: those are kept, the rest are sampled anew)
    assert len(retry) == 1
    assert [(r.number, r.retry_of) for r in result.retried] == [(retry[0].number, killed[0])]
    assert result.to_json()["retried"] == [{"trial": retry[0].number, "retry_of": killed[0]}]
    assert {k: retry[0].params[k] for k in after[killed[0]].params} == after[killed[0]].params
    for n in done:  # finished trials are kept, not repeated
        assert (after[n].state.name, after[n].values, after[n].datetime_complete) == before[n]
        assert n not in result.ran
    assert len(result.ran) == 2 - len(done)


# ----------------------------------------------------------------------------- CLI


def test_cli_study_and_errors(tmp_path, teacher_file):
    runner = CliRunner()
    base = ["search", "--teacher", str(teacher_file), "--target-macs", "2M", "--input-size", "32",
            "--min-channels", "4", "--out", str(tmp_path / "cli")]
    res = runner.invoke(app, [*base, "--trials", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["finished"] == 2 and data["one_step"]["number"] == 0
    assert (tmp_path / "cli" / "arch.json").is_file() and (tmp_path / "cli" / "student.safetensors").is_file()
    res = runner.invoke(app, [*base, "--trials", "2"])
    assert res.exit_code == 0 and "top trials" in res.output and "one-step" in res.output
    for extra, msg in (
        (["--trials", "0"], "--trials must be an integer >= 1"),
        (["--trials", "2", "--pick", "9"], "--pick 9: a study of 2 trials ranks at most 2 students"),
        (["--trials", "2", "--storage", "nope://x"], "--storage nope://x"),
        (["--pick", "1"], "--pick needs --trials N"),
        (["--trials", "2", "--score", "finetune"], "--score 'finetune'"),
        (["--trials", "2", "--objectives", "latency"], "--objectives"),
    ):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert f"error: {msg}" in res.output.replace("\n", " ") or msg in res.output, (extra, res.output)
        assert "Traceback" not in res.output


def test_a_unet_teacher_takes_a_study(tmp_path):
    """--trials needs nothing of a family but the protocol: a U-Net teacher's study exports a
    student of its family under the target, with trial 0 the one-step solution."""
    from nas_prune.families.unet.arch import teacher_arch
    from nas_prune.macs import count_macs as macs

    teacher = teacher_arch(ngf=8, num_downs=5)
    path = tmp_path / "unet.pth"
    torch.save(randomize_(build_generator(teacher), seed=2).state_dict(), path)
    target = macs(teacher, input_size=32) // 3
    groups = search_groups(teacher)
    assert set(groups) == {"down", "up", "outer", "middle", "inner"}  # the U-Net family's own groups
    assert {n for names in groups.values() for n in names} == {l.name for l in prunable_layers(teacher)}
    opts = {**COMMON, "target_macs": target}
    result = run_study(teacher=path, trials=3, out=tmp_path / "u", study_name="u", **opts)
    trials = _trials(tmp_path / "u", "u")
    assert len(trials) == 3 and all(t.user_attrs["macs"] <= target for t in trials)
    assert trials[0].params == {g: 1.0 for g in groups}
    arch, state, _ = read_student(result.student_dir)
    assert arch.family == "unet" and macs(arch, input_size=32) <= target
