"""Helpers shared by the CLI commands: one-line errors and the rich console."""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

import typer

from nas_prune.errors import NasPruneError

EXIT_USER_ERROR = 2


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`NasPruneError` (and Ctrl-C) into a one-line message and a non-zero exit.

    A failed memory allocation (:func:`is_out_of_memory`) is a one-line error with exit 2 as
    well: commands check sizes before allocating, this catches what the estimate missed.

    Warnings of training runs (:class:`nas_prune.loop.RunWarning`, e.g. an interrupted run)
    show as one line ``warning: ...`` (no file name or source line); others keep Python's format.
    """
    from nas_prune.loop import RunWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except NasPruneError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        typer.echo(f"error: out of memory ({' '.join(first.split())[:200]}): use a smaller --input-size, "
                   "--crop-size or --batch-size", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    finally:
        warnings.showwarning = previous


def is_out_of_memory(err: BaseException) -> bool:
    """True for a failed allocation: MemoryError, torch's CPU allocator, CUDA out of memory."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


def console(stderr: bool = False):
    """A rich Console (imported lazily); ``stderr=True`` keeps stdout clean for ``--json``."""
    from rich.console import Console

    return Console(stderr=stderr, file=sys.stderr if stderr else sys.stdout)


THREADS_HELP = ("CPU threads for torch: N, or auto = the cores not busy with other processes (re-checked "
                "during training), or OMP_NUM_THREADS if set. Runs with different counts differ in the last "
                "digits; pin N to compare runs. [auto]")


def torch_threads(value: str, *, workers: int = 0, quiet: bool = False):
    """Context manager: the command's torch thread count (:func:`nas_prune.threads.use_threads`).

    ``value`` is ``--threads`` (``auto`` or N); the choice is said on stderr at the first
    training step (commands that train nothing stay quiet), unless ``quiet``.
    """
    from nas_prune.threads import parse_threads, use_threads

    spec = parse_threads(value, where="--threads")
    return use_threads(spec, workers=workers, announce="training",
                       log=None if quiet else (lambda line: typer.echo(line, err=True)))
