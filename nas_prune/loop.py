"""Training-loop machinery shared by :mod:`nas_prune.distill` and :mod:`nas_prune.train_teacher`.

Both loops follow pix2pix/CycleGAN: Adam, a constant learning rate for ``epochs`` epochs
then linear decay to 0 over ``epochs_decay`` epochs (set every step), data order and
augmentation as functions of ``(seed, epoch, index)`` (:class:`nas_prune.data.EpochBatchSampler`),
and a checkpoint ``checkpoints/last.pt`` holding everything a step depends on (weights,
optimiser states, step, RNG states), read back with ``weights_only=True`` so a resumed run
continues exactly. Ctrl-C, SIGTERM or SIGHUP ask the loop to stop after the current step (with a
checkpoint; :mod:`nas_prune.interrupt`).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from nas_prune import threads
from nas_prune.errors import NasPruneError

CHECKPOINT = Path("checkpoints") / "last.pt"


from nas_prune.errors import RunWarning  # noqa: E402,F401  (historical name)


# ----------------------------------------------------------------------------- configs


def config_from_dict(cls, data: Mapping[str, Any], *, where: str):
    """``cls(**data)`` for a config dataclass; an unknown key is an error naming it and ``where``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise NasPruneError(f"{where}: {unknown[0]}: unknown option (known: {', '.join(sorted(known))})")
    return cls(**dict(data))


def config_replace(config, changes: Mapping[str, Any], *, what: str):
    """A copy of the config dataclass with ``changes``; an unknown name is ``"<name>: unknown <what> option"``."""
    known = {f.name for f in fields(config)}
    for k in changes:
        if k not in known:
            raise NasPruneError(f"{k}: unknown {what} option")
    return replace(config, **changes)


# ----------------------------------------------------------------------------- setup


def check_loop_fields(cfg) -> None:
    """Check the options every training config shares (distill, train-teacher).

    Covers direction, d_norm, epochs / epochs_decay, max_steps, lr and betas, workers,
    eval_every / save_every (and grid_every when the config has it), log_every and the
    image transform; each config checks its own fields after this.

    Raises:
        NasPruneError: ``<field>: <problem>`` for the first bad field.
    """
    from nas_prune.data import DIRECTIONS, TransformConfig
    from nas_prune.gan import D_NORMS

    def check(ok: bool, name: str, msg: str) -> None:
        if not ok:
            raise NasPruneError(f"{name}: {msg}")

    check(cfg.direction in DIRECTIONS, "direction", f"{cfg.direction!r} is not one of {', '.join(DIRECTIONS)}")
    check(cfg.d_norm is None or cfg.d_norm in D_NORMS, "d_norm", f"{cfg.d_norm!r} is not one of {', '.join(D_NORMS)}")
    check(cfg.epochs >= 0 and cfg.epochs_decay >= 0 and cfg.epochs + cfg.epochs_decay > 0,
          "epochs", "epochs and epochs_decay must be >= 0 and not both 0")
    check(cfg.max_steps is None or cfg.max_steps >= 1, "max_steps", "must be >= 1")
    check(cfg.lr > 0 and 0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "lr", "lr must be > 0, betas in [0, 1)")
    check(cfg.workers >= 0, "workers", "must be >= 0")
    for name in ("eval_every", "save_every", "grid_every"):
        if hasattr(cfg, name):
            check(getattr(cfg, name) >= 0, name, "must be >= 0")
    check(cfg.log_every >= 1, "log_every", "must be >= 1")
    TransformConfig(load_size=cfg.load_size, crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip)


def pick_device(want: str, *, local_rank: int = 0, world: int = 1):
    """``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``.

    Under DDP (``world > 1``) ``auto`` / ``cuda`` mean ``cuda:<local_rank>``; an explicit
    ``cuda:N`` puts every process on device N (several processes on one GPU need the gloo
    backend). The CUDA device is made current.
    """
    import torch

    name = want
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NasPruneError(f"device {want!r}: CUDA is not available on this machine")
        if world > 1 and name == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise NasPruneError(
                    f"process {local_rank} of {world} has no CUDA device of its own ({torch.cuda.device_count()} "
                    "visible); start fewer processes per node, or share one with --device cuda:0 --dist-backend gloo")
            name = f"cuda:{local_rank}"
        dev = torch.device(name)
        torch.cuda.set_device(dev)
        return dev
    if name != "cpu":
        raise NasPruneError(f"device {name!r}: expected auto, cpu or cuda[:N]")
    return torch.device("cpu")


