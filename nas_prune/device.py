"""Device-side helpers of the training step: determinism settings and a finite-loss monitor.

A GPU runs ahead of the Python code that feeds it; anything that reads a value of a
CUDA tensor on the host (``float(loss)``, ``loss.item()``, ``if torch.isnan(loss)``,
boolean-mask indexing) makes the host wait until the GPU has caught up, so the
next step cannot be queued while this one runs. The distillation step therefore
keeps its losses on the device: :class:`FiniteMonitor` folds "was every loss of
this step finite?" into device tensors, and the loop reads it only where it must
(log steps, before a checkpoint, an evaluation, an image grid, and at the end).

:func:`set_determinism` applies what a bit-exact run (and an exact ``--resume``)
needs on CUDA and records it; :func:`restore_determinism` undoes it.

Batch norm under DDP (:func:`sync_batch_norms`): CAT trains and distils its SPADE
generators with synchronized batch norm, so the statistics of a training batch are those
of the whole batch over every GPU. A SPADE student's batch norms (the param-free norms of
its SPADE layers, the branch norms, ``fc_norm``) therefore become
``torch.nn.SyncBatchNorm`` when several processes train on CUDA with NCCL; the keys and
the saved weights do not change. ``SyncBatchNorm`` needs CUDA (and a backend that gathers
CUDA tensors, NCCL), so with gloo or on CPU the statistics stay per process (a run logs
one line saying so), as they do for every other generator (CAT's pix2pix / CycleGAN
students train with per-GPU batch norm under DataParallel). One process (also one
process under ``torchrun``) has nothing to synchronise.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

__all__ = ["FiniteMonitor", "set_determinism", "restore_determinism", "setup_distributed", "amp_dtype", "CUBLAS_WORKSPACE",
           "sync_batch_norm_plan", "sync_batch_norms"]

#: cuBLAS workspace setting that makes cuBLAS reproducible on CUDA >= 10.2
#: (https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility).
CUBLAS_WORKSPACE = ":4096:8"


def setup_distributed(backend: str, *, device: str) -> tuple[int, int, int, bool, bool]:
    """``(world, rank, local_rank, distributed, created)`` from torchrun's environment.

    A process started by ``torchrun`` (``WORLD_SIZE`` and ``MASTER_ADDR`` set) joins a process
    group even when it is alone, so a one-GPU machine runs the code path (DDP, backend) of a
    multi-GPU one. ``backend`` ``auto`` is NCCL when CUDA is used, gloo otherwise; ``created``
    says this call initialised the group (the caller destroys it at the end).
    """

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world > 1 or ("WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ)
    created = False
    if distributed and not torch.distributed.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)
        created = True
    return world, rank, local_rank, distributed, created


def sync_batch_norm_plan(*, world: int, device: torch.device, backend: str | None) -> tuple[bool, str | None]:
    """``(convert, note)``: whether batch norms become ``SyncBatchNorm`` (module docstring), and
    the line to log when several processes keep per-process statistics (else None)."""
    if world <= 1:
        return False, None
    if device.type == "cuda" and backend == "nccl":
        return True, None
    return False, (f"batch-norm statistics are per process ({world} processes, {backend} on {device.type}): "
                   "SyncBatchNorm needs CUDA with NCCL")


def sync_batch_norms(module: torch.nn.Module, *, world: int, device: torch.device,
                     backend: str | None = None) -> tuple[torch.nn.Module, str | None]:
    """``module`` with its batch norms converted to ``torch.nn.SyncBatchNorm`` when
    :func:`sync_batch_norm_plan` says so, and that plan's note. ``backend`` defaults to
    the initialised process group's."""
    if backend is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
    convert, note = sync_batch_norm_plan(world=world, device=device, backend=backend)
    if convert:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module, note


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``auto``: bf16 on a CUDA device that has it, else none)."""
    from nas_prune.errors import NasPruneError

    cuda = device.type == "cuda"
    if amp == "auto":
        amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "none"
    if amp == "fp16" and not cuda:
        raise NasPruneError("amp fp16 needs a CUDA device; use --amp bf16 or none on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def set_determinism(deterministic: bool, device: torch.device) -> dict[str, Any]:
    """Set torch's global determinism switches for a training run; return what was set.

    ``deterministic=True`` (what an exact kill-and-resume on CUDA needs):
    ``torch.use_deterministic_algorithms(True)``, ``cudnn.deterministic = True``,
    ``cudnn.benchmark = False`` (autotuning may pick other kernels in the resumed process)
    and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless the environment already sets it (it
    must be in place before the process's first cuBLAS call; set it in the shell to be sure).
    ``deterministic=False`` on CUDA turns cuDNN autotuning on (training crops have one size).
    On CPU nothing changes: its kernels are already deterministic.

    Returns:
        ``{"deterministic", "use_deterministic_algorithms", "cudnn_deterministic",
        "cudnn_benchmark", "cublas_workspace_config", "previous"}``; ``previous`` holds the
        settings before the call, for :func:`restore_determinism`.
    """
    previous = {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return {
        "deterministic": bool(deterministic),
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "previous": previous,
    }


def restore_determinism(record: dict[str, Any] | None) -> None:
    """Put back the switches :func:`set_determinism` found (once: ``previous`` is taken out of
    ``record``; the environment variable stays)."""
    prev = (record or {}).pop("previous", None) if isinstance(record, dict) else None
    if not prev:
        return
    torch.use_deterministic_algorithms(prev["use_deterministic_algorithms"])
    torch.backends.cudnn.deterministic = prev["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = prev["cudnn_benchmark"]


class FiniteMonitor:
    """Remembers, on the device, the first step whose losses were not all finite.

    :meth:`update` runs every step and only queues device work (no host sync);
    :meth:`first_bad` reads the record (one sync, plus one all-reduce under DDP so every
    process stops together) and is called where the loop must know: before it logs,
    writes a checkpoint, evaluates or saves a student.

    Args:
        device: where the losses live.
        start_step: steps completed before this monitor was created (a resumed run).
    """

    def __init__(self, device: torch.device, *, start_step: int = 0):
        self.start_step = start_step
        self._seen = torch.zeros((), dtype=torch.long, device=device)
        self._bad_at = torch.full((), -1, dtype=torch.long, device=device)
        self._names: tuple[str, ...] = ()
        self._values: torch.Tensor | None = None  # the losses of the first bad step, in ``_names`` order

    def update(self, values: Mapping[str, torch.Tensor]) -> None:
        """Fold one step's 0-dim loss tensors into the record (a few device ops, no host sync)."""
        names = tuple(values)
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        first = (~torch.isfinite(stacked).all()) & (self._bad_at < 0)
        self._bad_at = torch.where(first, self._seen, self._bad_at)
        if names != self._names:  # another set of losses (the first step): start the record over
            kept = self._values if self._values is not None else stacked.new_zeros(len(self._names))
            old = dict(zip(self._names, kept.unbind())) if self._names else {}
            self._values = torch.stack([old.get(k, stacked.new_zeros(())) for k in names])
            self._names = names
        self._values = torch.where(first, stacked, self._values)
        self._seen += 1

    def first_bad(self, *, distributed: bool = False) -> tuple[int, dict[str, float]] | None:
        """``(step, {loss: value})`` of the first non-finite step (1-based run step), or None.

        With ``distributed`` (a process group is up) every process learns whether any process
        saw one; a process whose own losses stayed finite gets ``(-1, {})``.
        """
        bad = (self._bad_at >= 0).to(torch.long)
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bool(bad):
            return None
        at = int(self._bad_at)
        if at < 0:
            return -1, {}
        return self.start_step + at + 1, dict(zip(self._names, self._values.tolist()))
