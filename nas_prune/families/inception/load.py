"""Read inception-residual generators from checkpoints: CAT's layout and the classic ResNet.

Layouts, recognised from the keys:

* **cat** — CAT's inception generator (``down_sampling.*``, ``features.N.res_ops.*``,
  ``features.N.dw_ops.*``, ``features.N.pw_bn.*``, ``up_sampling.*``), taken unchanged.
* **resnet** — the classic ResNet generator of pytorch-CycleGAN-and-pix2pix
  (``model.1.weight``, ``model.10.conv_block.1.weight``, ...), mapped into the space as
  one res branch of kernel 3 and full width per block; outputs are identical. Legacy
  InstanceNorm ``running_mean`` / ``running_var`` keys of old checkpoints are dropped.

The architecture is inferred from tensor shapes; settings that shapes cannot show
(padding, dropout, kernel-size order, the number of blocks) come from the search space
when one is given. Every block the layout needs must have tensors (CAT keeps the norm of a
block without branches; a ResNet block always has its convs), every branch whose tensors
appear must have the tensor that gives its width, and every tensor the inferred
architecture needs must be there: otherwise the error names the missing keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_state, missing_blocks_error, missing_branch_keys
from nas_prune.families.inception.arch import Arch, Block

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.families.inception.space import SearchSpace

_LEGACY_NORM_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def detect(keys: list[str]) -> str | None:
    """``"cat"``, ``"resnet"`` or None."""
    if any(k.startswith("down_sampling.") for k in keys) and any(k.startswith("up_sampling.") for k in keys):
        return "cat"
    if any(re.match(r"model\.\d+\.conv_block\.", k) for k in keys):
        return "resnet"
    return None


def load_state(tensors: dict[str, "torch.Tensor"], path: Path, space: "SearchSpace | None", layout: str,
               notes: list[str]) -> tuple[Arch, dict[str, "torch.Tensor"]]:
    """``(arch, state dict in CAT's layout)`` of a ``cat`` or ``resnet`` checkpoint."""
    padding = "reflect"
    if layout == "resnet":
        tensors, padding = resnet_to_cat(tensors, path, space, notes)
    arch = infer_arch(tensors, path, space, padding=padding)
    return arch, match_state(tensors, arch, path, notes)


# ----------------------------------------------------------------------------- resnet layout


def resnet_to_cat(
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


def infer_arch(
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


def match_state(
    tensors: dict[str, "torch.Tensor"], arch: Arch, path: Path, notes: list[str]
) -> dict[str, "torch.Tensor"]:
    """Check ``tensors`` against ``build_generator(arch)`` key by key and shape by shape."""
    import torch

    from nas_prune.families.inception.model import build_generator

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
