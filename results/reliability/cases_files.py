"""Hostile and unlucky files for the matrix: weights of the wrong dtype or layout, images that
lie about their orientation or size, JSON and YAML built to break parsers, full disks.

``build(ws)`` adds the files to the workspace of ``cases.py`` (after its own); ``cases()``
returns the cases. Categories: ``dtypes``, ``images``, ``json-yaml``, ``files``,
``disk-full``. The disk-full cases run the command under a real limit
(``Case.runner``, see ``run_matrix.py``): a tiny tmpfs mounted in a private mount namespace
(``ENOSPC``), a file-size limit (``RLIMIT_FSIZE``, as ``ulimit -f`` sets; ``EFBIG``), or a
read-only mount (``EROFS``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cases import ARCH, TARGET, Case  # noqa: E402  (run_matrix puts this folder on sys.path)

KEY = "features.0.res_ops.1.1.0.weight"
ORIENTATION = 0x0112
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


# ----------------------------------------------------------------------------- files


def _retag(path: Path, key: str, dtype: str) -> None:
    """Rewrite a safetensors header so ``key`` is declared ``dtype`` over the same bytes."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header[key]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _gray_png(path: Path, width: int, height: int) -> None:
    """A black 8-bit grayscale PNG of any size, written row by row (a 20000x20000 bomb is ~400 KB)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _pair() -> Image.Image:
    """An upright 64x32 A|B pair: A (left) red, B (right) blue."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (220, 20, 20)
    arr[:, 32:] = (20, 20, 230)
    return Image.fromarray(arr)


def _oriented(folder: Path, orientation: int, fmt: str) -> None:
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for i in range(2 if split == "test" else 4):
            exif = Image.Exif()
            exif[ORIENTATION] = orientation
            ext = "jpg" if fmt == "JPEG" else "png"
            _pair().transpose(STORED[orientation]).save(folder / split / f"{i}.{ext}", format=fmt, exif=exif,
                                                         **({"quality": 95} if fmt == "JPEG" else {}))


def _copy_data(ws: Path, name: str) -> Path:
    shutil.copytree(ws / "data", ws / name)
    return ws / name


