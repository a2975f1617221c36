"""Read CAT SPADE generator checkpoints (``fc.*``, ``fc_norm.*``, ``head_0.*``, ..., ``conv_img.*``).

The architecture is inferred from tensor shapes; no code from CAT is needed. Shapes
cannot show three settings, which come from the search space when one is given, else
from a student cut from this teacher (``like``: its ``arch.json`` records them), else
from CAT's defaults:

* ``num_upsampling_layers``: ``most`` has an ``up_4`` block; ``normal`` and ``more``
  have the same tensors and differ only in where the latent grid is upsampled. Without
  a space or a student, ``more`` is assumed (the default of CAT's GauGAN training and
  distillation scripts) and a note says so.
* the blocks' activation: ``leaky_relu`` (CAT trains its SPADE teachers with
  ``nn.LeakyReLU``) unless the space (or student) says ``relu``.
* kernel-size slots that no block uses.

The original GauGAN layout (NVlabs SPADE: ``head_0.conv_0``, ``head_0.norm_0.mlp_shared``,
...) is recognised and refused with the reason: it is not a point of this space (see
:data:`GAUGAN_REASON`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import missing_blocks_error, missing_branch_keys
from nas_prune.families.spade.arch import BRANCH_KINDS, SpadeArch, SpadeBlock, block_names, spade_fits_within

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas_prune.families.spade.space import SpadeSpace

GAUGAN_REASON = (
    "the original GauGAN generator (NVlabs SPADE ResNet blocks) is not a point of CAT's inception SPADE space: "
    "its blocks modulate the middle of each residual branch and the shortcut with SPADE (seg-dependent "
    "gamma/beta) where CAT's blocks use a plain batch norm, its modulation network shares one conv "
    "(mlp_shared) without a norm, it has no fc_norm, and it uses LeakyReLU(0.2) inside the blocks"
)

# Branch tensors that carry a branch's kernel size and width: (regex, kind).
_WIDTH_KEYS = (
    (re.compile(r"(\w+)\.res_ops\.(\d+)\.0\.conv\.weight"), "res"),
    (re.compile(r"(\w+)\.dw_ops\.(\d+)\.1\.conv\.weight"), "dw"),
    (re.compile(r"(\w+)\.spade\.res_ops\.(\d+)\.0\.conv\.weight"), "spade_res"),
    (re.compile(r"(\w+)\.spade\.dw_ops\.(\d+)\.1\.conv\.weight"), "spade_dw"),
)


def is_cat_spade(keys: list[str]) -> bool:
    """True for CAT's InceptionSPADEGenerator keys."""
    return "fc.weight" in keys and "conv_img.weight" in keys and any(k.startswith("head_0.") for k in keys)


def is_gaugan(keys: list[str]) -> bool:
    """True for the original GauGAN generator's keys (NVlabs SPADE)."""
    return any(re.match(r"head_0\.(conv_0|norm_0\.mlp_shared)\.", k) for k in keys)


def _shape(tensors: Mapping[str, "torch.Tensor"], key: str, path: Path) -> tuple[int, ...]:
    if key not in tensors:
        raise NasPruneError(f"{path}: missing key {key!r}")
    return tuple(tensors[key].shape)


