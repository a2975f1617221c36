"""SIGINT, SIGTERM and SIGHUP stop a training run cleanly (nas_prune.interrupt), and a dead pipe never fails one.

The in-process tests send real signals to the test process (``os.kill(os.getpid(), ...)``) from
the run's own hooks, so the moment a signal arrives is fixed by the step, not by timing. The
subprocess tests wait on files and states (a log line, the child's exit), never on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nas_prune import interrupt, loop
from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill
from nas_prune.errors import NasPruneError
from nas_prune.model import build_generator
from nas_prune.runstate import read_status

T_ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 2,
              head=(16, 8), dropout=0.2)  # dropout: the exact resume depends on the RNG state too
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2, 0, 2), dw=(0, 2, 2))] * 2, head=(8, 4))
FAST = dict(mode="aligned", epochs=2, epochs_decay=1, batch_size=4, load_size=36, crop_size=32, workers=0,
            ndf=8, progress=False, log_every=1)  # 8 train images: 2 steps per epoch, 6 steps
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights", "ignore:interrupted at step")


@pytest.fixture(autouse=True)
def sighup_as_a_terminal_sends_it():
    """These tests are about a process that SIGHUP reaches; under ``nohup`` (or a job whose parent
    ignores it) nas-prune rightly leaves an ignored SIGHUP ignored, so each test starts from the
    default disposition and the one it inherited is restored after."""
    before = signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=8, n_test=4, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_generator(T_ARCH).eval()


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data, teacher):
    """The uninterrupted 6-step run every stopped-and-resumed run must equal."""
    return distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path_factory.mktemp("whole") / "run",
                   config=DistillConfig(**FAST, save_every=2))


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def _checkpoint_step(out: Path) -> int:
    return int(torch.load(out / loop.CHECKPOINT, weights_only=True)["step"])


def _kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_run_checkpoints_there_and_resume_is_exact(tmp_path, data, teacher, whole, signum):
    out = tmp_path / "run"

    def send(step, losses):
        if step == 3:  # mid-epoch: the last checkpoint on disk is step 2's
            _kill_self(signum)

    part = distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST, save_every=2),
                   on_step=send)
    name = signal.Signals(signum).name
    assert part.interrupted and not part.finished and part.step == 3 and part.signal == signum
    assert _checkpoint_step(out) == 3  # a checkpoint at the stop, not only the one of step 2
    status = read_status(out)
    assert (status["state"], status["step"], status["reason"]) == ("interrupted", 3, name)
    assert not (out / "final").exists()
    rest = distill(teacher=teacher, student=S_ARCH, data=data, out=out, resume=True)
    assert rest.finished and rest.step == 6 and read_status(out)["state"] == "done"
    assert _max_diff(rest.student, whole.student) == 0.0


def test_signal_during_a_checkpoint_write_lets_it_finish(tmp_path, data, teacher, whole, monkeypatch):
    """SIGTERM while step 2's checkpoint is being written: the write completes and the run stops there."""
    out = tmp_path / "run"
    original = loop.atomic_torch_save
    saves = []

    def saving(obj, path):
        saves.append(obj["step"])
        if saves == [2]:
            _kill_self(signal.SIGTERM)  # the handler runs inside this save
        original(obj, path)

    monkeypatch.setattr(loop, "atomic_torch_save", saving)
    part = distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST, save_every=2))
    assert part.interrupted and part.step == 2 and part.signal == signal.SIGTERM
    assert saves == [2, 2]  # the save at step 2, then the checkpoint at the stop (same step)
    assert _checkpoint_step(out) == 2 and not list((out / "checkpoints").glob("*.tmp"))
    monkeypatch.setattr(loop, "atomic_torch_save", original)
    rest = distill(teacher=teacher, student=S_ARCH, data=data, out=out, resume=True)
    assert rest.finished and _max_diff(rest.student, whole.student) == 0.0


