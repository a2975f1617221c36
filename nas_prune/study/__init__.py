"""Optuna search around the one-step solution, at the same MACs budget.

One-step pruning (CAT) keeps every channel whose importance score passes one global
threshold. A study reshapes that ranking: each trial multiplies the scores of whole
groups of layers by factors Optuna proposes, then runs the exact threshold search
and fill pass of :func:`nas_prune.plan.plan_for_target` on the rescaled scores, so
**every candidate meets the MACs target** (none is rejected for its budget). Each
candidate is sliced from the teacher and scored (:mod:`nas_prune.scores`).

Search variables (one multiplier per group, log-uniform in ``multiplier_range``,
default [0.5, 2], both ends included):

=============  ==============================================================
``stem``       ``stem.0``, ``stem.1`` (the 7x7 conv and the first stride-2 conv)
``stream``     ``stem.2``: its channels are the residual stream every block reads
               and writes, so it drives the cost of every block
``head``       ``head.0``, ``head.1`` (the ConvTransposes)
``res_kK``     every block's res branch of kernel size K (one group per size)
``dw_kK``      every block's dw branch of kernel size K (one group per size)
``early``      the branches of the first third of the blocks (``numpy.array_split``
``middle``     of the block indices in three; empty thirds, e.g. with 2 blocks,
``late``       have no variable)
=============  ==============================================================

A branch's scores are multiplied by its kernel-size group's and its depth group's
factors; stem and head layers by their group's. Importance scores are >= 0 (|gamma|,
normalised L1, mean activation), so a factor above 1 moves a group's channels up the
global ranking. Because a factor scales a whole layer, the order of channels inside
a layer never changes: equal width vectors are equal students (same kept indices),
and a candidate is scored once (the ``widths`` user attribute is the cache key; the
cache lives in the study, so resumed runs and other workers use it too). Trial 0 is
the one-step solution: all factors 1 (enqueued when the study is created).

Objectives: ``quality`` (maximised; PSNR in dB of the student's output against the
teacher's on calibration images, or mean GCKA with ``quality_metric="gcka"``) and
optionally ``latency`` (minimised; median milliseconds of the student's forward on
the machine that runs the trial). With one objective the sampler is TPE (and
``finetune:`` scores use Optuna's MedianPruner: trial pruning); with two it is
NSGA-II and the result is the Pareto front. Optuna cannot prune trials of
multi-objective studies, so ``finetune:`` trials then always run all their steps.

Storage: by default ``<out>/study.db`` (SQLite), so re-running the same command
resumes the study. ``storage`` takes any Optuna RDB URL (``sqlite:///path``,
``postgresql://user:pw@host/db``, ``mysql+pymysql://...``) or ``journal:PATH`` (an
Optuna journal file, for shared file systems without a database). Several worker
processes, on one machine or many, can run the same command on one storage:

- ``trials`` counts finished trials (complete or pruned) in the study, over all
  workers and runs. A worker starts a trial only while finished + running trials
  are fewer than ``trials``, and waits while others run the last ones (saying that
  the study is still running elsewhere), so the study ends with exactly ``trials``
  finished trials and every worker exports the same pick. The check and the trial
  creation hold the storage's lock (:mod:`nas_prune.study.storage`: ``flock`` on the
  SQLite or journal file, an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL); on
  other servers a trial created in a race beyond ``trials`` is marked failed with the
  user attribute ``surplus`` before anything runs. Workers may start together on an
  empty database: Optuna's tables are created under the same lock.
- Each running trial records its worker (host, pid) and Optuna's heartbeat (RDB
  storages; a ``heartbeat`` user attribute on journals) every ``min(10, grace_s / 4)``
  s. A trial whose worker died (a dead pid on this host, or no heartbeat for
  ``grace_s`` seconds) is marked failed and Optuna's ``RetryFailedTrialCallback``
  queues its parameters again (at most 3 times), so killing a worker loses no trial
  and re-running never repeats a finished one; :attr:`StudyResult.retried` lists the
  retries.
- SQLite files are opened in WAL mode with ``synchronous=NORMAL`` (readers do not
  block the writer; a killed process loses nothing, a machine crash may lose the
  last commits). Keep them on a local disk; across machines use a database server.
- Workers' samplers are seeded with ``seed`` plus the number of trials that exist
  when they sample, so workers propose different candidates and one worker's run
  is reproducible.

Several machines: ``docs/studies.md``. Inspect a study with
``optuna-dashboard sqlite:///<out>/study.db`` (a separate package); trial user attributes hold the widths, MACs, PSNR, GCKA, latency and the
trial whose score a cached trial reused.

Output folder: a student folder like a one-step result (``arch.json``,
``student.safetensors``, ``summary.md``: the picked trial, exported like a one-step
result, with the trial's parameters and scores under ``provenance.study``; weights
are the teacher's, sliced, also for ``finetune:`` scores), so ``profile``,
``distill --student`` and ``export`` take it as it is; beside them ``study.db``
(default storage), ``trials.csv`` (every trial) and ``pareto.png`` (two objectives;
needs matplotlib, the ``plot`` extra). The folder may hold only this study (same
name and options, resumed); another result there is replaced only with ``force``.
Studies of earlier versions, with the student in ``student/``, are still read.

Example::

    from nas_prune.study import run_study
    result = run_study(teacher="latest_net_G.pth", target_macs="2.6G", convention="paper",
                       trials=40, objectives=("quality", "latency"))
    result.front, result.picked.number, result.out
"""

from nas_prune.study.output import PLOT_FILE, STUDENT_DIR, TRIALS_FILE
from nas_prune.study.records import StudyResult, TrialRecord, pareto_front
from nas_prune.study.render import plot_pareto, render_study
from nas_prune.study.run import run_study
from nas_prune.study.storage import HEARTBEAT_S, STORAGE_FILE, StudyStorage, open_storage
from nas_prune.study.variables import (
    DEFAULT_RANGE,
    OBJECTIVES,
    layer_multipliers,
    parse_objectives,
    scaled_scores,
    search_groups,
    study_requested,
)
from nas_prune.study.worker import CONFIG_ATTR

__all__ = [
    "OBJECTIVES",
    "search_groups",
    "layer_multipliers",
    "scaled_scores",
    "parse_objectives",
    "study_requested",
    "StudyStorage",
    "open_storage",
    "TrialRecord",
    "StudyResult",
    "run_study",
    "pareto_front",
    "plot_pareto",
    "render_study",
]