def infer_spade_arch(
    tensors: Mapping[str, "torch.Tensor"], path: Path, space: "SpadeSpace | None", notes: list[str],
    *, like: SpadeArch | None = None,
) -> SpadeArch:
    """Read every width of a CAT SPADE state dict from its tensor shapes (module docstring).

    ``like`` (used when ``space`` is None) gives the settings shapes cannot show: the
    upsampling, the activation and the kernel-size slots of a student cut from this teacher.
    """
    if any(k.endswith("weight_orig") for k in tensors):
        raise NasPruneError(
            f"{path}: spectral-norm weights (weight_orig); remove spectral norm "
            "(torch.nn.utils.remove_spectral_norm) before saving the generator"
        )
    if "fc_norm.running_mean" not in tensors:
        if not any(k.startswith("fc_norm.") for k in tensors):
            raise NasPruneError(f"{path}: checkpoint is incomplete: missing keys: fc_norm.* (the batch norm after fc)")
        raise NasPruneError(f"{path}: missing key 'fc_norm.running_mean': fc_norm has no running statistics; "
                            "only batch-norm SPADE generators are supported")
    missing_branch_keys(tensors, path, (
        (r"(\w+\.res_ops)\.(\d+)\.", "0.conv.weight"),
        (r"(\w+\.dw_ops)\.(\d+)\.", "1.conv.weight"),
        (r"(\w+\.spade\.res_ops)\.(\d+)\.", "0.conv.weight"),
        (r"(\w+\.spade\.dw_ops)\.(\d+)\.", "1.conv.weight"),
    ))
    fc = _shape(tensors, "fc.weight", path)
    has_up4 = any(k.startswith("up_4.") for k in tensors)
    source = space if space is not None else like
    where = f"search space {space.name!r}" if space is not None else "the student's architecture"
    if source is not None:
        mode = source.num_upsampling_layers
        if has_up4 != (mode == "most"):
            raise NasPruneError(
                f"{path} does not fit {where}: num_upsampling_layers is {mode!r} but the "
                f"checkpoint {'has' if has_up4 else 'has no'} up_4 block"
            )
        activation = source.activation
    else:
        mode = "most" if has_up4 else "more"
        activation = "leaky_relu"
        if not has_up4:
            notes.append("num_upsampling_layers not stored in the checkpoint: assumed 'more' (CAT's default); "
                         "give a search space to choose 'normal'")
    names = block_names(mode)
    # CAT keeps every block's modulation network, even in blocks without branches
    empty = [n for n in names if not any(k.startswith(f"{n}.") for k in tensors)]
    if empty:
        raise missing_blocks_error(path, empty, "CAT SPADE")

    found: dict[str, dict[str, dict[int, tuple[int, int]]]] = {n: {k: {} for k in BRANCH_KINDS} for n in names}
    for key, value in tensors.items():
        for pattern, kind in _WIDTH_KEYS:
            m = pattern.fullmatch(key)
            if m and m.group(1) in found:
                found[m.group(1)][kind][int(m.group(2))] = (int(value.shape[2]), int(value.shape[0]))
    if source is not None:
        ks = tuple(source.kernel_sizes)
    else:
        seen = {k for per in found.values() for slots in per.values() for k, _ in slots.values()}
        ks = tuple(sorted(seen)) or (1, 3, 5)

    stream = [fc[0]]
    blocks = []
    for name in names:
        # fout: rows of the shortcut conv, else of any branch's last conv; no tensor: fout = fin.
        candidates = [f"{name}.shortcut.1.conv.weight"]
        candidates += [f"{name}.res_ops.{i}.1.conv.weight" for i in sorted(found[name]["res"])]
        candidates += [f"{name}.dw_ops.{i}.2.conv.weight" for i in sorted(found[name]["dw"])]
        fout = next((int(tensors[k].shape[0]) for k in candidates if k in tensors), stream[-1])
        stream.append(fout)
        widths = {}
        for kind in BRANCH_KINDS:
            w = [0] * len(ks)
            for i in sorted(found[name][kind]):
                k, m = found[name][kind][i]
                if k not in ks:
                    raise NasPruneError(
                        f"{path} does not fit {where if source is not None else 'the checkpoint'}: "
                        f"{name}.{kind.replace('spade_', 'spade.')}_ops.{i} has "
                        f"kernel size {k}, not one of {list(ks)}"
                    )
                if w[ks.index(k)]:
                    raise NasPruneError(f"{path}: {name} has two {kind} branches of kernel size {k}")
                w[ks.index(k)] = m
            widths[kind] = tuple(w)
        if not any(widths["res"]) and not any(widths["dw"]):
            widths["spade_res"] = widths["spade_dw"] = (0,) * len(ks)
        blocks.append(SpadeBlock(**widths))
    try:
        arch = SpadeArch(
            label_nc=fc[1],
            output_nc=_shape(tensors, "conv_img.weight", path)[0],
            num_upsampling_layers=mode,
            stream=tuple(stream),
            blocks=tuple(blocks),
            kernel_sizes=ks,
            activation=activation,
        )
    except NasPruneError as err:
        raise NasPruneError(f"{path}: {err}") from None
    if space is not None:
        why = spade_fits_within(arch, space.teacher_arch())
        if why is not None:
            raise NasPruneError(f"{path} does not fit search space {space.name!r}: {why}")
    return arch


def spade_state(
    tensors: dict[str, "torch.Tensor"], arch: SpadeArch, path: Path, notes: list[str]
) -> dict[str, "torch.Tensor"]:
    """Check ``tensors`` against ``build_spade_generator(arch)`` key by key and shape by shape.

    The modulation network of a block without res/dw branches never runs (CAT keeps it);
    its tensors are dropped with a note.
    """
    from nas_prune.families.common import check_state
    from nas_prune.families.spade.model import build_spade_generator

    expected = build_spade_generator(arch).state_dict()
    state = dict(tensors)
    idle = {name for name, b in zip(arch.block_names, arch.blocks) if b.is_identity}
    dead = [k for k in state if k.split(".", 1)[0] in idle and k.split(".")[1] == "spade"]
    for k in dead:
        del state[k]
    if dead:
        notes.append(f"dropped {len(dead)} tensors of modulation networks that never run (blocks without branches)")
    return check_state(expected, state, path)
