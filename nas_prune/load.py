"""Load a teacher (or any generator of the space) from a checkpoint, safely.

Accepted files: ``.pth`` / ``.pt`` / ``.ckpt`` read with ``torch.load(weights_only=True)``
(pickled Python objects are refused, never unpickled) and ``.safetensors``.

Accepted layouts, recognised from the keys:

Each generator family recognises its own layouts from the keys and maps them into its
native layout (:meth:`nas_prune.families.base.GeneratorFamily.load_state`); the shipped ones:

* **cat** — CAT's inception generator (``down_sampling.*``, ``features.N.res_ops.*``,
  ``features.N.dw_ops.*``, ``features.N.pw_bn.*``, ``up_sampling.*``), taken unchanged;
* **resnet** — the classic ResNet generator of pytorch-CycleGAN-and-pix2pix
  (``model.1.weight``, ``model.10.conv_block.1.weight``, ...), mapped into the inception
  space as one res branch of kernel 3 and full width per block; outputs are identical
  (:mod:`nas_prune.families.inception.load`);
* **cat_spade** — CAT's inception SPADE generator for GauGAN teachers (``fc.*``,
  ``fc_norm.*``, ``head_0.*`` .. ``up_3.*``, ``conv_img.*``), taken unchanged
  (:mod:`nas_prune.families.spade.load`);
* **unet** — pix2pix's U-Net (``model.model.0.*``, ``model.model.1.model.*``, ...),
  taken unchanged (:mod:`nas_prune.families.unet`).

Wrapped dicts are unwrapped (``{"state_dict": ...}``, ``{"G": ...}``, ``{"netG_A": ...}``,
...), as are DataParallel ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes.

The architecture is inferred from tensor shapes, so a search-space file is optional;
when one is given, settings that shapes cannot show come from it and the checkpoint is
checked against it. Nothing is filled in silently: a tensor the inferred architecture
needs and does not find is an error naming the missing keys. A student's
``student.safetensors`` names the ``arch.json`` beside it, which gives the architecture.
Weights that are NaN or infinite are refused, naming the tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.arch import arch_from_dict, fits_within
from nas_prune.errors import NasPruneError
from nas_prune.families.base import CHANGED_SOURCE_ALLOWED, changed_source_allowed
from nas_prune.families import code_family, families, family_of, get_family, layout_hints
from nas_prune.families import detect_layout as _detect
from nas_prune.checkpoint import check_finite, file_sha256, read_tensors  # noqa: F401  (historical names)
from nas_prune.families.common import check_state, missing_blocks_error, missing_branch_keys  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch

@dataclass
class LoadedGenerator:
    """A generator read from a checkpoint.

    Attributes:
        arch: the architecture inferred from the tensor shapes (and the space, if given).
        state_dict: weights in the family's native layout, matching ``build_generator(arch)`` exactly.
        layout: the layout of the file (``"cat"``, ``"resnet"``, ``"cat_spade"``, ``"unet"``, ...).
        sha256: hex digest of the file's bytes (provenance of exported students).
        path: the file read.
        notes: what was changed on the way in (dropped keys, stripped prefixes).
    """

    arch: Any
    state_dict: dict[str, "torch.Tensor"]
    layout: str
    sha256: str
    path: Path
    notes: list[str] = field(default_factory=list)

    @property
    def family(self):
        """The generator family of :attr:`arch` (:mod:`nas_prune.families`)."""
        return family_of(self.arch)

    def build(self, *, device: str | None = None) -> "torch.nn.Module":
        """Build the generator, load the weights strictly and put it in eval mode."""
        from nas_prune.model import build_generator

        model = build_generator(self.arch)
        model.load_state_dict(self.state_dict, strict=True)
        if device is not None:
            model.to(device)
        return model.eval()


def detect_layout(keys: list[str]) -> str | None:
    """The layout name of a state dict with these keys (``"cat"``, ``"resnet"``, ``"cat_spade"``,
    ``"gaugan"``, ``"unet"``, ...), or None for an unknown layout."""
    found = _detect(keys)
    return None if found is None else found[1]


@dataclass(frozen=True)
class UserModel:
    """The user's generator code: ``--model SPEC [--model-args JSON] [--allow-changed-source]``.

    Attributes:
        spec: ``nets.py:NAME`` or ``package.module:NAME`` (a class or a factory returning an
            nn.Module); None when only ``allow_changed_source`` is given (a student's arch.json
            names its code).
        args: keyword arguments of NAME (JSON values).
        allow_changed_source: build a student whose source file changed since it was made.
        input_size: ``(H, W)`` to trace the module at (None: the family's default, 256x256).
        keep: module paths whose channels are never pruned (``search --keep``).

    The code is *executed* when imported; the weights file is still loaded safely.
    """

    spec: str | None = None
    args: Any = None
    allow_changed_source: bool = False
    input_size: tuple[int, int] | None = None
    keep: tuple[str, ...] = ()


def user_model(model: str | None = None, model_args: str | Mapping | None = None, *,
               allow_changed_source: bool = False, input_size: Any = None,
               keep: Any = ()) -> UserModel | None:
    """The :class:`UserModel` of the CLI options (None when none is given).

    Raises:
        NasPruneError: ``--model-args`` is not a JSON object, or given without ``--model``.
    """
    import json

    from nas_prune.families.common import parse_input_size

    keep = tuple(k.strip() for item in (keep or ()) for k in str(item).split(",") if k.strip())
    if model is None and model_args is None and not allow_changed_source:
        if keep:
            raise NasPruneError("--keep names modules of a generator built with --model")
        return None
    if model_args is not None and model is None:
        raise NasPruneError("--model-args needs --model")
    args = model_args if model_args is not None else {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as err:
            raise NasPruneError(f"--model-args: not JSON ({err.msg} at character {err.pos}): {model_args}") from None
    if not isinstance(args, Mapping):
        raise NasPruneError(f"--model-args: expected a JSON object like '{{\"ngf\": 64}}', got {model_args}")
    size = None if input_size is None else parse_input_size(input_size)
    if keep and model is None:
        raise NasPruneError("--keep names modules of a generator built with --model")
    return UserModel(model, dict(args), allow_changed_source, size, keep)


def code_options(model: UserModel | None):
    """A context for a command's whole run: ``--allow-changed-source`` in force while it lasts
    (every generator built from a changed source file inside is allowed)."""
    return changed_source_allowed(bool(model is not None and model.allow_changed_source) or CHANGED_SOURCE_ALLOWED.get())


def load_generator(
    path: str | os.PathLike, *, space: Any = None, like: Any = None, model: UserModel | None = None
) -> LoadedGenerator:
    """Read a generator checkpoint, infer its architecture and return it in CAT's layout.

    Args:
        path: ``.pth`` / ``.pt`` / ``.safetensors`` file.
        space: optional search space; the checkpoint must be a generator of it.
        like: a student's architecture: without ``space``, a checkpoint of the same family
            takes from it the settings its shapes cannot show (a CAT SPADE teacher's
            upsampling and activation: :mod:`nas_prune.families.spade.load`).
        model: the user's generator code (:class:`UserModel`): the module is built from it
            and ``path`` must hold its state dict (keys and shapes checked, first mismatches
            listed); the code-building family (``module``) handles it.

    Raises:
        NasPruneError: missing/unreadable file, pickled objects, unknown layout,
            tensors that do not fit the inferred architecture (first mismatches listed),
            or a checkpoint outside ``space``.
    """
    from nas_prune.runstate import check_finished

    path = Path(path)
    check_finished(path)
    tensors = read_tensors(path)
    from nas_prune.tensor_checks import check_weights

    check_weights(tensors, path)  # dense, floating point, finite
    student = _student_beside(path)
    allow = bool(model is not None and model.allow_changed_source)
    if student is not None:
        with changed_source_allowed(allow or CHANGED_SOURCE_ALLOWED.get()):
            return _load_student_file(path, student, space)
    notes: list[str] = []
    if model is not None and model.spec is not None:
        if space is not None:
            raise NasPruneError("--space does not apply to a generator built with --model")
        family = code_family()
        arch, state = family.load_code(tensors, path=path, model=model.spec, args=model.args or {},
                                       allow_changed_source=allow, input_size=model.input_size,
                                       keep=model.keep, notes=notes)
        return LoadedGenerator(arch=arch, state_dict=state, layout=family.native_layout, sha256=file_sha256(path),
                               path=path, notes=notes)
    found = _detect(list(tensors))
    if found is None:
        first = ", ".join(list(tensors)[:4])
        raise NasPruneError(f"{path}: unknown checkpoint layout (first keys: {first}); expected {layout_hints()}")
    family, layout = found
    refused = family.refuse_layout(layout)
    if refused is not None:
        raise NasPruneError(f"{path}: cannot load: {refused}")
    if space is not None and getattr(space, "family", None) != family.name:
        other = get_family(space.family).title if space.family in {f.name for f in families()} else space.family
        raise NasPruneError(f"{path} does not fit search space {space.name!r}: a {family.title} generator in a "
                            f"{other} space")
    like = like if getattr(like, "family", None) == family.name else None
    arch, state = family.load_state(tensors, path=path, layout=layout, space=space, like=like, notes=notes)
    if space is not None:
        why = family.fits_within(arch, space.teacher_arch())
        if why is not None:
            raise NasPruneError(f"{path} does not fit search space {space.name!r}: {why}")
    return LoadedGenerator(arch=arch, state_dict=state, layout=layout, sha256=file_sha256(path), path=path, notes=notes)


def _student_beside(path: Path) -> Path | None:
    """The ``arch.json`` that a nas-prune ``student.safetensors`` names, when it sits beside it."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable files were refused by read_tensors already
        return None
    if meta.get("format") != "nas-prune-student":
        return None
    arch_json = path.parent / meta.get("arch", "arch.json")
    return arch_json if arch_json.is_file() else None


def _load_student_file(path: Path, arch_json: Path, space) -> LoadedGenerator:
    """A student's weights with the architecture of the ``arch.json`` beside them."""
    from nas_prune.export import _read_weights as read_weights, read_document

    doc = read_document(arch_json)
    arch = arch_from_dict(doc["arch"])
    state = read_weights(path, arch)
    if space is not None:
        teacher = space.teacher_arch()
        if arch.family != teacher.family:
            why = f"a {arch.family} generator in a {teacher.family} space"
        else:
            why = fits_within(arch, teacher)
        if why is not None:
            raise NasPruneError(f"{path} does not fit search space {space.name!r}: {why}")
    layout = family_of(arch).native_layout
    notes = [f"architecture from {arch_json}"]
    return LoadedGenerator(arch=arch, state_dict=state, layout=layout, sha256=file_sha256(path), path=path, notes=notes)
