"""Checkpoints of a distillation run: ``checkpoints/last.pt`` holds everything a step depends on.

Functions of a running :class:`nas_prune.distill._Run` (``run``): weights, optimiser and AMP
scaler states, the distillation terms' states, the step, RNG states (CPU and CUDA), the
evaluation history and the kept best; read back with ``weights_only=True`` so a resumed run
continues exactly.
"""

from __future__ import annotations

import json

from nas_prune import loop
from nas_prune.distill_config import CHECKPOINT_VERSION
from nas_prune.distill_io import check_same_inputs, data_fingerprint
from nas_prune.errors import NasPruneError
from nas_prune.fileio import loads_json, read_json

__all__ = ["save", "load"]


def save(run) -> None:
    """``checkpoints/last.pt``: everything needed to continue exactly (rank 0 writes)."""
    if not run.is_main:
        return
    state = {
        "version": CHECKPOINT_VERSION,
        "step": run.step,
        "student": run.student.state_dict(),
        "discriminator": run.disc.state_dict(),
        "terms": [t.state_dict() for _, t in run.terms],
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "opt_terms": {str(i): o.state_dict() for i, o in run.opt_terms.items()},
        "scaler": run.scaler.state_dict(),
        **loop.rng_state(),
        "history": json.dumps(run.history),
        "best": json.dumps({"metrics": run.best, "step": run.best_step}),
    }
    loop.atomic_torch_save(state, run.out / loop.CHECKPOINT)


def load(run) -> None:
    """Restore a run from ``checkpoints/last.pt`` after checking it belongs to this run."""
    state = loop.load_checkpoint(run.out, version=CHECKPOINT_VERSION)
    info = read_json(run.out / "config.json", what="run config")
    if not isinstance(info, dict):
        raise NasPruneError(f"{run.out / 'config.json'}: expected a JSON object")
    if info.get("student_arch") != run.student_arch.to_dict():
        raise NasPruneError(f"resume: the student architecture differs from the one of the run in {run.out}")
    if info.get("world_size", 1) != run.world:
        raise NasPruneError(f"resume: the run used {info.get('world_size')} processes, now {run.world}; data order would change")
    check_same_inputs(info, teacher_sha=run.teacher_sha, data=data_fingerprint(run), out=run.out)
    run.student.load_state_dict(state["student"])
    run.disc.load_state_dict(state["discriminator"])
    if len(state["terms"]) != len(run.terms):
        raise NasPruneError("resume: the distillation methods differ from the saved run")
    for sd, (_, t) in zip(state["terms"], run.terms):
        t.load_state_dict(sd)
    run.opt_g.load_state_dict(state["opt_g"])
    run.opt_d.load_state_dict(state["opt_d"])
    for i, o in run.opt_terms.items():
        o.load_state_dict(state["opt_terms"][str(i)])
    if state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    loop.set_rng_state(state)
    run.step = int(state["step"])
    run.history = loads_json(str(state["history"]), source=f"{run.out / loop.CHECKPOINT} history")
    best = loads_json(str(state["best"]), source=f"{run.out / loop.CHECKPOINT} best")
    run.best, run.best_step = best["metrics"], best["step"]
