"""How many CPU threads torch uses: ``--threads N``, ``OMP_NUM_THREADS``, or the cores actually free.

PyTorch's CPU kernels run each op on an OpenMP team of ``torch.get_num_threads()``
threads (default: one per core). When other processes keep the cores busy, one thread
of the team waits for a core while the others spin at the end of every op: on a loaded
2-core machine a training step of the demo teacher used about 10x the CPU time and
10x the wall time with 2 threads than with 1 (``results/demo/README.md``). So the
number of threads is chosen, not inherited.

The rule (``threads: auto``, the default of the commands and of recipes):

1. ``--threads N`` (a recipe's ``threads: N``) wins; then ``OMP_NUM_THREADS`` if set. Either is
   capped at the usable cores (below), and the thread line says so: more threads than cores only
   wait for each other (``--threads 1000`` on 2 cores made a step 46 s long).
2. Otherwise ``usable = cores this process may run on`` (``os.sched_getaffinity``,
   capped by a cgroup CPU quota), ``busy = cores used by other processes`` (measured
   over 0.3 s from ``/proc/stat`` minus this process's own CPU time; the 1-minute
   load average where ``/proc/stat`` does not exist), and
   ``threads = max(1, round(usable - busy - workers))`` where ``workers`` are the
   data-loader processes of a training stage (they need cores of their own).
3. During training the measurement is repeated every 20 s and the thread count
   follows it (a line says so), so a job that starts beside the run, or ends, is
   taken into account.

Thread count changes floating-point summation order, so runs with different thread
counts differ in the last digits, and training amplifies that. ``auto`` adapts to the
load, so two runs are only comparable bit for bit when they pin the same count
(``--threads N`` / ``threads: N``) on the same kind of CPU and torch build.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from nas_prune.errors import NasPruneError

__all__ = ["ThreadChoice", "parse_threads", "usable_cores", "busy_cores", "cpu_sample", "others_busy", "choose_threads", "use_threads",
           "recheck", "RECHECK_SECONDS"]

RECHECK_SECONDS = 20.0
SAMPLE_SECONDS = 0.3


def parse_threads(value: int | str | None, *, where: str = "threads") -> int | str | None:
    """``"auto"`` / None / a positive int (or its string) -> ``"auto"``, None or the int.

    Raises:
        NasPruneError: anything else, naming ``where``.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, bool):
        raise NasPruneError(f"{where}: expected a number of threads >= 1 or auto, got {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise NasPruneError(f"{where}: expected a number of threads >= 1 or auto, got {value!r}") from None
    if n < 1 or (isinstance(value, float) and value != n):
        raise NasPruneError(f"{where}: expected a number of threads >= 1 or auto, got {value!r}")
    return n


def _cgroup_quota() -> float | None:
    """CPU quota of this cgroup in cores (``cpu.max`` v2 or ``cfs_quota_us`` v1), None if unlimited."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii").read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota (>= 1)."""
    cpus = _affinity()
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _cpu_jiffies(cpus: set[int] | None) -> int | None:
    """Busy jiffies (user, nice, system, irq, softirq, steal) summed over ``cpus`` from ``/proc/stat``."""
    try:
        lines = open("/proc/stat", encoding="ascii").read().splitlines()
    except OSError:
        return None
    total, seen = 0, False
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
        except ValueError:
            continue
        if cpus is not None and index not in cpus:
            continue
        v = [int(x) for x in rest.split()]
        total += v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
        seen = True
    return total if seen else None


def _own_jiffies() -> int | None:
    """CPU jiffies (user + system) of this process, all its threads."""
    try:
        text = open("/proc/self/stat", encoding="ascii").read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class _Sample:
    """A reading of the machine's and this process's CPU counters."""

    at: float
    machine: int | None
    own: int | None

    @classmethod
    def now(cls) -> "_Sample":
        return cls(time.monotonic(), _cpu_jiffies(_affinity()), _own_jiffies())


def _busy_between(a: _Sample, b: _Sample) -> float | None:
    """Cores used by other processes between two samples (None without ``/proc``)."""
    if None in (a.machine, b.machine, a.own, b.own) or b.at <= a.at:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = (b.machine - a.machine) - (b.own - a.own)  # type: ignore[operator]
    return max(0.0, others / hz / (b.at - a.at))


def cpu_sample() -> _Sample:
    """A reading of the machine's and this process's CPU counters, for :func:`others_busy`."""
    return _Sample.now()


def others_busy(since: _Sample) -> float | None:
    """Cores other processes kept busy on average since ``since`` (this process's threads
    excluded; None without ``/proc``). Benchmarks report it: unlike the load average it does
    not count the benchmark's own threads."""
    return _busy_between(since, _Sample.now())


def busy_cores(*, seconds: float = SAMPLE_SECONDS) -> float:
    """Cores kept busy by other processes right now (sampled over ``seconds``).

    Falls back to the 1-minute load average (which includes this process's recent
    work) where ``/proc/stat`` does not exist, and to 0 where neither does.
    """
    a = _Sample.now()
    time.sleep(seconds)
    busy = _busy_between(a, _Sample.now())
    if busy is not None:
        return busy
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


@dataclass
class ThreadChoice:
    """The thread count chosen for a stage and why.

    Attributes:
        threads: torch intra-op threads.
        source: ``set`` (an explicit count: ``--threads N`` or a recipe's ``threads: N``),
            ``OMP_NUM_THREADS`` or ``auto``.
        cores: usable cores; busy: cores used by other processes (auto only);
        workers: data-loader processes counted against the cores (auto only).
        changes: ``(step, threads)`` when auto changed the count during training.
        asked: the count asked for when it was more than the usable cores (then capped), else None.
    """

    threads: int
    source: str
    cores: int
    busy: float | None = None
    workers: int = 0
    changes: list[tuple[int | None, int]] = field(default_factory=list)
    asked: int | None = None

    def describe(self) -> str:
        """One line, e.g. ``1 thread (auto: 2 cores, 1.0 busy with other processes)``."""
        n = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        where = "as set" if self.source == "set" else self.source
        if self.asked is not None:
            return (f"{n} ({where} to {self.asked}, capped at the {self.cores} cores this process may use: "
                    "more threads than cores only wait for each other)")
        if self.source == "set":
            return f"{n} (as set)"
        if self.source != "auto":
            return f"{n} ({self.source})"
        extra = f", {self.workers} for data loading" if self.workers else ""
        return f"{n} (auto: {self.cores} cores, {self.busy:.1f} busy with other processes{extra})"

    def to_json(self) -> dict:
        out = {"threads": self.threads, "source": self.source, "cores": self.cores}
        if self.asked is not None:
            out["asked"] = self.asked
        if self.busy is not None:
            out["busy_cores"] = round(self.busy, 2)
        if self.workers:
            out["workers"] = self.workers
        if self.changes:
            out["changes"] = [{"step": s, "threads": t} for s, t in self.changes]
        return out


def _auto_count(cores: int, busy: float, workers: int) -> int:
    return max(1, min(cores, int(math.floor(cores - busy - workers + 0.5))))


def choose_threads(spec: int | str | None = "auto", *, workers: int = 0) -> ThreadChoice:
    """Apply the module's rule (see the module docstring) without changing anything.

    Args:
        spec: a count, ``"auto"`` or None (= auto).
        workers: data-loader worker processes the stage will start.
    """
    spec = parse_threads(spec)
    cores = usable_cores()

    def capped(n: int, source: str) -> ThreadChoice:
        return ThreadChoice(min(n, cores), source, cores, asked=n if n > cores else None)

    if isinstance(spec, int):
        return capped(spec, "set")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return capped(n, "OMP_NUM_THREADS")
    workers = max(0, min(workers, cores - 1))
    busy = busy_cores()
    return ThreadChoice(_auto_count(cores, busy, workers), "auto", cores, busy, workers)


class _Policy:
    """The active choice: :func:`recheck` says it once (if deferred) and, for ``auto``, follows the load."""

    def __init__(self, choice: ThreadChoice, log: Callable[[str], None] | None, pending: str | None):
        self.choice = choice
        self.log = log
        self.pending = pending
        self.last = _Sample.now()

    def recheck(self, step: int | None) -> None:
        if self.pending is not None:
            if self.log is not None:
                self.log(self.pending)
            self.pending = None
        if self.choice.source != "auto" or time.monotonic() - self.last.at < RECHECK_SECONDS:
            return
        now = _Sample.now()
        busy = _busy_between(self.last, now)
        self.last = now
        if busy is None:
            return
        c = self.choice
        # worker processes are other processes here: their CPU time is in `busy` already
        want = _auto_count(c.cores, busy, 0)
        if want != c.threads:
            import torch

            if self.log is not None:
                self.log(f"threads: {c.threads} -> {want} (other processes now use {busy:.1f} of {c.cores} cores)")
            c.threads, c.busy = want, busy
            c.changes.append((step, want))
            torch.set_num_threads(want)


_ACTIVE: list[_Policy] = []


def recheck(step: int | None = None) -> None:
    """Called after every training step: says a deferred thread choice once, and every 20 s
    re-measures the load and adjusts an ``auto`` thread count.

    Does nothing outside :func:`use_threads` (the library alone leaves torch's thread
    count as it is).
    """
    if _ACTIVE:
        _ACTIVE[-1].recheck(step)


@contextlib.contextmanager
def use_threads(spec: int | str | None, *, workers: int = 0, log: Callable[[str], None] | None = None,
                announce: str = "now") -> Iterator[ThreadChoice | None]:
    """Run a block with the chosen torch thread count; the previous count is restored after.

    ``spec`` None leaves torch's setting alone (yields None); ``"auto"`` or a count
    chooses as :func:`choose_threads` does and says so through ``log`` (``announce``
    ``"now"``, or ``"training"``: at the first training step, so commands that stop
    on bad input or train nothing print no thread line); with ``auto``,
    :func:`recheck` adjusts the count while the block runs.
    """
    if spec is None:
        yield None
        return
    import torch

    choice = choose_threads(spec, workers=workers)
    before = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    line = f"torch threads: {choice.describe()}"
    if log is not None and announce == "now":
        log(line)
    policy = _Policy(choice, log, line if announce == "training" else None)
    _ACTIVE.append(policy)
    try:
        yield choice
    finally:
        _ACTIVE.remove(policy)
        torch.set_num_threads(before)
