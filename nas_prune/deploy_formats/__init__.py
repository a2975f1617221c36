"""Phone and edge formats for ``nas-prune export --format``, each through its ecosystem's converter.

=========== ============================ ==================================== ==========================
format      converter                    checked by running in                 files
=========== ============================ ==================================== ==========================
tflite      litert-torch (LiteRT)        the LiteRT interpreter (ai-edge-litert) ``generator.tflite``
executorch  ExecuTorch, XNNPACK backend  ExecuTorch's pybindings              ``generator.pte``
ncnn        pnnx                         ncnn's Python module                  ``generator.ncnn.param`` + ``.bin``
openvino    OpenVINO, from ONNX          OpenVINO's CPU plugin                 ``generator.xml`` + ``.bin``
coreml      coremltools (ML program)     nothing: the spec is validated        ``generator.mlpackage/``
=========== ============================ ==================================== ==========================

Each is an optional extra (``pip install 'nas-prune[openvino]'``; ``[deploy]`` installs all
that install beside the project's torch). A format whose converter is missing fails before
any work with one line naming the extra.

Each module of this package provides ``EXTRA`` (the extra's name), ``REQUIRES`` (modules to
import), ``STATIC`` (True when the exported file has fixed input shapes), ``outputs(out)``
(the files written for an output path), ``write(net, x, paths, ...)`` and ``runner(paths, threads)``
(a callable ``x (N, C, H, W) tensor -> numpy array``), or for Core ML ``validate(paths, net, x)``.
How the files land: everything is written into a hidden temporary folder beside the output,
checked there, and only then renamed into place (nothing a user owns is overwritten).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nas_prune.errors import NasPruneError

__all__ = ["PHONE_FORMATS", "converter", "check_available", "output_paths", "staged_outputs"]

PHONE_FORMATS = ("tflite", "executorch", "ncnn", "openvino", "coreml")
_MODULES = {"tflite": "tflite", "executorch": "executorch_xnnpack", "ncnn": "ncnn_pnnx",
            "openvino": "openvino_ir", "coreml": "coreml"}


def converter(format: str) -> Any:
    """The module of :data:`PHONE_FORMATS` that writes ``format`` (imports no converter yet)."""
    if format not in _MODULES:
        raise NasPruneError(f"format {format!r} is not one of {', '.join(PHONE_FORMATS)}")
    return importlib.import_module(f"nas_prune.deploy_formats.{_MODULES[format]}")


def check_available(format: str, *, run: bool = True) -> Any:
    """The converter module, after checking that its packages import.

    Raises:
        NasPruneError: ``--format X needs the X extra (Y not installed): pip install 'nas-prune[X]'``,
            with the known installation conflict where there is one.
    """
    mod = converter(format)
    missing = []
    for name in mod.REQUIRES + (mod.RUN_REQUIRES if run else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
        except Exception as err:  # pragma: no cover - a broken install (ABI mismatch) is reported, not raised
            missing.append(f"{name} ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    if missing:
        hint = getattr(mod, "INSTALL_NOTE", "")
        raise NasPruneError(f"--format {format} needs the {mod.EXTRA} extra ({', '.join(missing)} not installed): "
                            f"pip install 'nas-prune[{mod.EXTRA}]'{hint}")
    return mod


def output_paths(format: str, out: Path) -> list[Path]:
    """The files ``format`` writes for ``out`` (a folder gets ``generator.*`` inside)."""
    return converter(format).outputs(out)


class staged_outputs:
    """Context manager: temporary paths (same names, in a hidden folder beside the first
    output) that are renamed onto ``paths`` when the body succeeds, and removed otherwise.

    Files are recorded in their folder's manifest (:func:`nas_prune.outputs.record`); a
    folder output (a Core ML package) is moved into place only where nothing exists yet.
    """

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.tmpdir: Path | None = None

    def __enter__(self) -> list[Path]:
        from nas_prune.outputs import check_replaceable

        for p in self.paths:
            if p.suffix == ".mlpackage":
                if os.path.lexists(p):
                    raise NasPruneError(f"{p} exists: nas-prune does not replace a folder; move it away "
                                        "or choose another output path")
            else:
                check_replaceable(p)
        parent = self.paths[0].parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.paths[0].name}.", suffix=".tmp", dir=parent))
        except OSError as err:
            raise NasPruneError(f"cannot write {self.paths[0]}: {err.strerror or err}") from None
        return [self.tmpdir / p.name for p in self.paths]

    def __exit__(self, exc_type, exc, tb) -> None:
        from nas_prune.outputs import check_replaceable, record

        assert self.tmpdir is not None
        try:
            if exc_type is None:
                for p in self.paths:
                    tmp = self.tmpdir / p.name
                    if not tmp.exists():
                        raise NasPruneError(f"the converter did not write {p.name}")
                    if p.suffix == ".mlpackage":
                        if os.path.lexists(p):
                            raise NasPruneError(f"{p} appeared while exporting: not replaced")
                        os.replace(tmp, p)
                    else:
                        check_replaceable(p)
                        record(p, content=tmp)
                        os.replace(tmp, p)
        except OSError as err:
            raise NasPruneError(f"cannot write {self.paths[0]}: {err.strerror or err}") from None
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def file_bytes(paths: list[Path]) -> int:
    """Total size of the written files (a Core ML package counted file by file)."""
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total
