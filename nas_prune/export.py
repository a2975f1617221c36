"""Student folders: ``arch.json`` + ``student.safetensors`` + ``summary.md``.

``arch.json`` (format ``nas-prune-arch``, version 1) is the central artifact: the student
can be rebuilt from it alone, and re-sliced from its teacher with the kept indices::

    {
      "format": "nas-prune-arch", "version": 1,
      "space": "cat_inception",                  # search-space name or null
      "arch": {...},                              # Arch.to_dict(): every width
      "macs": {"input_size": [256, 256],
               "fvcore": 2588..., "paper": 2597...,   # analytic, both conventions
               "measured": {"counter": "fvcore.nn.FlopCountAnalysis",   # real forward pass,
                            "convention": "fvcore", "macs": 2588...,  # scaled exactly to
                            "traced_input_size": [32, 32]}},         # input_size
      "params": 123456,
      "provenance": {                             # absent for hand-written architectures
        "teacher": {"file": "latest_net_G.pth", "sha256": "...", "layout": "cat",
                    "arch": {...}, "macs": {"fvcore": ..., "paper": ...}, "params": ...},
        "target": {"macs": 2600000000, "convention": "paper"},
        "criterion": "gamma", "threshold": 0.1234, "min_channels": 16, "round_to": null,
        "fill": true, "filled_channels": 7,
        "kept": {"stem.0": [0, 3, ...], "blocks.0.res.0": [...], ...},
        "tool": {"name": "nas-prune", "version": "0.1.0"},
        "created": "2025-01-01T00:00:00Z", "seconds": 1.23
      }
    }

Only ``format``, ``version`` and ``arch`` are required. Reading is strict: unknown
keys, wrong types, MACs or params that do not match the architecture, kept indices that
do not match its widths all fail with a message naming the field.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.arch import Arch, arch_from_dict, fits_within
from nas_prune.errors import NasPruneError
from nas_prune.fileio import dumps_readable, read_json

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT = "nas-prune-arch"
VERSION = 1
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "student.safetensors"
SUMMARY_FILE = "summary.md"
FVCORE_COUNTER = "fvcore.nn.FlopCountAnalysis"

_TOP = {"format", "version", "space", "arch", "macs", "params", "provenance", "latency"}
_MACS = {"input_size", "fvcore", "paper", "measured"}
_MEASURED = {"counter", "convention", "macs", "traced_input_size"}
_PROV = {
    "teacher", "target", "criterion", "threshold", "min_channels", "round_to", "fill",
    "filled_channels", "kept", "tool", "created", "seconds", "study", "round_to_auto",
}
_TEACHER = {"file", "sha256", "layout", "arch", "macs", "params"}
_TARGET = {"macs", "convention", "latency_ms"}
_LATENCY = {"runtime", "device", "threads", "batch", "input_size", "target_ms", "predicted_ms", "measured_ms",
            "measured", "attempts", "table", "used", "why"}
_TOOL = {"name", "version"}


# ----------------------------------------------------------------------------- validation


def _fail(src: str, field: str, problem: str) -> None:
    raise NasPruneError(f"{src}: {field}: {problem}")


def _check_keys(src: str, where: str, obj: Any, known: set[str], required: set[str]) -> None:
    if not isinstance(obj, Mapping):
        _fail(src, where, f"expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - known)
    if unknown:
        _fail(src, f"{where}.{unknown[0]}" if where else unknown[0], "unknown field")
    missing = sorted(required - set(obj))
    if missing:
        _fail(src, f"{where}.{missing[0]}" if where else missing[0], "missing field")


def _int(src: str, field: str, value: Any, *, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _fail(src, field, f"expected an integer >= {low}, got {value!r}")
    return value


def _number(src: str, field: str, value: Any, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(src, field, f"expected a number, got {value!r}")
    return float(value)


def _str(src: str, field: str, value: Any, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        _fail(src, field, f"expected a string, got {value!r}")
    return value


def validate_document(doc: Any, *, source: str = ARCH_FILE) -> tuple[Arch, Arch | None]:
    """Validate an ``arch.json`` document strictly.

    Returns:
        ``(student arch, teacher arch or None)``.

    Raises:
        NasPruneError: ``<source>: <field>: <problem>`` for the first bad field.
    """
    from nas_prune.macs import count_macs, count_params, parse_input_size

    src = source
    _check_keys(src, "", doc, _TOP, {"format", "version", "arch"})
    if doc["format"] != FORMAT:
        _fail(src, "format", f"expected {FORMAT!r}, got {doc['format']!r}")
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(src, "version", f"expected an integer, got {version!r}")
    if version != VERSION:
        _fail(src, "version", f"version {version} is not supported (this nas-prune reads version {VERSION})")
    _str(src, "space", doc.get("space"), nullable=True)
    try:
        arch = arch_from_dict(doc["arch"], where="arch")
    except NasPruneError as err:
        raise NasPruneError(f"{src}: {err}") from None

    size = None
    if "macs" in doc:
        macs = doc["macs"]
        _check_keys(src, "macs", macs, _MACS, {"input_size", "fvcore", "paper"})
        ins = macs["input_size"]
        if not (isinstance(ins, list) and len(ins) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in ins)):
            _fail(src, "macs.input_size", f"expected [H, W], got {ins!r}")
        try:
            size = parse_input_size((ins[0], ins[1]))
        except NasPruneError as err:
            _fail(src, "macs.input_size", str(err))
        for conv in ("fvcore", "paper"):
            value = _int(src, f"macs.{conv}", macs[conv])
            expected = count_macs(arch, input_size=size, convention=conv)
            if value != expected:
                _fail(src, f"macs.{conv}", f"{value:,} does not match the architecture ({expected:,})")
        measured = macs.get("measured")
        if measured is not None:
            _check_keys(src, "macs.measured", measured, _MEASURED, {"counter", "convention", "macs"})
            _str(src, "macs.measured.counter", measured["counter"])
            if measured["convention"] not in ("fvcore", "paper"):
                _fail(src, "macs.measured.convention", f"expected fvcore or paper, got {measured['convention']!r}")
            _int(src, "macs.measured.macs", measured["macs"])
            traced = measured.get("traced_input_size")
            if traced is not None and not (
                isinstance(traced, list) and len(traced) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in traced)
            ):
                _fail(src, "macs.measured.traced_input_size", f"expected [h, w], got {traced!r}")
    if "params" in doc:
        params = _int(src, "params", doc["params"])
        if params != count_params(arch):
            _fail(src, "params", f"{params:,} does not match the architecture ({count_params(arch):,})")

    if "latency" in doc:  # nas_prune.latency.target.LatencyReport
        lat = doc["latency"]
        _check_keys(src, "latency", lat, _LATENCY, {"runtime", "device", "measured_ms"})
        _str(src, "latency.runtime", lat["runtime"])
        _str(src, "latency.device", lat["device"])
        _number(src, "latency.measured_ms", lat["measured_ms"])
        for key in ("target_ms", "predicted_ms"):
            _number(src, f"latency.{key}", lat.get(key), nullable=True)
    teacher = None
    prov = doc.get("provenance")
    if prov is not None:
        teacher = _validate_provenance(src, prov, arch)
    return arch, teacher


def _validate_provenance(src: str, prov: Any, arch: Arch) -> Arch:
    from nas_prune.plan import PrunePlan

    _check_keys(src, "provenance", prov, _PROV, {"teacher", "kept"})
    t = prov["teacher"]
    _check_keys(src, "provenance.teacher", t, _TEACHER, {"arch"})
    for key in ("file", "sha256", "layout"):
        _str(src, f"provenance.teacher.{key}", t.get(key), nullable=True)
    try:
        teacher = arch_from_dict(t["arch"], where="provenance.teacher.arch")
    except NasPruneError as err:
        raise NasPruneError(f"{src}: {err}") from None
    why = fits_within(arch, teacher)
    if why is not None:
        _fail(src, "arch", f"not a student of provenance.teacher.arch: {why}")
    if "macs" in t:
        _check_keys(src, "provenance.teacher.macs", t["macs"], {"fvcore", "paper"}, set())
    if "params" in t:
        _int(src, "provenance.teacher.params", t["params"])
    if "target" in prov:
        _check_keys(src, "provenance.target", prov["target"], _TARGET, {"macs", "convention"})
        if prov["target"]["macs"] is not None or "latency_ms" not in prov["target"]:
            _int(src, "provenance.target.macs", prov["target"]["macs"], low=1)
        if "latency_ms" in prov["target"] and not (_number(src, "provenance.target.latency_ms",
                                                           prov["target"]["latency_ms"]) > 0):
            _fail(src, "provenance.target.latency_ms", "expected a positive number")
        if prov["target"]["convention"] not in ("fvcore", "paper"):
            _fail(src, "provenance.target.convention", f"expected fvcore or paper, got {prov['target']['convention']!r}")
    _str(src, "provenance.criterion", prov.get("criterion"), nullable=True)
    _number(src, "provenance.threshold", prov.get("threshold"), nullable=True)
    if prov.get("min_channels") is not None:
        _int(src, "provenance.min_channels", prov["min_channels"], low=1)
    if prov.get("round_to") is not None:
        _int(src, "provenance.round_to", prov["round_to"], low=1)
    if "fill" in prov and not isinstance(prov["fill"], bool):
        _fail(src, "provenance.fill", f"expected true or false, got {prov['fill']!r}")
    if "filled_channels" in prov:
        _int(src, "provenance.filled_channels", prov["filled_channels"])
    if "tool" in prov:
        _check_keys(src, "provenance.tool", prov["tool"], _TOOL, _TOOL)
    _str(src, "provenance.created", prov.get("created"), nullable=True)
    _number(src, "provenance.seconds", prov.get("seconds"), nullable=True)
    for key in ("study", "round_to_auto"):  # nas_prune.study; nas_prune.latency.target
        if key in prov and not isinstance(prov[key], Mapping):
            _fail(src, f"provenance.{key}", "expected an object")
    if not isinstance(prov["kept"], Mapping):
        _fail(src, "provenance.kept", "expected an object")
    try:
        plan = PrunePlan.from_kept(teacher, prov["kept"], where="provenance.kept")
    except NasPruneError as err:
        raise NasPruneError(f"{src}: {err}") from None
    if plan.student_arch() != arch:
        got = _widths_of(arch, teacher)
        for name, width in plan.widths.items():
            if got.get(name, 0) != width:
                _fail(src, f"provenance.kept.{name}", f"{width} indices but the arch has width {got.get(name, 0)}")
        _fail(src, "provenance.kept", "does not match the arch's widths")
    return teacher


def _widths_of(student: Arch, teacher: Arch) -> dict[str, int]:
    """Student widths keyed by the teacher's prunable-layer names."""
    from nas_prune.plan import student_widths

    return student_widths(student, teacher)


