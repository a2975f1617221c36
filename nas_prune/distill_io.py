"""Inputs and outputs of a distillation run: resolving the teacher and the student
(paths, loaded checkpoints, modules), writing student folders and image grids.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas_prune import loop
from nas_prune.arch import Arch, fits_within
from nas_prune.families import data_kind
from nas_prune.errors import NasPruneError


def _generators() -> tuple[type, ...]:
    """Module classes of the generators nas-prune builds (every registered family's)."""
    from nas_prune.families import module_types

    return module_types()


def _archs() -> tuple[type, ...]:
    from nas_prune.families import families

    return tuple(f.arch_type for f in families())


def open_space(space: Any):
    """A search space object from a YAML path or shipped name (:func:`nas_prune.space.load_space`), or as given."""
    if space is None or not isinstance(space, (str, os.PathLike)):
        return space
    from nas_prune.space import load_space

    return load_space(space)


def check_student_space(student_arch, space) -> None:
    """Fail when ``student_arch`` and ``space`` disagree on a setting that is not a width.

    Raises:
        NasPruneError: one line naming the field, e.g. ``num_upsampling_layers is 'normal' in the
            student's architecture, 'more' in search space 'cat_spade_cityscapes'``.
    """
    from nas_prune.arch import settings_differ

    diff = settings_differ(student_arch, space.teacher_arch())
    if diff is not None:
        name, mine, theirs = diff
        raise NasPruneError(f"the student and --space disagree: {name} is {mine!r} in the student's architecture, "
                            f"{theirs!r} in search space {space.name!r}")


def resolve_teacher(teacher: Any, *, space: Any = None, like: Any = None):
    """(Generator in eval mode, Arch, sha256 or None) from a path, LoadedGenerator or module.

    A checkpoint path is read with ``space`` and, for a SPADE student ``like``, with the
    student's settings that a SPADE checkpoint's shapes cannot show (:mod:`nas_prune.families.spade.load`).
    A teacher given as a module or ``LoadedGenerator`` must fit ``space``.
    """
    if teacher is None:
        return None, None, None
    if isinstance(teacher, (str, os.PathLike)):
        from nas_prune.load import load_generator

        loaded = load_generator(teacher, space=space, like=like)
        return loaded.build(), loaded.arch, loaded.sha256
    if isinstance(teacher, _generators()):
        model, arch, sha = teacher, teacher.arch, None
    elif hasattr(teacher, "build") and hasattr(teacher, "arch"):
        model, arch, sha = teacher.build(), teacher.arch, getattr(teacher, "sha256", None)
    else:
        raise NasPruneError(f"teacher: expected a checkpoint path or a Generator, got {type(teacher).__name__}")
    if space is not None:
        why = fits_within(arch, space.teacher_arch())
        if why is not None:
            raise NasPruneError(f"the teacher does not fit search space {space.name!r}: {why}")
    return model, arch, sha


def read_student_file(path: Path) -> tuple[Arch, dict | None, dict | None]:
    """(arch, weights or None, arch.json document) of a student folder or bare arch.json."""
    from nas_prune.export import read_student

    arch, state, doc = read_student(path)
    return arch, state, doc


def read_student_input(student: Any) -> tuple[Any, Any, dict | None, dict | None]:
    """``(arch, module or None, weights or None, arch.json document or None)`` of a student
    given as a folder or arch.json path, an Arch, or a Generator."""
    if isinstance(student, _generators()):
        return student.arch, student, None, None
    if isinstance(student, _archs()):
        return student, None, None, None
    if isinstance(student, (str, os.PathLike)):
        arch, state, doc = read_student_file(Path(student))
        return arch, None, state, doc
    raise NasPruneError(f"student: expected a folder, an arch.json, an Arch or a Generator, got {type(student).__name__}")


def resolve_student(student: Any, teacher_arch: Arch | None, *, read: tuple | None = None):
    """(Generator, had_weights, arch.json document or None) from a path, Arch or Generator.

    ``read`` is :func:`read_student_input`'s answer when the caller has it already. The
    student must fit the teacher's space (:func:`nas_prune.arch.fits_within`).
    """
    from nas_prune.model import build_generator

    arch, model, state, doc = read if read is not None else read_student_input(student)
    if teacher_arch is not None:
        why = fits_within(arch, teacher_arch)
        if why is not None:
            raise NasPruneError(f"student architecture is not in the teacher's space: {why}")
    if model is not None:
        return model, True, None
    model = build_generator(arch)
    if state is not None:  # read_student checked every key and shape against the arch
        model.load_state_dict(state)
    return model, state is not None, doc


def resolve_models(teacher: Any, student: Any, *, space: Any, seed: int):
    """``(teacher module, teacher arch, teacher sha256, student module, had_weights, document)``.

    The student is read first: a SPADE teacher checkpoint follows its settings (upsampling,
    activation), unless ``space`` (YAML path, shipped name or space object) pins them; a
    student and space that disagree are an error naming the field. The student's fresh
    weights (if any) are drawn after ``torch.manual_seed(seed)``.
    """
    import torch

    space = open_space(space)
    read = read_student_input(student)
    if space is not None:
        check_student_space(read[0], space)
    t_model, t_arch, t_sha = resolve_teacher(teacher, space=space, like=read[0])
    torch.manual_seed(seed)
    s_model, had_weights, doc = resolve_student(student, t_arch, read=read)
    return t_model, t_arch, t_sha, s_model, had_weights, doc


def check_crop_size(cfg, student_arch: Arch, teacher_arch: Arch | None, discriminators, device) -> None:
    """Fail before training when ``cfg.crop_size`` cannot run through the generators or discriminators.

    Also fails when one forward pass of a batch at that size cannot fit in memory.
    """
    from nas_prune.gan import PatchDiscriminator
    from nas_prune.model import check_forward_memory, check_input_size

    if cfg.preprocess == "none" or data_kind(student_arch) == "semantic":  # own sizes; semantic-map data checks its own
        return
    size = (cfg.crop_size, cfg.crop_size)
    extra = [d.input_limit for d in discriminators if isinstance(d, PatchDiscriminator)]
    check_input_size(student_arch, size, option="--crop-size", extra=extra)
    if teacher_arch is not None:
        check_input_size(teacher_arch, size, option="--crop-size")
    check_forward_memory(student_arch, size, batch=cfg.batch_size, device=str(device), option="--crop-size")


def data_fingerprint(run) -> dict:
    """:func:`nas_prune.data.fingerprint` of every image file a run's train and test sets read."""
    from nas_prune.data import dataset_files, fingerprint

    return fingerprint(dataset_files(run.train_set) + dataset_files(getattr(run, "test_set", None)), run.data)


def check_same_inputs(info: Mapping[str, Any], *, teacher_sha: str | None, data: Mapping[str, Any], out: Path) -> None:
    """A resumed run must see the teacher (sha256) and data (file names and sizes) it started with.

    ``info`` is the run's ``config.json``; runs written before it recorded these pass.
    """
    then = info.get("teacher_sha256")
    if then is not None and teacher_sha is not None and then != teacher_sha:
        raise NasPruneError(f"resume: the teacher differs from the run's (sha256 {teacher_sha[:12]}... now, "
                            f"{then[:12]}... in {out}): pass the same --teacher, or start a new run in another --out")
    then = info.get("data")
    if then is not None and then.get("sha256") != data["sha256"]:
        raise NasPruneError(
            f"resume: the data differ from the run's ({data['files']} files, {data['bytes']:,} bytes now; "
            f"{then.get('files')} files, {then.get('bytes', 0):,} bytes in {out}): pass the same --data, "
            "or start a new run in another --out"
        )


def setup_image_data(run, data: Path, use_cuda: bool) -> None:
    """A run's train and test splits in the pix2pix / CycleGAN layouts (``cfg.mode``)."""
    from nas_prune import data as dmod

    cfg = run.cfg
    nc = dict(input_nc=run.student_arch.input_nc, output_nc=run.student_arch.output_nc)
    run.train_set, run.steps_per_epoch, run.sampler, run.loader = loop.train_data(
        cfg, data, mode=cfg.mode, rank=run.rank, world=run.world, pin_memory=use_cuda, **nc)
    tf = dmod.TransformConfig(load_size=cfg.load_size, crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip)
    run.test_set = open_test_split(run, data, lambda: dmod.open_dataset(
        data, mode=cfg.mode, split="test", direction=cfg.direction, transform=tf, seed=cfg.seed, **nc))


def open_test_split(run, data: Path, open_test):
    """``open_test()``, or None with one warning on the main rank when ``data`` has no test split."""
    try:
        return open_test()
    except NasPruneError as err:
        if "missing" not in str(err):
            raise
        if run.is_main:
            warnings.warn(f"{data}: no test split; evaluation is skipped", loop.RunWarning, stacklevel=5)
        return None


_SAID_NO_TENSORBOARD = False  # the missing-TensorBoard line is said once per process


def open_tensorboard(run):
    """A TensorBoard writer on ``run.out/tb`` (its event file recorded as nas-prune's own), or None without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        global _SAID_NO_TENSORBOARD
        if not _SAID_NO_TENSORBOARD:
            _SAID_NO_TENSORBOARD = True
            warnings.warn("TensorBoard is not installed, so no tb/ scalars are written (log.jsonl has them); "
                          "pip install tensorboard to get them", loop.RunWarning, stacklevel=2)
        return None
    writer = SummaryWriter(log_dir=str(run.out / "tb"), purge_step=run.step if run.resume else None)
    from nas_prune.outputs import owned, record

    for path in (run.out / "tb").glob("events.out.tfevents.*"):  # the file it appends to
        if not owned(path):
            record(path, live=True)
    return writer


# ----------------------------------------------------------------------------- helpers


class Features:
    """Callable module wrapper so DDP sees ``forward_with_features`` as ``forward``."""

    @staticmethod
    def make(generator, taps: Sequence[str]):
        import torch

        class WithFeatures(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.g = generator

            def forward(self, x):
                return self.g.forward_with_features(x, taps)

        return WithFeatures()


def save_student(model, arch: Arch, folder: Path, document: Mapping[str, Any] | None) -> None:
    """Write a student folder (``arch.json`` + ``student.safetensors``) with :func:`nas_prune.export.write_student`.

    The architecture document of the input student (space, MACs, provenance) is kept:
    fine-tuning changes the weights, not the architecture.
    """
    from nas_prune.export import FORMAT, VERSION, write_student

    doc = dict(document) if document is not None else {"format": FORMAT, "version": VERSION, "space": None}
    doc["arch"] = arch.to_dict()
    write_student(folder, document=doc, state_dict=model.state_dict(), force=True)


def to_uint8_grid(rows: list[list], path: Path) -> None:
    """Write rows of ``(C, H, W)`` tensors in [-1, 1] as one PNG (atomic)."""
    import numpy as np
    from PIL import Image

    from nas_prune.fileio import atomic_path

    def img(t):
        a = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8)
        a = a.numpy().transpose(1, 2, 0)
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a

    grid = np.concatenate([np.concatenate([img(t) for t in row], axis=1) for row in rows], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")

