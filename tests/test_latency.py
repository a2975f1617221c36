"""Latency-target pruning: duration parsing, runtimes, latency tables (cache key and
invalidation), the predictor's monotonicity, the search meeting its targets, the
shrink-and-re-measure loop, --round-to auto. Timings come from a fake runtime whose
clock a forward pass advances by a made-up cost, so nothing here depends on the speed
of the machine running the tests."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize_
from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.errors import NasPruneError
from nas_prune.export import read_student
from nas_prune.latency.runtime import Runtime, measure_latency, parse_latency
from nas_prune.latency.table import (
    LatencyModel,
    LatencyTable,
    UnitGrids,
    arch_widths,
    cache_dir,
    latency_model,
    table_key,
    table_path,
)
from nas_prune.macs import count_macs
from nas_prune.model import build_generator
from nas_prune.plan import arch_from_widths, prunable_layers
from nas_prune.search import search

runner = CliRunner()
TEACHER = Arch(input_nc=3, output_nc=3, stem=(16, 16, 16), head=(16, 16),
               blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 3)
SIZE = (32, 32)


_FAKE_MS: dict = {}


def fake_ms(module, x, penalty: int | None = None) -> float:
    """Made-up cost of one pass: 0.01 ms + 0.001 ms per conv or norm call + 1 ns per MAC
    (convs only, channels counted in blocks of 8 above 8, as CPU kernels run them); with ``penalty``, a conv whose output channels are not a multiple of it
    costs 3x (as real CPU kernels are slower at odd widths). Memoised by module structure."""
    key = (repr(module), tuple(tuple(p.shape) for p in module.parameters()), tuple(x.shape), penalty)
    if key not in _FAKE_MS:
        _FAKE_MS[key] = _fake_ms(module, x, penalty)
    return _FAKE_MS[key]


def blocked(c: int) -> int:
    """Channels as a blocked CPU kernel computes them: above 8, up to the next multiple of 8."""
    return c if c <= 8 else -(-c // 8) * 8


def _fake_ms(module, x, penalty):
    total = [0.01]

    def hook(mod, inputs, out):
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            pixels = (inputs[0] if isinstance(mod, torch.nn.ConvTranspose2d) else out).shape[-2:].numel()
            cin, cout = mod.in_channels // mod.groups, mod.out_channels
            k = mod.weight.shape[-1] * mod.weight.shape[-2]
            ms = 0.001 + blocked(cin) * blocked(cout) * k * pixels * x.shape[0] * 1e-6
            cout = mod.out_channels
            total[0] += ms * (3 if penalty and cout % penalty else 1)
        elif isinstance(mod, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)):
            total[0] += 0.001

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


CALIBRATION = 4  # whole generators a search times first to fit the table's scales (TEACHER x1, 1/2, 1/4, no branches)


class FakeRuntime(Runtime):
    """``torch-cpu`` with a deterministic clock (:func:`fake_ms` per pass).

    ``inflate``: factors applied, one per call and in order, to the next whole
    generators prepared (a runtime that over-reports); ``prepared`` counts them.
    """

    def __init__(self, *, threads=1, batch=1, inflate=(), penalty=None, version="fake-1"):
        super().__init__("torch-cpu", threads=threads, batch=batch)
        self.channel_block = 8  # as fake_ms counts channels
        self.now, self.inflate, self.penalty, self.version = 0.0, list(inflate), penalty, version
        self.prepared = 0

    def device(self):
        return f"fake cpu ({self.threads} threads)"

    def versions(self):
        return {"torch": self.version}

    def clock(self):
        return self.now

    busy = 0.0  # cores other processes keep busy: a fake machine's load is made up too

    def busy_cores(self):
        return self.busy

    def load_meter(self):
        return lambda: self.busy

    def prepare(self, module, example):
        ms = fake_ms(module, example, self.penalty)
        if hasattr(module, "arch"):
            self.prepared += 1
            if self.inflate:
                ms *= self.inflate.pop(0)

        def run():
            self.now += ms / 1000.0

        return run


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "tiny_G.pth"
    torch.save(randomize_(build_generator(TEACHER), 3).state_dict(), path)
    return path


def fake_ms_of(arch: Arch, batch: int = 1) -> float:
    return fake_ms(build_generator(arch), torch.zeros(batch, arch.input_nc, *SIZE))


def run_search(teacher_file, tmp_path, rt, **kw):
    opts = dict(teacher=teacher_file, input_size=32, min_channels=4, out=tmp_path / "out",
                latency_cache=tmp_path / "cache", runtime=rt)
    opts.update(kw)
    return search(**opts)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- parsing, runtimes


@pytest.mark.parametrize("text, ms", [("40ms", 40.0), ("0.04s", 40.0), ("40000us", 40.0), (" 2.5 ms ", 2.5),
                                      ("1e-2s", 10.0)])
def test_parse_latency(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text, message", [
    ("40", "give a unit"), (40, "give a unit"), ("40kg", "unknown unit 'kg'"), ("-5ms", "positive"),
    ("0ms", "positive"), ("fast", "expected a duration"), ("", "expected a duration"), ("nanms", "expected"),
])
def test_parse_latency_errors(text, message):
    with pytest.raises(NasPruneError, match=message):
        parse_latency(text)


def test_unavailable_runtimes_are_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NasPruneError, match="runtime cuda: CUDA is not available here"):
        Runtime("cuda")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(NasPruneError, match=r"needs the onnx extra: pip install 'nas-prune\[onnx\]'"):
        Runtime("onnxruntime")
    with pytest.raises(NasPruneError, match="unknown runtime 'tpu'"):
        Runtime("tpu")
    with pytest.raises(NasPruneError, match="--threads must be >= 1"):
        Runtime("torch-cpu", threads=0)


def test_measure_latency_on_onnxruntime_and_torch():
    """Real clocks: every timed pass is one forward pass, the samples fit inside the wall time of
    the call, the median is theirs, and torch runs the network exactly warmup + repeats times."""
    import statistics
    import time

    net = build_generator(TEACHER).eval()
    calls = []
    hook = net.register_forward_hook(lambda *_: calls.append(time.perf_counter()))
    try:
        for name in ("torch-cpu", "onnxruntime"):
            calls.clear()
            t0 = time.perf_counter()
            lat = measure_latency(net, input_size=SIZE, runtime=name, threads=1, warmup=2, repeats=5)
            wall_ms = (time.perf_counter() - t0) * 1000.0
            assert lat.runtime == name and lat.threads == 1 and lat.warmup == 2 and len(lat.samples_ms) == 5
            assert lat.input_shape == (1, 3, 32, 32) and "1 threads" in lat.device
            assert all(s > 0 for s in lat.samples_ms)
            assert sum(lat.samples_ms) < wall_ms  # timed passes are part of the call, warm-up excluded
            assert lat.median_ms == statistics.median(lat.samples_ms)
            assert lat.min_ms <= lat.median_ms <= lat.max_ms
            if name == "torch-cpu":
                assert len(calls) == 2 + 5  # each timed sample is one pass of this very network
                # a sample spans one pass, not two: it lies between the ends of two consecutive
                # passes, give or take the return from the pass after its forward hook (a garbage
                # collection or a preempted thread there adds a fraction of a pass, never a whole one)
                gaps = [(b - a) * 1000.0 for a, b in zip(calls[2:], calls[3:])]
                assert all(s <= 1.25 * g + 0.05 for s, g in zip(lat.samples_ms[1:], gaps)), (lat.samples_ms, gaps)
    finally:
        hook.remove()


# ----------------------------------------------------------------------------- the table


def test_table_key_changes_with_everything_a_latency_depends_on(tmp_path):
    base = table_key(FakeRuntime(), SIZE)
    other_cpu = FakeRuntime()
    other_cpu.device = lambda: "fake cpu of another model (1 threads)"
    onnx = FakeRuntime()
    onnx.name = "onnxruntime"
    variants = [table_key(FakeRuntime(threads=2), SIZE), table_key(FakeRuntime(batch=4), SIZE),
                table_key(FakeRuntime(), (64, 64)), table_key(FakeRuntime(version="fake-2"), SIZE),
                table_key(other_cpu, SIZE), table_key(onnx, SIZE)]
    paths = {table_path(k, tmp_path) for k in [base, *variants]}
    assert len(paths) == 7  # a file per key: threads, batch, input size, versions, device, runtime
    assert table_path(base, tmp_path) == table_path(table_key(FakeRuntime(), SIZE), tmp_path)


def test_cache_dir_default_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("NAS_PRUNE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "nas-prune"
    monkeypatch.setenv("NAS_PRUNE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "opt") == tmp_path / "opt"


def test_table_is_measured_once_then_read_from_cache(tmp_path):
    rt = FakeRuntime()
    model, table, cal = latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    n_units = len(UnitGrids(TEACHER, input_size=SIZE, min_channels=4).units())
    assert table.measured_now == n_units and table.path.exists()
    assert rt.prepared == 4  # calibration: widths x1, x1/2, x1/4 (x1/8 hits the floors again), no branches
    rt2 = FakeRuntime()
    model2, table2, _ = latency_model(TEACHER, rt2, input_size=SIZE, min_channels=4, directory=tmp_path)
    assert table2.measured_now == 0  # no unit timed again
    assert rt2.prepared == 4  # only the four calibration generators, fitted to fresh times
    assert model2.predict(TEACHER) == pytest.approx(model.predict(TEACHER))
    rt2b = FakeRuntime()
    latency_model(TEACHER, rt2b, input_size=SIZE, min_channels=4, directory=tmp_path, spot_check=False)
    assert rt2b.prepared == 0  # without the spot check nothing at all is timed
    # Another thread count is another key: measured again, in another file.
    _, table3, _ = latency_model(TEACHER, FakeRuntime(threads=2), input_size=SIZE, min_channels=4,
                                 directory=tmp_path)
    assert table3.measured_now == n_units and table3.path != table.path
    # A lower floor needs a few more units only.
    _, table4, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=2, directory=tmp_path)
    assert 0 < table4.measured_now < n_units


def test_table_invalidation(tmp_path):
    rt = FakeRuntime()
    _, table, _ = latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    doc = json.loads(table.path.read_text())
    doc["key"]["threads"] = 99  # a file that claims another key is not trusted
    table.path.write_text(json.dumps(doc))
    assert LatencyTable.open(rt, SIZE, directory=tmp_path).units == {}
    table.path.write_text("{not json")  # a damaged file is rebuilt, not an error
    _, again, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    assert again.measured_now == len(again.units) > 0
    assert json.loads(again.path.read_text())["key"] == table_key(rt, SIZE)
    _, refreshed, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4,
                                    directory=tmp_path, refresh=True)
    assert refreshed.measured_now == len(refreshed.units)


def test_predictor_is_calibrated_to_end_to_end_times(tmp_path):
    model, _, cal = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    assert cal.scale_ends > 0 and cal.scale_blocks > 0 and cal.worst_error < 0.01
    rng = random.Random(0)
    for _ in range(5):  # students between grid points too
        widths = {l.name: rng.randint(1 if l.kind in ("stem", "head") else 0, l.width)
                  for l in prunable_layers(TEACHER)}
        widths.update({f"stem.{i}": max(4, widths[f"stem.{i}"]) for i in range(3)})
        widths.update({f"head.{i}": max(4, widths[f"head.{i}"]) for i in range(2)})
        student = arch_from_widths(TEACHER, widths)
        assert model(widths) == pytest.approx(fake_ms_of(student), rel=0.05)


def test_calibration_fits_the_scale_with_the_fixed_part_given():
    from nas_prune.latency.table import fit_calibration

    # Two parts, each with its own factor: recovered exactly from exact data.
    points = [(e, k, 0.5 + 0.8 * e + 1.3 * k) for e, k in ((5.0, 0.0), (6.0, 20.0), (8.0, 90.0), (10.0, 400.0))]
    cal = fit_calibration(points, fixed=0.5)
    assert (cal.scale_ends, cal.scale_blocks) == (pytest.approx(0.8), pytest.approx(1.3))
    assert cal.fixed == 0.5 and cal.worst_error < 1e-9
    # Relative errors: a 10% miss on the smallest generator weighs as much as one on the teacher;
    # parts that cannot be told apart get one common factor.
    cal = fit_calibration([(1.0, 0.0, 1.1), (100.0, 0.0, 100.0)], fixed=0.0)
    assert cal.scale_ends == cal.scale_blocks and 1.0 < cal.scale_ends < 1.1 and cal.worst_error < 0.1


@pytest.mark.parametrize("block", [1, 8])
def test_predictor_is_monotone_in_every_width_even_from_noisy_tables(block):
    teacher = Arch(input_nc=3, output_nc=3, stem=(8, 16, 24), head=(16, 8),
                   blocks=(Block(res=(0, 6, 3), dw=(5, 0, 13)),) * 2)
    grids = UnitGrids(teacher, input_size=SIZE, min_channels=2)
    rng = np.random.default_rng(0)
    costs = {u.signature: float(rng.uniform(0, 1)) for u in grids.units()}  # not monotone at all
    model = LatencyModel(grids, costs, fixed=0.3, scale_ends=1.7, scale_blocks=0.6, block=block)
    layers = prunable_layers(teacher)
    r = random.Random(1)
    for _ in range(200):
        widths = {l.name: r.randint(2 if l.has_floor else 0, l.width) for l in layers}
        layer = r.choice(layers)
        if widths[layer.name] == layer.width:
            continue
        bigger = dict(widths, **{layer.name: widths[layer.name] + 1})
        assert model(bigger) >= model(widths)
    # On grid points of a table that is already monotone, the model is the plain sum of units.
    mono = {u.signature: float(sum(u.widths)) for u in grids.units()}
    exact = LatencyModel(grids, mono)
    w = arch_widths(teacher)
    expected = (8 + 8 + 16 + 16 + 24 + 24 + 16 + 16 + 8 + 8
                + 2 * sum(24 + m for m in (6, 3, 5, 13)) + 2 * (24 + 3 * 24))
    assert exact(w) == pytest.approx(expected)
    # With blocks of 8, a width above 8 costs what the next multiple of 8 does (capped at the teacher's).
    from nas_prune.latency.table import effective_width

    assert [effective_width(w, 42, 8) for w in (1, 5, 8, 9, 16, 17, 41, 42)] == [1, 5, 8, 16, 16, 24, 42, 42]
    blocked = LatencyModel(grids, mono, block=8)
    narrower = dict(w, **{"blocks.0.dw.2": 9})
    assert blocked(narrower) == blocked(dict(w, **{"blocks.0.dw.2": 13})) > exact(narrower)


# ----------------------------------------------------------------------------- the search


def test_search_meets_a_latency_target(teacher_file, tmp_path):
    teacher_ms = fake_ms_of(TEACHER)
    target = teacher_ms * 0.5
    result = run_search(teacher_file, tmp_path, FakeRuntime(), target_latency=f"{target:.6f}ms")
    rep = result.latency
    assert rep.measured_ms <= target
    assert rep.measured_ms == pytest.approx(fake_ms_of(result.student_arch))
    assert rep.predicted_ms == pytest.approx(rep.measured_ms, rel=0.02)
    assert len(rep.measured.samples_ms) == 20 and len(rep.attempts) == 1
    assert rep.measured_ms > target * 0.8  # the largest student under the target, not any small one
    assert result.target_macs is None
    _, _, doc = read_student(tmp_path / "out")
    lat = doc["latency"]
    assert lat["runtime"] == "torch-cpu" and lat["device"] == "fake cpu (1 threads)" and lat["threads"] == 1
    assert lat["measured_ms"] == pytest.approx(rep.measured_ms, abs=1e-3)
    assert lat["measured"]["runs"] == 20 and lat["measured"]["warmup"] >= 1  # median of 20 after warm-up
    assert lat["predicted_ms"] == pytest.approx(rep.predicted_ms, abs=1e-3)
    assert doc["provenance"]["target"] == {"macs": None, "convention": "fvcore", "latency_ms": pytest.approx(target)}


def test_search_meets_both_targets(teacher_file, tmp_path):
    teacher_ms, teacher_macs = fake_ms_of(TEACHER), count_macs(TEACHER, input_size=32)
    # Latency is the binding limit here, then MACs.
    for macs_frac, ms_frac in ((0.8, 0.4), (0.3, 0.9)):
        target_macs, target_ms = int(teacher_macs * macs_frac), teacher_ms * ms_frac
        result = run_search(teacher_file, tmp_path, FakeRuntime(), target_macs=target_macs,
                            target_latency=f"{target_ms:.6f}ms", force=True)
        assert result.macs["fvcore"] <= target_macs
        assert result.latency.measured_ms <= target_ms
        only_macs = run_search(teacher_file, tmp_path, FakeRuntime(), target_macs=target_macs, write=False)
        if ms_frac < 0.5:
            assert result.macs["fvcore"] < only_macs.macs["fvcore"]  # latency cut deeper
            assert result.latency.why is None and result.latency.measured_ms >= 0.9 * target_ms
        else:
            assert result.student_arch == only_macs.student_arch  # MACs alone decided
            assert result.latency.why.endswith("--target-macs is the binding limit")
    assert result.to_json()["target"] == {"macs": target_macs, "convention": "fvcore",
                                          "latency_ms": pytest.approx(target_ms)}


def test_student_measured_over_the_target_is_shrunk_and_measured_again(teacher_file, tmp_path):
    target = fake_ms_of(TEACHER) * 0.5
    run_search(teacher_file, tmp_path, FakeRuntime(), target_latency=f"{target:.6f}ms", write=False)  # table
    # the four calibration generators of the fresh fit first, then the first end-to-end
    # measurement of a student over-reports by 30%
    rt = FakeRuntime(inflate=[1.0] * CALIBRATION + [1.3])
    result = run_search(teacher_file, tmp_path, rt, target_latency=f"{target:.6f}ms", write=False)
    first, second, *rest = result.latency.attempts
    assert first["measured_ms"] > target >= result.latency.measured_ms >= 0.9 * target
    assert second["budget_ms"] < first["predicted_ms"] and second["macs"] < first["macs"]
    assert all(a["measured_ms"] <= target for a in [second, *rest])
    assert f"{len(result.latency.attempts)} candidates measured (1 over the target)" in result.latency.summary()
    assert result.latency.why is None
    # A runtime that always over-reports ends in a clear error after max_shrinks.
    with pytest.raises(NasPruneError, match="still measures .* after 8 shrinks|no smaller student"):
        run_search(teacher_file, tmp_path, FakeRuntime(inflate=[1.0] * CALIBRATION + [3.0] * 20),
                   target_latency=f"{target:.6f}ms", write=False)


def test_a_student_measured_well_under_the_target_is_grown(teacher_file, tmp_path):
    target = fake_ms_of(TEACHER) * 0.5
    run_search(teacher_file, tmp_path, FakeRuntime(), target_latency=f"{target:.6f}ms", write=False)  # table
    # the calibration generators as the table predicts, students 20% faster
    rt = FakeRuntime(inflate=[1.0] * CALIBRATION + [0.8] * 20)
    result = run_search(teacher_file, tmp_path, rt, target_latency=f"{target:.6f}ms", write=False)
    first, second, *_ = result.latency.attempts
    assert first["measured_ms"] < 0.9 * target
    assert second["budget_ms"] > first["predicted_ms"] and second["macs"] > first["macs"]  # grown, not shrunk
    assert 0.9 * target <= result.latency.measured_ms <= target and result.latency.why is None
    doc = result.latency.to_json()
    assert doc["used"] == pytest.approx(result.latency.measured_ms / target, abs=1e-4) and doc["why"] is None


def test_the_report_says_why_a_student_does_not_use_the_budget(teacher_file, tmp_path):
    """A runtime whose students all measure far below their prediction except one size: the
    search cannot reach 0.9 x target without going over, and says so."""
    target = fake_ms_of(TEACHER) * 0.5
    run_search(teacher_file, tmp_path, FakeRuntime(), target_latency=f"{target:.6f}ms", write=False)

    class Cliff(FakeRuntime):  # every student below half the teacher's MACs runs at 50%, any larger one at 200%
        def prepare(self, module, example):
            if hasattr(module, "arch"):
                frac = count_macs(module.arch, input_size=32) / count_macs(TEACHER, input_size=32)
                self.inflate = [0.5 if frac < 0.5 else 2.0]
            return super().prepare(module, example)

    result = run_search(teacher_file, tmp_path, Cliff(), target_latency=f"{target:.6f}ms", write=False)
    rep = result.latency
    assert rep.measured_ms <= target and rep.measured_ms < 0.9 * target
    assert any(a["measured_ms"] > target for a in rep.attempts)  # it tried a larger one
    assert rep.why.startswith(f"uses {rep.measured_ms / target:.0%} of the latency target")
    assert "next larger student" in rep.why or "measured candidates" in rep.why


def test_unreachable_latency_targets(teacher_file, tmp_path):
    rt = FakeRuntime()
    # An unreachable MACs target is an error before any latency table is timed.
    with pytest.raises(NasPruneError, match="below the smallest reachable student"):
        run_search(teacher_file, tmp_path, rt, target_macs=1000, target_latency="1s", write=False)
    assert rt.now == 0 and not (tmp_path / "cache").exists()
    with pytest.raises(NasPruneError, match="below the smallest reachable student"):
        run_search(teacher_file, tmp_path, rt, target_latency="1us", write=False)
    with pytest.raises(NasPruneError, match="the teacher itself is predicted at .* nothing to prune"):
        run_search(teacher_file, tmp_path, rt, target_latency="10s", write=False)


def test_round_to_auto_picks_the_best_speed_per_mac(teacher_file, tmp_path):
    rt = FakeRuntime(penalty=4)  # convs with widths off multiples of 4 run 3x slower
    macs = count_macs(TEACHER, input_size=32) // 2
    result = run_search(teacher_file, tmp_path, rt, target_macs=macs, round_to="auto")
    auto = result.latency.round_to_auto
    rows = {row["round_to"]: row for row in auto["candidates"]}
    assert auto["chosen"] in (4, 8, 16) and result.plan.round_to == auto["chosen"]
    assert rows[auto["chosen"]]["macs_per_ms"] > rows[1]["macs_per_ms"]
    assert all(w % auto["chosen"] == 0 for w in result.student_arch.stem[1:])
    _, _, doc = read_student(tmp_path / "out")
    assert doc["provenance"]["round_to"] == auto["chosen"]
    assert doc["provenance"]["round_to_auto"]["chosen"] == auto["chosen"]
    assert doc["latency"]["target_ms"] is None  # measured and reported, no latency target


def test_threshold_that_keeps_everything_says_whether_rounding_pruned(teacher_file, tmp_path):
    whole = count_macs(TEACHER, input_size=32)
    rounded = run_search(teacher_file, tmp_path, None, target_macs=whole, round_to=8, out=tmp_path / "r")
    assert rounded.plan.threshold is None and rounded.student_arch != TEACHER  # branches of 4 rounded to 0
    assert "threshold -inf (rounding alone prunes)" in (tmp_path / "r" / "summary.md").read_text()
    plain = run_search(teacher_file, tmp_path, None, target_macs=whole, out=tmp_path / "p")
    assert plain.student_arch == TEACHER
    assert "threshold -inf (nothing pruned)" in (tmp_path / "p" / "summary.md").read_text()


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args, message", [
    (["--target-latency", "40"], "give a unit, e.g. 40ms"),
    (["--target-latency", "40 parsecs"], "unknown unit"),
    (["--target-latency", "0ms"], "positive"),
    (["--target-latency", "40ms", "--runtime", "tpu"], "unknown runtime 'tpu'"),
    (["--target-latency", "40ms", "--batch", "0"], "--batch must be >= 1"),
    (["--target-macs", "1M", "--threads", "2"], "--threads and --batch describe a latency measurement"),
    (["--round-to", "many", "--target-macs", "1M"], "--round-to 'many'"),
    ([], "give --target-macs, --target-latency or both"),
])
def test_cli_bad_latency_options(teacher_file, tmp_path, args, message):
    out = tmp_path / "never"
    result = invoke("search", "--teacher", teacher_file, "--input-size", "32", "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_cuda_unavailable_is_one_line(teacher_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("search", "--teacher", teacher_file, "--target-latency", "40ms", "--runtime", "cuda",
                    "--out", tmp_path / "x")
    assert result.exit_code == 2 and "runtime cuda: CUDA is not available" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_latency_search_on_torch_cpu(teacher_file, tmp_path):
    """The real runtime end to end on a tiny teacher: a loose target (tiny generators are
    all per-call overhead), the table cached in --latency-cache, both numbers printed."""
    cache = tmp_path / "cache"
    teacher_ms = measure_latency(build_generator(TEACHER), input_size=SIZE, threads=1, repeats=20).median_ms
    result = invoke("search", "--teacher", teacher_file, "--input-size", "32", "--min-channels", "4",
                    "--target-macs", str(count_macs(TEACHER, input_size=32) // 2),
                    "--target-latency", f"{teacher_ms * 3:.3f}ms", "--runtime", "torch-cpu", "--threads", "1",
                    "--latency-cache", cache, "--out", tmp_path / "s", "--allow-busy")  # CI machines are shared
    assert result.exit_code == 0, result.output
    assert "measured (median of 20" in result.output and "predicted" in result.output
    files = list((cache / "latency").glob("torch-cpu-*.json"))
    assert files
    cond = json.loads(files[0].read_text())["conditions"]
    assert cond["busy_cores"] is not None and cond["allow_busy"] == (cond["busy_cores"] >= 0.5)
    _, _, doc = read_student(tmp_path / "s")
    assert doc["latency"]["threads"] == 1 and doc["latency"]["predicted_ms"] > 0


def test_study_latency_objective_uses_the_same_measurement(teacher_file, tmp_path):
    from nas_prune.study import run_study

    macs = count_macs(TEACHER, input_size=32) // 2
    common = dict(teacher=teacher_file, target_macs=macs, input_size=32, min_channels=4, calib_images=4,
                  device="cpu", out=tmp_path / "study")
    result = run_study(trials=2, objectives="quality,latency", latency_runtime=FakeRuntime(), **common)
    names = [layer.name for layer in prunable_layers(TEACHER)]
    for record in result.trials:
        widths = dict(zip(names, map(int, record.widths.split(","))))
        assert record.latency_ms == pytest.approx(fake_ms_of(arch_from_widths(TEACHER, widths)))
    with pytest.raises(NasPruneError, match="add --objectives quality,latency"):
        run_study(trials=2, latency_runtime="torch-cpu", **common)


def test_profile_prints_measured_latency_beside_macs(teacher_file):
    result = invoke("profile", teacher_file, "--input-size", "32", "--latency", "--runtime", "onnxruntime",
                    "--threads", "1", "--repeats", "3")
    assert result.exit_code == 0, result.output
    assert "latency:" in result.output and "onnxruntime" in result.output and "MACs (fvcore)" in result.output
    report = json.loads(invoke("profile", teacher_file, "--input-size", "32", "--runtime", "torch-cpu",
                               "--threads", "1", "--repeats", "3", "--json").stdout)
    assert report["latency"]["runtime"] == "torch-cpu" and report["latency"]["runs"] == 3
    bad = invoke("profile", teacher_file, "--threads", "2")
    assert bad.exit_code == 2 and "add --latency" in bad.output


def test_a_family_without_latency_units_takes_latency_targets(tmp_path):
    """A U-Net has no per-layer table: the end-to-end model (fixed + scale * MACs), calibrated on
    whole generators, predicts; the student is measured under the target."""
    from nas_prune.families.unet.arch import teacher_arch
    from nas_prune.latency.table import MacsGrids, unit_grids

    teacher = teacher_arch(ngf=8, num_downs=5)
    path = tmp_path / "unet.pth"
    torch.save(randomize_(build_generator(teacher), 5).state_dict(), path)
    assert isinstance(unit_grids(teacher, input_size=SIZE, min_channels=4), MacsGrids)
    teacher_ms = fake_ms_of(teacher)
    target = 0.5 * teacher_ms
    result = run_search(path, tmp_path, FakeRuntime(), target_latency=f"{target:.6f}ms")
    assert result.student_arch.family == "unet"
    assert result.latency.measured_ms <= target
    assert result.latency.measured_ms > 0.5 * target  # it uses the budget, not any small student
    assert result.macs["fvcore"] < count_macs(teacher, input_size=32)


# ----------------------------------------------------------------------------- trust: load, busy, spot checks


class ScaledRuntime(FakeRuntime):
    """A fake machine that became ``factor`` times slower (or faster) since the table was built."""

    def __init__(self, factor, **kw):
        super().__init__(**kw)
        self.factor = factor

    def prepare(self, module, example):
        run = super().prepare(module, example)

        def scaled():
            t = self.now
            run()
            self.now = t + (self.now - t) * self.factor

        return scaled


def test_table_is_not_built_on_a_busy_machine_unless_forced(tmp_path):
    busy = FakeRuntime()
    busy.busy = 1.3
    with pytest.raises(NasPruneError, match=r"latency table not built: other processes keep 1\.3 cores busy "
                                            r"\(limit 0\.5\).*pass --allow-busy"):
        latency_model(TEACHER, busy, input_size=SIZE, min_channels=4, directory=tmp_path)
    assert not list(tmp_path.rglob("*.json"))  # nothing measured, nothing cached
    _, table, _ = latency_model(TEACHER, busy, input_size=SIZE, min_channels=4, directory=tmp_path, allow_busy=True)
    doc = json.loads(table.path.read_text())
    assert doc["conditions"]["allow_busy"] is True and doc["conditions"]["busy_cores"] == 1.3
    assert set(doc["unit_load"]) == set(doc["units"]) and set(doc["unit_load"].values()) == {1.3}
    assert set(doc["calibration_load"].values()) == {1.3}
    # on a quiet machine the table records that too, per entry
    _, quiet, _ = latency_model(TEACHER, FakeRuntime(threads=2), input_size=SIZE, min_channels=4, directory=tmp_path)
    qdoc = json.loads(quiet.path.read_text())
    assert qdoc["conditions"]["busy_cores"] == 0.0 and qdoc["conditions"]["allow_busy"] is False
    assert set(qdoc["unit_load"].values()) == {0.0}


def test_load_arriving_while_building_stops_it_and_keeps_the_quiet_entries(tmp_path, monkeypatch):
    import nas_prune.latency.trust as trust

    rt = FakeRuntime()
    calls = [0]
    real_time = rt.time

    def time_then_get_busy(*a, **k):
        calls[0] += 1
        if calls[0] == 40:
            rt.busy = 2.0  # another process starts
        return real_time(*a, **k)

    rt.time = time_then_get_busy
    ticks = iter(range(10**6))
    monkeypatch.setattr(trust.time, "perf_counter", lambda: next(ticks) * 0.1)  # a load window every 20 units
    with pytest.raises(NasPruneError, match="latency table building stopped: other processes keep 2.0 cores busy"):
        latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    doc = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert 0 < len(doc["units"]) < 40 and set(doc["unit_load"].values()) == {0.0}  # the busy stretch was dropped


def test_spot_check_keeps_a_table_that_still_holds(tmp_path):
    latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    rt = FakeRuntime()
    _, table, _ = latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    check = table.spot_check_now
    assert check["action"] == "ok" and len(check["checked"]) == 4 and table.measured_now == 0
    assert all(abs(c["off"]) < 1e-9 for c in check["checked"])
    assert rt.prepared == 4  # the entries hold; the scales are fitted to fresh end-to-end times all the same
    costs = sorted(table.units.values(), reverse=True)
    assert check["checked"][0]["cached_ms"] == pytest.approx(costs[0], abs=1e-5)  # the costliest entry first


def test_spot_check_re_measures_a_whole_table_from_another_machine_state(tmp_path):
    _, old, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    n = len(old.units)
    # the machine is now 1.5x slower at everything (say the table was built with a faster clock)
    slow = ScaledRuntime(1.5)
    model, table, _ = latency_model(TEACHER, slow, input_size=SIZE, min_channels=4, directory=tmp_path)
    check = table.spot_check_now
    # each entry at least 50% off (more: the per-call overhead subtracted from it was the old one)
    assert check["action"].startswith("table re-measured") and all(c["off"] >= 0.49 for c in check["checked"])
    assert table.measured_now == n and slow.prepared == 4  # every entry and the calibration again
    assert model.predict(TEACHER) == pytest.approx(1.5 * fake_ms_of(TEACHER), rel=0.05)
    assert json.loads(table.path.read_text())["spot_checks"][-1]["action"].startswith("table re-measured")


def test_spot_check_re_measures_only_the_entries_that_are_off(tmp_path):
    _, table, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    doc = json.loads(table.path.read_text())
    top = max(doc["units"], key=doc["units"].get)
    true_cost = doc["units"][top]
    doc["units"][top] = true_cost * 1.4  # one entry measured during a hiccup, 40% too slow
    table.path.write_text(json.dumps(doc))
    rt = FakeRuntime()
    _, again, _ = latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    check = again.spot_check_now
    assert check["action"] == "re-measured 1 entries"
    assert [c["unit"] for c in check["checked"] if abs(c["off"]) > 0.15] == [top]
    assert again.units[top] == pytest.approx(true_cost, rel=1e-6) and again.measured_now == 0
    assert rt.prepared == 4  # the scales are fitted again to fresh end-to-end times


def test_a_machine_that_drifted_within_the_tolerance_is_predicted_at_its_speed_now(tmp_path):
    """Whole generators now run 12% slower while every layer timed alone still holds (the spot
    check finds nothing off): the scales are fitted to fresh end-to-end times, so the prediction
    follows the machine instead of the calibration cached with the table."""

    class SlowerWhole(FakeRuntime):
        def prepare(self, module, example):
            run = super().prepare(module, example)
            if not hasattr(module, "arch"):
                return run

            def slower():
                t = self.now
                run()
                self.now = t + (self.now - t) * 1.12

            return slower

    model0, _, _ = latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    rt = SlowerWhole()
    model, table, cal = latency_model(TEACHER, rt, input_size=SIZE, min_channels=4, directory=tmp_path)
    assert table.spot_check_now["action"] == "ok" and table.measured_now == 0
    assert model.predict(TEACHER) == pytest.approx(1.12 * model0.predict(TEACHER), rel=0.01)
    assert cal.worst_error < 0.05


def test_spot_check_is_skipped_on_a_busy_machine(tmp_path):
    latency_model(TEACHER, FakeRuntime(), input_size=SIZE, min_channels=4, directory=tmp_path)
    slow = ScaledRuntime(1.5)
    slow.busy = 1.0
    _, table, _ = latency_model(TEACHER, slow, input_size=SIZE, min_channels=4, directory=tmp_path)
    assert table.spot_check_now["action"].startswith("skipped: other processes keep 1.0 cores busy")
    assert table.measured_now == 0 and slow.prepared == 0  # the quiet table is used as it is


# ----------------------------------------------------------------------------- runtimes of the phone formats


def _runtime_or_skip(name):
    try:
        return Runtime(name, threads=1)
    except NasPruneError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("name", ["openvino", "ncnn", "onnxruntime-int8",
                                  pytest.param("executorch", marks=pytest.mark.slow),  # two lowerings: ~30 s
                                  pytest.param("executorch-int8", marks=pytest.mark.slow), "tflite", "tflite-int8"])
def test_each_deployment_runtime_times_table_units_and_generators(name):
    """What a latency table and a target measure on each runtime: a unit module and a whole
    generator, converted as export converts them, timed through the same Runtime.time."""
    from nas_prune.latency.table import build_unit

    rt = _runtime_or_skip(name)
    grids = UnitGrids(TEACHER, input_size=SIZE, min_channels=4)
    unit = grids.unit("res3", (16, 4))
    mod, shape = build_unit(TEACHER, unit)
    samples = rt.time(mod, shape, warmup=1, repeats=3)
    assert len(samples) == 3 and all(s > 0 for s in samples)
    lat = measure_latency(build_generator(TEACHER), input_size=SIZE, runtime=rt, repeats=3, warmup=1)
    assert lat.runtime == name and lat.median_ms > 0 and lat.threads == 1
    assert set(rt.versions()) > {"torch"}  # the runtime's own library versions key its tables


def test_deployment_runtimes_missing_extra_is_one_line(monkeypatch):
    import nas_prune.latency.backends as backends

    monkeypatch.setitem(backends._NEEDS, "ncnn", (("ncnn_not_installed_here",), "ncnn"))
    with pytest.raises(NasPruneError, match=r"runtime ncnn needs the ncnn extra \(ncnn_not_installed_here not "
                                            r"installed\): pip install 'nas-prune\[ncnn\]'"):
        Runtime("ncnn")


def test_profile_latency_on_a_deployment_runtime(teacher_file):
    _runtime_or_skip("openvino")
    report = json.loads(invoke("profile", teacher_file, "--input-size", "32", "--runtime", "openvino",
                               "--threads", "1", "--repeats", "3", "--json").stdout)
    assert report["latency"]["runtime"] == "openvino" and report["latency"]["runs"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["openvino", "onnxruntime-int8", "ncnn"])
def test_cli_latency_search_on_deployment_runtimes(teacher_file, tmp_path, name):
    """search --target-latency --runtime R end to end on the real runtime (a table of ~100
    converted modules: slow)."""
    _runtime_or_skip(name)
    teacher_ms = measure_latency(build_generator(TEACHER), input_size=SIZE, threads=1, repeats=10,
                                 runtime=name).median_ms
    result = invoke("search", "--teacher", teacher_file, "--input-size", "32", "--min-channels", "4",
                    "--target-latency", f"{teacher_ms * 0.8:.3f}ms", "--runtime", name, "--threads", "1",
                    "--latency-cache", tmp_path / "cache", "--out", tmp_path / "s", "--allow-busy")
    assert result.exit_code == 0, result.output
    _, _, doc = read_student(tmp_path / "s")
    assert doc["latency"]["runtime"] == name and doc["latency"]["measured_ms"] <= teacher_ms * 0.8