def train_data(cfg, data: Path, *, mode: str, input_nc: int, output_nc: int, rank: int = 0, world: int = 1,
               pin_memory: bool = False, dataset=None):
    """The train split and its loader: ``(train_set, steps_per_epoch, sampler, loader)``.

    ``cfg`` supplies ``load_size`` / ``crop_size`` / ``preprocess`` / ``flip`` / ``direction`` /
    ``seed`` / ``batch_size`` / ``workers`` (capped at the CPU count). The loader has its own
    ``torch.Generator`` so starting an epoch does not draw from the global RNG (dropout's).
    ``dataset``: an already opened train split (indexable by ``(epoch, index)``) to use instead
    of opening ``data`` in the layout of ``mode``.

    Raises:
        NasPruneError: the split holds fewer images than one batch (per device).
    """
    import torch

    from nas_prune import data as dmod

    train_set = dataset
    if train_set is None:
        tf = dmod.TransformConfig(load_size=cfg.load_size, crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip)
        train_set = dmod.open_dataset(data, mode=mode, split="train", direction=cfg.direction, transform=tf,
                                      seed=cfg.seed, input_nc=input_nc, output_nc=output_nc)
    steps_per_epoch = dmod.batches_per_epoch(len(train_set), batch_size=cfg.batch_size, world=world)
    if steps_per_epoch == 0:
        raise NasPruneError(
            f"the train split has {len(train_set)} images, fewer than one batch of {cfg.batch_size}"
            + (f" per device ({world} devices)" if world > 1 else "")
        )
    sampler = dmod.EpochBatchSampler(len(train_set), batch_size=cfg.batch_size, epoch=0, seed=cfg.seed,
                                     rank=rank, world=world)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=min(cfg.workers, os.cpu_count() or 1),
        collate_fn=dmod.collate,
        pin_memory=pin_memory,
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator(),
    )
    return train_set, steps_per_epoch, sampler, loader