def test_second_signal_during_a_write_stops_at_once_keeping_the_last_checkpoint(tmp_path, data, teacher, whole,
                                                                                  monkeypatch):
    out = tmp_path / "run"
    original = loop.atomic_torch_save
    stopped_once: list = []

    def saving(obj, path):
        if obj["step"] == 4 and not stopped_once:
            stopped_once.append(True)
            _kill_self(signal.SIGTERM)  # asks for a stop after the step ...
            _kill_self(signal.SIGTERM)  # ... and the second one stops now, inside the write
        original(obj, path)

    monkeypatch.setattr(loop, "atomic_torch_save", saving)
    with pytest.raises(interrupt.Interrupted) as stopped:
        distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST, save_every=2))
    assert stopped.value.exit_code == 143
    assert _checkpoint_step(out) == 2 and not list((out / "checkpoints").glob("*.tmp"))
    status = read_status(out)
    assert (status["state"], status["step"], status["reason"]) == ("interrupted", 4, "SIGTERM")
    monkeypatch.setattr(loop, "atomic_torch_save", original)
    rest = distill(teacher=teacher, student=S_ARCH, data=data, out=out, resume=True)  # from step 2
    assert rest.finished and _max_diff(rest.student, whole.student) == 0.0


def test_exit_codes_and_the_cli_message():
    import typer

    from nas_prune.cli.common import user_errors

    assert [interrupt.exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, None)] == [130, 143, 129, 130]
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        with pytest.raises(typer.Exit) as ended:
            with user_errors():
                raise interrupt.Interrupted(signum)
        assert ended.value.exit_code == code
    with pytest.raises(typer.Exit) as ended:
        with user_errors():
            raise KeyboardInterrupt  # a plain one stands for Ctrl-C
    assert ended.value.exit_code == 130


def test_handler_is_restored_and_ignored_signals_stay_ignored():
    before = signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with interrupt.handle_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            with pytest.raises(interrupt.Interrupted) as raised:  # outside a loop: stops at once
                _kill_self(signal.SIGTERM)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
            assert raised.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signal_after_the_loops_last_look_stops_the_command_when_the_block_ends():
    """A signal during the final writes of a finished loop is not dropped: the block's end raises it."""
    done = []
    with pytest.raises(interrupt.Interrupted) as raised:
        with interrupt.deferred() as stop:
            assert not stop.requested  # the loop's last look
            _kill_self(signal.SIGTERM)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
            done.append("final writes")  # not cut short: the first signal only asks
    assert done == ["final writes"] and raised.value.signum == signal.SIGTERM


def test_a_signal_the_loop_acted_on_is_not_raised_again():
    with interrupt.deferred() as stop:
        _kill_self(signal.SIGHUP)
        for _ in range(1000):
            pass
        assert stop.requested and stop.signum == signal.SIGHUP  # seen: the loop stops on its own
    assert not stop.unseen


class _DeadPipe:
    """stderr whose reader went away: every write fails with EPIPE."""

    def __init__(self):
        self.writes = 0

    def write(self, text):
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self):
        return False


def test_a_dead_pipe_never_fails_a_run(tmp_path, data, teacher, monkeypatch):
    """Progress lines into a pipe whose reader died, then Ctrl-C: "interrupted", with a checkpoint at the stop."""
    dead = _DeadPipe()
    monkeypatch.setattr(sys, "stderr", dead)
    out = tmp_path / "run"

    def ctrl_c(step, losses):
        if step == 3:
            _kill_self(signal.SIGINT)

    part = distill(teacher=teacher, student=S_ARCH, data=data, out=out,
                   config=DistillConfig(**{**FAST, "progress": True}), on_step=ctrl_c)
    monkeypatch.undo()
    assert dead.writes >= 1  # the progress lines did hit the dead pipe
    assert part.interrupted and part.step == 3 and part.signal == signal.SIGINT
    assert read_status(out)["state"] == "interrupted" and _checkpoint_step(out) == 3


# ----------------------------------------------------------------------------- the command line, in a process

CLI = "import sys; from nas_prune.cli import main; sys.argv[0] = 'nas-prune'; main()"


@pytest.fixture(scope="module")
def files(tmp_path_factory, teacher):
    from safetensors.torch import save_file

    from nas_prune.export import FORMAT, VERSION, write_student

    root = tmp_path_factory.mktemp("files")
    save_file(teacher.state_dict(), str(root / "teacher.safetensors"))
    torch.manual_seed(1)
    write_student(root / "student", document={"format": FORMAT, "version": VERSION, "arch": S_ARCH.to_dict()},
                  state_dict=build_generator(S_ARCH).state_dict())
    return root


