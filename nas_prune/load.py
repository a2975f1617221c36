"""Load a teacher (or any generator of the space) from a checkpoint, safely.

Accepted files: ``.pth`` / ``.pt`` / ``.ckpt`` read with ``torch.load(weights_only=True)``
(pickled Python objects are refused, never unpickled) and ``.safetensors``.

Accepted layouts, recognised from the keys:

* **cat** — CAT's inception generator (``down_sampling.*``, ``features.N.res_ops.*``,
  ``features.N.dw_ops.*``, ``features.N.pw_bn.*``, ``up_sampling.*``), taken unchanged.
* **cat_spade** — CAT's inception SPADE generator for GauGAN teachers (``fc.*``,
  ``fc_norm.*``, ``head_0.*`` .. ``up_3.*``, ``conv_img.*``), taken unchanged
  (:mod:`nas_prune.spade.load`).
* **resnet** — the classic ResNet generator of pytorch-CycleGAN-and-pix2pix
  (``model.1.weight``, ``model.10.conv_block.1.weight``, ...), mapped into the space as
  one res branch of kernel 3 and full width per block; outputs are identical. Legacy
  InstanceNorm ``running_mean`` / ``running_var`` keys of old checkpoints are dropped.

Wrapped dicts are unwrapped (``{"state_dict": ...}``, ``{"G": ...}``, ``{"netG_A": ...}``,
...), as are DataParallel ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes.

The architecture is inferred from tensor shapes, so a search-space file is optional;
when one is given, settings that shapes cannot show (padding, dropout, kernel-size
order, the number of blocks) come from it and the checkpoint is checked against it.

Nothing is filled in silently. Every block the layout needs must have tensors (CAT keeps
the norm of a block without branches; a ResNet block always has its convs), every branch
whose tensors appear must have the tensor that gives its width, and every tensor the
inferred architecture needs must be there: otherwise the error names the missing keys.
A student whose blocks have no branch at all leaves no tensor for them; its
``student.safetensors`` names the ``arch.json`` beside it, which gives the architecture.
Weights that are NaN or infinite are refused, naming the tensor.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nas_prune.arch import Arch, Block, fits_within
from nas_prune.errors import NasPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.model import Generator
    from nas_prune.space import SearchSpace
    from nas_prune.spade.space import SpadeSpace

_WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "G", "netG", "netG_A", "G_A", "generator",
    "model", "net", "params", "params_ema", "ema",
)
_PREFIXES = ("module.", "_orig_mod.")
_LEGACY_NORM_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class LoadedGenerator:
    """A generator read from a checkpoint.

    Attributes:
        arch: the architecture inferred from the tensor shapes (and the space, if given).
        state_dict: weights in CAT's layout, matching ``build_generator(arch)`` exactly.
        layout: ``"cat"``, ``"resnet"`` or ``"cat_spade"`` (the layout of the file).
        sha256: hex digest of the file's bytes (provenance of exported students).
        path: the file read.
        notes: what was changed on the way in (dropped keys, stripped prefixes).
    """

    arch: Arch
    state_dict: dict[str, "torch.Tensor"]
    layout: str
    sha256: str
    path: Path
    notes: list[str] = field(default_factory=list)

    def build(self, *, device: str | None = None) -> "Generator":
        """Build the generator, load the weights strictly and put it in eval mode."""
        from nas_prune.model import build_generator

        model = build_generator(self.arch)
        model.load_state_dict(self.state_dict, strict=True)
        if device is not None:
            model.to(device)
        return model.eval()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tensors(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (unwrapped, prefixes stripped).

    Raises:
        NasPruneError: missing file, unreadable file, pickled objects, no tensors.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise NasPruneError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise NasPruneError(f"checkpoint is not a file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise NasPruneError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            text = str(err)
            if "Unsupported global" in text or "Unsupported class" in text:
                found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
                what = f" ({found.group(1)})" if found else ""
                raise NasPruneError(
                    f"{path}: refused to load pickled Python objects{what}; save the generator's "
                    "state_dict (torch.save(model.state_dict(), path)) or use .safetensors"
                ) from None
            raise NasPruneError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise NasPruneError(f"{path}: not a PyTorch checkpoint ({first})") from None
    return _unwrap(raw, path)


def _unwrap(raw: Any, path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    obj = raw
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise NasPruneError(f"{path}: expected a state dict, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:5])
        raise NasPruneError(f"{path}: no tensors found (top-level keys: {keys or 'none'})")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def detect_layout(keys: list[str]) -> str | None:
    """``"cat"``, ``"resnet"``, ``"cat_spade"``, ``"gaugan"`` or None for an unknown layout."""
    from nas_prune.spade.load import is_cat_spade, is_gaugan

    if any(k.startswith("down_sampling.") for k in keys) and any(k.startswith("up_sampling.") for k in keys):
        return "cat"
    if any(re.match(r"model\.\d+\.conv_block\.", k) for k in keys):
        return "resnet"
    if is_gaugan(keys):
        return "gaugan"
    if is_cat_spade(keys):
        return "cat_spade"
    return None


def load_generator(
    path: str | os.PathLike, *, space: "SearchSpace | SpadeSpace | None" = None, like: Any = None
) -> LoadedGenerator:
    """Read a generator checkpoint, infer its architecture and return it in CAT's layout.

    Args:
        path: ``.pth`` / ``.pt`` / ``.safetensors`` file.
        space: optional search space; the checkpoint must be a generator of it.
        like: a student's architecture (a SPADE ``SpadeArch``): without ``space``, a CAT SPADE
            checkpoint takes its settings that shapes cannot show (upsampling, activation;
            :mod:`nas_prune.spade.load`). Ignored for other layouts, whose shapes show them.

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
    if student is not None:
        return _load_student_file(path, student, space)
    layout = detect_layout(list(tensors))
    notes: list[str] = []
    if layout is None:
        first = ", ".join(list(tensors)[:4])
        raise NasPruneError(
            f"{path}: unknown checkpoint layout (first keys: {first}); expected CAT "
            "(down_sampling.*, features.*, up_sampling.*), pytorch-CycleGAN-and-pix2pix ResNet (model.N.*) "
            "or CAT SPADE (fc.*, head_0.*, ..., conv_img.*)"
        )
    if layout in ("cat_spade", "gaugan"):
        return _load_spade(tensors, path, space, layout, notes,
                           like=like if getattr(like, "family", None) == "spade" else None)
    from nas_prune.space import SearchSpace

    if space is not None and not isinstance(space, SearchSpace):
        raise NasPruneError(f"{path} does not fit search space {space.name!r}: a {layout} generator in a SPADE space")
    padding = "reflect"
    if layout == "resnet":
        tensors, padding = _resnet_to_cat(tensors, path, space, notes)
    arch = _infer_arch(tensors, path, space, padding=padding)
    state = _match_state(tensors, arch, path, notes)
    if space is not None:
        why = fits_within(arch, space.teacher_arch())
        if why is not None:
            raise NasPruneError(f"{path} does not fit search space {space.name!r}: {why}")
    return LoadedGenerator(arch=arch, state_dict=state, layout=layout, sha256=file_sha256(path), path=path, notes=notes)


