"""Nothing a user owns is lost: the manifest of nas-prune's files, --force, inputs, output paths."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.fileio import write_text
from nas_prune.model import build_generator
from nas_prune.outputs import MANIFEST, check_replaceable, clear, read_manifest

runner = CliRunner()
TEACHER = Arch(input_nc=3, output_nc=3, stem=(16, 16, 16), head=(16, 16),
               blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 3)
SEARCH = ["--input-size", "32", "--min-channels", "4"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones too), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    """Every file of ``before`` is still there, byte for byte; a new file may only be one
    nas-prune lists as its own (SQLite creates its journal files when it reads a study)."""
    after = snapshot(root)
    assert {k: after.get(k) for k in before} == before
    for new in set(after) - set(before):
        assert Path(new).name in read_manifest((root / new).parent), new


def assert_one_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def save_teacher(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(randomize_(build_generator(TEACHER), 3).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher") / "tiny_G.pth")


# ----------------------------------------------------------------------------- the manifest


def test_clear_removes_only_unchanged_files_nas_prune_wrote(tmp_path):
    d = tmp_path / "d"
    write_text(d / "ours.txt", "a")
    write_text(d / "edited.txt", "b")
    write_text(d / "sub" / "ours.txt", "c")  # a subfolder of only nas-prune files goes
    write_text(d / "mixed" / "ours.txt", "d")
    (d / "mixed" / "notes.txt").write_text("user")  # ... one with a user file stays
    (d / "notes.txt").write_text("user")
    (d / "edited.txt").write_text("edited by the user")
    assert set(read_manifest(d)) == {"ours.txt", "edited.txt"}
    with pytest.warns(UserWarning, match=r"kept 3 file\(s\).*2 not written by nas-prune; 1 changed"):
        report = clear(d)
    assert sorted(report.removed) == ["mixed/ours.txt", "ours.txt", "sub/ours.txt"]
    assert report.changed == ["edited.txt"] and sorted(report.foreign) == ["mixed/notes.txt", "notes.txt"]
    left = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    assert left == [MANIFEST, "edited.txt", "mixed", "mixed/notes.txt", "notes.txt"]
    assert set(read_manifest(d)) == {"edited.txt"}  # still listed: it is not the user's either
    assert (d / "edited.txt").read_text() == "edited by the user"


def test_a_file_nas_prune_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "metrics.json").write_text("mine")
    with pytest.raises(NasPruneError, match="was not written by nas-prune"):
        write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").read_text() == "mine"
    assert not (tmp_path / MANIFEST).exists() and len(list(tmp_path.iterdir())) == 1
    write_text(tmp_path / "other.json", "1")
    write_text(tmp_path / "other.json", "2")  # its own file: replaced
    assert (tmp_path / "other.json").read_text() == "2"
    check_replaceable(tmp_path / "other.json")


# ----------------------------------------------------------------------------- --force


def test_force_never_removes_inputs_or_foreign_files(teacher_file, tmp_path):
    d = tmp_path / "D"
    save_teacher(d / "t.pth")
    (d / "inner").mkdir()
    (d / "inner" / "notes.txt").write_text("mine")
    before = snapshot(d)
    assert_one_error(invoke("search", "--teacher", d / "t.pth", "--target-macs", "2M", *SEARCH, "--out", d, "--force"),
                     "holds the input")
    assert_unchanged(d, before)
    # --force replaces an earlier result, and only what nas-prune wrote
    out = tmp_path / "S"
    assert invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--out", out).exit_code == 0
    (out / "inner").mkdir()
    (out / "inner" / "notes.txt").write_text("mine")
    first = json.loads((out / "arch.json").read_text())
    res = invoke("search", "--teacher", teacher_file, "--target-macs", "1.5M", *SEARCH, "--out", out, "--force")
    assert res.exit_code == 0, res.output
    assert "kept 1 file(s)" in res.output and "inner/notes.txt" in res.output
    assert (out / "inner" / "notes.txt").read_text() == "mine"
    assert json.loads((out / "arch.json").read_text())["provenance"]["target"] != first["provenance"]["target"]
    # an edited file where the new result goes: refused before anything is removed
    (out / "arch.json").write_text((out / "arch.json").read_text() + " ")
    before = snapshot(out)
    assert_one_error(invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--out", out, "--force"),
                     "arch.json", "changed since nas-prune wrote it")
    assert_unchanged(out, before)


def test_no_command_writes_over_its_input(teacher_file, tmp_path):
    s = tmp_path / "S"
    assert invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--out", s).exit_code == 0
    t = save_teacher(tmp_path / "t.pth")
    (tmp_path / "link.pth").symlink_to(t)
    os.link(t, tmp_path / "hard.pth")
    before = snapshot(tmp_path)
    for args in (
        ["export", s, "--out", s / "student.safetensors", "--format", "torchscript"],
        ["export", t, "--out", t, "--format", "torchscript"],
        ["export", tmp_path / "link.pth", "--out", t, "--format", "torchscript"],
        ["export", t, "--out", tmp_path / "hard.pth", "--format", "torchscript"],
        ["evaluate", s, "--data", tmp_path / "nodata", "--out", s.parent, "--save-real-stats", s / "arch.json",
         "--inception", t],
    ):
        assert_one_error(invoke(*args), "is an input of this command")
        assert snapshot(tmp_path) == before, args


# ----------------------------------------------------------------------------- studies


def test_study_refuses_to_replace_another_result(teacher_file, tmp_path):
    study = ["--trials", "1", "--calib-images", "2"]
    one = tmp_path / "one"
    assert invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--out", one).exit_code == 0
    before = snapshot(one)
    assert_one_error(invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, *study, "--out", one),
                     "holds a one-step student", "--force")
    assert_unchanged(one, before)
    x = tmp_path / "X"
    res = invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, *study, "--out", x)
    assert res.exit_code == 0, res.output
    # one layout: the study folder is a student folder, the study's files beside the student's
    assert {"arch.json", "student.safetensors", "summary.md", "study.db", "trials.csv"} <= {p.name for p in x.iterdir()}
    assert "trial 0" in (x / "summary.md").read_text()
    res = invoke("profile", x)
    assert res.exit_code == 0 and "MACs" in res.output, res.output
    res = invoke("export", x, "--out", tmp_path / "g.pt", "--format", "torchscript")
    assert res.exit_code == 0 and (tmp_path / "g.pt").is_file(), res.output
    before = snapshot(x)
    assert_one_error(invoke("search", "--teacher", teacher_file, "--target-macs", "1.5M", *SEARCH, *study, "--out", x),
                     "holds study 'tiny_G-2M-fvcore-zero-shot-quality'")
    assert_unchanged(x, before)
    assert set(snapshot(x)) == set(before)  # reading the study left no SQLite -wal / -shm file either
    assert_one_error(invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, *study,
                            "--no-fill", "--out", x), "created with fill = true, this run has false")
    assert_unchanged(x, before)
    res = invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, *study, "--out", x)  # resumes
    assert res.exit_code == 0 and "resuming: 1 of 1" in res.output, res.output
    res = invoke("search", "--teacher", teacher_file, "--target-macs", "1.5M", *SEARCH, *study, "--out", x, "--force")
    assert res.exit_code == 0, res.output
    arch = json.loads((x / "arch.json").read_text())
    assert arch["provenance"]["study"]["name"] == "tiny_G-1.5M-fvcore-zero-shot-quality"


def test_a_study_folder_of_the_earlier_layout_is_still_read(teacher_file, tmp_path):
    old = tmp_path / "old_study"
    assert invoke("search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--out", old / "student").exit_code == 0
    (old / "study.db").write_bytes(b"")
    for args in (["profile", old], ["export", old, "--out", tmp_path / "g.pt", "--format", "torchscript"]):
        res = invoke(*args)
        assert res.exit_code == 0, (args, res.output)
    assert (tmp_path / "g.pt").is_file()


# ----------------------------------------------------------------------------- output paths


def _unwritable(tmp_path: Path) -> Path:
    """A folder that does not take new files, also for root (a /proc entry on Linux)."""
    if os.geteuid() == 0 and Path("/proc/self").is_dir():
        return Path("/proc/nas-prune-test/out")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "out"


def test_output_paths_that_cannot_be_written(teacher_file, tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    user_pt = tmp_path / "user.pt"
    user_pt.write_text("mine")
    ro = _unwritable(tmp_path)
    search = ["search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH]
    cases = [
        ([*search, "--out", a_file], "is a file"),
        ([*search, "--out", a_file / "sub"], f"{a_file} is a file"),
        ([*search, "--out", ro], "does not take new files"),
        ([*search, "--trials", "1", "--out", a_file], "is not a folder"),
        ([*search, "--trials", "1", "--out", ro], "does not take new files"),
        (["export", teacher_file, "--out", a_file / "g.pt", "--format", "torchscript"], "is a file"),
        (["export", teacher_file, "--out", a_file, "--format", "torchscript"], "is a file"),
        (["export", teacher_file, "--out", user_pt, "--format", "torchscript"], "was not written by nas-prune"),
        (["export", teacher_file, "--out", ro / "g.pt", "--format", "torchscript"], "does not take new files"),
        (["evaluate", teacher_file, "--data", tmp_path, "--out", a_file], "is a file"),
        (["train-teacher", "--data", tmp_path, "--out", a_file], "is a file"),
        (["train-teacher", "--data", tmp_path, "--out", ro], "does not take new files"),
        (["distill", "--teacher", teacher_file, "--student", tmp_path, "--data", tmp_path, "--out", a_file,
          "--mode", "aligned"], "is a file"),
    ]
    before = snapshot(tmp_path)
    for args, fragment in cases:
        assert_one_error(invoke(*args), fragment)
        assert snapshot(tmp_path) == before, args
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (".", work.parent):
        assert_one_error(invoke(*search, "--out", out, "--force"), "the current folder")
    assert snapshot(tmp_path) == before | {"work/notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_a_study_resumed_from_an_earlier_version_keeps_working(teacher_file, tmp_path):
    """A study folder written before nas-prune kept manifests: resuming it adopts its files."""
    study = ["search", "--teacher", teacher_file, "--target-macs", "2M", *SEARCH, "--trials", "1",
             "--calib-images", "2", "--out", tmp_path / "X"]
    assert invoke(*study).exit_code == 0
    x = tmp_path / "X"
    (x / MANIFEST).unlink()
    (x / "student").mkdir()  # the earlier layout: the student in student/
    for name in ("arch.json", "student.safetensors", "summary.md"):
        (x / name).rename(x / "student" / name)
    (x / "summary.md").write_text("mine")  # a user's file where the student goes: never replaced
    before = snapshot(tmp_path / "X")
    assert_one_error(invoke(*study), "summary.md exists and was not written by nas-prune")
    assert_unchanged(tmp_path / "X", before)
    (tmp_path / "X" / "summary.md").unlink()
    res = invoke(*study[:-2], "--trials", "2", "--out", tmp_path / "X")
    assert res.exit_code == 0 and "resuming: 1 of 2" in res.output, res.output
    assert {"study.db", "trials.csv", "arch.json"} <= set(read_manifest(tmp_path / "X"))
