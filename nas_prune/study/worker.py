"""One worker of a study: opens (or joins) the study and runs trials until it has enough."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
import zlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas_prune.errors import NasPruneError
from nas_prune.macs import format_macs
from nas_prune.study.liveness import _Heartbeat, _pid_alive
from nas_prune.study.variables import scaled_scores

if TYPE_CHECKING:  # pragma: no cover
    import optuna

CONFIG_ATTR = "nas_prune"


def _widths_key(widths: Mapping[str, int], layers: Sequence[Any]) -> str:
    return ",".join(str(int(widths[l.name])) for l in layers)


class _Study:
    """State of one worker: teacher, base scores, probe, storage; :meth:`run` is the loop."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    # -- setup ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that makes two runs' scores comparable; stored in the study."""
        return json.loads(json.dumps({
            "version": 1,
            "teacher_sha256": self.teacher.sha256,
            "target_macs": self.target,
            "convention": self.convention,
            "input_size": list(self.size),
            "min_channels": self.min_channels,
            "round_to": self.round_to,
            "fill": self.fill,
            "criterion": self.criterion,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "multiplier_range": list(self.multiplier_range),
            "score": str(self.spec),
            "quality_metric": self.quality_metric,
            "objectives": list(self.objectives),
            "score_size": list(self.score_size),
            "calibration": self.calibration,
        }))

    def open_study(self) -> "optuna.Study":
        import optuna

        directions = ["maximize"] + (["minimize"] if "latency" in self.objectives else [])
        config = self.config()
        with self.store.lock():
            try:
                study = optuna.create_study(
                    storage=self.store.storage, study_name=self.study_name, directions=directions
                )
                study.enqueue_trial({g: 1.0 for g in self.groups}, user_attrs={"one_step": True})
                study.set_user_attr(CONFIG_ATTR, config)
                self.say(f"study {self.study_name!r} created in {self.store.url}")
                return study
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=self.study_name, storage=self.store.storage)
        deadline = time.monotonic() + 60
        while CONFIG_ATTR not in study.user_attrs:  # its creator is still setting it up
            if time.monotonic() > deadline:
                raise NasPruneError(
                    f"study {self.study_name!r} in {self.store.url} was not created by nas-prune "
                    "search: choose another --study-name"
                )
            time.sleep(0.5)
        stored = study.user_attrs[CONFIG_ATTR]
        for key, value in config.items():
            if stored.get(key) != value:
                old = stored.get(key)
                raise NasPruneError(
                    f"study {self.study_name!r} in {self.store.url} was created with {key} = "
                    f"{_short(old)}, this run has {_short(value)}: use the same options or another --study-name"
                )
        if [d.name.lower() for d in study.directions] != directions:
            raise NasPruneError(f"study {self.study_name!r}: its objectives differ from --objectives")
        return study

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        low, high = self.multiplier_range
        return {g: FloatDistribution(low, high, log=True) for g in self.groups}

    def sampler(self, n_existing: int):
        import optuna

        seed = None if self.seed is None else self.seed + n_existing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if len(self.objectives) == 2:
                pop = max(4, min(50, self.n_trials // 5))
                return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True,
                n_startup_trials=max(1, min(10, self.n_trials // 3)),
            )

    # -- the worker loop ------------------------------------------------------------------

    def recover_stale(self, study: "optuna.Study") -> None:
        """Fail running trials whose worker is gone and queue their parameters again.

        Optuna's heartbeat check first (RDB storages); then trials of a dead pid on this
        host (at once), trials without heartbeat for ``grace_s`` on a journal storage, and
        trials whose worker died before recording anything.
        """
        from optuna.trial import TrialState

        self.store.fail_stale(study)
        now = time.time()
        host = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            start = t.datetime_start.timestamp() if t.datetime_start else now
            if worker is not None and worker.get("host") == host and worker.get("pid") != os.getpid() \
                    and not _pid_alive(int(worker.get("pid", -1))):
                why = "its worker died"
            elif worker is None and now - start > self.store.grace_s:
                why = f"its worker stopped before it began, {now - start:.0f} s ago"
            elif not self.store.heartbeat_enabled and now - t.user_attrs.get("heartbeat", start) > self.store.grace_s:
                why = f"no heartbeat for {now - t.user_attrs.get('heartbeat', start):.0f} s"
            else:
                continue
            self.store.fail_and_retry(study, t.number, why=why)

    def run(self, study: "optuna.Study") -> None:
        from optuna.trial import TrialState

        finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
        distributions = self.distributions()
        announced = waiting = False
        while True:
            trial = None
            with self.store.lock():
                self.recover_stale(study)
                trials = study.get_trials(deepcopy=False)
                finished = sum(t.state in finished_states for t in trials)
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if not announced:
                    announced = True
                    if running:
                        self.say(f"joining: {finished} of {self.n_trials} trials finished, {len(running)} "
                                 "running on other workers")
                    elif finished:
                        self.say(f"resuming: {finished} of {self.n_trials} trials already finished")
                if finished >= self.n_trials:
                    return
                if finished + len(running) < self.n_trials:
                    study.sampler = self.sampler(len(trials))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        trial = study.ask(distributions)
                    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
                    self.store.beat(trial)
            if trial is None:  # other workers run the last trials; wait for them (or their death)
                if not waiting:
                    waiting = True
                    self.say(self.elsewhere(finished, running))
                time.sleep(self.poll_s)
                continue
            waiting = False
            earlier = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            if sum(t.number < trial.number for t in earlier) >= self.n_trials:
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            self.run_trial(study, trial)

    def elsewhere(self, finished: int, running: Sequence[Any]) -> str:
        """What a worker with nothing left to start says while others run the last trials."""
        where = []
        for t in running:
            w = t.user_attrs.get("worker") or {}
            where.append(f"trial {t.number} on {w.get('host', '?')} (pid {w.get('pid', '?')})")
        return (f"{finished} of {self.n_trials} trials finished; the study is still running elsewhere: "
                f"{', '.join(where) or 'trials starting'}. Waiting for them, so that every worker exports "
                "the same pick (stopping now loses nothing: re-run this command to export later)")

    def run_trial(self, study: "optuna.Study", trial: "optuna.trial.Trial") -> None:
        import optuna
        from optuna.trial import TrialState

        try:
            with _Heartbeat(trial, self.store):
                values = self.evaluate(study, trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            self.ran.append(trial.number)
            return
        except BaseException as err:
            with contextlib.suppress(Exception):
                if isinstance(err, KeyboardInterrupt):
                    # the candidate itself is fine: queue it again for the next run
                    self.store.fail_and_retry(study, trial.number, why="stopped by the user")
                else:
                    study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, values)
        self.ran.append(trial.number)

    # -- one trial ------------------------------------------------------------------------

    def evaluate(self, study: "optuna.Study", trial: "optuna.trial.Trial") -> list[float]:
        import optuna
        import torch

        from nas_prune.apply import build_student
        from nas_prune.macs import count_macs, count_params
        from nas_prune.plan import plan_for_target

        params = dict(trial.params)
        plan = plan_for_target(
            scaled_scores(self.scores, self.groups, params), self.teacher.arch,
            target_macs=self.target, convention=self.convention, input_size=self.size,
            min_channels=self.min_channels, round_to=self.round_to, fill=self.fill,
        )
        student_arch = plan.student_arch()
        macs = count_macs(student_arch, input_size=self.size, convention=self.convention)
        if macs > self.target:  # plan_for_target guarantees it; a failure is a bug
            raise RuntimeError(f"trial {trial.number}: {macs:,} MACs > target {self.target:,}")
        key = _widths_key(plan.widths, self.layers)
        one_step = all(float(v) == 1.0 for v in params.values())
        for name, value in (
            ("widths", key), ("macs", macs), ("params", count_params(student_arch)),
            ("summary", student_arch.summary()), ("one_step", one_step),
        ):
            trial.set_user_attr(name, value)

        hit = self.cached(study, key, trial.number)
        if hit is not None:
            trial.set_user_attr("cached_from", hit.number)
            for name in ("psnr", "gcka", "latency_ms", "latency_device"):
                if name in hit.user_attrs:
                    trial.set_user_attr(name, hit.user_attrs[name])
            self.say(f"trial {trial.number}: same student as trial {hit.number}, score reused")
            if hit.state.name == "PRUNED":
                raise optuna.TrialPruned()
            return list(hit.values)

        student = build_student(plan, self.teacher.state_dict).to(self.device)
        pruned_at = None
        if self.spec.kind == "finetune":
            seed = (self.seed or 0) ^ zlib.crc32(key.encode())
            torch.manual_seed(seed)
            multi = len(self.objectives) > 1

            def report(step: int, fid) -> bool:
                if multi:
                    return False
                trial.report(fid.value(self.quality_metric), step)
                return trial.should_prune()

            fidelity, steps_run = self.finetune(
                student, self.probe, steps=self.spec.steps, train_images=self.train_images,
                on_report=report, seed=seed,
            )
            if steps_run < self.spec.steps:
                pruned_at = steps_run
        else:
            fidelity = self.probe.score(student)
        trial.set_user_attr("psnr", fidelity.psnr)
        trial.set_user_attr("gcka", fidelity.gcka)
        trial.set_user_attr("evaluated", True)
        self.evaluated.append(trial.number)
        if pruned_at is not None:
            trial.set_user_attr("pruned_at_step", pruned_at)
            self.say(f"trial {trial.number}: pruned at step {pruned_at} ({fidelity.psnr:.2f} dB)")
            raise optuna.TrialPruned()
        values = [fidelity.value(self.quality_metric)]
        lat_text = ""
        if "latency" in self.objectives:
            lat = self.latency(student)
            trial.set_user_attr("latency_ms", lat.median_ms)
            trial.set_user_attr("latency_device", lat.device)
            values.append(lat.median_ms)
            lat_text = f", {lat.median_ms:.1f} ms"
        self.say(
            f"trial {trial.number}{' (one-step)' if one_step else ''}: {fidelity.psnr:.2f} dB PSNR, "
            f"GCKA {fidelity.gcka:.4f}{lat_text}, {format_macs(macs, self.convention)}"
        )
        return values

    def latency(self, model):
        return self.measure_latency(
            model, input_size=self.latency_size, device=self.device,
            threads=self.latency_threads, repeats=self.latency_repeats, runtime=self.latency_runtime,
        )

    def cached(self, study: "optuna.Study", key: str, number: int):
        """A finished trial with the same widths, waiting for an earlier running one if any."""
        from optuna.trial import TrialState

        while True:
            trials = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            same = [t for t in trials if t.number != number and t.user_attrs.get("widths") == key]
            done = [t for t in same if t.state != TrialState.RUNNING and t.user_attrs.get("evaluated")]
            if done:
                return min(done, key=lambda t: t.number)
            if not any(t.state == TrialState.RUNNING and t.number < number for t in same):
                return None
            time.sleep(self.poll_s)  # an earlier trial is scoring this student right now
            with self.store.lock():
                self.recover_stale(study)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
