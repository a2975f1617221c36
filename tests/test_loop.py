"""Shared training-loop helpers and the CLI's one-line warnings."""

from __future__ import annotations

import warnings

import pytest

from nas_prune.cli.common import user_errors
from nas_prune.loop import lr_factor, warn_interrupted


def test_lr_schedule_constant_then_linear_to_zero():
    got = [lr_factor(s, steps_const=2, steps_decay=4) for s in range(7)]
    assert got == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor(10, steps_const=2, steps_decay=0) == 1.0


def test_cli_shows_library_warnings_on_one_line(capsys, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with user_errors():
            warn_interrupted(7, tmp_path)
            warnings.warn_explicit("from elsewhere", UserWarning, "/elsewhere/lib.py", 3)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: interrupted at step 7: checkpoint written to {tmp_path / 'checkpoints' / 'last.pt'}\n")
    assert "from elsewhere" not in err  # other libraries' warnings go to the usual handler
    with pytest.warns(UserWarning, match="interrupted at step 3"):  # outside the CLI: a normal warning
        warn_interrupted(3, tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with user_errors():
            pass
        warnings.warn("after")
    assert [str(w.message) for w in seen] == ["after"]  # the CLI's formatter is restored
