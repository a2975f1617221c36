"""JSON / YAML reads are bounded (size, encoding, depth, aliases); failed writes are named and leave nothing.

The disk-full cases use real mechanisms: a file-size limit (``RLIMIT_FSIZE``, what
``ulimit -f`` sets; Python ignores SIGXFSZ, so writes fail with ``EFBIG``) in a child
process, and an ``OSError(ENOSPC)`` from the file system call itself.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nas_prune.errors import NasPruneError
from nas_prune.fileio import (InvalidSyntaxError, atomic_path, json_depth, loads_json, loads_yaml, read_json,
                              read_yaml, write_bytes)

DEEP = 100_000  # far past Python's recursion limit


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": [1, {"b": "[[[{{{"}], "c": "\\"["}') == 3
    assert json_depth("[]") == 1 and json_depth("7") == 0


@pytest.mark.parametrize("reader, text", [
    (read_json, "[" * DEEP + "]" * DEEP),
    (read_json, '{"a":' * DEEP + "1" + "}" * DEEP),
    (read_yaml, "[" * DEEP + "]" * DEEP),
    (read_yaml, "".join("  " * i + "- \n" for i in range(200)) + "  " * 200 + "- x\n"),
], ids=["json-lists", "json-objects", "yaml-flow", "yaml-block"])
def test_deep_nesting_is_a_named_error_not_a_recursion_error(tmp_path, reader, text):
    path = tmp_path / "deep.txt"
    path.write_text(text)
    with pytest.raises(NasPruneError, match=r"deep\.txt: lists / mappings nested (1000\d+ levels deep, more than the "
                                            r"64 accepted|more than 64 levels deep); is it the right file\?"):
        reader(path)


def test_random_bytes_are_named_with_the_byte_and_offset(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: x\n" + bytes([0xC3, 0x28]) + np.random.default_rng(0).bytes(100))
    with pytest.raises(NasPruneError, match=r"r\.yaml: not UTF-8 text \(byte 0xc3 at offset 8\); is it a recipe\?"):
        read_yaml(path, what="recipe")


def test_size_is_bounded_before_reading_everything(tmp_path):
    with pytest.raises(NasPruneError, match=r"/dev/zero is not a regular file"):
        read_json("/dev/zero", max_bytes=1000)
    (tmp_path / "big.json").write_text("[" + "0," * 600 + "0]")
    with pytest.raises(NasPruneError, match=r"big\.json: larger than 1,000 bytes, too large for a JSON file"):
        read_json(tmp_path / "big.json", max_bytes=1000)


def test_yaml_alias_bombs_are_refused_and_small_aliases_kept(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    (tmp_path / "lol.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(NasPruneError, match=r"lol\.yaml: expands to more than 200,000 values through its aliases"):
        read_yaml(tmp_path / "lol.yaml")
    assert loads_yaml("a: &x {k: [1, 2]}\nb: *x\n", source="s") == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}


def test_syntax_errors_and_python_tags_name_the_line(tmp_path):
    (tmp_path / "s.yaml").write_text("a: 1\nb: [\n")
    with pytest.raises(InvalidSyntaxError, match=r"s\.yaml: not valid YAML at line 3"):
        read_yaml(tmp_path / "s.yaml")
    with pytest.raises(InvalidSyntaxError, match=r"could not determine a constructor"):
        loads_yaml("!!python/object/apply:os.system [touch PWNED]", source="s")
    with pytest.raises(InvalidSyntaxError, match=r"j: not valid JSON \(Expecting"):
        loads_json('{"a": }', source="j")
    with pytest.raises(InvalidSyntaxError, match=r"j: not valid JSON .*4300"):
        loads_json("1" * 5000, source="j")


def test_a_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(tmp_path / "b.json") == {"a": 1}


def test_every_reader_goes_through_the_bounds(tmp_path):
    """Recipes, search spaces, arch.json, run configs: a deep file is a one-line error; status and
    manifests that cannot be read count as none."""
    from nas_prune.distill_config import read_run_config
    from nas_prune.export import read_document
    from nas_prune.outputs import read_manifest
    from nas_prune.recipe import load_recipe
    from nas_prune.runstate import read_status
    from nas_prune.space import load_space

    deep = "[" * 5000 + "]" * 5000
    for name in ("r.yaml", "s.yaml", "arch.json", "config.json", "status.json", ".nas-prune-manifest.json"):
        (tmp_path / name).write_text(deep)
    for call in (lambda: load_recipe(tmp_path / "r.yaml"), lambda: load_space(tmp_path / "s.yaml"),
                 lambda: read_document(tmp_path / "arch.json"), lambda: read_run_config(tmp_path)):
        with pytest.raises(NasPruneError, match=r"nested more than 64 levels deep|nested 5000 levels deep, more"):
            call()
    assert read_status(tmp_path) is None
    assert read_manifest(tmp_path) == {}
    (tmp_path / "r.yaml").write_bytes(np.random.default_rng(1).bytes(512))
    with pytest.raises(NasPruneError, match=r"r\.yaml: not UTF-8 text .*is it a recipe\?"):
        load_recipe(tmp_path / "r.yaml")


def test_set_values_are_bounded_and_plain_text_stays_text():
    from nas_prune.recipe import apply_overrides

    assert apply_overrides({}, ["run_dir=runs/[x"])["run_dir"] == "runs/[x"  # not YAML: the text itself
    with pytest.raises(NasPruneError, match=r"--set distill.epochs: lists / mappings nested"):
        apply_overrides({}, ["distill.epochs=" + "[" * 3000 + "]" * 3000])


# ----------------------------------------------------------------------------- writes


def test_enospc_in_a_write_is_named_and_leaves_no_temporary(tmp_path, monkeypatch):
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(NasPruneError, match=r"cannot write .*w\.bin: no space left on the device"):
        write_bytes(tmp_path / "w.bin", b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_torch_save_failure_is_named(tmp_path, monkeypatch):
    import shutil

    def fail(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(NasPruneError, match=r"cannot write .*c\.pt: no space left on the device"):
        with atomic_path(tmp_path / "c.pt") as tmp:
            torch.save({}, tmp)
    assert list(tmp_path.iterdir()) == []


def test_a_bug_in_the_body_is_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(RuntimeError, match="a bug"):
        with atomic_path(tmp_path / "x") as tmp:
            tmp.write_text("half")
            raise RuntimeError("a bug")
    assert list(tmp_path.iterdir()) == []


CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    sys.argv = ["nas-prune", *sys.argv[2:]]
    from nas_prune.cli import main
    main()
""")


