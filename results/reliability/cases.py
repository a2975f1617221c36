"""The bad-input matrix of ``run_matrix.py``: the files it starts from and the cases it runs.

Every case is one ``nas-prune`` command run as a real subprocess in the workspace. Its
expectation is one of:

* ``error``: exit 2, exactly one ``error:`` line (holding ``says`` when given), no traceback,
  no file of the workspace changed or removed, no file added;
* ``ok``: exit 0 and ``check`` (if any) finds nothing wrong in what was written;
* ``safe``: either a one-line error or success, but no file outside ``may_change`` is
  changed or removed and ``check`` (if any) passes;
* ``stopped``: the command is sent ``signal`` while it runs and must exit with ``exit_code``,
  without a traceback, and ``check`` must pass (the run recorded as interrupted, say).

``runner`` runs the command under a real fault (``run_matrix.py: wrap``): ``fsize:BYTES``
(a file-size limit), ``tmpfs:SIZE:DIR`` (DIR a tmpfs of SIZE in a private mount namespace;
what is left on it is copied to ``DIR.copy`` for ``check``), ``rofs:DIR`` (a read-only
mount), ``pipe:CMD`` (stdout piped into the shell command CMD). ``background`` is a command
started first and kept running while the case runs (a concurrent writer), once ``ready``
exists. Every case that runs past ``timeout`` seconds is a *hang*.

``run_matrix.py`` adds the cases of the other categories, in ``cases_files.py`` (hostile files, dtypes, images,
JSON / YAML, full disks) and ``cases_runs.py`` (signals, concurrent writers, piped output).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from nas_prune.arch import Arch, Block
from nas_prune.model import build_generator

ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 8, 16), blocks=(Block(res=(2, 2, 2), dw=(2, 2, 2)),) * 2, head=(8, 8))
TARGET = "2M"  # fvcore MACs at 32x32; the teacher above has 3.3M


@dataclass
class Case:
    name: str
    category: str
    args: list[str]
    expect: str = "error"
    says: str | None = None
    check: Callable[[Path, str], str | None] | None = None
    may_change: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    first: list[str] | None = None  # a command run before the case (not judged)
    prepare: Callable[[Path], None] | None = None  # then this, on the workspace
    runner: str | None = None  # fsize:BYTES, tmpfs:SIZE:DIR, rofs:DIR or pipe:CMD (module docstring)
    background: list[str] | None = None  # a concurrent command, running while the case runs
    ready: str | None = None  # the path whose existence shows ``background`` (or the case, for ``signal``) is under way
    signal: int | None = None  # sent to the case's command once ``ready`` exists (plus ``delay`` seconds)
    delay: float = 1.0
    group: bool = False  # send ``signal`` to the whole process group (Ctrl-C in a shell pipeline)
    exit_code: int | None = None  # the exit expected after ``signal``
    timeout: float = 600.0


# ----------------------------------------------------------------------------- workspace


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.3)
    return model


def _resnet_state(n_blocks: int = 3, ngf: int = 4) -> dict[str, torch.Tensor]:
    """A pytorch-CycleGAN-and-pix2pix ResnetGenerator state dict (instance norm, reflect padding)."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def conv(i, cin, cout, k, transpose=False):
        shape = (cin, cout, k, k) if transpose else (cout, cin, k, k)
        sd[f"model.{i}.weight"] = torch.randn(shape, generator=g) * 0.2
        sd[f"model.{i}.bias"] = torch.zeros(cout)

    conv(1, 3, ngf, 7)
    conv(4, ngf, 2 * ngf, 3)
    conv(7, 2 * ngf, 4 * ngf, 3)
    for b in range(10, 10 + n_blocks):
        for j in (1, 5):
            sd[f"model.{b}.conv_block.{j}.weight"] = torch.randn(4 * ngf, 4 * ngf, 3, 3, generator=g) * 0.2
            sd[f"model.{b}.conv_block.{j}.bias"] = torch.zeros(4 * ngf)
    last = 9 + n_blocks
    conv(last + 1, 4 * ngf, 2 * ngf, 3, transpose=True)
    conv(last + 4, 2 * ngf, ngf, 3, transpose=True)
    conv(last + 8, ngf, 3, 7)
    return sd