# ----------------------------------------------------------------------------- reading


def student_folder(path: str | os.PathLike) -> Path:
    """The student folder a folder stands for: itself, or ``student/`` in a study folder of an
    earlier version (which kept its student there)."""
    path = Path(path)
    if not (path / ARCH_FILE).exists() and (path / "student" / ARCH_FILE).is_file():
        return path / "student"
    return path


def _locate(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = student_folder(path)
        return path / ARCH_FILE, path / WEIGHTS_FILE
    return path, path.parent / WEIGHTS_FILE


def read_document(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``arch.json`` (or a student folder's); returns the parsed document."""
    arch_path, _ = _locate(path)
    if arch_path.suffix in (".pth", ".pt", ".ckpt", ".bin", ".safetensors"):
        raise NasPruneError(f"{arch_path} is a checkpoint, not a student folder (a folder with arch.json and "
                            "student.safetensors, as nas-prune search writes) or an arch.json")
    if not arch_path.is_file():
        from nas_prune.runstate import check_finished, run_folder_hint

        check_finished(arch_path)  # RUN/final/arch.json of a run that has not finished says so
        raise NasPruneError(run_folder_hint(arch_path.parent) or f"architecture file not found: {arch_path}")
    doc = read_json(arch_path, what="architecture file")
    validate_document(doc, source=str(arch_path))
    return doc


def read_student(
    path: str | os.PathLike, *, load_weights: bool = True
) -> tuple[Arch, dict[str, "torch.Tensor"] | None, dict[str, Any]]:
    """Read a student folder or an ``arch.json``.

    Weights are read from ``student.safetensors`` next to ``arch.json`` when it exists
    and ``load_weights`` is true; they are checked key by key and shape by shape
    against ``build_generator(arch)``.

    Returns:
        ``(arch, state dict or None, document)``; the document is the validated
        ``arch.json`` content (``meta["provenance"]`` holds the kept indices).

    Raises:
        NasPruneError: missing file, malformed JSON, bad field (named), weights that do
            not fit the architecture.
    """
    arch_path, weights_path = _locate(path)
    doc = read_document(arch_path)
    arch = arch_from_dict(doc["arch"])
    state = None
    if load_weights and weights_path.is_file():
        state = _read_weights(weights_path, arch)
    return arch, state, doc


def _read_weights(path: Path, arch: Arch) -> dict[str, "torch.Tensor"]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nas_prune.model import build_generator

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise NasPruneError(f"{path}: not a readable safetensors file ({err})") from None
    from nas_prune.families.common import check_state
    from nas_prune.tensor_checks import check_weights

    check_weights(state, path)
    return check_state(build_generator(arch).state_dict(), state, path,
                       what="weights do not match the architecture in arch.json")


def load_student(path: str | os.PathLike, *, device: str | None = None):
    """Rebuild the student from ``arch.json`` and load its weights (eval mode).

    Raises:
        NasPruneError: as :func:`read_student`, or no ``student.safetensors``.
    """
    from nas_prune.model import build_generator

    arch, state, _ = read_student(path)
    if state is None:
        raise NasPruneError(f"{_locate(path)[1]}: student weights not found")
    model = build_generator(arch)
    model.load_state_dict(state, strict=True)
    if device is not None:
        model.to(device)
    return model.eval()


def reslice(teacher_state_dict: Mapping[str, "torch.Tensor"], document: Mapping[str, Any] | str | os.PathLike):
    """Slice the teacher again with the kept indices recorded in ``arch.json``.

    Args:
        teacher_state_dict: the teacher's weights in CAT layout (``load_generator(...).state_dict``).
        document: a parsed ``arch.json`` or a path to one / to a student folder.

    Returns:
        the student's state dict; equal tensor for tensor to the exported weights of a
        student that was not fine-tuned since.

    Raises:
        NasPruneError: the document has no provenance.
    """
    from nas_prune.apply import slice_state_dict
    from nas_prune.plan import PrunePlan

    if not isinstance(document, Mapping):
        document = read_document(document)
    else:
        validate_document(document)
    prov = document.get("provenance")
    if prov is None:
        raise NasPruneError("arch.json: provenance: missing; this student was not pruned from a teacher")
    teacher = arch_from_dict(prov["teacher"]["arch"], where="provenance.teacher.arch")
    plan = PrunePlan.from_kept(teacher, prov["kept"], where="provenance.kept")
    return slice_state_dict(plan, teacher_state_dict)


# ----------------------------------------------------------------------------- writing


def write_student(
    out: str | os.PathLike,
    *,
    document: Mapping[str, Any],
    state_dict: Mapping[str, "torch.Tensor"] | None,
    summary: str | None = None,
    force: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
    beside: bool = False,
) -> Path:
    """Write a student folder: ``arch.json``, ``student.safetensors``, ``summary.md``.

    A new (or empty) ``out`` is built as a temporary sibling folder renamed to ``out``, so
    all files appear together or none do. Otherwise every file is written to a temporary
    beside it first and the temporaries are renamed only once all are written, ``arch.json``
    (what makes a folder a student) last: a write that fails (a full disk) leaves the earlier
    files as they were and no temporary behind. Every file is listed in the
    folder's manifest (:mod:`nas_prune.outputs`).

    Args:
        force: ``out`` may hold an earlier result: what nas-prune wrote there is removed
            first (:func:`nas_prune.outputs.clear`); other files stay.
        inputs: the command's input files and folders, never written over.
        beside: ``out`` holds other nas-prune files of the same command (a study's
            database): only the student's own files are replaced.

    Raises:
        NasPruneError: ``out`` exists, is not empty and neither ``force`` nor ``beside``
            is set; an input would be written over; the document is invalid.
    """
    from safetensors.torch import save

    from nas_prune.outputs import check_inputs, check_out_dir, check_replaceable, forget, record

    out = Path(out)
    names = [WEIGHTS_FILE] * (state_dict is not None) + [SUMMARY_FILE] * (summary is not None) + [ARCH_FILE]
    validate_document(dict(document), source=f"{out / ARCH_FILE}")
    if beside:
        check_inputs([out / n for n in (WEIGHTS_FILE, SUMMARY_FILE, ARCH_FILE)], inputs)
        for name in (WEIGHTS_FILE, SUMMARY_FILE, ARCH_FILE):
            check_replaceable(out / name)
    else:
        check_out_dir(out, force=force, inputs=inputs, writes=names)
    contents: dict[str, bytes] = {ARCH_FILE: (dumps_readable(document) + "\n").encode("utf-8")}
    if state_dict is not None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        contents[WEIGHTS_FILE] = save(tensors, metadata={"format": "nas-prune-student", "arch": ARCH_FILE})
    if summary is not None:
        contents[SUMMARY_FILE] = summary.encode("utf-8")
    if out.is_dir() and any(out.iterdir()):
        import contextlib

        from nas_prune.fileio import atomic_path, naming_failures

        for name in (WEIGHTS_FILE, SUMMARY_FILE, ARCH_FILE):
            if name not in contents and (out / name).exists():
                (out / name).unlink()  # an earlier student's file (checked replaceable above)
                forget(out / name)
        # every file is written to its temporary first and renamed only when all are written (in
        # the order of ``names``: contexts exit last-entered first), so a full disk leaves the
        # earlier student whole, never new weights beside an old arch.json
        with contextlib.ExitStack() as stack:
            temps = {name: stack.enter_context(atomic_path(out / name)) for name in reversed(names)}
            for name in names:  # written in order too: the weights, the largest file, fail first
                with naming_failures(out / name):
                    temps[name].write_bytes(contents[name])
        return out
    from nas_prune.fileio import naming_failures, write_failed

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as err:
        raise write_failed(out, err) from None
    try:
        for name in names:
            with naming_failures(out / name):
                (tmp / name).write_bytes(contents[name])
                record(tmp / name)
        if out.is_dir():
            out.rmdir()  # empty
        with naming_failures(out):
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out



def student_files() -> list[str]:
    """File names of a student folder, in the order they are written."""
    return [WEIGHTS_FILE, SUMMARY_FILE, ARCH_FILE]


def check_out_dir(out: str | os.PathLike, *, force: bool = False) -> None:
    """Fail early when the output folder exists and is not empty (unless ``force``) or is a file.

    With ``force``, what nas-prune wrote there is removed (:func:`nas_prune.outputs.check_out_dir`).
    """
    from nas_prune.outputs import check_out_dir as check

    check(out, force=force)


def summary_markdown(document: Mapping[str, Any]) -> str:
    """A human summary of an ``arch.json`` document (the ``summary.md`` of a student folder)."""
    from nas_prune.macs import format_macs

    arch = arch_from_dict(document["arch"])
    prov = document.get("provenance") or {}
    teacher_arch = arch_from_dict(prov["teacher"]["arch"]) if prov else None
    lines = [f"# Student: {arch.summary()}", ""]
    macs = document.get("macs")
    if macs:
        h, w = macs["input_size"]
        lines.append(f"Input {h}x{w}. MACs are multiply-accumulates for one image.")
        lines.append("")
        lines.append("| | student | teacher |")
        lines.append("|---|---:|---:|")
        tmacs = (prov.get("teacher") or {}).get("macs") or {}
        for conv in ("fvcore", "paper"):
            t = tmacs.get(conv)
            lines.append(
                f"| MACs ({conv}) | {format_macs(macs[conv])} ({macs[conv]:,}) | "
                f"{f'{format_macs(t)} ({t:,})' if t else '-'} |"
            )
        if "params" in document:
            tp = (prov.get("teacher") or {}).get("params")
            lines.append(f"| params | {document['params']:,} | {f'{tp:,}' if tp else '-'} |")
        if macs.get("measured"):
            m = macs["measured"]
            lines.append("")
            traced = m.get("traced_input_size")
            how = f" (forward pass at {traced[0]}x{traced[1]}, scaled exactly)" if traced and traced != [h, w] else ""
            lines.append(f"Measured with {m['counter']} ({m['convention']}): {m['macs']:,} MACs{how}.")
        lines.append("")
    if prov:
        target = prov.get("target")
        if target:
            parts = [] if target.get("macs") is None else [
                f"{format_macs(target['macs'], target['convention'])} ({target['macs']:,})"]
            if target.get("latency_ms") is not None:
                parts.append(f"{target['latency_ms']:g} ms")
            lines.append(f"Target: {', '.join(parts)}.")
        teacher = prov["teacher"]
        lines.append(
            f"Teacher: `{teacher.get('file')}` (sha256 `{(teacher.get('sha256') or '')[:16]}...`), "
            f"{teacher_arch.summary()}."
        )
        thr = prov.get("threshold")
        lines.append(
            f"Criterion `{prov.get('criterion')}`, threshold {threshold_text(thr, prov.get('round_to'))}, "
            f"min channels {prov.get('min_channels')}, round to {prov.get('round_to') or '-'}, "
            f"fill {'on' if prov.get('fill') else 'off'} ({prov.get('filled_channels', 0)} channels added)."
        )
        lines.append("")
    lat = document.get("latency")
    if lat:
        pred = lat.get("predicted_ms")
        lines.append(
            f"Latency on {lat['runtime']} ({lat['device']}, batch {lat.get('batch', 1)}): "
            f"{lat['measured_ms']:.2f} ms measured end to end"
            + (f", {pred:.2f} ms predicted" if pred is not None else "")
            + (f", target {lat['target_ms']:g} ms" if lat.get("target_ms") is not None else "") + "."
        )
        lines.append("")
    lines.append("| layer | widths |")
    lines.append("|---|---|")
    for name, widths in layer_rows(arch):
        lines.append(f"| {name} | {widths} |")
    lines.append("")
    lines.append("Rebuild: `nas_prune.export.load_student(\"<this folder>\")`.")
    return "\n".join(lines) + "\n"


def layer_rows(arch: Arch) -> list[tuple[str, str]]:
    """``[(row name, widths)]`` of ``arch`` for tables, in forward order (the family's rows:
    stem, blocks, head for the inception-residual generators)."""
    from nas_prune.families import family_of

    return [(name, widths) for name, widths, _ in family_of(arch).table_rows(arch)]


def table_stages(arch: Arch) -> list[str]:
    """The cost stage (:attr:`nas_prune.macs.LayerCost.stage`) of each row of :func:`layer_rows`."""
    from nas_prune.families import family_of

    return [stage for _, _, stage in family_of(arch).table_rows(arch)]


def describe_block(arch: Arch, n: int) -> str:
    """``res k3:24 k5:10, dw k1:6`` or ``identity`` (inception-residual block ``n``)."""
    from nas_prune.families.inception.plan import describe_block as describe

    return describe(arch, n)


def threshold_text(threshold: float | None, round_to: int | None) -> str:
    """How a plan's threshold reads: ``0.4321``; ``-inf (nothing pruned)`` when it keeps every
    channel; ``-inf (rounding alone prunes)`` when it keeps every channel but widths were rounded."""
    if threshold is not None:
        return f"{threshold:.6g}"
    return "-inf (rounding alone prunes)" if round_to and round_to > 1 else "-inf (nothing pruned)"
