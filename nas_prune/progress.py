"""Live progress of the training loops (teacher training, distillation).

On a terminal: a rich bar on stderr with the step, the epoch, images per second, the
time left and the current losses; it disappears at the end and one final line stays
(``distill: 200 steps (8.0 epochs) in 1:42, 31.2 images/s; d 0.52 ...``). Elsewhere
(a pipe, a log file, ``nas-prune run`` under ``nohup``): the same as plain lines every
``log_every`` steps, then the final line. ``progress: false`` turns both off.

A GPU loop reads its losses on the host only on log steps (and the first and last step),
so between them the bar shows the losses of the last step read and says which one
(``at step 50: d 0.52 ...``). The bar keeps ``step/total``, the epoch and the time left at
80 columns: the losses are cut to the room left, never the rest. Writes that fail because
nobody reads any more (a pipe whose reader died, a closed terminal) are muted
(:mod:`nas_prune.pipes`): they never stop the run.

A CPU step slower than :data:`SLOW_STEP_S` seconds gets one warning saying so, how long
the run would take and what to change, whatever ``progress`` is.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Mapping

__all__ = ["TrainProgress", "format_duration", "shown_losses", "SLOW_STEP_S"]

SLOW_STEP_S = 5.0


def format_duration(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _losses(values: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:.3g}" for k, v in values.items())


def plural(n: float, word: str) -> str:
    """``1 epoch``, ``2 epochs``, ``1.5 epochs`` (``n`` shown as ``{:.4g}``)."""
    return f"{n:.4g} {word}{'' if n == 1 else 's'}"


BAR_WIDTH = 12


class TrainProgress:
    """Progress of one training loop (a context manager).

    Args:
        label: what is training (``distill``, ``baseline``, ``train-teacher``).
        total: the step the loop ends at; start: the step it starts from (resume).
        steps_per_epoch: for the epoch count.
        enabled: show the bar / lines and the final line.
        log_every: steps between plain lines when stderr is not a terminal.
        device_type / batch_size / crop_size: for the slow-CPU-step warning (given
            only where ``warn_slow``: the main process of a distributed run).
    """

    def __init__(self, *, label: str, total: int, start: int, steps_per_epoch: int, enabled: bool = True,
                 log_every: int = 50, device_type: str = "cpu", batch_size: int | None = None,
                 crop_size: int | None = None, warn_slow: bool = True):
        self.label, self.total, self.start = label, total, start
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.enabled, self.log_every = enabled, max(1, log_every)
        self.device_type, self.batch_size, self.crop_size = device_type, batch_size, crop_size
        self.step_no = start
        self.images = 0
        self.shown: dict[str, float] = {}
        self.shown_step = start
        self._bar = None
        self._task = None
        self._warned = not warn_slow
        self._t0 = self._t_last = 0.0

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> "TrainProgress":
        self._t0 = self._t_last = time.perf_counter()
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            from rich.table import Column

            from nas_prune.pipes import SafeStream

            def fixed() -> Column:
                return Column(no_wrap=True)

            self._bar = Progress(
                TextColumn("{task.description}", markup=False, table_column=fixed()), BarColumn(bar_width=BAR_WIDTH),
                MofNCompleteColumn(table_column=fixed()),
                TextColumn("{task.fields[epoch]}", markup=False, table_column=fixed()),
                TextColumn("{task.fields[rate]}", markup=False, table_column=fixed()),
                TimeRemainingColumn(table_column=fixed()),
                TextColumn("{task.fields[losses]}", markup=False, table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=Console(file=SafeStream(sys.stderr)), transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.start,
                                            epoch=self._epoch(self.start), rate="", losses="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.enabled and exc[0] is None:
            self._print(self.final_line())

    # -- per step -------------------------------------------------------------------------
    def update(self, step: int, *, images: int, shown: Mapping[str, float] | None) -> None:
        """After each step: ``step`` done in total, ``images`` seen this step, losses to show
        (None keeps the last ones: a GPU loop reads its losses only on log steps)."""
        now = time.perf_counter()
        seconds = now - self._t_last
        self._t_last = now
        self.step_no, self.images = step, self.images + images
        if shown is not None:
            self.shown, self.shown_step = dict(shown), step
        done = step - self.start
        if done == 2 and not self._warned:
            self._check_slow(seconds)
        if not self.enabled:
            return
        if self._bar is not None:
            epoch, rate = self._epoch(step), self._rate()
            self._bar.update(self._task, completed=step, epoch=epoch, rate=rate,
                             losses=self.bar_losses(self._bar.console.width, epoch=epoch, rate=rate))
        elif done == 1 or step % self.log_every == 0:
            self._print(self._line())

    def note(self, line: str) -> None:
        """A line above the bar (or between the plain lines)."""
        self._print(line)

    # -- text -----------------------------------------------------------------------------
    def losses_text(self) -> str:
        """The losses shown, and the step they come from when it is not the current one."""
        if not self.shown:
            return ""
        at = f"at step {self.shown_step}: " if self.shown_step != self.step_no else ""
        return at + _losses(self.shown)

    def bar_losses(self, width: int, *, epoch: str, rate: str) -> str:
        """:meth:`losses_text` cut to what a ``width``-column bar leaves after its other columns."""
        others = [self.label, " " * BAR_WIDTH, f"{self.total}/{self.total}", epoch, rate, "0:00:00"]
        room = width - sum(map(len, others)) - len(others)  # one space between columns
        text = self.losses_text()
        if len(text) <= room:
            return text
        return text[:room - 1] + "…" if room > 1 else ""

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _epoch(self, step: int) -> str:
        total = self.total / self.steps_per_epoch
        return f"ep {step / self.steps_per_epoch:.1f}/{total:.4g}"

    def _rate(self) -> str:
        elapsed = self._elapsed()
        return f"{self.images / elapsed:.1f} img/s" if elapsed > 0 and self.images else ""

    def _eta(self) -> str:
        done = self.step_no - self.start
        if done <= 0:
            return "?"
        return format_duration(self._elapsed() / done * (self.total - self.step_no))

    def _line(self) -> str:
        return (f"{self.label}: step {self.step_no}/{self.total}, {self._epoch(self.step_no)}, {self._rate()}, "
                f"{self._eta()} left; {self.losses_text()}")

    def final_line(self) -> str:
        """``<label>: N steps (E epochs) in m:ss, R images/s; last losses`` (or where it stopped)."""
        done = self.step_no - self.start
        elapsed = self._elapsed()
        rate = f", {self.images / elapsed:.1f} images/s" if elapsed > 0 and self.images else ""
        where = (f"{plural(self.step_no, 'step')} ({plural(self.step_no / self.steps_per_epoch, 'epoch')})"
                 if self.step_no >= self.total else f"stopped at step {self.step_no} of {self.total}")
        resumed = f", {done} of them now" if self.start and done else ""
        last = ("" if not self.shown else f"; last {self.losses_text()}" if self.shown_step == self.step_no
                else f"; losses {self.losses_text()}")
        return f"{self.label}: {where}{resumed} in {format_duration(elapsed)}{rate}{last}"

    def _check_slow(self, seconds: float) -> None:
        """One warning when a CPU step (the second, after warm-up) takes more than SLOW_STEP_S."""
        if self.device_type != "cpu" or seconds <= SLOW_STEP_S:
            return
        from nas_prune.loop import RunWarning

        self._warned = True
        left = format_duration(seconds * (self.total - self.step_no))
        shape = ", ".join(x for x in (f"batch {self.batch_size}" if self.batch_size else "",
                                      f"crop {self.crop_size}x{self.crop_size}" if self.crop_size else "") if x)
        warnings.warn(
            f"{self.label}: one step takes {seconds:.1f} s on this CPU ({shape}), about {left} for the "
            f"{self.total - self.step_no} steps left; train on a GPU (device cuda), or lower the crop size, "
            "the batch size or the epochs",
            RunWarning, stacklevel=2,
        )

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            from nas_prune.pipes import emit

            emit(line, stream=sys.stderr)


def shown_losses(values: Mapping[str, Any], *, ka_taps: Mapping[str, int] | None = None) -> dict[str, float]:
    """The losses worth showing while training: GAN, reconstruction (GauGAN: feature matching, VGG), distillation terms.

    A GCKA term's value is ``-sum of KA over its taps``; it is shown as ``ka``, the mean
    kernel alignment of teacher and student features over the taps (1 = the same
    features up to rotation and scale, 0 = unrelated), which reads better than ``-3.6``.
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        if key in ("d", "d_a", "d_b", "g_gan", "recon", "cycle", "idt", "g_feat", "g_vgg"):
            out[key] = float(value)
        elif key.startswith("kd_"):
            name = key[3:]
            if ka_taps and name in ka_taps and ka_taps[name]:
                out["ka" if name == "gcka" else f"{name}_ka"] = -float(value) / ka_taps[name]
            else:
                out[name] = float(value)
    return out
