"""Output that never stops a run: a reader that went away mutes the stream, not the command.

``nas-prune distill ... | tee log``: when ``tee`` dies (Ctrl-C reaches it too, or it is
killed), the next write to the pipe fails with EPIPE; on a terminal that was closed it fails
with EIO. Neither may fail a training run, so every line nas-prune writes while it works
goes through :func:`emit` or a :class:`SafeStream`: the failed stream is pointed at
``/dev/null`` (so the rest of the output, and Python's flush at exit, succeed silently) and
the command carries on. The run itself (checkpoints, ``status.json``) is on disk, not in
the pipe.

In a pipe or a file a :class:`SafeStream` can also drop trailing spaces (``strip=True``), so
logs grep cleanly; :func:`nas_prune.cli.common.console` uses that for the command's output.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from typing import TextIO

__all__ = ["SafeStream", "emit", "is_gone"]

_GONE = (errno.EPIPE, errno.EIO)


def is_gone(err: BaseException) -> bool:
    """A write failed because nobody reads the stream any more (EPIPE: broken pipe; EIO: closed terminal)."""
    return isinstance(err, OSError) and (isinstance(err, BrokenPipeError) or err.errno in _GONE)


def _mute(stream) -> None:
    """Point the stream's file descriptor at /dev/null (when it has one)."""
    with contextlib.suppress(Exception):
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


class SafeStream(io.TextIOBase):
    """A text stream around ``inner`` whose writes never raise EPIPE / EIO (see the module docstring).

    Args:
        inner: the stream written to (``sys.stdout``, ``sys.stderr``).
        strip: drop trailing spaces of every line (for a pipe or a file).
    """

    def __init__(self, inner: TextIO, *, strip: bool = False):
        super().__init__()
        self.inner = inner
        self.strip = strip
        self.gone = False
        self._partial = ""

    def _guard(self, fn, *args):
        if self.gone:
            return None
        try:
            return fn(*args)
        except OSError as err:
            if not is_gone(err):
                raise
            self.gone = True
            _mute(self.inner)
            with contextlib.suppress(Exception):  # what was buffered now goes to /dev/null
                self.inner.flush()
            return None

    def write(self, text: str) -> int:
        n = len(text)
        if self.strip:
            text = self._partial + text
            lines = text.split("\n")
            self._partial = lines.pop()
            text = "".join(line.rstrip(" ") + "\n" for line in lines)
            if not text:
                return n
        self._guard(self.inner.write, text)
        return n

    def flush(self) -> None:
        if self._partial:
            text, self._partial = self._partial, ""
            self._guard(self.inner.write, text)
        self._guard(self.inner.flush)

    def isatty(self) -> bool:
        with contextlib.suppress(Exception):
            return self.inner.isatty()
        return False

    def fileno(self) -> int:
        return self.inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):  # rich and click read it
        return getattr(self.inner, "encoding", "utf-8")

    def __getattr__(self, name: str):  # buffer, errors, ...: those of the wrapped stream
        return getattr(self.inner, name)


def emit(line: str, *, stream: TextIO | None = None) -> bool:
    """Write ``line`` and a newline to ``stream`` (default ``sys.stderr``) and flush; False when
    nobody reads it any more (the stream is muted, nothing is raised)."""
    stream = sys.stderr if stream is None else stream
    if isinstance(stream, SafeStream):
        stream.write(line + "\n")
        stream.flush()
        return not stream.gone
    try:
        stream.write(line + "\n")
        stream.flush()
    except OSError as err:
        if not is_gone(err):
            raise
        _mute(stream)
        with contextlib.suppress(Exception):
            stream.flush()
        return False
    return True