def _distill_args(files: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(files / "teacher.safetensors"), "--student", str(files / "student"),
            "--data", str(data), "--out", str(out), "--mode", "aligned", "--epochs", "1000", "--epochs-decay", "0",
            "--batch-size", "4", "--load-size", "36", "--crop-size", "32", "--ndf", "8", "--workers", "0",
            "--log-every", "1", "--save-every", "1000", "--threads", "1", *extra]


def _start(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def default_signals():  # a background shell may have set them to ignored; a user's terminal has not
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-c", CLI, *args], env=env, preexec_fn=default_signals, **kw)


def _log_steps(out: Path) -> int:
    try:
        return sum('"step"' in line and '"eval"' not in line for line in (out / "log.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _wait(cond, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the command ended ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_sigterm_to_the_cli_and_a_second_writer_of_the_run(tmp_path, data, files):
    """`docker stop`: SIGTERM to a running `nas-prune distill`; meanwhile a `--resume` of the same run is refused."""
    out = tmp_path / "run"
    proc = _start(_distill_args(files, data, out, "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  text=True)
    try:
        _wait(lambda: _log_steps(out) >= 2, proc, "two logged steps")
        second = CliRunner().invoke(app, _distill_args(files, data, out, "--resume"))
        assert second.exit_code == 2, second.output
        assert f"in use by nas-prune distill (pid {proc.pid} on {socket.gethostname()}" in second.output
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr and "interrupted by SIGTERM at step" in stdout
    status = read_status(out)
    assert status["state"] == "interrupted" and status["reason"] == "SIGTERM"
    assert _checkpoint_step(out) == status["step"] >= 2  # every step done is in the checkpoint
    assert not (out / ".nas-prune-lock").exists()


def test_ctrl_c_after_the_pipe_reader_died(tmp_path, data, files):
    """`nas-prune distill ... 2>&1 | tee log`, tee dies, then Ctrl-C: the run records "interrupted" (not
    "failed"), keeps every step in its checkpoint, and export names the reason."""
    out = tmp_path / "run"
    proc = _start(_distill_args(files, data, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline()  # the run writes into the pipe ...
        proc.stdout.close()  # ... and its reader goes away
        seen = _log_steps(out)
        _wait(lambda: _log_steps(out) >= seen + 3, proc, "three steps after the reader went away")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    status = read_status(out)
    assert (status["state"], status["reason"]) == ("interrupted", "SIGINT")
    assert _checkpoint_step(out) == status["step"]
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in lines if "step" in r and "eval" not in r) == status["step"]
    res = CliRunner().invoke(app, ["export", str(out / "final"), "--out", str(tmp_path / "g.onnx")])
    assert res.exit_code == 2 and f"was interrupted by SIGINT at step {status['step']}" in res.output, res.output
    with pytest.raises(NasPruneError, match="interrupted by SIGINT"):
        from nas_prune.evaluate import open_generator

        open_generator(out / "final")


def test_sigterm_in_a_study_queues_its_trial_again_and_frees_the_folder(tmp_path, tiny_arch, monkeypatch):
    """`search --trials`: SIGTERM inside a trial stops the study like Ctrl-C; run again, it resumes."""
    from conftest import randomize_
    from nas_prune.locks import LOCK_FILE
    from nas_prune.study import run_study
    from nas_prune.study.worker import _Study

    teacher_file = tmp_path / "tiny.pth"
    torch.save(randomize_(build_generator(tiny_arch), seed=1).state_dict(), teacher_file)
    kw = dict(teacher=teacher_file, target_macs=2_000_000, input_size=32, min_channels=4, calib_images=4, trials=3,
              device="cpu", out=tmp_path / "study", study_name="s")
    evaluate, calls = _Study.evaluate, []

    def gated(self, study, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            _kill_self(signal.SIGTERM)
        return evaluate(self, study, trial)

    monkeypatch.setattr(_Study, "evaluate", gated)
    with pytest.raises(interrupt.Interrupted) as stopped:
        run_study(**kw)
    assert stopped.value.signum == signal.SIGTERM and calls == [0, 1]
    assert not (tmp_path / "study" / LOCK_FILE).exists()
    monkeypatch.setattr(_Study, "evaluate", evaluate)
    res = run_study(**kw)
    finished = [t for t in res.trials if t.state in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and 0 not in res.ran  # trial 0 was kept, not run again
