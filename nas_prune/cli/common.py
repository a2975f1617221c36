"""Helpers shared by the CLI commands: one-line errors, stop signals and the rich console."""

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
    """Turn :class:`NasPruneError` (and stop signals) into a one-line message and a non-zero exit.

    SIGINT, SIGTERM and SIGHUP stop the command cleanly (:mod:`nas_prune.interrupt`: a
    training loop stops after its step with a checkpoint), with ``interrupted by SIGTERM``
    and exit status 128 + the signal's number (130, 143, 129).

    A failed memory allocation (:func:`is_out_of_memory`) is a one-line error with exit 2 as
    well: commands check sizes before allocating, this catches what the estimate missed.

    Warnings of training runs (:class:`nas_prune.loop.RunWarning`, e.g. an interrupted run)
    show as one line ``warning: ...`` (no file name or source line); others keep Python's format.
    An error with several problems (``details``) shows one per line.
    """
    from nas_prune.interrupt import exit_code, handle_signals, signal_name, signum_of
    from nas_prune.loop import RunWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            say(f"warning: {message}")
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with handle_signals():
            yield
    except NasPruneError as err:
        say(f"error: {getattr(err, 'message', str(err))}")
        for detail in getattr(err, "details", ()):
            say(f"  - {detail}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt as err:
        signum = signum_of(err)
        say(f"interrupted by {signal_name(signum)}")
        raise typer.Exit(exit_code(signum)) from None
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        say(f"error: out of memory ({' '.join(first.split())[:200]}): use a smaller --input-size, "
            "--crop-size or --batch-size")
        raise typer.Exit(EXIT_USER_ERROR) from None
    finally:
        warnings.showwarning = previous


def say(line: str) -> None:
    """One line on stderr; a reader that went away (EPIPE) mutes it, never fails the command."""
    from nas_prune.pipes import emit

    emit(line, stream=sys.stderr)


def is_out_of_memory(err: BaseException) -> bool:
    """True for a failed allocation: MemoryError, torch's CPU allocator, CUDA out of memory."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


PIPE_WIDTH = 10_000  # the width of a pipe or a file for rich: wide enough that nothing is folded


def console(stderr: bool = False):
    """A rich Console (imported lazily); ``stderr=True`` keeps stdout clean for ``--json``.

    Off a terminal (a pipe, a file) lines are not re-wrapped at 80 columns and carry no
    trailing spaces, so logs grep cleanly: a table is as wide as its cells (one line per row,
    no cell folded to fit 80 columns; on a terminal it still fits the terminal); writes to a
    reader that went away are muted (:class:`nas_prune.pipes.SafeStream`).
    """
    from rich.console import Console

    from nas_prune.pipes import SafeStream

    stream = sys.stderr if stderr else sys.stdout
    tty = SafeStream(stream).isatty()
    # a pipe has no width: rich would take 80 (or $COLUMNS) and fold wide tables' cells to it
    return Console(file=SafeStream(stream, strip=not tty), soft_wrap=not tty, width=None if tty else PIPE_WIDTH)


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
    return use_threads(spec, workers=workers, announce="training", log=None if quiet else say)


MODEL_HELP = ("Your generator code: FILE.py:NAME or package.module:NAME, NAME a class or a function returning an "
              "nn.Module; the checkpoint is its state dict. The code is imported, i.e. executed; the weights file "
              "is still loaded safely.")
MODEL_ARGS_HELP = "Keyword arguments of NAME as a JSON object, e.g. '{\"ngf\": 64}' (recorded in arch.json)."
CHANGED_SOURCE_HELP = "Build a student whose --model source file changed since arch.json was written (both hashes are named otherwise)."
MODEL_PANEL = "Your own generator (--model)"


def user_model(model, model_args, allow_changed_source: bool, input_size=None, *, keep=()):
    """The library's :class:`nas_prune.load.UserModel` of the ``--model`` options (None without them)."""
    from nas_prune.load import user_model as make

    return make(model, model_args, allow_changed_source=allow_changed_source, input_size=input_size, keep=keep)
