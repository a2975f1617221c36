"""Distillation methods: one module per method, all behind :class:`DistillTerm`.

Names (weights on the CLI: ``--distill gcka,crd --lambda-distill 1 --lambda-crd 1``;
in library calls a dict ``{"gcka": 1.0, "crd": 1.0}``):

- ``gcka``: global centred kernel alignment of batch Gram matrices (CAT, CVPR 2021).
- ``mse``: feature MSE through learned 1x1 adapters (GAN Compression, CVPR 2020).
- ``crd``: content relationship distillation.
- ``akdg``: adversarial distillation with a teacher-vs-student discriminator.
- ``ackd``: accumulation knowledge distillation.

Each method module registers itself on import with :func:`register_term`; this
package imports every method module that is present.
"""

from __future__ import annotations

import importlib
import importlib.util

from nas_prune.kd.base import (
    DistillTerm,
    KDBatch,
    all_taps,
    build_terms,
    known_terms,
    register_term,
    term_class,
)

__all__ = [
    "DistillTerm",
    "KDBatch",
    "all_taps",
    "build_terms",
    "known_terms",
    "register_term",
    "term_class",
]

_METHOD_MODULES = ("gcka", "mse", "crd", "akdg", "ackd")

for _name in _METHOD_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
del _name
