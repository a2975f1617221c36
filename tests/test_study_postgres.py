"""One study, many machines: workers sharing a PostgreSQL study, and storages that fail.

The PostgreSQL tests start a throwaway cluster (tests/pg_cluster.py: initdb in a temporary
folder, 127.0.0.1 and a free port only, stopped at the end); they are skipped, with the reason,
where the server binaries or psycopg are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

import pg_cluster
from conftest import randomize_
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.model import build_generator
from nas_prune.study import locks, open_storage, run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

COMMON = dict(target_macs=2_000_000, input_size=32, min_channels=4, calib_images=4, device="cpu")
CLI_COMMON = ["--target-macs", "2M", "--input-size", "32", "--min-channels", "4", "--calib-images", "4"]


@pytest.fixture
def teacher_file(tmp_path, tiny_arch) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save(randomize_(build_generator(tiny_arch), seed=1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def pg():
    why = pg_cluster.missing()
    if why:
        pytest.skip(why)
    cluster = pg_cluster.start_cluster()
    yield cluster
    cluster.stop()


WORKER = r"""
import json, os, socket, sys, time, torch
torch.set_num_threads(1)
import nas_prune.study.run as run_mod
from nas_prune.study import run_study
from nas_prune.study.worker import _Study
kw, gate = json.loads(sys.argv[1]), json.loads(sys.argv[2])
folder = gate.get("dir")

