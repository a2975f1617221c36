"""Reading pix2pix U-Net checkpoints: layout recognition and arch inference from shapes.

pytorch-CycleGAN-and-pix2pix saves ``UnetGenerator.state_dict()``; its keys start with
``model.model.`` (level 0's Sequential, :func:`nas_prune.families.unet.model.seq_prefix`),
which tells it from the ResNet layout (``model.N....``, ``model.N.conv_block...``), CAT's
(``down_sampling.*``, ``features.*``) and CAT SPADE's. The state dicts nas-prune writes for
U-Net students have the same keys.

What the shapes tell: the number of levels (level I exists when its down conv does), every
width, ``input_nc`` / ``output_nc``; the norm (a conv bias means instance norm, pix2pix's
``use_bias``); ``affine`` (the up norms have a weight); running statistics (present; an
instance norm's ``running_mean`` without ``num_batches_tracked`` comes from PyTorch < 0.4,
where it was never used in eval, and is dropped as pix2pix's own loader does). What they
cannot tell: Dropout, taken from the space, then from ``like``, else pix2pix's default
(``use_dropout`` on: the 8ngf middle levels 4 .. n-2), with a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_state
from nas_prune.families.unet.arch import UnetArch, pix2pix_dropout_levels
from nas_prune.families.unet.model import build_unet, module_keys, seq_prefix

if TYPE_CHECKING:  # pragma: no cover
    import torch

LAYOUT = "pix2pix-unet"
LAYOUT_HINT = "pix2pix U-Net (model.model.0.weight, model.model.1.model.1.weight, ...)"


def detect_layout(keys: Sequence[str]) -> str | None:
    """``pix2pix-unet`` when the keys are a U-Net's (level 0's down conv and everything under
    ``model.model.``), else None."""
    keys = list(keys)
    if "model.model.0.weight" not in keys:
        return None
    if not all(k.startswith("model.model.") for k in keys):
        return None
    return LAYOUT


def _shape(tensors: Mapping[str, "torch.Tensor"], key: str, path: Any, ndim: int) -> tuple[int, ...]:
    if key not in tensors:
        raise NasPruneError(f"{path}: U-Net checkpoint is incomplete: missing key {key}")
    shape = tuple(tensors[key].shape)
    if len(shape) != ndim:
        raise NasPruneError(f"{path}: {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def infer_arch(tensors: Mapping[str, "torch.Tensor"], *, path: Any, space: Any = None, like: Any = None,
               notes: list[str] | None = None) -> UnetArch:
    """The :class:`UnetArch` the tensors' shapes describe (module docstring).

    Raises:
        NasPruneError: a missing key or a tensor of the wrong rank, naming it.
    """
    notes = notes if notes is not None else []
    n = 1
    while f"{seq_prefix(n)}.1.weight" in tensors:
        n += 1
    if n < 2:
        raise NasPruneError(f"{path}: U-Net checkpoint is incomplete: missing key {seq_prefix(1)}.1.weight "
                            "(level 1's down conv)")
    w0 = _shape(tensors, "model.model.0.weight", path, 4)
    input_nc = w0[1]
    down, ups = [], []
    for i in range(n):
        probe = UnetArch(input_nc=1, output_nc=1, down=(1,) * n, up=(1,) * (n - 1))
        keys = module_keys(probe, i)
        down.append(_shape(tensors, f"{keys['conv']}.weight", path, 4)[0])
        ups.append(_shape(tensors, f"{keys['convT']}.weight", path, 4)[1])
    output_nc = ups[0]
    probe = UnetArch(input_nc=1, output_nc=1, down=(1,) * n, up=(1,) * (n - 1))
    instance = f"{module_keys(probe, 1)['conv']}.bias" in tensors or "model.model.0.bias" in tensors
    up_norm = module_keys(probe, n - 1)["up_norm"]
    affine = f"{up_norm}.weight" in tensors
    stats = f"{up_norm}.running_mean" in tensors
    if instance and stats and f"{up_norm}.num_batches_tracked" not in tensors:
        notes.append("instance-norm running statistics without num_batches_tracked (PyTorch < 0.4, unused "
                     "in eval) dropped, as pix2pix's loader does")
        stats = False
    norm = "instance" if instance else "batch"
    if norm == "batch" and not stats:
        raise NasPruneError(f"{path}: U-Net checkpoint is incomplete: missing key {up_norm}.running_mean "
                            "(batch norm keeps running statistics)")
    if space is not None:
        dropout = space.teacher_arch().dropout_levels
    elif like is not None and like.num_downs == n:
        dropout = like.dropout_levels
    else:
        dropout = pix2pix_dropout_levels(n)
        if dropout:
            notes.append(f"dropout assumed at levels {', '.join(map(str, dropout))} (pix2pix's default "
                         "use_dropout; checkpoints cannot show it; pin it with a --space)")
    return UnetArch(input_nc=input_nc, output_nc=output_nc, down=tuple(down), up=tuple(ups[1:]), norm=norm,
                    affine=affine, track_running_stats=stats, dropout_levels=tuple(dropout),
                    space=getattr(space, "name", "") if space is not None else (like.space if like is not None else ""))


def load_state(tensors: Mapping[str, "torch.Tensor"], *, path: Any, layout: str = LAYOUT, space: Any = None,
               like: Any = None, notes: list[str] | None = None) -> tuple[UnetArch, dict[str, "torch.Tensor"]]:
    """``(arch, state_dict)`` of a pix2pix U-Net checkpoint; the state dict loads strictly into
    ``build_unet(arch)`` (float32, in the module's key order).

    With a ``space``, the arch must be one of the space's (same settings, no wider level).

    Raises:
        NasPruneError: unknown layout, missing/unexpected/misshapen keys (named), or an arch
            outside ``space``.
    """
    if layout != LAYOUT:
        raise NasPruneError(f"{path}: layout {layout!r} is not a U-Net layout")
    notes = notes if notes is not None else []
    arch = infer_arch(tensors, path=path, space=space, like=like, notes=notes)
    if space is not None:
        from nas_prune.families.unet.arch import unet_fits_within

        why = unet_fits_within(arch, space.teacher_arch())
        if why:
            raise NasPruneError(f"{path}: not in search space {space.name}: {why}")
    state = dict(tensors)
    if arch.norm == "instance" and not arch.track_running_stats:
        for k in [k for k in state if k.endswith((".running_mean", ".running_var", ".num_batches_tracked"))]:
            del state[k]
    expected = build_unet(arch).state_dict()
    filled = [k for k in expected if k.endswith(".num_batches_tracked") and k not in state]
    if filled and len(filled) == sum(k.endswith(".num_batches_tracked") for k in expected):
        import torch

        for k in filled:
            state[k] = torch.tensor(0, dtype=torch.long)
        notes.append("num_batches_tracked missing (PyTorch < 0.4 checkpoint): set to 0 (unused in eval)")
    return arch, check_state(expected, state, path)