def check_finite(tensors: Mapping[str, "torch.Tensor"], path: Path) -> None:
    """Raise NasPruneError naming the tensors that hold NaN or infinite values (first three).

    Kept for callers; :func:`nas_prune.tensor_checks.check_weights` checks layouts and dtypes too.
    """
    from nas_prune.tensor_checks import check_finite as finite

    finite(tensors, path)


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
    arch = Arch.from_dict(doc["arch"])
    state = read_weights(path, arch)
    if space is not None:
        from nas_prune.spade.arch import spade_fits_within

        teacher = space.teacher_arch()
        if arch.family != teacher.family:
            why = f"a {arch.family} generator in a {teacher.family} space"
        else:
            why = (spade_fits_within if arch.family == "spade" else fits_within)(arch, teacher)
        if why is not None:
            raise NasPruneError(f"{path} does not fit search space {space.name!r}: {why}")
    layout = "cat_spade" if arch.family == "spade" else "cat"
    notes = [f"architecture from {arch_json}"]
    return LoadedGenerator(arch=arch, state_dict=state, layout=layout, sha256=file_sha256(path), path=path, notes=notes)


def missing_blocks_error(path: Path, names: list[str], layout: str) -> NasPruneError:
    """The error for blocks that left no tensor in a checkpoint whose layout always has some."""
    listed = ", ".join(f"{n}.*" for n in names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return NasPruneError(
        f"{path}: missing keys: {listed} (no tensor at all for {'this block' if len(names) == 1 else 'these blocks'}); "
        f"a {layout} checkpoint keeps tensors for every block, so the file is incomplete (a student whose blocks "
        "have no branch loads from its folder: arch.json + student.safetensors)"
    )


def missing_branch_keys(tensors: Mapping[str, "torch.Tensor"], path: Path, patterns) -> None:
    r"""Every branch with a tensor has the one that gives its width, and branches are numbered 0, 1, ...

    Args:
        patterns: ``(prefix regex with groups (owner, index), width-key suffix)`` pairs, e.g.
            ``(r"(features\.\d+\.res_ops)\.(\d+)\.", "1.0.weight")``.
    """
    missing: list[str] = []
    for prefix, suffix in patterns:
        seen: dict[str, set[int]] = {}
        for key in tensors:
            m = re.match(prefix, key)
            if m:
                seen.setdefault(m.group(1), set()).add(int(m.group(2)))
        for owner, indices in seen.items():
            for i in range(max(indices) + 1):
                key = f"{owner}.{i}.{suffix}"
                if key not in tensors:
                    missing.append(key)
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise NasPruneError(f"{path}: checkpoint is incomplete: missing keys: {', '.join(missing[:3])}{more}")


def _load_spade(tensors, path: Path, space, layout: str, notes: list[str], *, like=None) -> LoadedGenerator:
    from nas_prune.spade.load import GAUGAN_REASON, infer_spade_arch, spade_state
    from nas_prune.spade.space import SpadeSpace

    if layout == "gaugan":
        raise NasPruneError(f"{path}: cannot load: {GAUGAN_REASON}")
    if space is not None and not isinstance(space, SpadeSpace):
        raise NasPruneError(f"{path} does not fit search space {space.name!r}: a CAT SPADE generator in a "
                            "CycleGAN/pix2pix space")
    arch = infer_spade_arch(tensors, path, space, notes, like=like)
    if like is not None and space is None:
        notes.append(f"num_upsampling_layers {arch.num_upsampling_layers!r} and activation {arch.activation!r} "
                     "from the student's architecture")
    state = spade_state(tensors, arch, path, notes)
    return LoadedGenerator(arch=arch, state_dict=state, layout=layout, sha256=file_sha256(path), path=path, notes=notes)


# ----------------------------------------------------------------------------- resnet layout


def _resnet_to_cat(
    tensors: dict[str, "torch.Tensor"], path: Path, space: "SearchSpace | None", notes: list[str]
) -> tuple[dict[str, "torch.Tensor"], str]:
    """Rename a pytorch-CycleGAN-and-pix2pix ResnetGenerator state dict into CAT's layout.

    ``model`` is a Sequential: stem conv (1), norm, relu, two stride-2 convs with norms,
    ResnetBlocks (``conv_block`` = [pad] conv norm relu [dropout] [pad] conv norm), two
    ConvTransposes with norms, pad, final conv, tanh. Conv positions are read from the
    keys, so the reflect / zero padding and dropout variants all map.

    Returns:
        ``(tensors in CAT's layout, padding)``: a block whose first conv sits at index 0
        has no padding layer before it, i.e. zero padding inside the conv.
    """
    modules: dict[int, dict[str, "torch.Tensor"]] = {}
    blocks: dict[int, dict[str, "torch.Tensor"]] = {}
    for key, value in tensors.items():
        m = re.fullmatch(r"model\.(\d+)\.conv_block\.(\d+\.\w+)", key)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = value
            continue
        m = re.fullmatch(r"model\.(\d+)\.(\w+)", key)
        if not m:
            raise NasPruneError(f"{path}: unexpected key {key!r} in a ResNet generator checkpoint")
        modules.setdefault(int(m.group(1)), {})[m.group(2)] = value

    convs = sorted(i for i, p in modules.items() if p.get("weight") is not None and p["weight"].dim() == 4)
    if not convs:
        raise NasPruneError(f"{path}: checkpoint is incomplete: no conv weight outside the residual blocks")
    block_ids = sorted(blocks)
    before = [i for i in convs if i < block_ids[0]]
    after = [i for i in convs if i > block_ids[-1]]
    # pytorch-CycleGAN-and-pix2pix's Sequential (n_downsampling 2): pad, then 3 x (conv, norm,
    # ReLU) with the convs at 1, 4, 7; the blocks at 10..L; the ConvTransposes at L+1 and L+4
    # and, after a pad, the final 7x7 conv at L+8, the last conv of the file.
    end = convs[-1]
    if modules[end]["weight"].shape[-1] != 7:
        gone = [f"model.{end + 4}.weight (the final 7x7 conv)"]
    else:
        last = end - 8
        gone = [f"model.{i}.weight" for i in (1, 4, 7, last + 1, last + 4) if i not in convs]
        gone += [f"model.{i}.conv_block" for i in range(10, last + 1) if i not in blocks]
    if gone:
        raise NasPruneError(f"{path}: checkpoint is incomplete: missing keys: {', '.join(gone[:3])}"
                            + (f" (+{len(gone) - 3} more)" if len(gone) > 3 else ""))
    if len(before) != 3 or len(after) != 3:
        raise NasPruneError(
            f"{path}: ResNet generator with {len(before)} convs before and {len(after)} after the "
            "residual blocks; expected 3 and 3 (n_downsampling 2)"
        )
    uses_bias = any(f"model.{i}.bias" in tensors for i in (*before, *after[:2]))
    norm = space.norm if space is not None else ("instance" if uses_bias else "batch")

    out: dict[str, "torch.Tensor"] = {}
    dropped: list[str] = []
    padding = "reflect"

    def put_norm(src: dict[str, "torch.Tensor"], src_name: str, dst: str) -> None:
        for name, value in src.items():
            if norm == "instance" and name in _LEGACY_NORM_SUFFIXES:
                dropped.append(f"{src_name}.{name}")
                continue
            out[f"{dst}.{name}"] = value

    def put_conv(src: dict[str, "torch.Tensor"], dst: str) -> None:
        for name in ("weight", "bias"):
            if name in src:
                out[f"{dst}.{name}"] = src[name]

    for i, dst_conv, dst_norm in zip(before, ("down_sampling.1", "down_sampling.4", "down_sampling.7"),
                                     ("down_sampling.2", "down_sampling.5", "down_sampling.8")):
        put_conv(modules[i], dst_conv)
        if i + 1 in modules:
            put_norm(modules[i + 1], f"model.{i + 1}", dst_norm)
    for n, b in enumerate(block_ids):
        parts: dict[int, dict[str, "torch.Tensor"]] = {}
        for name, value in blocks[b].items():
            idx, leaf = name.split(".")
            parts.setdefault(int(idx), {})[leaf] = value
        bconvs = sorted(i for i, p in parts.items() if "weight" in p and p["weight"].dim() == 4)
        if len(bconvs) == 1:  # the first conv sits at 0 (zero padding) or 1 (after a pad layer)
            which = "second" if bconvs[0] <= 1 else "first"
            raise NasPruneError(f"{path}: checkpoint is incomplete: missing keys: the {which} conv weight of "
                                f"model.{b}.conv_block (found only model.{b}.conv_block.{bconvs[0]}.weight)")
        if len(bconvs) != 2:
            raise NasPruneError(f"{path}: model.{b}.conv_block has {len(bconvs)} convs, expected 2")
        if bconvs[0] == 0:
            padding = "zero"
        put_conv(parts[bconvs[0]], f"features.{n}.res_ops.0.1.0")
        put_conv(parts[bconvs[1]], f"features.{n}.res_ops.0.4")
        if bconvs[0] + 1 in parts:
            put_norm(parts[bconvs[0] + 1], f"model.{b}.conv_block.{bconvs[0] + 1}", f"features.{n}.res_ops.0.1.1")
        if bconvs[1] + 1 in parts:
            put_norm(parts[bconvs[1] + 1], f"model.{b}.conv_block.{bconvs[1] + 1}", f"features.{n}.pw_bn")
    for i, dst_conv, dst_norm in zip(after[:2], ("up_sampling.0", "up_sampling.3"), ("up_sampling.1", "up_sampling.4")):
        put_conv(modules[i], dst_conv)
        if i + 1 in modules:
            put_norm(modules[i + 1], f"model.{i + 1}", dst_norm)
    put_conv(modules[after[2]], "up_sampling.7")
    if dropped:
        notes.append(f"dropped {len(dropped)} legacy InstanceNorm running-stat keys (e.g. {dropped[0]})")
    notes.append(f"mapped {len(block_ids)}-block ResNet generator into the inception-residual layout")
    return out, padding


# ----------------------------------------------------------------------------- inference


def _shape(tensors: Mapping[str, "torch.Tensor"], key: str, path: Path) -> tuple[int, ...]:
    if key not in tensors:
        raise NasPruneError(f"{path}: missing key {key!r}")
    return tuple(tensors[key].shape)


def _infer_arch(
    tensors: Mapping[str, "torch.Tensor"], path: Path, space: "SearchSpace | None", *, padding: str = "reflect"
) -> Arch:
    """Read every width from the tensor shapes of a CAT-layout state dict.

    Shapes cannot show the padding of branch convs: it comes from ``space``, else ``padding``.
    """
    s0_w = _shape(tensors, "down_sampling.1.weight", path)
    stem = (s0_w[0], _shape(tensors, "down_sampling.4.weight", path)[0], _shape(tensors, "down_sampling.7.weight", path)[0])
    t0 = _shape(tensors, "up_sampling.0.weight", path)
    t1 = _shape(tensors, "up_sampling.3.weight", path)
    final = _shape(tensors, "up_sampling.7.weight", path)
    # Read from every stem and head layer, so that one missing tensor is reported as missing
    # (by check_state) rather than changing the inferred norm and making the others "unexpected".
    norms = ("down_sampling.2", "down_sampling.5", "down_sampling.8", "up_sampling.1", "up_sampling.4")
    convs = ("down_sampling.1", "down_sampling.4", "down_sampling.7", "up_sampling.0", "up_sampling.3")
    has_running = any(f"{n}.running_mean" in tensors or f"{n}.running_var" in tensors for n in norms)
    has_bias = any(f"{c}.bias" in tensors for c in convs)
    norm = "batch" if has_running or not has_bias else "instance"
    affine = any(f"{n}.weight" in tensors or f"{n}.bias" in tensors for n in norms)
    if space is not None:
        for name, found in (("norm", norm), ("affine", affine)):
            if found != getattr(space, name):
                raise NasPruneError(
                    f"{path} does not fit search space {space.name!r}: {name} is {found!r} in the checkpoint, "
                    f"{getattr(space, name)!r} in the space"
                )

    res: dict[int, dict[int, tuple[int, int]]] = {}
    dw: dict[int, dict[int, tuple[int, int]]] = {}
    for key, value in tensors.items():
        m = re.fullmatch(r"features\.(\d+)\.res_ops\.(\d+)\.1\.0\.weight", key)
        if m:
            res.setdefault(int(m.group(1)), {})[int(m.group(2))] = (value.shape[2], value.shape[0])
        m = re.fullmatch(r"features\.(\d+)\.dw_ops\.(\d+)\.2\.0\.weight", key)
        if m:
            dw.setdefault(int(m.group(1)), {})[int(m.group(2))] = (value.shape[2], value.shape[0])
    missing_branch_keys(tensors, path, (
        (r"(features\.\d+\.res_ops)\.(\d+)\.", "1.0.weight"),
        (r"(features\.\d+\.dw_ops)\.(\d+)\.", "2.0.weight"),
    ))
    block_ids = {int(m.group(1)) for k in tensors if (m := re.match(r"features\.(\d+)\.", k))}
    n_blocks = max(block_ids) + 1 if block_ids else 0
    if space is not None:
        if n_blocks > space.n_blocks:
            raise NasPruneError(f"{path}: {n_blocks} blocks, search space {space.name!r} has {space.n_blocks}")
        n_blocks = space.n_blocks
    empty = [f"features.{n}" for n in range(n_blocks) if n not in block_ids]
    if empty:
        raise missing_blocks_error(path, empty, "CAT-layout")
        res_ks, dw_ks = space.res_kernel_sizes, space.dw_kernel_sizes
        padding, dropout = space.padding, space.dropout
    else:
        res_ks = tuple(sorted({k for b in res.values() for k, _ in b.values()}))
        dw_ks = tuple(sorted({k for b in dw.values() for k, _ in b.values()}))
        dropout = 0.0

    def widths(found: dict[int, tuple[int, int]] | None, ks: tuple[int, ...], kind: str, n: int) -> tuple[int, ...]:
        w = [0] * len(ks)
        for i in sorted(found or {}):
            k, m = found[i]
            if k not in ks:
                where = f"search space {space.name!r}" if space is not None else "the checkpoint"
                raise NasPruneError(
                    f"{path} does not fit {where}: features.{n}.{kind}_ops.{i} has kernel size {k}, "
                    f"not one of {list(ks)}"
                )
            w[ks.index(k)] = m
        return tuple(w)

    blocks = tuple(
        Block(res=widths(res.get(n), res_ks, "res", n), dw=widths(dw.get(n), dw_ks, "dw", n)) for n in range(n_blocks)
    )
    return Arch(
        input_nc=s0_w[1],
        output_nc=final[0],
        stem=stem,
        blocks=blocks,
        head=(t0[1], t1[1]),
        res_kernel_sizes=res_ks,
        dw_kernel_sizes=dw_ks,
        norm=norm,
        affine=affine,
        padding=padding,
        dropout=dropout,
    )


def _match_state(
    tensors: dict[str, "torch.Tensor"], arch: Arch, path: Path, notes: list[str]
) -> dict[str, "torch.Tensor"]:
    """Check ``tensors`` against ``build_generator(arch)`` key by key and shape by shape."""
    import torch

    from nas_prune.model import build_generator

    with torch.device("meta"):  # keys, shapes and dtypes only: no memory, no weight init
        expected = build_generator(arch).state_dict()
    state = dict(tensors)
    # CAT keeps a pw_bn in blocks without branches; it never runs, so it is dropped.
    dead = [k for k in state if re.match(r"features\.(\d+)\.pw_bn\.", k)
            and arch.blocks[int(k.split(".")[1])].is_identity]
    for k in dead:
        del state[k]
    if dead:
        notes.append(f"dropped {len(dead)} unused norm tensors of identity blocks")
    if arch.norm == "instance":
        legacy = [k for k in state if k not in expected and k.rsplit(".", 1)[-1] in _LEGACY_NORM_SUFFIXES]
        for k in legacy:
            del state[k]
        if legacy:
            notes.append(f"dropped {len(legacy)} legacy InstanceNorm running-stat keys (e.g. {legacy[0]})")
    return check_state(expected, state, path)


def check_state(
    expected: Mapping[str, "torch.Tensor"], state: Mapping[str, "torch.Tensor"], path: Path | str,
    *, what: str = "checkpoint does not match its inferred architecture",
) -> dict[str, "torch.Tensor"]:
    """``state`` in ``expected``'s key order and dtypes, or an error listing the mismatches.

    ``what`` opens the message after ``path``.

    Raises:
        NasPruneError: missing keys, unexpected keys, or shape mismatches (first three of each).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:3])}" + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
        raise NasPruneError(f"{path}: {what}: {'; '.join(parts)}")
    return {k: state[k].to(v.dtype) for k, v in expected.items()}
