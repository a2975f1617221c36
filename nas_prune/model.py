"""Build generators and check what they can run on: the family-independent entry points.

Every function takes an architecture of any registered family and asks the family
(:mod:`nas_prune.families`). The inception-residual modules (CAT's state-dict layout:
:class:`Generator`, :class:`InceptionBlock`, ...) live in
:mod:`nas_prune.families.inception.model` and are re-exported here under their
historical names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from nas_prune.errors import NasPruneError
from nas_prune.families import family_of
from nas_prune.families.inception.model import (  # noqa: F401  (historical names)
    Generator,
    InceptionBlock,
    ReflectPad,
    make_norm,
    pad2d,
    reflect_pad_by_slices,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


def build_generator(arch: Any) -> "torch.nn.Module":
    """A freshly initialised generator of ``arch`` (its family's module, in training mode).

    The module has ``.arch`` and ``forward_with_features(x, taps)``.
    """
    return family_of(arch).build(arch)


def tap_names(arch: Any) -> list[str]:
    """Every valid distillation tap of ``arch`` in forward order."""
    return family_of(arch).tap_names(arch)


def default_taps(arch: Any) -> list[str]:
    """The taps distillation reads when none are given (the family's choice)."""
    return family_of(arch).default_taps(arch)


def check_taps(arch: Any, taps: Iterable[str]) -> None:
    """Raise NasPruneError naming the first tap that ``arch`` does not have."""
    family_of(arch).check_taps(arch, taps)


def tap_channels(arch: Any, tap: str) -> int:
    """Channels of the feature map at ``tap``."""
    return family_of(arch).tap_channels(arch, tap)


def input_channels(arch: Any) -> int:
    """Channels of the generator's input tensor."""
    return family_of(arch).input_channels(arch)


def input_size_limits(arch: Any) -> list[tuple[int, str]]:
    """What bounds the input size from below: ``(smallest side, reason)`` pairs, largest first."""
    return family_of(arch).input_size_limits(arch)


def size_multiple(arch: Any) -> int:
    """Input height and width must be multiples of this."""
    return family_of(arch).size_multiple(arch)


def min_input_size(arch: Any) -> tuple[int, int]:
    """The smallest ``(H, W)`` the generator runs at."""
    return family_of(arch).min_input_size(arch)


def check_input_size(arch: Any, size: tuple[int, int], *, option: str = "--input-size", extra=()) -> None:
    """Raise NasPruneError when the generator cannot run at ``size`` = (H, W), stating the minimum.

    Args:
        extra: more ``(smallest side, reason)`` limits, e.g. a discriminator's.
    """
    family_of(arch).check_input_size(arch, size, option=option, extra=extra)


def example_input(arch: Any, size: tuple[int, int], *, batch: int = 1, generator=None) -> "torch.Tensor":
    """A valid input of ``size`` for ``arch`` (images in [-1, 1], or a semantic map)."""
    return family_of(arch).example_input(arch, size, batch=batch, generator=generator)


def forward_bytes(arch: Any, size: tuple[int, int], *, batch: int = 1) -> int:
    """Rough peak memory of one inference forward pass at ``size`` (bytes, float32).

    Meant to tell a size that cannot fit from one that can, not to size buffers.
    """
    return family_of(arch).forward_bytes(arch, size, batch=batch)


def available_bytes(device: str | None = None) -> int | None:
    """Memory free for tensors on ``device`` (CUDA: free device memory; CPU: MemAvailable), or None."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_forward_memory(arch: Any, size: tuple[int, int], *, batch: int = 1, device: str | None = None,
                         option: str = "--input-size") -> None:
    """Raise NasPruneError before allocating when one forward pass at ``size`` cannot fit in memory."""
    need = forward_bytes(arch, size, batch=batch)
    free = available_bytes(device)
    if free is not None and need > free:
        h, w = size
        raise NasPruneError(
            f"{option} {h}x{w}{f' (batch {batch})' if batch > 1 else ''} needs about {_gib(need)} for one forward "
            f"pass, more than the {_gib(free)} available{f' on {device}' if device else ''}: use a smaller size"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"