def build(ws: Path) -> None:
    from safetensors.torch import save_file

    sd = torch.load(ws / "t.pth", weights_only=True)
    h = ws / "hostile"
    h.mkdir()

    def variant(name, change):
        state = {k: v.clone() for k, v in sd.items()}
        change(state)
        torch.save(state, h / name)

    # dtypes and layouts
    variant("int64.pth", lambda s: s.update({k: v.round().long() for k, v in s.items()}))
    variant("int32.pth", lambda s: s.__setitem__(KEY, s[KEY].round().int()))
    variant("uint8.pth", lambda s: s.__setitem__(KEY, s[KEY].abs().mul(100).to(torch.uint8)))
    variant("bool.pth", lambda s: s.__setitem__(KEY, s[KEY] > 0))
    variant("complex.pth", lambda s: s.__setitem__(KEY, s[KEY].to(torch.complex64)))
    variant("sparse_coo.pth", lambda s: s.__setitem__(KEY, s[KEY].to_sparse()))
    variant("sparse_csr.pth", lambda s: s.__setitem__(KEY, s[KEY].flatten(1).to_sparse_csr()))
    variant("quantized.pth", lambda s: s.__setitem__(KEY, torch.quantize_per_tensor(s[KEY], 0.01, 0, torch.qint8)))
    variant("meta.pth", lambda s: s.__setitem__(KEY, torch.empty(s[KEY].shape, device="meta")))
    variant("half.pth", lambda s: s.update({k: v.half() for k, v in s.items()}))
    variant("bf16.pth", lambda s: s.update({k: v.bfloat16() for k, v in s.items()}))
    variant("float8.pth", lambda s: s.__setitem__(KEY, s[KEY].to(torch.float8_e4m3fn)))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(h / "i32.safetensors"))
    _retag(h / "i32.safetensors", KEY, "I32")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(h / "u32.safetensors"))
    _retag(h / "u32.safetensors", "up_sampling.0.weight", "U32")
    from nas_prune.model import build_generator

    bn = build_generator(dataclasses.replace(ARCH, norm="batch"))
    torch.save(bn.state_dict(), h / "batchnorm.pth")  # num_batches_tracked is int64: allowed
    shutil.copytree(ws / "S", h / "S_i32")
    _retag(h / "S_i32" / "student.safetensors", "up_sampling.7.bias", "I32")
    shutil.copytree(ws / "S", h / "S_i64")
    from safetensors.torch import load_file

    weights = load_file(str(ws / "S" / "student.safetensors"))
    save_file({k: (v.round().long() if k == "down_sampling.1.weight" else v) for k, v in weights.items()},
              str(h / "S_i64" / "student.safetensors"), metadata={"format": "nas-prune-student", "arch": "arch.json"})
    torch.save({"model.0.weight": torch.ones(8, 6, 4, 4, dtype=torch.int64)}, h / "d_int.pth")
    # images
    _oriented(h / "exif6", 6, "JPEG")
    _oriented(h / "exif8", 8, "PNG")
    _oriented(h / "exif3", 3, "JPEG")
    for name, (w, hh) in (("bomb", (20000, 20000)), ("bomb_warn", (10000, 9500))):
        d = _copy_data(ws, f"hostile/{name}")
        _gray_png(d / "train" / "9.png", w, hh)
    d = _copy_data(ws, "hostile/bomb_test")
    _gray_png(d / "test" / "9.png", 20000, 20000)
    d = _copy_data(ws, "hostile/truncated_jpeg")
    Image.fromarray(np.full((32, 64, 3), 90, np.uint8)).save(d / "test" / "5.jpg", quality=95)
    raw = (d / "test" / "5.jpg").read_bytes()
    (d / "test" / "5.jpg").write_bytes(raw[: len(raw) // 3])
    d = _copy_data(ws, "hostile/bad_pixels")  # chunks with good CRCs around pixel data that is not zlib
    _gray_png(d / "test" / "5.png", 64, 32)
    raw = bytearray((d / "test" / "5.png").read_bytes())
    start = raw.index(b"IDAT") + 4
    n = struct.unpack(">I", raw[start - 8 : start - 4])[0]
    raw[start : start + n] = bytes(range(256))[:n].ljust(n, b"\x07")
    raw[start + n : start + n + 4] = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(raw[start : start + n])) & 0xFFFFFFFF)
    (d / "test" / "5.png").write_bytes(bytes(raw))
    rng = np.random.default_rng(5)
    d = _copy_data(ws, "hostile/modes")
    Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).convert("CMYK").save(d / "test" / "c.jpg")
    Image.fromarray(rng.integers(0, 256, (32, 64, 4), dtype=np.uint8), "RGBA").save(d / "test" / "r.png")
    Image.fromarray(rng.integers(0, 256, (32, 64, 2), dtype=np.uint8), "LA").save(d / "test" / "la.png")
    pal = Image.fromarray(rng.integers(0, 4, (32, 64), dtype=np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    pal.save(d / "test" / "p.png", transparency=1)
    Image.fromarray(rng.random((32, 64)).astype(np.float32), "F").save(d / "test" / "f.tiff")
    d = _copy_data(ws, "hostile/zero_link")
    (d / "test" / "z.png").symlink_to("/dev/zero")
    (h / "calib_bomb").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(h / "calib_bomb" / f"{i}.png")
    _gray_png(h / "calib_bomb" / "0.png", 20000, 20000)
    # JSON and YAML
    y = h / "yaml"
    y.mkdir()
    ok = (ws / "recipes" / "ok.yaml").read_text()
    (y / "random.yaml").write_bytes(np.random.default_rng(7).bytes(4096))
    (y / "deep_flow.yaml").write_text("name: x\nstages: " + "[" * 100_000 + "]" * 100_000 + "\n")
    (y / "deep_block.yaml").write_text("name: x\nstages:\n" + "".join("  " * (i + 1) + "-\n" for i in range(300)))
    lol = ["name: lol", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lol.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    (y / "laughs.yaml").write_text("\n".join(lol) + "\n")
    (y / "python_tag.yaml").write_text("name: !!python/object/apply:os.system ['touch PWNED']\n" + ok)
    (y / "nul.yaml").write_text("name: a\x00b\n")
    (y / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + ok.encode())
    (y / "list.yaml").write_text("- 1\n- 2\n")
    (y / "space_deep.yaml").write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    (y / "space_random.yaml").write_bytes(np.random.default_rng(8).bytes(2048))
    (y / "space_laughs.yaml").write_text("\n".join(lol).replace("name: lol", "name: s") + "\n")
    doc = json.loads((ws / "S" / "arch.json").read_text())
    for name, text in (
        ("deep", json.dumps({**doc, "arch": "@"}).replace('"@"', "[" * 100_000 + "]" * 100_000)),
        ("random", None),
        ("bigint", json.dumps(doc).replace('"params": ', '"params": ' + "9" * 5000 + ", \"x\": ")),
        ("huge", json.dumps(doc)),  # padded to 17 MB by _huge_arch when the case runs
        ("bom", "\ufeff" + json.dumps(doc)),
        ("array", "[1, 2, 3]"),
    ):
        shutil.copytree(ws / "S", h / f"S_json_{name}")
        path = h / f"S_json_{name}" / "arch.json"
        if text is None:
            path.write_bytes(np.random.default_rng(9).bytes(4096))
        else:
            path.write_text(text, encoding="utf-8")
    shutil.copytree(ws / "run_int", h / "run_cfg_deep")
    (h / "run_cfg_deep" / "config.json").write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    shutil.copytree(ws / "run_int", h / "run_cfg_random")
    (h / "run_cfg_random" / "config.json").write_bytes(np.random.default_rng(10).bytes(1024))
    shutil.copytree(ws / "run_int", h / "run_status_random")
    (h / "run_status_random" / "status.json").write_bytes(np.random.default_rng(11).bytes(1024))
    shutil.copytree(ws / "S", h / "S_manifest_deep")
    (h / "S_manifest_deep" / ".nas-prune-manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    (h / "S_manifest_deep" / "mine.txt").write_text("a file of the user's\n")
    # other hostile files
    raw = (ws / "t.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    deep = ("[" * 200_000 + "]" * 200_000).encode()
    (h / "deep_header.safetensors").write_bytes(struct.pack("<Q", len(deep)) + deep + raw[8 + n :])
    (h / "loop_a.pth").symlink_to("loop_b.pth")
    (h / "loop_b.pth").symlink_to("loop_a.pth")
    (h / "dir.yaml").mkdir()


# big files are made in the case's own copy of the workspace only (``Case.prepare``)


def _fifo(ws: Path) -> None:
    os.mkfifo(ws / "hostile" / "fifo.yaml")  # copytree cannot copy one


def _zeros(ws: Path) -> None:
    with open(ws / "hostile" / "zeros.pth", "wb") as f:
        f.truncate(10 * 2**30)  # a sparse 10 GB file of zeros: no disk used


def _huge_recipe(ws: Path) -> None:
    ok = (ws / "recipes" / "ok.yaml").read_text()
    (ws / "hostile" / "yaml" / "huge.yaml").write_text(ok + "# " + "x" * (3 * 2**20) + "\n")


def _huge_arch(ws: Path) -> None:
    path = ws / "hostile" / "S_json_huge" / "arch.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "pad": "x" * (17 * 2**20)}))


# ----------------------------------------------------------------------------- checks


def _pair_upright(folder: str):
    def check(ws: Path, out: str) -> str | None:
        from nas_prune.data import TransformConfig, open_dataset

        tf = TransformConfig(load_size=32, crop_size=32, preprocess="resize", flip=False)
        s = open_dataset(ws / folder, mode="aligned", split="test", transform=tf)[0]
        a_red, a_blue = float(s["A"][0].mean()), float(s["A"][2].mean())
        b_red, b_blue = float(s["B"][0].mean()), float(s["B"][2].mean())
        if not (a_red > 0.4 and a_blue < -0.6 and b_blue > 0.6 and b_red < -0.6):
            return f"A|B halves cut from the stored, not the upright, image (A red {a_red:.2f}, B blue {b_blue:.2f})"
        return None

    return check


def _warned(text: str):
    def check(ws: Path, out: str) -> str | None:
        return None if text in out else f"no warning saying {text!r}"

    return check


def _no_pwned(ws: Path, out: str) -> str | None:
    return "a YAML tag ran code (PWNED exists)" if (ws / "PWNED").exists() else None


def _kept(*paths: str):
    def check(ws: Path, out: str) -> str | None:
        gone = [p for p in paths if not (ws / p).exists()]
        return f"removed: {', '.join(gone)}" if gone else None

    return check


def _left_whole(listing: str):
    """The files left on the full file system (listed and copied out by the runner) are whole."""

    def check(ws: Path, out: str) -> str | None:
        copy = ws / f"{listing}.copy"
        if not copy.is_dir():
            return "the runner left no copy of the full file system (mount failed?)"
        problems = []
        for p in sorted(copy.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(copy).as_posix()
            if p.name.endswith(".tmp") or "/." in f"/{rel}" and ".tmp" in rel:
                problems.append(f"temporary {rel} left")
            elif p.suffix == ".json":
                try:
                    json.loads(p.read_text())
                except ValueError:
                    problems.append(f"{rel} is not whole JSON")
            elif p.suffix in (".safetensors",):
                from safetensors.torch import load_file

                try:
                    load_file(str(p))
                except Exception:  # noqa: BLE001
                    problems.append(f"{rel} is cut off")
            elif p.suffix == ".pt":
                try:
                    torch.load(p, weights_only=True)
                except Exception:  # noqa: BLE001
                    problems.append(f"{rel} is cut off")
        return "; ".join(problems) or None

    return check


def _distill_left_a_record(folder: str):
    """A distill stopped by a full disk leaves whole files only, and its status is not 'running'."""

    def check(ws: Path, out: str) -> str | None:
        run = ws / folder
        problems = [p.relative_to(ws).as_posix() for p in run.rglob("*.tmp")] if run.is_dir() else []
        if problems:
            return "temporaries left: " + ", ".join(problems)
        status = run / "status.json"
        if status.is_file():
            state = json.loads(status.read_text()).get("state")
            if state == "running":
                return "status.json still says running"
        ckpt = run / "checkpoints" / "last.pt"
        if ckpt.is_file():
            try:
                torch.load(ckpt, weights_only=True)
            except Exception:  # noqa: BLE001
                return "checkpoints/last.pt is cut off"
        return None

    return check


# ----------------------------------------------------------------------------- cases


def cases() -> list[Case]:
    S, T = "S", "t.pth"
    distill = ["distill", "--teacher", T, "--student", S, "--data", "data", "--mode", "aligned", "--epochs", "1",
               "--epochs-decay", "0", "--batch-size", "2", "--load-size", "32", "--crop-size", "32", "--ndf", "8",
               "--workers", "0", "--no-progress"]
    search = ["search", "--teacher", T, "--target-macs", TARGET, "--input-size", "32", "--min-channels", "4"]
    out = ["--out", "never"]
    ev = ["--crop-size", "32"]
    H = "hostile"
    fp = "weights must be floating point"
    c = [
        # dtypes and layouts of weights
        Case("int64 .pth teacher (every tensor)", "dtypes", ["profile", f"{H}/int64.pth"], says=fp),
        Case("int64 .pth teacher: search refuses before writing", "dtypes",
             [*search, "--teacher", f"{H}/int64.pth", *out], says=fp),
        Case("int32 tensor in a teacher", "dtypes", ["profile", f"{H}/int32.pth"], says=f"{KEY} (int32)"),
        Case("uint8 tensor in a teacher", "dtypes", ["profile", f"{H}/uint8.pth"], says="(uint8)"),
        Case("bool tensor in a teacher", "dtypes", ["profile", f"{H}/bool.pth"], says="(bool)"),
        Case("complex tensor in a teacher", "dtypes", ["profile", f"{H}/complex.pth"], says="(complex64)"),
        Case("safetensors header declares I32 for float bytes", "dtypes", ["profile", f"{H}/i32.safetensors"],
             says=f"{KEY} (int32)"),
        Case("safetensors header declares I32: search", "dtypes",
             [*search, "--teacher", f"{H}/i32.safetensors", *out], says="(int32)"),
        Case("safetensors header declares U32", "dtypes", ["profile", f"{H}/u32.safetensors"], says="(uint32)"),
        Case("sparse COO tensor in a teacher", "dtypes", ["profile", f"{H}/sparse_coo.pth"], says="sparse coo"),
        Case("sparse CSR tensor in a teacher", "dtypes", ["profile", f"{H}/sparse_csr.pth"], says="sparse csr"),
        Case("quantized tensor in a teacher", "dtypes", ["profile", f"{H}/quantized.pth"], says="quantized"),
        Case("meta-device tensor in a teacher", "dtypes", ["profile", f"{H}/meta.pth"], says="meta-device"),
        Case("float16 teacher loads", "dtypes", ["profile", f"{H}/half.pth", "--input-size", "32"], expect="ok"),
        Case("bfloat16 teacher loads", "dtypes", ["profile", f"{H}/bf16.pth", "--input-size", "32"], expect="ok"),
        Case("float8 tensor in a teacher loads", "dtypes", ["profile", f"{H}/float8.pth", "--input-size", "32"],
             expect="ok"),
        Case("batch-norm teacher (int64 num_batches_tracked) loads", "dtypes",
             ["profile", f"{H}/batchnorm.pth", "--input-size", "32"], expect="ok"),
        Case("student safetensors declaring I32: evaluate", "dtypes", ["evaluate", f"{H}/S_i32", "--data", "data", *ev],
             says="up_sampling.7.bias (int32)"),
        Case("student with int64 weights: distill", "dtypes",
             [*distill[:3], "--student", f"{H}/S_i64", *distill[5:], *out], says="down_sampling.1.weight (int64)"),
        Case("student with int64 weights: export", "dtypes",
             ["export", f"{H}/S_i64", "--out", "x.onnx", "--input-size", "32"], says="(int64)"),
        Case("discriminator checkpoint of int64 tensors", "dtypes",
             [*distill, "--teacher-discriminator", f"{H}/d_int.pth", *out], says=fp),
        # images
        Case("EXIF orientation 6 JPEG pairs: halves from the upright image", "images",
             ["evaluate", T, "--data", f"{H}/exif6", *ev], expect="ok", check=_pair_upright(f"{H}/exif6")),
        Case("EXIF orientation 8 PNG pairs: halves from the upright image", "images",
             ["evaluate", T, "--data", f"{H}/exif8", *ev], expect="ok", check=_pair_upright(f"{H}/exif8")),
        Case("EXIF orientation 3 JPEG pairs (upside down)", "images",
             ["evaluate", T, "--data", f"{H}/exif3", *ev], expect="ok", check=_pair_upright(f"{H}/exif3")),
        Case("distill on EXIF-rotated pairs", "images",
             [*distill[:5], "--data", f"{H}/exif6", *distill[7:], "--out", "run_exif"], expect="ok",
             may_change=("run_exif/",)),
        Case("decompression bomb (400M pixels) in the training split", "images",
             [*distill[:5], "--data", f"{H}/bomb", *distill[7:], *out], says="9.png: refused as a decompression bomb"),
        Case("image over Pillow's warning limit (95M pixels)", "images",
             [*distill[:5], "--data", f"{H}/bomb_warn", *distill[7:], *out], says="decompression bomb"),
        Case("decompression bomb in the test split: evaluate", "images",
             ["evaluate", T, "--data", f"{H}/bomb_test", *ev], says="test/9.png: refused as a decompression bomb"),
        Case("decompression bomb in --calib-data", "images",
             [*search, "--calib-data", f"{H}/calib_bomb", "--importance", "activation", *out],
             says="decompression bomb"),
        Case("truncated JPEG in the test split is skipped with a warning", "images",
             ["evaluate", T, "--data", f"{H}/truncated_jpeg", *ev], expect="ok", check=_warned("skipped 1 of 3")),
        Case("PNG that passes the scan but does not decode", "images",
             ["evaluate", T, "--data", f"{H}/bad_pixels", *ev], says="5.png: cannot be read as an image"),
        Case("CMYK, RGBA, LA, palette+transparency and float TIFF images", "images",
             ["evaluate", T, "--data", f"{H}/modes", *ev], expect="ok"),
        Case("an image that is a link to /dev/zero is skipped", "images",
             ["evaluate", T, "--data", f"{H}/zero_link", *ev], expect="ok"),
        # JSON and YAML
        Case("recipe of random bytes", "json-yaml", ["validate", f"{H}/yaml/random.yaml"], says="not UTF-8 text"),
        Case("recipe nested 100,000 deep (flow)", "json-yaml", ["run", f"{H}/yaml/deep_flow.yaml"],
             says="nested more than 64 levels"),
        Case("recipe nested 300 deep (block)", "json-yaml", ["validate", f"{H}/yaml/deep_block.yaml"],
             says="nested more than 64 levels"),
        Case("recipe with a billion-laughs alias bomb", "json-yaml", ["validate", f"{H}/yaml/laughs.yaml"],
             says="through its aliases"),
        Case("recipe with a !!python/object tag", "json-yaml", ["run", f"{H}/yaml/python_tag.yaml"],
             says="not valid YAML", check=_no_pwned),
        Case("recipe of 3 MB", "json-yaml", ["validate", f"{H}/yaml/huge.yaml"], says="too large for a recipe",
             prepare=_huge_recipe),
        Case("recipe with a NUL byte", "json-yaml", ["validate", f"{H}/yaml/nul.yaml"], says="not valid YAML"),
        Case("recipe with a UTF-8 byte-order mark", "json-yaml", ["validate", f"{H}/yaml/bom.yaml"], expect="ok"),
        Case("recipe that is a list", "json-yaml", ["validate", f"{H}/yaml/list.yaml"]),
        Case("a checkpoint given as the recipe", "json-yaml", ["validate", T], says="not UTF-8 text"),
        Case("--set value nested 5,000 deep", "json-yaml",
             ["validate", "recipes/ok.yaml", "--set", "distill.epochs=" + "[" * 5000 + "]" * 5000],
             says="nested more than 64 levels"),
        Case("--distill-option value nested 5,000 deep", "json-yaml",
             [*distill, "--distill-option", "gcka.centered=" + "[" * 5000 + "]" * 5000, *out], says="nested"),
        Case("search space nested 50,000 deep", "json-yaml", ["profile", f"{H}/yaml/space_deep.yaml"],
             says="nested more than 64 levels"),
        Case("search space of random bytes", "json-yaml", ["profile", f"{H}/yaml/space_random.yaml"],
             says="not UTF-8 text"),
        Case("search space with an alias bomb", "json-yaml", ["profile", f"{H}/yaml/space_laughs.yaml"],
             says="through its aliases"),
        Case("arch.json nested 100,000 deep", "json-yaml", ["profile", f"{H}/S_json_deep"],
             says="nested 100001 levels deep"),
        Case("arch.json of random bytes", "json-yaml", ["evaluate", f"{H}/S_json_random", "--data", "data", *ev],
             says="not UTF-8 text"),
        Case("arch.json with a 5000-digit integer", "json-yaml", ["profile", f"{H}/S_json_bigint"],
             says="not valid JSON"),
        Case("arch.json of 17 MB", "json-yaml", ["profile", f"{H}/S_json_huge"], says="too large",
             prepare=_huge_arch),
        Case("arch.json with a byte-order mark", "json-yaml", ["profile", f"{H}/S_json_bom", "--input-size", "32"],
             expect="ok"),
        Case("arch.json that is a JSON array", "json-yaml", ["profile", f"{H}/S_json_array"]),
        Case("run config.json nested 100,000 deep: --resume", "json-yaml",
             ["distill", "--teacher", T, "--student", S, "--data", "data", "--out", f"{H}/run_cfg_deep", "--resume"],
             says="nested"),
        Case("run config.json of random bytes: --resume", "json-yaml",
             ["distill", "--teacher", T, "--student", S, "--data", "data", "--out", f"{H}/run_cfg_random", "--resume"],
             says="not UTF-8 text"),
        Case("status.json of random bytes: evaluate its final/", "json-yaml",
             ["evaluate", f"{H}/run_status_random/final", "--data", "data", *ev], expect="safe"),
        Case("manifest nested 100,000 deep: search --force keeps the user's file", "json-yaml",
             [*search, "--out", f"{H}/S_manifest_deep", "--force"], expect="safe",
             check=_kept(f"{H}/S_manifest_deep/mine.txt"), may_change=(f"{H}/S_manifest_deep/",)),
        # other hostile files
        Case("/dev/zero as the recipe", "files", ["validate", "/dev/zero"], says="/dev/zero"),
        Case("/dev/zero as the teacher", "files", ["profile", "/dev/zero"]),
        Case("a 10 GB sparse file of zeros as the teacher", "files", ["profile", f"{H}/zeros.pth"],
             says="not a PyTorch checkpoint", prepare=_zeros),
        Case("safetensors header nested 200,000 deep", "files", ["profile", f"{H}/deep_header.safetensors"],
             says="safetensors"),
        Case("a symlink loop as the teacher", "files", ["profile", f"{H}/loop_a.pth"]),
        Case("a FIFO as the recipe", "files", ["validate", f"{H}/fifo.yaml"], timeout=60, prepare=_fifo),
        Case("a folder as the recipe", "files", ["validate", f"{H}/dir.yaml"]),
        # full disks: real ENOSPC (tmpfs), EFBIG (RLIMIT_FSIZE), EROFS (read-only mount)
        Case("search --out on a full disk (tmpfs, ENOSPC)", "disk-full", [*search, "--out", "full/S"],
             says="no space left", runner="tmpfs:24k:full", check=_left_whole("full"),
             may_change=("full.copy/",)),
        Case("search under a file-size limit (EFBIG)", "disk-full", [*search, "--out", "S_fsize"],
             says="cannot write S_fsize/student.safetensors: file too large", runner="fsize:4096"),
        Case("search --trials (study) on a full disk", "disk-full",
             [*search, "--trials", "2", "--out", "full/study"], runner="tmpfs:64k:full", check=_left_whole("full"),
             may_change=("full.copy/",)),
        Case("search --out on a read-only mount (EROFS)", "disk-full", [*search, "--out", "ro/S"],
             says="Read-only file system", runner="rofs:ro"),
        Case("export ONNX to a full disk", "disk-full", ["export", S, "--out", "full/s.onnx", "--input-size", "32"],
             says="full/s.onnx", runner="tmpfs:16k:full", check=_left_whole("full"), may_change=("full.copy/",)),
        Case("export TorchScript under a file-size limit", "disk-full",
             ["export", S, "--out", "s.pt", "--format", "torchscript", "--input-size", "32"],
             says="cannot write s.pt", runner="fsize:8192"),
        Case("distill: checkpoint on a full disk", "disk-full", [*distill, "--out", "full/run"],
             says="no space left", runner="tmpfs:200k:full", check=_left_whole("full"), may_change=("full.copy/",)),
        Case("distill under a file-size limit: no cut-off checkpoint", "disk-full", [*distill, "--out", "run_fsize"],
             says="file too large", runner="fsize:65536", check=_distill_left_a_record("run_fsize"),
             may_change=("run_fsize/",)),
        Case("train-teacher under a file-size limit", "disk-full",
             ["train-teacher", "--data", "data", "--out", "tt_fsize", "--ngf", "4", "--n-blocks", "1", "--epochs", "1",
              "--epochs-decay", "0", "--batch-size", "2", "--load-size", "32", "--crop-size", "32", "--workers", "0",
              "--no-progress"], says="file too large", runner="fsize:16384",
             check=_distill_left_a_record("tt_fsize"), may_change=("tt_fsize/",)),
        Case("evaluate --out on a full disk", "disk-full",
             ["evaluate", S, "--data", "data", *ev, "--out", "full/eval"], runner="tmpfs:4k:full",
             check=_left_whole("full"), may_change=("full.copy/",)),
        Case("run of a recipe on a full disk", "disk-full", ["run", "recipes/ok.yaml", "--set", "run_dir=full/r"],
             says="no space left", runner="tmpfs:96k:full", check=_left_whole("full"), may_change=("full.copy/",)),
    ]
    return c
