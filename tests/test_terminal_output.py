"""Output that survives a terminal: help text, tables at 80 columns and in a pipe, quiet exports."""

from __future__ import annotations

import warnings

import pytest


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_prints_no_torch_warnings(tmp_path, fmt):
    from nas_prune.arch import Arch, Block
    from nas_prune.deploy import export_generator
    from nas_prune.model import build_generator

    arch = Arch(input_nc=3, output_nc=3, stem=(4, 8, 8), blocks=(Block(res=(4,), dw=(4,)),), head=(8, 4),
                res_kernel_sizes=(3,), dw_kernel_sizes=(3,), norm="instance", affine=False, padding="reflect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # torch.jit's own deprecation (hidden outside __main__ by Python's default filters) is a
        # choice a user can act on: --format onnx
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        res = export_generator(build_generator(arch), out=tmp_path, format=fmt, input_size=16)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    assert len(res.checked) == 2  # the second input, of another batch and size, is what vouches for the trace
    assert [str(w.message) for w in caught] == []


def _help(*args):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_keeps_bracketed_defaults_and_no_bool_labels():
    text = _help("distill")
    flat = " ".join(text.split())
    assert "or none [gcka]." in flat
    assert "[stem + blocks at 1/3, 2/3, 3/3]" in flat
    assert "--log-every" in text and "--threads" in text
    assert "<bool>" not in text
    assert "--no-flip " in text and "No random horizontal flips." in text
    assert "[default: runs/distill]" in flat
    for command in ("profile", "search", "run", "validate", "evaluate", "export", "train-teacher"):
        assert "<bool>" not in _help(command), command


def test_usage_lines_name_the_arguments():
    assert _help("run").splitlines()[0] == "Usage: nas-prune run [OPTIONS] RECIPE"
    assert _help("validate").splitlines()[0] == "Usage: nas-prune validate [OPTIONS] RECIPE"
    assert _help("evaluate").splitlines()[0] == "Usage: nas-prune evaluate [OPTIONS] MODEL..."
    models = _help("evaluate").split("Arguments:")[1].split("Options:")[0]
    assert models.split()[0] == "MODEL..." and "<" not in models  # no "MODEL <list[str]>"
    recipe = " ".join(_help("run").split("Arguments:")[1].split("Options:")[0].split())
    assert recipe.startswith("RECIPE A YAML file") and "horse2zebra" in recipe and "cityscapes_gaugan" in recipe
    for command in ("run", "distill", "evaluate", "export", "train-teacher"):
        assert "--threads N|auto" in _help(command), command
    top = _help()
    assert all(len(line) <= 80 for line in top.splitlines())
    assert "..." not in top.split("Commands:")[1]  # no command summary cut short


def _console(width=80):
    import io

    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=False), buf


def test_study_table_fits_80_columns_without_cut_cells():
    from types import SimpleNamespace as NS

    from nas_prune.study import render_study

    def rec(number, psnr, ms, one_step=False):
        return NS(number=number, psnr=psnr, gcka=0.9961, latency_ms=ms, macs=2_599_123_456, params_count=1_234_567,
                  summary="stem 16/64/144 | 9 blocks | head 112/16", one_step=one_step, state="COMPLETE")

    front = [rec(12, 24.31, 31.4), rec(0, 24.55, 54.8, one_step=True)]
    result = NS(convention="paper", objectives=("quality", "latency"), study_name="latest_net_G_A-2.6G-paper",
                trials=front, front=front, one_step=front[1], pick=0, notes=[], picked=front[0],
                storage="sqlite:///runs/x/study.db", student_dir="runs/x", plot=None, retried=[])
    con, buf = _console()
    render_study(result, con)
    text = buf.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    for cell in ("24.31", "0.9961", "31.4", "2.599G", "1,234,567", "one-step", "exported", "MACs: paper"):
        assert cell in text, cell


def test_search_and_profile_tables_fit_80_columns(tmp_path):
    from nas_prune.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["profile", "cat_inception", "--per-layer"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "features.0.res_ops.0.1.0" in result.output


def test_missing_tensorboard_is_said_once(monkeypatch, tmp_path):
    import sys
    from types import SimpleNamespace

    from nas_prune import distill_io
    from nas_prune.loop import RunWarning

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(distill_io, "_SAID_NO_TENSORBOARD", False)
    run = SimpleNamespace(out=tmp_path, step=0, resume=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert distill_io.open_tensorboard(run) is None
        assert distill_io.open_tensorboard(run) is None
    said = [str(w.message) for w in caught if issubclass(w.category, RunWarning)]
    assert said == ["TensorBoard is not installed, so no tb/ scalars are written (log.jsonl has them); "
                    "pip install tensorboard to get them"]


def test_output_in_a_pipe_is_not_rewrapped_and_has_no_trailing_spaces(monkeypatch):
    import io

    from nas_prune.cli.common import console
    from nas_prune.tables import new_table, num_column, text_column

    piped = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stdout", piped)
    monkeypatch.setenv("COLUMNS", "80")
    out = console()
    long = "checked data: " + ", ".join(f"image_{i:03d}.png" for i in range(20))
    out.print(long, highlight=False)
    table = new_table(title="t")
    text_column(table, "stage")
    num_column(table, "seconds")
    table.add_row("distill", "1.5")
    table.add_row("a-much-longer-stage-name", "12.25")
    out.print(table)
    lines = piped.getvalue().splitlines()
    assert lines[0] == long and len(long) > 80  # one line, as printed
    assert all(line == line.rstrip() for line in lines), lines
    assert any("a-much-longer-stage-name" in line and "12.25" in line for line in lines)


def test_a_wide_table_in_a_pipe_keeps_each_row_on_one_line(monkeypatch):
    """Piped, a table wider than 80 columns is not folded to 80 (a row greps as one line)."""
    import io

    from nas_prune.cli.common import console
    from nas_prune.tables import new_table, num_column, text_column

    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    monkeypatch.setenv("COLUMNS", "80")
    table = new_table(title="student")
    for header in ("layer", "teacher", "student"):
        text_column(table, header)
    num_column(table, "MACs")
    cells = ("block 1", "res k1:2 k3:2 k5:2, dw k1:2 k3:2 k5:2", "res k1:2 k3:2 k5:1, dw k1:1 k3:2 k5:1")
    table.add_row(*cells, "128.576K")
    console().print(table)
    lines = piped.getvalue().splitlines()
    row = [line for line in lines if line.startswith("block 1")]
    assert len(row) == 1 and all(c in row[0] for c in cells) and row[0].endswith("128.576K"), lines
    assert len(row[0]) > 80 and len(lines) == 4  # title, header, rule, the row: nothing folded
    assert all(line == line.rstrip() for line in lines)


def test_safe_stream_mutes_a_reader_that_went_away():
    from nas_prune.pipes import SafeStream, emit

    class Gone:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    s = SafeStream(Gone())
    assert s.write("a line\n") == 7 and s.gone
    s.flush()  # nothing raised, nothing written
    assert emit("x", stream=Gone()) is False

    class Other:
        def write(self, text):
            raise OSError(28, "No space left on device")  # not a reader that went away: raised

        def flush(self):
            pass

    with pytest.raises(OSError):
        SafeStream(Other()).write("x\n")
