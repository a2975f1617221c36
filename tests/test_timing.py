"""Round-robin timing: every timed pass is of a model that has had the machine to itself."""

from nas_prune.timing import MAX_SETTLE_PASSES, SETTLE_MS, round_robin


class SpinningMachine:
    """A made-up machine on which a model's pass costs ``spin_ms`` more while the previous
    model's worker threads still spin (for ``spin_for_ms`` after that model's last pass)."""

    def __init__(self, costs: dict[str, float], *, spin_ms=10.0, spin_for_ms=30.0):
        self.now_ms = 0.0
        self.costs, self.spin_ms, self.spin_for_ms = costs, spin_ms, spin_for_ms
        self.last = None  # (model, time its last pass ended)
        self.passes = {k: 0 for k in costs}

    def clock(self):
        return self.now_ms / 1000.0

    def run(self, key):
        def one():
            ms = self.costs[key]
            if self.last and self.last[0] != key and self.now_ms - self.last[1] < self.spin_for_ms:
                ms += self.spin_ms
            self.now_ms += ms
            self.passes[key] += 1
            self.last = (key, self.now_ms)
        return one


def test_timed_passes_do_not_pay_for_the_previous_model():
    costs = {"teacher": 400.0, "student": 16.0, "tiny": 2.0}
    m = SpinningMachine(costs)
    samples = round_robin({k: m.run(k) for k in costs}, repeats=5, warmup=1, clock=m.clock)
    assert {k: {round(s, 6) for s in v} for k, v in samples.items()} == {k: {v} for k, v in costs.items()}
    # timing one pass of each per round, on the same machine, charges the spin to every pass
    strict = SpinningMachine(costs)
    runs = {k: strict.run(k) for k in costs}
    for _ in range(3):
        for key, run in runs.items():
            t0 = strict.clock()
            run()
            assert round((strict.clock() - t0) * 1000, 6) == costs[key] + 10.0 or strict.passes[key] == 1


def test_settling_lasts_settle_ms_and_at_least_one_pass():
    m = SpinningMachine({"a": 400.0, "b": 16.0}, spin_ms=0.0)
    round_robin({k: m.run(k) for k in m.costs}, repeats=4, warmup=2, clock=m.clock)
    settle_b = -(-SETTLE_MS // 16.0)  # passes of 16 ms adding up to SETTLE_MS
    assert m.passes["a"] == 2 + 4 * (1 + 1)  # warm-up, then one settling pass (400 ms > SETTLE_MS) + one timed
    assert m.passes["b"] == 2 + 4 * (settle_b + 1)


def test_one_model_is_timed_without_settling_and_a_still_clock_cannot_hang():
    m = SpinningMachine({"only": 5.0})
    samples = round_robin({"only": m.run("only")}, repeats=7, warmup=3, clock=m.clock)
    assert len(samples["only"]) == 7 and m.passes["only"] == 10
    calls = {"a": 0, "b": 0}

    def counter(k):
        def one():
            calls[k] += 1
        return one

    out = round_robin({k: counter(k) for k in calls}, repeats=2, warmup=0, clock=lambda: 0.0)
    assert out == {"a": [0.0, 0.0], "b": [0.0, 0.0]}
    assert calls == {"a": 2 * (MAX_SETTLE_PASSES + 1), "b": 2 * (MAX_SETTLE_PASSES + 1)}
