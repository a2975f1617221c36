"""Primitives of per-layer latency tables that families share with the core.

A *unit* is one timed layer shape; a family that gives the latency table its layer
shapes (:attr:`nas_prune.families.base.GeneratorFamily.latency_units`) describes its
students as units on width grids (:meth:`~nas_prune.families.base.GeneratorFamily.latency_unit_grids`),
and :mod:`nas_prune.latency.table` times, caches and interpolates them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: Widths every grid axis visits between its floor and the teacher's width.
LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def width_grid(low: int, high: int) -> list[int]:
    """Widths a unit is timed at along one axis: ``low``, ``high`` and the ladder in between."""
    low = max(1, min(low, high))
    return sorted({low, high, *(v for v in LADDER if low < v < high)})


@dataclass(frozen=True)
class Unit:
    """One timed layer shape: ``kind`` (module docstring), its widths and its input ``(h, w)``."""

    kind: str
    widths: tuple[int, ...]
    hw: tuple[int, int]
    settings: str
    channels: tuple[int, int] = (0, 0)  # image channels in / out (of the units that read or write images)
    io_kinds: tuple[str, ...] = ("stem0", "final")

    @property
    def signature(self) -> str:
        io = f"/io{self.channels[0]}-{self.channels[1]}" if self.kind in self.io_kinds else ""
        return f"{self.kind}:{'x'.join(map(str, self.widths))}@{self.hw[0]}x{self.hw[1]}/{self.settings}{io}"


@dataclass(frozen=True)
class Axis:
    """An axis of a unit grid: a prunable width of the teacher (``name``) and its grid."""

    name: str
    grid: tuple[int, ...]
    high: int


@functools.cache
def small_modules():
    """``(NormAdd, Add)`` module classes, defined on first use so importing stays torch-free."""
    from torch import nn

    class NormAdd(nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.norm = norm

        def forward(self, x):
            return x + self.norm(x)

    class Add(nn.Module):
        def forward(self, x):
            return x + x

    return NormAdd, Add
