"""The torch thread rule: explicit counts win, then OMP_NUM_THREADS, else the cores others leave free."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from nas_prune import threads
from nas_prune.cli import app
from nas_prune.errors import NasPruneError


@pytest.mark.parametrize("value, want", [("auto", "auto"), (None, None), (2, 2), ("3", 3)])
def test_parse_threads(value, want):
    assert threads.parse_threads(value) == want


@pytest.mark.parametrize("value", [0, -1, "x", True, 1.5, "0"])
def test_parse_threads_rejects(value):
    with pytest.raises(NasPruneError, match=r"^recipe.yaml: threads: expected a number of threads >= 1 or auto"):
        threads.parse_threads(value, where="recipe.yaml: threads")


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose other processes use ``state['busy']`` cores."""
    state = {"busy": 0.0}
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda **kw: state["busy"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return state


@pytest.mark.parametrize("busy, workers, want", [
    (0.05, 0, 2),   # idle: both cores
    (1.0, 0, 1),    # one busy loop beside the run: the core left
    (0.3, 0, 2),
    (0.7, 0, 1),
    (6.0, 0, 1),    # overloaded: never fewer than one
    (0.0, 1, 1),    # one data-loader process takes a core
    (0.0, 4, 1),    # workers never take every core
])
def test_auto_counts_the_free_cores(machine, busy, workers, want):
    machine["busy"] = busy
    choice = threads.choose_threads("auto", workers=workers)
    assert (choice.threads, choice.source) == (want, "auto")
    assert "auto: 2 cores" in choice.describe()


def test_explicit_count_and_environment_win(machine, monkeypatch):
    machine["busy"] = 2.0
    assert threads.choose_threads(2).threads == 2 and threads.choose_threads(2).source == "set"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    c = threads.choose_threads("auto")
    assert (c.threads, c.source) == (1, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    c = threads.choose_threads("auto")  # more than the cores: capped, as --threads
    assert (c.threads, c.source, c.asked) == (2, "OMP_NUM_THREADS", 3)
    assert threads.choose_threads(1).threads == 1  # an explicit count beats the environment


def test_more_threads_than_cores_are_capped_with_a_reason(machine):
    """--threads 1000 on 2 cores: 2 threads, and the line says why (not that the CPU is slow)."""
    c = threads.choose_threads(1000)
    assert (c.threads, c.source, c.asked) == (2, "set", 1000)
    assert c.describe() == ("2 threads (as set to 1000, capped at the 2 cores this process may use: more threads "
                            "than cores only wait for each other)")
    assert c.to_json()["asked"] == 1000
    assert threads.choose_threads(2).asked is None and threads.choose_threads(2).describe() == "2 threads (as set)"


def test_busy_between_subtracts_own_cpu(monkeypatch):
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    a = threads._Sample(at=10.0, machine=1000, own=500)
    b = threads._Sample(at=12.0, machine=1400, own=700)  # 400 jiffies in 2 s, 200 of them ours
    assert threads._busy_between(a, b) == pytest.approx(1.0)
    assert threads._busy_between(a, threads._Sample(at=12.0, machine=None, own=700)) is None


def test_others_busy_leaves_out_this_process(monkeypatch):
    samples = iter([threads._Sample(at=0.0, machine=0, own=0), threads._Sample(at=4.0, machine=600, own=400)])
    monkeypatch.setattr(threads._Sample, "now", classmethod(lambda cls: next(samples)))
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    start = threads.cpu_sample()
    assert threads.others_busy(start) == pytest.approx(0.5)  # 600 busy jiffies in 4 s, 400 of them ours


def test_use_threads_restores_and_auto_follows_the_load(machine, monkeypatch):
    before = torch.get_num_threads()
    lines = []
    machine["busy"] = 0.0
    with threads.use_threads("auto", log=lines.append) as choice:
        assert torch.get_num_threads() == choice.threads == 2
        monkeypatch.setattr(threads, "RECHECK_SECONDS", 0.0)
        monkeypatch.setattr(threads, "_busy_between", lambda a, b: 1.0)
        threads.recheck(step=7)
        assert torch.get_num_threads() == 1 and choice.changes == [(7, 1)]
        assert choice.to_json()["changes"] == [{"step": 7, "threads": 1}]
    assert torch.get_num_threads() == before
    assert lines[0].startswith("torch threads: 2 threads (auto: 2 cores, 0.0 busy")
    assert lines[1] == "threads: 2 -> 1 (other processes now use 1.0 of 2 cores)"
    threads.recheck(step=8)  # no active policy: nothing happens
    assert torch.get_num_threads() == before
    with threads.use_threads(None) as none:
        assert none is None and torch.get_num_threads() == before


def test_real_measurement_is_sane():
    """On this machine's real counters: usable cores follow affinity and quota; the cores other
    processes keep busy lie between 0 and the cores there are, and a spinning child process is seen."""
    import math
    import os
    import subprocess
    import sys
    import threading
    import time

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    want = len(cpus) if cpus else os.cpu_count()
    quota = threads._cgroup_quota()
    if quota is not None:
        want = min(want, max(1, math.ceil(quota - 1e-9)))
    assert threads.usable_cores() == max(1, want) <= (os.cpu_count() or 1)
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat: busy cores come from the load average here")
    n = len(cpus) if cpus else os.cpu_count()
    slack = 2.0 / (os.sysconf("SC_CLK_TCK") * 0.3)  # one jiffy at each end of the 0.3 s window
    idle = threads.busy_cores(seconds=0.3)
    assert 0.0 <= idle <= n + slack
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        busy = threads.busy_cores(seconds=0.3)
    finally:
        spinner.kill()
        spinner.wait()
    # the child keeps a core busy; on a loaded machine it gets less, but then the others make up the rest
    assert min(1.0, n) * 0.5 <= busy <= n + slack
    # this process's own work is not counted: others = machine - own <= cores - own
    stop = time.monotonic() + 0.6

    def spin():
        while time.monotonic() < stop:
            pass

    own = threading.Thread(target=spin)
    own.start()
    try:
        since, cpu0, wall0 = threads.cpu_sample(), time.process_time(), time.monotonic()
        time.sleep(0.4)
        mine = threads.others_busy(since)
        own_cores = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    finally:
        own.join()
    assert own_cores > 0.02  # the thread did run (a share of a core on a loaded machine)
    assert mine is not None and 0.0 <= mine <= n - own_cores + 3 * slack  # jiffies vs process_time windows


def test_deferred_announcement_waits_for_training(machine):
    lines = []
    with threads.use_threads(1, log=lines.append, announce="training"):
        assert lines == []
        threads.recheck(step=1)
        threads.recheck(step=2)
    assert lines == ["torch threads: 1 thread (as set)"]


def test_cli_threads_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "g.onnx"), "--threads", "0"])
    assert result.exit_code == 2
    assert "--threads: expected a number of threads >= 1 or auto, got '0'" in result.output