def _limited_cli(limit: int, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(limit), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def teacher(tmp_path, tiny_arch):
    from conftest import randomize_
    from nas_prune.model import build_generator

    torch.save(randomize_(build_generator(tiny_arch)).state_dict(), tmp_path / "t.pth")
    return tmp_path / "t.pth"


def test_search_under_a_file_size_limit_is_one_error_and_writes_nothing(tmp_path, teacher):
    proc = _limited_cli(2000, "search", "--teacher", teacher, "--target-macs", "2M", "--input-size", "32",
                        "--min-channels", "4", "--out", "S", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    # the first file of the student past 2000 bytes (arch.json or the weights, in the order they are written)
    assert len(errors) == 1 and re.search(r"cannot write S/(arch\.json|student\.safetensors): file too large",
                                          errors[0]), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pth"]


def test_replacing_a_student_beside_a_study_keeps_the_old_one_whole_when_the_disk_fills(tmp_path, teacher,
                                                                                         monkeypatch):
    from pathlib import Path

    from nas_prune.export import read_document, write_student
    from nas_prune.search import search

    search(teacher=teacher, target_macs="2M", input_size=32, min_channels=4, out=tmp_path / "S")
    before = {p.name: p.read_bytes() for p in (tmp_path / "S").iterdir()}
    doc = read_document(tmp_path / "S")
    real = Path.write_bytes

    def full_on_weights(self, data):
        if ".student.safetensors." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_on_weights)
    with pytest.raises(NasPruneError, match=r"cannot write .*S/student\.safetensors: no space left on the device"):
        write_student(tmp_path / "S", document=doc, state_dict={"w": torch.zeros(3)}, summary="new", beside=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "S").iterdir()} == before


def test_a_log_line_that_does_not_fit_is_cut_off_and_named(tmp_path):
    """Under a file-size limit the log keeps its whole lines and the error names it."""
    code = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from nas_prune.errors import NasPruneError
        from nas_prune.loop import append_log
        out = Path({str(tmp_path)!r})
        append_log(out, {{"step": 1}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (60, 60))
        try:
            append_log(out, {{"step": 2, "pad": "x" * 100}})
        except NasPruneError as err:
            print(err)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "log.jsonl: file too large" in proc.stdout, proc.stdout
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1}\n'


def test_torchscript_export_under_a_size_limit_is_an_error_not_an_abort(tmp_path, teacher):
    """torch.jit.save straight to a file aborts the process (SIGABRT) when a write fails."""
    proc = _limited_cli(8192, "export", teacher, "--out", "s.pt", "--format", "torchscript", "--input-size", "32",
                        cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, (proc.returncode, out[-2000:])
    assert "cannot write s.pt: file too large" in out and "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pth"]


def test_a_checkpoint_that_does_not_fit_leaves_no_temporary(tmp_path):
    code = textwrap.dedent(f"""
        import resource, torch
        from pathlib import Path
        from nas_prune.errors import NasPruneError
        from nas_prune.loop import atomic_torch_save
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            atomic_torch_save({{"w": torch.zeros(10000)}}, Path({str(tmp_path)!r}) / "last.pt")
        except NasPruneError as err:
            print(err)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "last.pt: file too large" in proc.stdout, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_devices_and_fifos_are_not_read_as_recipes(tmp_path):
    from nas_prune.recipe import load_recipe

    os.mkfifo(tmp_path / "f.yaml")
    for path in (tmp_path / "f.yaml", "/dev/zero"):
        with pytest.raises(NasPruneError, match=r"is not a regular file \(a device, FIFO or socket\)"):
            load_recipe(path)
    with pytest.raises(NasPruneError, match=r"f\.yaml is not a regular file"):
        read_json(tmp_path / "f.yaml")