def arrive(name, count):
    # a barrier among the workers: each waits until `count` have arrived, polling every ms
    open(os.path.join(folder, f"{name}-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 300
    while sum(n.startswith(name + "-") for n in os.listdir(folder)) < count:
        assert time.monotonic() < deadline, f"the other workers never reached {name}"
        time.sleep(0.001)

if gate.get("host"):  # this worker seems to run on another machine: only its heartbeat tells it is alive
    socket.gethostname = lambda: gate["host"]
if gate.get("together"):  # open the storage at the same instant as the other workers
    real_open = run_mod.open_storage
    def open_together(url, **k):
        if not k.get("check_only"):
            arrive("open", gate["together"])
        return real_open(url, **k)
    run_mod.open_storage = open_together
calls = []
evaluate = _Study.evaluate
def gated(self, study, trial):
    # "meet": this worker's first trial waits until every worker holds one (all take part);
    # "hold": the given call marks the trial and waits there to be killed
    calls.append(trial.number)
    if gate.get("meet") and len(calls) == 1:
        arrive("meet", gate["meet"])
    if gate.get("hold") == len(calls):
        open(os.path.join(folder, "held"), "w").write(str(trial.number))
        while True:
            time.sleep(1)
    return evaluate(self, study, trial)
_Study.evaluate = gated
r = run_study(**kw, log=lambda line: print(line, file=sys.stderr, flush=True))
print(json.dumps({"ran": r.ran, **r.to_json()}))
"""


def _worker(gate: dict, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
    gate = {k: (str(v) if isinstance(v, Path) else v) for k, v in gate.items()}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(kw), json.dumps(gate)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(*procs: subprocess.Popen, timeout: float = 600) -> list[tuple[dict, str]]:
    """Wait for every worker; the first that fails stops the others (they would wait for it)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = next((p for p in procs if p.returncode not in (None, 0)), None)
            assert failed is None, f"a worker failed: {failed.communicate()[1]}"
            assert time.monotonic() < deadline, "the workers did not finish"
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for p in procs:
        stdout, stderr = p.communicate()
        assert p.returncode == 0, stderr
        results.append((json.loads(stdout.strip().splitlines()[-1]), stderr))
    return results


def _picked_trial(out: Path) -> int:
    return json.loads((out / "arch.json").read_text())["provenance"]["study"]["trial"]


def test_three_workers_start_together_on_an_empty_database(pg, tmp_path, teacher_file):
    url = pg.new_database()  # no Optuna table yet: every worker tries to create the schema
    gate = tmp_path / "gate"
    gate.mkdir()
    outs = [tmp_path / f"w{i}" for i in range(3)]
    procs = [_worker({"dir": gate, "together": 3, "meet": 3}, teacher=teacher_file, trials=6, out=out,
                     storage=url, study_name="s", **COMMON) for out in outs]
    results = _finish(*procs)
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials()
    finished = sorted(t.number for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    assert len(finished) == 6 and all(t.state.name != "RUNNING" for t in trials)
    assert sorted(n for r, _ in results for n in r["ran"]) == finished  # each trial run by one worker
    assert {t.user_attrs["worker"]["pid"] for t in trials if t.number in finished} == {p.pid for p in procs}
    # every worker waited for the whole study and exported the same picked trial
    picks = {_picked_trial(out) for out in outs}
    assert len(picks) == 1 and {r["picked"]["number"] for r, _ in results} == picks
    assert all(r["finished"] == 6 and r["retried"] == [] for r, _ in results)
    assert all(not (out / "study.db").exists() for out in outs)  # the study lives in the server


def test_schema_creation_race(pg, tmp_path):
    """Four processes open one empty database at the same instant (the bare storage, no study)."""
    url = pg.new_database()
    start = time.time() + 3
    code = ("import sys, time\nfrom nas_prune.study import open_storage\n"
            "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
            "open_storage(sys.argv[1], out='.').close()\nprint('opened')")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(start)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "opened", err
    with pg.connect(url.rsplit("/", 1)[1]) as con:
        assert con.execute("SELECT count(*) FROM version_info").fetchone()[0] == 1


def test_worker_killed_mid_trial_is_retried(pg, tmp_path, teacher_file):
    url = pg.new_database()
    kw = dict(teacher=teacher_file, trials=3, storage=url, study_name="k", grace_s=4, **COMMON)
    # the victim finishes trial 0, then stops inside trial 1; it seems to run on another host,
    # so only Optuna's heartbeat can tell that it died
    victim = _worker({"dir": tmp_path, "hold": 2, "host": "elsewhere"}, out=tmp_path / "victim", **kw)
    deadline = time.monotonic() + 600
    while not (tmp_path / "held").exists():
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    held = int((tmp_path / "held").read_text())
    survivor = _worker({"dir": tmp_path}, out=tmp_path / "survivor", **kw)
    try:
        # the survivor runs the last free trial, then waits for the victim's
        while sum(t.state.name == "COMPLETE" for t in optuna.load_study(study_name="k", storage=url).get_trials()) < 2:
            assert survivor.poll() is None, survivor.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
    [(result, log)] = _finish(survivor, timeout=240)  # 4 s of grace, then one tiny trial
    trials = optuna.load_study(study_name="k", storage=url).get_trials()
    assert trials[held].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == held]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == trials[held].params  # the interrupted candidate itself ran again
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    assert result["finished"] == 3 and result["retried"] == [{"trial": retry[0].number, "retry_of": held}]
    assert retry[0].number in result["ran"]
    assert f"the study is still running elsewhere: trial {held} on elsewhere" in log
    assert f"trial {held} was interrupted (no heartbeat for 4 s)" in log

    # the victim's command run again joins the finished study: same pick, the retry in its summary
    res = CliRunner().invoke(app, ["search", "--teacher", str(teacher_file), *CLI_COMMON, "--trials", "3",
                                   "--storage", url, "--study-name", "k", "--out", str(tmp_path / "victim")])
    assert res.exit_code == 0, res.output
    assert f"1 trial retried after its worker stopped: trial {held} ran again as trial {retry[0].number}" in \
        " ".join(res.output.split())
    assert _picked_trial(tmp_path / "victim") == _picked_trial(tmp_path / "survivor") == result["picked"]["number"]


# ----------------------------------------------------------------------------- storages that fail


@pytest.mark.parametrize("url, names", [
    ("postgresql://u:secret@127.0.0.1/db", ["PostgreSQL driver psycopg is not installed", "nas-prune[postgres]"]),
    ("postgresql+psycopg2://u@127.0.0.1/db", ["driver psycopg2 is not installed", "pip install psycopg2-binary"]),
    ("mysql://u@127.0.0.1/db", ["MySQL driver mysqldb", "pip install mysqlclient", "mysql+pymysql://"]),
    ("mysql+pymysql://u@127.0.0.1/db", ["MySQL driver pymysql", "pip install PyMySQL"]),
])
def test_missing_driver_names_the_package(monkeypatch, tmp_path, teacher_file, url, names):
    for module in ("psycopg", "psycopg2", "MySQLdb", "pymysql"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(NasPruneError) as err:
        open_storage(url, out=tmp_path, check_only=True)
    for name in names:
        assert name in str(err.value)
    assert "secret" not in str(err.value)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["search", "--teacher", str(teacher_file), *CLI_COMMON, "--trials", "2",
                                   "--storage", url, "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: --storage ") and names[0] in " ".join(res.output.split())
    assert not out.exists()  # checked before any work


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@contextlib.contextmanager
def _sqlite_locked(db: Path):
    """Another process holds an exclusive lock on SQLite file ``db`` (a write in progress)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\ncon = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "con.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.communicate()


def test_locked_sqlite_storage_fails_fast(monkeypatch, tmp_path, teacher_file):
    users = tmp_path / "mine"
    users.mkdir()
    db = users / "optuna.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="theirs")
    before = _listing(users)
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 2.0)
    out = tmp_path / "out"
    with _sqlite_locked(db):
        start = time.monotonic()
        res = CliRunner().invoke(app, ["search", "--teacher", str(teacher_file), *CLI_COMMON, "--trials", "2",
                                       "--storage", f"sqlite:///{db}", "--out", str(out)])
        took = time.monotonic() - start
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "waiting up to 2 s" in text
    assert f"error: --storage sqlite:///{db}: the database is locked by another process (waited 2 s)" in text
    assert took < 60  # the bound, not SQLite's 120 s busy timeout (the teacher is loaded first)
    assert not out.exists()  # no empty --out
    assert _listing(users) == before  # no lock file, no manifest, the database untouched


def test_locked_default_study_database(monkeypatch, tmp_path, teacher_file):
    kw = dict(teacher=teacher_file, out=tmp_path / "d", study_name="d", **COMMON)
    run_study(**kw, trials=1)
    before = _listing(tmp_path / "d")
    monkeypatch.setattr(locks, "LOCK_WAIT_S", 1.0)
    with _sqlite_locked(tmp_path / "d" / "study.db"):
        with pytest.raises(NasPruneError, match=r"the study database .*study\.db: the database is locked by another "
                                                 r"process \(waited 1 s\); stop that process$"):
            run_study(**kw, trials=2)
    after = _listing(tmp_path / "d")
    for name in ("study.db-wal", "study.db-shm"):  # the lock holder's, left by its kill
        after.pop(name, None)
    assert after == before


def test_study_lock_held_by_a_stuck_process(monkeypatch, tmp_path, teacher_file):
    kw = dict(teacher=teacher_file, trials=1, out=tmp_path / "s", study_name="s", **COMMON)
    run_study(**kw)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\nf = open(sys.argv[1], 'rb')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(120)", str(tmp_path / "s" / "study.db")],
        stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(locks, "LOCK_WAIT_S", 1.5)
        monkeypatch.setattr(locks, "SAY_WAIT_S", 0.2)
        with pytest.raises(NasPruneError, match="study lock on .*study.db has been held by another process for 2 s"):
            run_study(**{**kw, "trials": 2}, log=lines.append)
    finally:
        holder.kill()
        holder.communicate()
    assert any(line.startswith("waiting for the study lock on") for line in lines)
    assert run_study(**{**kw, "trials": 2}).to_json()["finished"] == 2  # released: the study goes on


def test_bad_storage_leaves_nothing(tmp_path, teacher_file):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.db").write_text("not a database\n")
    before = _listing(users)
    for url, msg in (
        (f"sqlite:///{users / 'notes.db'}", "cannot open the storage"),
        (f"postgresql://u@127.0.0.1:{pg_cluster._free_port()}/x", "cannot open the storage"),
    ):
        if url.startswith("postgresql") and pg_cluster.missing() and "psycopg" in pg_cluster.missing():
            continue
        out = tmp_path / "out"
        with pytest.raises(NasPruneError, match=msg):
            run_study(teacher=teacher_file, trials=2, out=out, storage=url, **COMMON)
        assert not out.exists()
    assert _listing(users) == before


def test_pick_is_checked_before_the_study(tmp_path, teacher_file):
    out = tmp_path / "p"
    with pytest.raises(NasPruneError, match=r"--pick 99: a study of 3 trials ranks at most 3 students \(--pick 0\.\.2\)"):
        run_study(teacher=teacher_file, trials=3, out=out, pick=99, **COMMON)
    assert not out.exists()  # nothing ran, nothing written


# ----------------------------------------------------------------------------- retries without a server


def test_ctrl_c_requeues_the_trial(monkeypatch, tmp_path, teacher_file):
    from nas_prune.study.worker import _Study

    kw = dict(teacher=teacher_file, trials=3, out=tmp_path / "c", study_name="c", **COMMON)
    evaluate, calls = _Study.evaluate, []

    def interrupted(self, study, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(self, study, trial)

    monkeypatch.setattr(_Study, "evaluate", interrupted)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_study(**kw, log=lines.append)
    assert f"trial {calls[1]} was interrupted (stopped by the user): marked failed, its parameters queued again" \
        in lines
    result = run_study(**kw)
    trials = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c' / 'study.db'}").get_trials()
    assert trials[calls[1]].state.name == "FAIL"
    [retry] = result.retried
    assert retry.retry_of == calls[1] and retry.state == "COMPLETE"
    assert trials[retry.number].params == trials[calls[1]].params
    assert result.to_json()["finished"] == 3


def test_journal_trial_without_heartbeat_is_retried(tmp_path, teacher_file):
    """A journal has no Optuna heartbeat: the trial's own ``heartbeat`` attribute tells."""
    journal = f"journal:{tmp_path / 'j.log'}"
    kw = dict(teacher=teacher_file, out=tmp_path / "j", storage=journal, study_name="j", **COMMON)
    run_study(**kw, trials=1)
    store = open_storage(journal, out=tmp_path)
    study = optuna.load_study(study_name="j", storage=store.storage)
    stale = study.ask({g: optuna.distributions.FloatDistribution(0.5, 2.0, log=True)
                           for g in study.trials[0].params})
    stale.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    stale.set_user_attr("heartbeat", time.time() - 60)  # its worker stopped a minute ago
    fresh = study.ask({g: optuna.distributions.FloatDistribution(0.5, 2.0, log=True) for g in study.trials[0].params})
    fresh.set_user_attr("worker", {"host": "elsewhere", "pid": 2})
    fresh.set_user_attr("heartbeat", time.time() + 3600)  # alive (until the test ends it)
    store.close()
    lines = []

    def finish_fresh(line):
        lines.append(line)
        if line.startswith("3 of 4 trials finished; the study is still running elsewhere"):
            study.tell(fresh.number, [0.0])  # the live worker finishes its trial

    result = run_study(**kw, trials=4, grace_s=30, log=finish_fresh)
    pattern = rf"trial {stale.number} was interrupted \(no heartbeat for (\d+) s\): marked failed, its parameters queued again"
    [waited] = [int(m.group(1)) for m in map(lambda line: re.fullmatch(pattern, line), lines) if m]
    assert 60 <= waited < 600
    assert [(r.retry_of, r.state) for r in result.retried] == [(stale.number, "COMPLETE")]
    assert result.trials[stale.number].state == "FAIL" and result.trials[fresh.number].state == "COMPLETE"
    assert result.to_json()["finished"] == 4
