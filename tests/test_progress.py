"""Training progress: plain lines off a terminal, one final line, the slow-CPU-step warning, KA shown."""

from __future__ import annotations

import warnings

import pytest

from nas_prune import progress as prog
from nas_prune.loop import RunWarning


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(prog.time, "perf_counter", lambda: now["t"])
    return now


def _run(clock, step_seconds, *, total=10, device="cpu", enabled=True, start=0, stop=None):
    p = prog.TrainProgress(label="distill", total=total, start=start, steps_per_epoch=4, enabled=enabled,
                           log_every=5, device_type=device, batch_size=80, crop_size=256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with p:
            for step in range(start + 1, (stop or total) + 1):
                clock["t"] += step_seconds
                p.update(step, images=80, shown={"d": 0.5, "ka": 0.91})
    return p, [str(w.message) for w in caught if issubclass(w.category, RunWarning)]


def test_lines_off_a_terminal_and_one_final_line(clock, capsys):
    _run(clock, 2.0)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "distill: step 1/10, ep 0.2/2.5, 40.0 img/s, 0:18 left; d 0.5 ka 0.91"
    assert err[1].startswith("distill: step 5/10, ep 1.2/2.5, 40.0 img/s, 0:10 left;")
    assert err[-1] == "distill: 10 steps (2.5 epochs) in 0:20, 40.0 images/s; last d 0.5 ka 0.91"
    assert len(err) == 4  # steps 1, 5, 10 and the final line


def test_stopped_and_resumed_runs_say_so(clock, capsys):
    p, _ = _run(clock, 1.0, start=4, stop=6)
    assert p.final_line() == "distill: stopped at step 6 of 10, 2 of them now in 0:02, 80.0 images/s; last d 0.5 ka 0.91"


def test_disabled_prints_nothing(clock, capsys):
    _run(clock, 1.0, enabled=False)
    assert capsys.readouterr().err == ""


def test_slow_cpu_step_warns_once_with_what_to_change(clock, capsys):
    _, said = _run(clock, 12.0, enabled=False)
    assert len(said) == 1
    assert said[0] == ("distill: one step takes 12.0 s on this CPU (batch 80, crop 256x256), about 1:36 for the "
                       "8 steps left; train on a GPU (device cuda), or lower the crop size, the batch size or the epochs")
    assert _run(clock, 12.0, device="cuda")[1] == []
    assert _run(clock, prog.SLOW_STEP_S - 0.5)[1] == []


def test_gcka_is_shown_as_kernel_alignment():
    values = {"d": 0.5, "g_gan": 1.0, "recon": 0.1, "kd_gcka": -3.6, "kd_crd": 0.2, "g_total": 9.0, "lr": 2e-4}
    shown = prog.shown_losses(values, ka_taps={"gcka": 4})
    assert shown == {"d": 0.5, "g_gan": 1.0, "recon": 0.1, "ka": pytest.approx(0.9), "crd": 0.2}


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (75, "1:15"), (3725, "1:02:05")])
def test_format_duration(seconds, text):
    assert prog.format_duration(seconds) == text


def test_losses_say_which_step_they_come_from(clock, capsys):
    """A GPU loop reads its losses on log steps only: between them they are labelled with their step."""
    p = prog.TrainProgress(label="distill", total=120, start=0, steps_per_epoch=40, log_every=50)
    with p:
        for step in range(1, 61):
            clock["t"] += 1.0
            p.update(step, images=4, shown={"d": 0.5} if step in (1, 50) else None)
            if step == 20:
                assert p.losses_text() == "at step 1: d 0.5"
    assert p.losses_text() == "at step 50: d 0.5"
    assert p.final_line().endswith("; losses at step 50: d 0.5")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("left; d 0.5") and err[1].startswith("distill: step 50/120") and err[1].endswith("; d 0.5")


def test_one_epoch_is_singular(clock, capsys):
    p, _ = _run(clock, 1.0, total=4)
    assert p.final_line().startswith("distill: 4 steps (1 epoch) in")
    assert prog.plural(1, "step") == "1 step" and prog.plural(2.5, "epoch") == "2.5 epochs"


def test_the_bar_keeps_steps_and_time_left_at_80_columns(clock, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(prog.sys, "stderr", Terminal())
    monkeypatch.setenv("COLUMNS", "80")
    long = {f"loss_{i}": 0.123456 for i in range(12)}
    p = prog.TrainProgress(label="distill", total=40000, start=0, steps_per_epoch=400, log_every=50)
    with p:
        for step in range(1, 3):
            clock["t"] += 1.0
            p.update(step, images=16, shown=long if step == 1 else None)
        bar = p._bar
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(bar.make_tasks_table(bar.tasks))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    text = lines[0]
    assert text.startswith("distill" + " " * (prog.BAR_WIDTH + 1))  # the bar keeps its width (no colour: blank)
    assert "2/40000" in text and "ep 0.0/100" in text and "16.0 img/s" in text
    assert "at step 1: loss_" in text and text.rstrip().endswith("…")  # the losses are cut, nothing else
    assert any(part.count(":") == 2 for part in text.split())  # the time left, h:mm:ss