def _png16(path: Path, arr: np.ndarray) -> None:
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class _Evil:
    """Unpickling this would create the file PWNED: a checkpoint must never be unpickled."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


def build_workspace(ws: Path, run_cli) -> None:
    """Teachers, a student, datasets and an interrupted run, in ``ws`` (the cases' working folder)."""
    from safetensors.torch import save_file

    ws.mkdir(parents=True, exist_ok=True)
    teacher = _randomize(build_generator(ARCH), 0).eval()
    sd = teacher.state_dict()
    torch.save(sd, ws / "t.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ws / "t.safetensors"))

    def variant(name, change):
        state = {k: v.clone() for k, v in sd.items()}
        change(state)
        torch.save(state, ws / "bad" / name)

    (ws / "bad").mkdir()
    variant("no_block.pth", lambda s: [s.pop(k) for k in list(s) if k.startswith("features.0.")])
    variant("no_branch_key.pth", lambda s: s.pop("features.1.res_ops.2.1.0.weight"))
    variant("no_norm_weight.pth", lambda s: s.pop("down_sampling.2.weight"))
    variant("nan.pth", lambda s: s["features.0.res_ops.1.4.weight"].view(-1).__setitem__(0, float("nan")))
    variant("inf.pth", lambda s: s["up_sampling.0.weight"].view(-1).__setitem__(0, float("inf")))
    variant("shape.pth", lambda s: s.__setitem__("down_sampling.4.weight", torch.zeros(8, 8, 5, 5)))
    variant("t2.pth", lambda s: s["up_sampling.7.bias"].add_(1.0))  # same shapes, other weights
    torch.save({"encoder.weight": torch.zeros(3)}, ws / "bad" / "unknown_layout.pth")
    raw = (ws / "t.pth").read_bytes()
    (ws / "bad" / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    (ws / "bad" / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (ws / "bad" / "empty.pth").write_bytes(b"")
    (ws / "bad" / "text.pth").write_text("not a checkpoint\n")
    raw = (ws / "t.safetensors").read_bytes()
    (ws / "bad" / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (ws / "bad" / "header.safetensors").write_bytes(b"\xff" * 8 + b"{not json")
    torch.save({"state_dict": sd, "evil": _Evil()}, ws / "bad" / "evil.pth")
    torch.save(teacher, ws / "bad" / "whole_module.pth")
    (ws / "bad" / "dir.pth").mkdir()
    rs = _resnet_state()
    torch.save(rs, ws / "resnet.pth")
    torch.save({k: v for k, v in rs.items() if not k.startswith("model.11.")}, ws / "bad" / "resnet_mid_block.pth")
    torch.save({k: v for k, v in rs.items() if not k.startswith("model.12.")}, ws / "bad" / "resnet_last_block.pth")
    from nas_prune.families.spade import cat_teacher_arch

    spade = _randomize(build_generator(cat_teacher_arch(ngf=4, label_nc=5, num_upsampling_layers="normal")), 1)
    ssd = spade.state_dict()
    torch.save(ssd, ws / "spade.pth")
    torch.save({k: v for k, v in ssd.items() if not k.startswith("up_3.")}, ws / "bad" / "spade_no_block.pth")

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        (ws / "data" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(ws / "data" / split / f"{i}.png")
    for split in ("trainA", "trainB", "testA", "testB"):
        (ws / "data_u" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(ws / "data_u" / split / f"{i}.png")
    for split in ("train", "test"):
        (ws / "data16" / split).mkdir(parents=True)
        for i in range(4 if split == "train" else 2):
            pair = np.concatenate([np.full((32, 32), 30000, np.uint16), np.full((32, 32), 50000, np.uint16)], axis=1)
            _png16(ws / "data16" / split / f"{i}.png", pair)
    (ws / "data_bad" / "train").mkdir(parents=True)
    (ws / "data_bad" / "test").mkdir(parents=True)
    for split in ("train", "test"):
        (ws / "data_bad" / split / "0.png").write_bytes(b"not a png")
    (ws / "data_empty").mkdir()
    (ws / "notes.txt").write_text("a file of the user's\n")

    run_cli(["search", "--teacher", "t.pth", "--target-macs", TARGET, "--input-size", "32", "--min-channels", "4",
             "--out", "S"], check=True)
    doc = json.loads((ws / "S" / "arch.json").read_text())
    for name, change in (
        ("S_format", lambda d: d.__setitem__("format", "my-arch")),
        ("S_version", lambda d: d.__setitem__("version", 99)),
        ("S_no_arch", lambda d: d.pop("arch")),
        ("S_unknown_key", lambda d: d.__setitem__("colour", "red")),
        ("S_params", lambda d: d.__setitem__("params", 1)),
        ("S_negative", lambda d: d["arch"].__setitem__("stem", [-1, 8, 16])),
    ):
        shutil.copytree(ws / "S", ws / "bad" / name)
        d = json.loads(json.dumps(doc))
        change(d)
        (ws / "bad" / name / "arch.json").write_text(json.dumps(d))
    shutil.copytree(ws / "S", ws / "bad" / "S_json")
    (ws / "bad" / "S_json" / "arch.json").write_text("{")
    from safetensors.torch import load_file

    weights = load_file(str(ws / "S" / "student.safetensors"))
    for name, change in (
        ("S_weights_shape", lambda w: w.__setitem__("down_sampling.1.weight", torch.zeros(1, 3, 7, 7))),
        ("S_weights_nan", lambda w: w["up_sampling.7.bias"].__setitem__(0, float("nan"))),
    ):
        shutil.copytree(ws / "S", ws / "bad" / name)
        w = {k: v.clone() for k, v in weights.items()}
        change(w)
        save_file(w, str(ws / "bad" / name / "student.safetensors"))

    # an interrupted distillation run: Ctrl-C at step 1
    run_cli(["distill", "--teacher", "t.pth", "--student", "S", "--data", "data", "--mode", "aligned",
             "--out", "run_int", "--epochs", "50", "--epochs-decay", "0", "--batch-size", "2", "--load-size", "32",
             "--crop-size", "32", "--ndf", "8", "--workers", "0", "--no-progress"],
            interrupt_after_line="step", check=False)
    status = json.loads((ws / "run_int" / "status.json").read_text()) if (ws / "run_int" / "status.json").is_file() else {}
    if status.get("state") != "interrupted":
        raise SystemExit(f"setup: the distillation run to interrupt ended as {status.get('state')!r}")
    # a folder holding a teacher and a file of the user's, for --out D --force
    (ws / "D" / "inner").mkdir(parents=True)
    shutil.copy(ws / "t.pth", ws / "D" / "t.pth")
    (ws / "D" / "inner" / "notes.txt").write_text("keep me\n")
    (ws / "a_file").write_text("a file, not a folder\n")
    # an onnx package that cannot be imported: as if the onnx extra were not installed
    for name in ("onnx", "onnxruntime"):
        (ws / "no_onnx" / name).mkdir(parents=True)
        (ws / "no_onnx" / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    recipe = {
        "name": "matrix", "run_dir": "runs/recipe", "teacher": "t.pth", "data": "data",
        "stages": {
            "prune": {"target_macs": TARGET, "input_size": 32, "min_channels": 4},
            "distill": {"mode": "aligned", "epochs": 1, "epochs_decay": 0, "batch_size": 2, "load_size": 32,
                        "crop_size": 32, "ndf": 8, "d_layers": 2, "workers": 0, "device": "cpu", "progress": False},
            "evaluate": {"crop_size": 32, "batch_size": 2},
        },
    }
    import yaml

    (ws / "recipes").mkdir()
    (ws / "recipes" / "ok.yaml").write_text(yaml.safe_dump(recipe))
    bad = json.loads(json.dumps(recipe))
    bad["stages"]["polish"] = {}
    (ws / "recipes" / "unknown_stage.yaml").write_text(yaml.safe_dump(bad))
    bad = json.loads(json.dumps(recipe))
    bad["stages"]["distill"]["epochz"] = 3
    (ws / "recipes" / "unknown_option.yaml").write_text(yaml.safe_dump(bad))
    (ws / "recipes" / "invalid.yaml").write_text("stages: [unclosed\n")
    bad = json.loads(json.dumps(recipe))
    bad["teacher"] = "<your teacher checkpoint>"
    (ws / "recipes" / "placeholder.yaml").write_text(yaml.safe_dump(bad))
    bad = json.loads(json.dumps(recipe))
    bad["stages"]["evaluate"]["crop_size"] = 8
    bad["run_dir"] = "runs/recipe_fail"
    (ws / "recipes" / "failing_stage.yaml").write_text(yaml.safe_dump(bad))


# ----------------------------------------------------------------------------- checks


def _no_pwned(ws: Path, out: str) -> str | None:
    return "the pickle's __reduce__ ran (PWNED exists)" if (ws / "PWNED").exists() else None


def _stage_failed(ws: Path, out: str) -> str | None:
    state = json.loads((ws / "runs" / "recipe_fail" / "evaluate" / "stage.json").read_text())
    if state.get("status") != "failed" or "crop_size" not in state.get("error", ""):
        return f"stage.json records status {state.get('status')!r}, not failed with the error"
    return None


def _sixteen_bit_scaled(ws: Path, out: str) -> str | None:
    """A is 30000/65535 and B 50000/65535 of full scale: the teacher sees neither white nor clipped."""
    from nas_prune.data import TransformConfig, open_dataset

    tf = TransformConfig(load_size=32, crop_size=32, preprocess="resize", flip=False)
    sample = open_dataset(ws / "data16", mode="aligned", split="test", transform=tf)[0]
    want_a, want_b = round(30000 / 65535 * 255) / 127.5 - 1, round(50000 / 65535 * 255) / 127.5 - 1
    got_a, got_b = float(sample["A"].mean()), float(sample["B"].mean())
    if abs(got_a - want_a) > 1e-3 or abs(got_b - want_b) > 1e-3:
        return f"16-bit pixels read as {got_a:.3f} / {got_b:.3f}, expected {want_a:.3f} / {want_b:.3f}"
    return None


def _kept(*paths: str) -> Callable[[Path, str], str | None]:
    def check(ws: Path, out: str) -> str | None:
        gone = [p for p in paths if not (ws / p).exists()]
        return f"removed: {', '.join(gone)}" if gone else None

    return check


def _truncate_recipe_output(ws: Path) -> None:
    weights = ws / "runs" / "recipe" / "distill" / "final" / "student.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _reran_changed(ws: Path, out: str) -> str | None:
    if "changed size" not in out:
        return "the truncated output was not detected"
    from nas_prune.export import load_student

    load_student(ws / "runs" / "recipe" / "distill" / "final")
    return None


# ----------------------------------------------------------------------------- cases


def cases() -> list[Case]:
    S, T = "S", "t.pth"
    distill = ["distill", "--teacher", T, "--student", S, "--data", "data", "--mode", "aligned", "--epochs", "1",
               "--epochs-decay", "0", "--batch-size", "2", "--load-size", "32", "--crop-size", "32", "--ndf", "8",
               "--workers", "0", "--no-progress"]
    search = ["search", "--teacher", T, "--input-size", "32", "--min-channels", "4"]
    out = ["--out", "never"]
    c = [
        # checkpoints: corrupt, hostile, incomplete
        Case("checkpoint not found", "checkpoint", ["profile", "missing.pth"], says="not found"),
        Case("truncated .pth", "checkpoint", ["profile", "bad/truncated.pth"], says="not a PyTorch checkpoint"),
        Case("random bytes .pth", "checkpoint", ["profile", "bad/random.pth"]),
        Case("empty .pth", "checkpoint", ["profile", "bad/empty.pth"]),
        Case("text file named .pth", "checkpoint", ["profile", "bad/text.pth"]),
        Case("pickle with a malicious __reduce__", "checkpoint", ["profile", "bad/evil.pth"],
             says="refused to load pickled Python objects", check=_no_pwned),
        Case("pickled whole module", "checkpoint", ["profile", "bad/whole_module.pth"], says="pickled"),
        Case("truncated .safetensors", "checkpoint", ["profile", "bad/truncated.safetensors"], says="safetensors"),
        Case("garbage safetensors header", "checkpoint", ["profile", "bad/header.safetensors"], says="safetensors"),
        Case("a folder named .pth", "checkpoint", ["profile", "bad/dir.pth"]),
        Case("unknown layout", "checkpoint", ["profile", "bad/unknown_layout.pth"], says="unknown checkpoint layout"),
        Case("CAT: a block without tensors", "checkpoint", ["profile", "bad/no_block.pth"],
             says="missing keys: features.0.*"),
        Case("CAT: a branch's width tensor missing", "checkpoint", ["profile", "bad/no_branch_key.pth"],
             says="missing keys: features.1.res_ops.2.1.0.weight"),
        Case("CAT: a stem norm weight missing", "checkpoint", ["profile", "bad/no_norm_weight.pth"],
             says="missing keys: down_sampling.2.weight"),
        Case("CAT: wrong tensor shape", "checkpoint", ["profile", "bad/shape.pth"], says="shape mismatch"),
        Case("ResNet: a middle block missing", "checkpoint", ["profile", "bad/resnet_mid_block.pth"],
             says="model.11.conv_block"),
        Case("ResNet: the last block missing", "checkpoint", ["profile", "bad/resnet_last_block.pth"],
             says="model.12.conv_block"),
        Case("SPADE: the last block missing", "checkpoint", ["profile", "bad/spade_no_block.pth"],
             says="missing keys: up_3.*"),
        Case("NaN weight in the teacher", "checkpoint", [*search, "--teacher", "bad/nan.pth", "--target-macs", TARGET,
                                                         *out], says="features.0.res_ops.1.4.weight"),
        Case("inf weight in the teacher", "checkpoint", ["profile", "bad/inf.pth"], says="up_sampling.0.weight"),
        Case("a complete ResNet checkpoint loads", "checkpoint", ["profile", "resnet.pth", "--input-size", "32"],
             expect="ok"),
        # targets
        Case("--target-macs 1e400", "target", [*search, "--target-macs", "1e400", *out], says="not a finite number"),
        Case("--target-macs -5", "target", [*search, "--target-macs", "-5", *out]),
        Case("--target-macs 0", "target", [*search, "--target-macs", "0", *out], says="must be positive"),
        Case("--target-macs abc", "target", [*search, "--target-macs", "abc", *out]),
        Case("--target-macs nan", "target", [*search, "--target-macs", "nan", *out]),
        Case("--target-macs above the teacher", "target", [*search, "--target-macs", "1T", *out]),
        Case("--target-macs below the floor", "target", [*search, "--target-macs", "1", *out]),
        Case("--convention foo", "target", [*search, "--target-macs", TARGET, "--convention", "foo", *out]),
        Case("--min-channels 0", "target", [*search, "--target-macs", TARGET, "--min-channels", "0", *out]),
        Case("--round-to 0", "target", [*search, "--target-macs", TARGET, "--round-to", "0", *out]),
        Case("--trials 0", "target", [*search, "--target-macs", TARGET, "--trials", "0", *out]),
        # sizes
        Case("search --input-size 4 --verify full", "size",
             ["search", "--teacher", T, "--target-macs", TARGET, "--input-size", "4", "--verify", "full", *out],
             says=">= 12"),
        Case("--input-size 30 (not divisible by 4)", "size", ["profile", T, "--input-size", "30"], says="divisible by 4"),
        Case("--input-size 0", "size", ["profile", T, "--input-size", "0"]),
        Case("profile --input-size 8", "size", ["profile", T, "--input-size", "8"], says=">= 12"),
        Case("export --input-size 8", "size", ["export", T, "--out", "x.onnx", "--input-size", "8"], says=">= 12"),
        Case("distill --crop-size 8", "size", [*distill, "--crop-size", "8", "--load-size", "8", *out],
             says="--crop-size 8x8 is too small"),
        Case("train-teacher --crop-size 32 --d-layers 9", "size",
             ["train-teacher", "--data", "data", "--out", "never", "--crop-size", "32", "--load-size", "32",
              "--d-layers", "9", "--ngf", "4", "--n-blocks", "1"], says=">= 1536"),
        Case("evaluate --crop-size 8", "size", ["evaluate", S, "--data", "data", "--crop-size", "8"], says="too small"),
        Case("huge --input-size, search --verify full", "size",
             ["search", "--teacher", T, "--target-macs", TARGET, "--input-size", "400000", "--verify", "full", *out],
             says="needs about"),
        Case("huge --input-size, export", "size", ["export", T, "--out", "x.onnx", "--input-size", "400000"],
             says="needs about"),
        Case("huge --input-size, profile --measure", "size", ["profile", T, "--input-size", "400000", "--measure"],
             says="needs about"),
        Case("huge --crop-size, evaluate", "size", ["evaluate", S, "--data", "data", "--crop-size", "400000"],
             says="needs about"),
        # arch.json and student folders
        Case("arch.json format is not nas-prune-arch", "arch.json", ["evaluate", "bad/S_format", "--data", "data",
                                                                       "--crop-size", "32"], says="format"),
        Case("arch.json version 99", "arch.json", ["profile", "bad/S_version"], says="version"),
        Case("arch.json without arch", "arch.json", ["profile", "bad/S_no_arch"], says="arch: missing field"),
        Case("arch.json with an unknown key", "arch.json", ["profile", "bad/S_unknown_key"], says="unknown field"),
        Case("arch.json params that do not match", "arch.json", ["profile", "bad/S_params"], says="params"),
        Case("arch.json negative width", "arch.json", ["profile", "bad/S_negative"]),
        Case("arch.json not JSON", "arch.json", ["profile", "bad/S_json"], says="not valid JSON"),
        Case("student weights of another shape", "arch.json", ["export", "bad/S_weights_shape", "--out", "x.onnx",
                                                                "--input-size", "32"], says="shape mismatch"),
        Case("student weights with NaN", "arch.json", ["evaluate", "bad/S_weights_nan", "--data", "data",
                                                        "--crop-size", "32"], says="non-finite"),
        # data
        Case("--data FILE", "data", [*distill[:5], "--data", "t.pth", *distill[7:], *out], says="is a file"),
        Case("--data missing", "data", [*distill[:5], "--data", "nowhere", *distill[7:], *out], says="not found"),
        Case("--data empty folder", "data", [*distill[:5], "--data", "data_empty", *distill[7:], *out],
             says="no dataset found"),
        Case("--data of the other layout", "data", [*distill[:5], "--data", "data_u", *distill[7:], *out],
             says="--mode unaligned"),
        Case("--data with only unreadable images", "data", ["evaluate", S, "--data", "data_bad", "--crop-size", "32"],
             says="no usable images"),
        Case("16-bit PNG dataset is scaled, not clipped", "data",
             ["evaluate", T, "--data", "data16", "--crop-size", "32"], expect="ok", check=_sixteen_bit_scaled),
        # messages that point at the fix
        Case("evaluate --max-images 0", "message", ["evaluate", S, "--data", "data", "--max-images", "0"],
             says="--max-images must be >= 1"),
        Case("evaluate =S (empty name)", "message", ["evaluate", "=S", "--data", "data"], says="empty NAME"),
        Case("distill --student teacher.pth", "message", [*distill[:3], "--student", T, *distill[5:], *out],
             says="is a checkpoint, not a student folder"),
        Case("train-teacher cyclegan on paired data", "message",
             ["train-teacher", "--data", "data", "--out", "never", "--objective", "cyclegan"],
             says="--objective pix2pix"),
        Case("train-teacher pix2pix on unpaired data", "message",
             ["train-teacher", "--data", "data_u", "--out", "never"], says="--objective cyclegan"),
        # unfinished runs and resume
        Case("evaluate the final/ of an interrupted run", "resume",
             ["evaluate", "run_int/final", "--data", "data", "--crop-size", "32"], says="--resume"),
        Case("export the final/ of an interrupted run", "resume",
             ["export", "run_int/final", "--out", "x.onnx", "--input-size", "32"], says="--resume"),
        Case("evaluate a run folder", "resume", ["evaluate", "run_int", "--data", "data", "--crop-size", "32"],
             says="training run folder"),
        Case("distill --resume with another teacher", "resume",
             ["distill", "--teacher", "resnet.pth", "--student", S, "--data", "data", "--out", "run_int", "--resume"]),
        Case("distill --resume with another teacher file (same arch)", "resume",
             ["distill", "--teacher", "bad/t2.pth", "--student", S, "--data", "data", "--out", "run_int",
              "--resume"], says="the teacher differs"),
        Case("distill --resume with other data", "resume",
             ["distill", "--teacher", T, "--student", S, "--data", "data16", "--out", "run_int", "--resume"],
             says="the data differ"),
        Case("distill --resume without a run", "resume",
             ["distill", "--teacher", T, "--student", S, "--data", "data", "--out", "nothing_here", "--resume"]),
        # export
        Case("export --opset 3", "export", ["export", T, "--out", "x.onnx", "--opset", "3"], says="--opset 3"),
        Case("export --format tflite", "export", ["export", T, "--out", "x.tflite", "--format", "tflite"]),
        Case("export without the onnx extra", "export", ["export", T, "--out", "x.onnx", "--input-size", "32"],
             says="nas-prune[onnx]", env={"PYTHONPATH": "no_onnx"}),
        # recipes
        Case("recipe with an unknown stage", "recipe", ["run", "recipes/unknown_stage.yaml"], says="polish"),
        Case("recipe with an unknown option", "recipe", ["run", "recipes/unknown_option.yaml"], says="epochz"),
        Case("recipe that is not YAML", "recipe", ["run", "recipes/invalid.yaml"]),
        Case("recipe not found", "recipe", ["run", "recipes/missing.yaml"]),
        Case("recipe with a placeholder", "recipe", ["run", "recipes/placeholder.yaml"], says="placeholder"),
        Case("--set without =", "recipe", ["run", "recipes/ok.yaml", "--set", "distill.epochs"]),
        Case("recipe stage that fails is recorded as failed", "recipe", ["run", "recipes/failing_stage.yaml"],
             says="too small", check=_stage_failed, may_change=("runs/recipe_fail/",)),
        Case("recipe runs", "recipe", ["run", "recipes/ok.yaml"], expect="ok", may_change=("runs/recipe/",)),
        Case("recipe output truncated after it finished", "recipe", ["run", "recipes/ok.yaml"], expect="ok",
             first=["run", "recipes/ok.yaml"], prepare=_truncate_recipe_output, check=_reran_changed,
             may_change=("runs/recipe/",)),
        # output paths: nothing is lost
        Case("search --out D --force where D holds the teacher and a user file", "output",
             ["search", "--teacher", "D/t.pth", "--target-macs", TARGET, "--input-size", "32", "--min-channels", "4",
              "--out", "D", "--force"], expect="safe", check=_kept("D/t.pth", "D/inner/notes.txt")),
        Case("export S --out S/student.safetensors", "output",
             ["export", S, "--out", "S/student.safetensors", "--input-size", "32"], expect="safe"),
        Case("export t.pth --out t.pth --format torchscript", "output",
             ["export", T, "--out", T, "--format", "torchscript", "--input-size", "32"], expect="safe"),
        Case("search --trials over a one-step student", "output",
             [*search, "--target-macs", TARGET, "--trials", "2", "--out", S], expect="safe"),
        Case("search --trials of another target over a study", "output",
             [*search, "--target-macs", "2.5M", "--trials", "2", "--out", "study"], expect="safe",
             first=[*search, "--target-macs", TARGET, "--trials", "2", "--out", "study"]),
        Case("--out in an unwritable place", "output", [*search, "--target-macs", TARGET, "--out", "/proc/nas-prune"]),
        Case("--out . --force", "output", [*search, "--target-macs", TARGET, "--out", ".", "--force"], expect="safe",
             check=_kept("t.pth", "notes.txt", "data/train/0.png")),
        Case("--out naming an existing file", "output", [*search, "--target-macs", TARGET, "--out", "a_file"]),
        Case("evaluate --out naming an existing file", "output",
             ["evaluate", S, "--data", "data", "--crop-size", "32", "--out", "a_file"]),
    ]
    return c
