"""User-facing errors.

Every problem a user can cause (bad file, bad option, impossible target) raises
:class:`NasPruneError` with a one-line message. The CLI prints it as
``error: <message>`` and exits with code 2; library callers catch it like any
exception. Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations


class NasPruneError(Exception):
    """A problem with the user's input, reported in one line.

    ``details``: several problems found at once (``nas-prune validate``); the CLI prints
    ``message`` and then one line per problem, ``str(err)`` has them all on one line.
    """

    def __init__(self, message: str, *, details: tuple[str, ...] | list[str] = ()):
        self.message = " ".join(str(message).split())
        self.details = tuple(" ".join(str(d).split()) for d in details)
        super().__init__(self.message + (" " + "; ".join(self.details) if self.details else ""))


class RunWarning(UserWarning):
    """A warning of a training run (no test split, fresh weights, interrupted); the CLI prints it on one line."""
