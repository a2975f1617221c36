"""One lock per output folder (nas_prune.locks): a second writer is refused naming the holder; stale locks are taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.locks import LOCK_FILE, hold, holders
from nas_prune.loop import RunWarning
from nas_prune.model import build_generator

ARCH = Arch(input_nc=3, output_nc=3, stem=(4, 8, 8), blocks=(Block(res=(0, 2, 0), dw=(0, 2, 0)),), head=(8, 4))

HOLDER = """
import sys, time
from pathlib import Path
from nas_prune.locks import hold
folder, ready, shared = sys.argv[1], Path(sys.argv[2]), sys.argv[3] or None
with hold(folder, command="distill", shared=shared):
    ready.write_text("held")
    while True:
        time.sleep(1)
"""


def _holder(folder: Path, tmp_path: Path, shared: str = "") -> subprocess.Popen:
    """A process holding ``folder`` until it is killed (returns once it holds it)."""
    ready = tmp_path / f"ready-{len(list(tmp_path.glob('ready-*')))}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready), shared], env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"the holder ended: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "t.pth"
    torch.save(build_generator(ARCH).state_dict(), path)
    return path


def test_every_writer_is_refused_while_another_process_holds_the_folder(tmp_path, teacher_file):
    from nas_prune.deploy import export_generator
    from nas_prune.distill import distill
    from nas_prune.search import search
    from nas_prune.train_teacher import train_teacher

    folder = tmp_path / "out"
    proc = _holder(folder, tmp_path)
    try:
        before = sorted(p.name for p in folder.iterdir())
        who = f"in use by nas-prune distill (pid {proc.pid} on {socket.gethostname()}, since "
        writers = {
            "distill --resume": lambda: distill(teacher=teacher_file, student=ARCH, data=tmp_path, out=folder,
                                                resume=True),
            "distill": lambda: distill(teacher=teacher_file, student=ARCH, data=tmp_path, out=folder, mode="aligned"),
            "train-teacher": lambda: train_teacher(data=tmp_path, out=folder),
            "search": lambda: search(teacher=teacher_file, target_macs="1M", input_size=32, min_channels=2, out=folder),
            "export": lambda: export_generator(build_generator(ARCH), out=folder, input_size=16),
        }
        for name, write in writers.items():
            with pytest.raises(NasPruneError) as refused:
                write()
            assert who in str(refused.value) and "choose another --out" in str(refused.value), (name, refused.value)
        assert sorted(p.name for p in folder.iterdir()) == before == [LOCK_FILE]  # nothing written
    finally:
        _kill(proc)


def test_a_study_and_a_recipe_run_are_refused_too(tmp_path, teacher_file):
    from nas_prune.recipe import load_recipe
    from nas_prune.recipe_run import run_recipe
    from nas_prune.study import run_study

    folder = tmp_path / "out"
    proc = _holder(folder, tmp_path)
    try:
        with pytest.raises(NasPruneError, match=f"in use by nas-prune distill \\(pid {proc.pid}"):
            run_study(teacher=teacher_file, target_macs="1M", trials=1, input_size=32, min_channels=2, out=folder,
                      calib_images=2)
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"name: r\nrun_dir: {folder}\nteacher: {teacher_file}\n"
                          "stages:\n  prune:\n    target_macs: 1M\n    input_size: 32\n    min_channels: 2\n")
        with pytest.raises(NasPruneError, match=f"in use by nas-prune distill \\(pid {proc.pid}.*another run_dir"):
            run_recipe(load_recipe(recipe))
    finally:
        _kill(proc)


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder, tmp_path)
    _kill(proc)  # killed outright: its lock file stays, unlocked
    assert [h["pid"] for h in holders(folder)] == [proc.pid]
    with pytest.warns(RunWarning, match=f"took over the lock left by nas-prune distill \\(pid {proc.pid} on "
                                        f"{socket.gethostname()}, no longer running\\)"):
        with hold(folder, command="search"):
            assert [h["pid"] for h in holders(folder)] == [os.getpid()]
    assert not (folder / LOCK_FILE).exists()  # released: the file goes


def test_workers_of_one_study_share_the_folder_and_nobody_else(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder, tmp_path, shared="study-a")
    try:
        with hold(folder, command="search --trials", shared="study-a"):  # a second worker of the same study
            assert {h["pid"] for h in holders(folder)} == {proc.pid, os.getpid()}
        assert [h["pid"] for h in holders(folder)] == [proc.pid]  # this worker's line is gone
        for shared in ("study-b", None):
            with pytest.raises(NasPruneError, match=f"in use by the study 'study-a' of nas-prune distill \\(pid {proc.pid}"):
                with hold(folder, command="search --trials", shared=shared):
                    pass
    finally:
        _kill(proc)


def test_nested_holds_and_folders_created_for_the_lock(tmp_path):
    folder = tmp_path / "new" / "deeper"
    with hold(folder, command="train-teacher"):
        with hold(folder, command="distill"):  # the same process: counted, not locked again
            assert folder.is_dir()
        assert (folder / LOCK_FILE).is_file()
    assert not (tmp_path / "new").exists()  # nothing was written: the folders made for the lock go
    with hold(folder, command="search"):
        (folder / "result").write_text("x")
    assert (folder / "result").is_file() and not (folder / LOCK_FILE).exists()


def test_the_lock_file_is_not_an_output(tmp_path):
    """A folder holding only the lock counts as empty, and --force never lists or removes it."""
    from nas_prune.outputs import check_out_dir, clear

    folder = tmp_path / "out"
    with hold(folder, command="search"):
        check_out_dir(folder, writes=["arch.json"])  # empty but for the lock: no error
        report = clear(folder)
        assert report.kept == [] and (folder / LOCK_FILE).is_file()
