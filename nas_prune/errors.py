"""User-facing errors.

Every problem a user can cause (bad file, bad option, impossible target) raises
:class:`NasPruneError` with a one-line message. The CLI prints it as
``error: <message>`` and exits with code 2; library callers catch it like any
exception. Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations


class NasPruneError(Exception):
    """A problem with the user's input, reported in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunWarning(UserWarning):
    """A warning of a training run (no test split, fresh weights, interrupted); the CLI prints it on one line."""