def ddp(module, device, *, sync_buffers: bool):
    """``DistributedDataParallel(module)`` on ``device``; ``sync_buffers`` broadcasts rank 0's
    buffers (BatchNorm running statistics) before every forward."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    # torch >= 2.13 names the per-forward buffer sync forward_sync_buffers (broadcast_buffers is deprecated)
    key = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters else "broadcast_buffers"
    return DDP(module, device_ids=ids, **{key: sync_buffers})


def adam(params: Iterable, cfg):
    """Adam with ``cfg.lr`` and betas ``(cfg.beta1, cfg.beta2)`` (pix2pix: 2e-4, 0.5/0.999)."""
    import torch

    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


# ----------------------------------------------------------------------------- schedule


def lr_factor(step: int, *, steps_const: int, steps_decay: int) -> float:
    """1 for the first ``steps_const`` steps, then linear decay reaching 0 after ``steps_decay`` more."""
    if step < steps_const or steps_decay == 0:
        return 1.0
    return max(0.0, 1.0 - (step - steps_const) / steps_decay)


def set_lr(cfg, *, step: int, steps_per_epoch: int, optimizers: Iterable) -> float:
    """Set the learning rate of step ``step`` (0-based) on every param group; returns it.

    A param group with an ``lr_scale`` entry gets that multiple of it (e.g. GauGAN's TTUR:
    half the rate for the generator, twice for the discriminator).
    """
    lr = cfg.lr * lr_factor(step, steps_const=cfg.epochs * steps_per_epoch,
                            steps_decay=cfg.epochs_decay * steps_per_epoch)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


# ----------------------------------------------------------------------------- checkpoints


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: never a half-written checkpoint.

    The checkpoint is serialised in memory and then written, so a write the disk refuses is a
    plain ``OSError`` (named by :func:`nas_prune.fileio.atomic_path`) rather than torch's
    "unexpected pos" from inside its zip writer, which can also abort the process.
    """
    import io

    import torch

    from nas_prune.fileio import atomic_path

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def rng_state() -> dict:
    """The global CPU and CUDA RNG states, for a checkpoint."""
    import torch

    return {"rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (a checkpoint without CUDA states restores the CPU one)."""
    import torch

    torch.set_rng_state(state["rng_cpu"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])


def load_checkpoint(out: Path, *, version: int) -> dict:
    """Read ``out/checkpoints/last.pt`` (``weights_only=True``) and check its format version.

    Raises:
        NasPruneError: no checkpoint, an unreadable file, or another version.
    """
    import torch

    path = out / CHECKPOINT
    if not path.is_file():
        raise NasPruneError(f"nothing to resume: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        raise NasPruneError(f"{path}: cannot be read ({type(err).__name__})") from None
    from nas_prune.tensor_checks import check_layout, nested_tensors

    if not isinstance(state, dict):
        raise NasPruneError(f"{path}: not a training checkpoint (found {type(state).__name__})")
    check_layout(nested_tensors(state), path)
    if state.get("version") != version:
        raise NasPruneError(f"{path}: checkpoint version {state.get('version')} is not supported")
    return state


def check_run_dir(out: Path, *, resume: bool, inputs: Iterable[Any], files: Iterable[str],
                  adopt: Iterable[str] = (), live: Iterable[str] = ()) -> None:
    """Check a training run's folder before any work (:mod:`nas_prune.outputs`).

    The folder must be writable, none of the run's ``files`` (relative names) may be an
    input or a file nas-prune did not write. With ``resume``, the files of a run folder
    from before nas-prune kept manifests (globs ``adopt``, ``live`` of them appended to)
    are taken as the run's own first.

    Raises:
        NasPruneError: the folder cannot be written, or a file of the run is in the way.
    """
    from nas_prune.outputs import adopt as adopt_files
    from nas_prune.outputs import check_inputs, check_replaceable, check_writable

    check_writable(out, what="run folder")
    paths = [out / f for f in files]
    check_inputs(paths, inputs)
    if resume:
        adopt_files(out, [*files, *adopt], live=list(live))
    for path in paths:
        check_replaceable(path)


def check_fresh_run(out: Path) -> None:
    """Refuse to start over a run folder that holds a checkpoint."""
    if (out / CHECKPOINT).is_file():
        raise NasPruneError(f"{out} already holds a run: pass --resume to continue it or choose another --out")


def append_log(out: Path, record: Mapping[str, Any]) -> None:
    """One JSON line in ``out/log.jsonl`` (listed as a live file of nas-prune, :mod:`nas_prune.outputs`).

    A write the system refuses (a full disk) is one error naming the file, and a partly
    appended line is cut off again: the log stays a file of whole lines.
    """
    from nas_prune.fileio import write_failed
    from nas_prune.outputs import check_replaceable, record as own

    path = out / "log.jsonl"
    check_replaceable(path)
    own(path, live=True)
    line = (json.dumps(dict(record)) + "\n").encode("utf-8")
    with open(path, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush after a failure
        size = fh.tell()
        try:
            view = memoryview(line)
            while view:
                view = view[fh.write(view):]
        except OSError as err:
            try:
                fh.truncate(size)
            except OSError:
                pass
            raise write_failed(path, err) from None


# ----------------------------------------------------------------------------- the loop


def train_loop(
    run,
    *,
    end: int,
    step: Callable[[dict], dict[str, float]],
    after_step: Callable[[dict, dict[str, float]], None],
    end_of_epoch: Callable[[], None],
    on_step: Callable[[int, dict[str, float]], None] | None,
    stop=None,
) -> bool:
    """Run steps until ``run.step == end`` or a stop signal; returns whether it was interrupted.

    ``run`` has ``step`` (steps done, advanced here), ``steps_per_epoch``, ``sampler``
    (an :class:`~nas_prune.data.EpochBatchSampler`, positioned at ``run.step`` so a
    resumed run sees the same batches) and ``loader``. Per batch: ``values = step(batch)``,
    ``run.step += 1``, ``after_step(batch, values)``, :func:`nas_prune.threads.recheck`
    (an ``auto`` thread count follows the machine's load), then ``on_step(run.step, values)``
    (raising KeyboardInterrupt in it stops like Ctrl-C). ``end_of_epoch()`` runs when an
    epoch is complete and the loop was not interrupted.

    ``stop``: the :class:`nas_prune.interrupt.Stop` of a :func:`nas_prune.interrupt.deferred`
    block the caller holds around the loop and its final checkpoint (SIGINT, SIGTERM or SIGHUP
    then stop the loop after the current step); without one the loop opens its own.
    """
    from nas_prune import interrupt

    interrupted = False
    with (contextlib.nullcontext(stop) if stop is not None else interrupt.deferred()) as stop:
        while run.step < end and not interrupted:
            run.sampler.epoch, run.sampler.start_batch = divmod(run.step, run.steps_per_epoch)
            for batch in run.loader:
                values = step(batch)
                run.step += 1
                after_step(batch, values)
                threads.recheck(run.step)
                try:
                    if on_step is not None:
                        on_step(run.step, values)
                except KeyboardInterrupt as err:
                    stop.request(interrupt.signum_of(err))
                if stop.requested:
                    interrupted = True
                    break
                if run.step >= end:
                    break
            if run.step % run.steps_per_epoch == 0 and not interrupted:
                end_of_epoch()
    return interrupted


def warn_interrupted(step: int, out: Path) -> None:
    """The one warning of a stopped run: where its checkpoint is (the CLI shows it on one line)."""
    warnings.warn(f"interrupted at step {step}: checkpoint written to {out / CHECKPOINT}", RunWarning, stacklevel=3)
