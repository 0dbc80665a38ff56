"""Data-parallel training under ``torchrun``: ranks, the process group, DDP wrapping, reductions.

``torchrun`` starts one process per device and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`hierars.training.fit` reads them (:func:`setup`) and, with more than one process,
trains a :class:`torch.nn.parallel.DistributedDataParallel` model (gloo on CPU, nccl on CUDA, one GPU per
process: ``cuda:LOCAL_RANK``). Without those variables (a notebook, ``dvc repro``, plain ``python``) every
function here is a no-op for a single process, and training is exactly what it was.

How a run with ``W`` processes relates to a single process:

- ``batch_size`` is **per process**: the global batch is ``batch_size × W``. Iteration ``i`` draws the same global
  batch of sample indices as a single process with batch ``batch_size × W``
  (:class:`hierars.training.sampling.IterationBatchSampler`); process ``r`` takes the ``r``-th contiguous
  ``batch_size`` of it. Per-sample transforms are seeded by (seed, iteration, index) and the batch augmentation
  draws the whole global batch's parameters on every rank (:func:`hierars.training.sampling.augment_batch`), so
  every sample is transformed exactly as in the single process.
- DDP averages gradients over processes: equal to the single process's gradient when every process's loss is a
  mean over the same number of labelled pixels (fixed-size tiles without ignored pixels); otherwise it weights
  processes equally rather than pixels (as every DDP training does).
- Dropout masks come from a generator re-seeded per step with (seed, step, rank) (:func:`seed_step`): statistically
  the same as a single process, not the same draws. BatchNorm becomes ``SyncBatchNorm`` on CUDA; on CPU (which
  ``SyncBatchNorm`` does not support) each process normalises with its own ``batch_size`` samples. The default
  model (ConvNeXt: LayerNorm, FPN: GroupNorm) has no BatchNorm; smp's UPerNet decoder has.
- Validation is sharded over processes and the confusion matrices are all-reduced
  (:meth:`hierars.metrics.HierarchicalMetrics.all_reduce`); the logged loss is the mean over processes.
- Only rank 0 writes checkpoints, metrics and curves; the others wait at a barrier (:func:`barrier`). All ranks
  read the checkpoint to resume, so with several nodes ``out_dir`` must be on a shared file system.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from hierars.training.seeding import mix_seed

__all__ = ["DistInfo", "env_info", "current", "setup", "cleanup", "barrier", "is_main", "wrap_model", "unwrap",
           "mean_over_ranks", "seed_step", "has_batchnorm"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` in ``0 .. world_size-1``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def env_info() -> DistInfo:
    """The job layout that ``torchrun`` put in the environment (a single process when it is absent)."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK={info.rank}, WORLD_SIZE={info.world_size}")
    return info


def current() -> DistInfo:
    """The initialised process group's rank and size, else :func:`env_info` (before :func:`setup`)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return env_info()


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return current().is_main


def setup(device: torch.device, timeout_minutes: float = 30.0) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` job if there is one; return this process's layout and device.

    A CUDA ``device`` becomes ``cuda:LOCAL_RANK`` (backend nccl); a CPU device keeps CPU (backend gloo). Called
    again (e.g. once per seed) it reuses the process group.

    Raises:
        ValueError: the environment is inconsistent, or a CUDA job has more processes on a node than GPUs.
    """
    info = env_info()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs on this node: "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                **({"device_id": device} if device.type == "cuda" else {}))
        log.info("rank %d/%d joined the %s process group on %s", info.rank, info.world_size, backend, device)
    if dist.get_world_size() != info.world_size:
        raise ValueError(f"process group has {dist.get_world_size()} ranks, WORLD_SIZE says {info.world_size}")
    return info, device


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` with several processes (BatchNorm → SyncBatchNorm on CUDA), else ``model``.

    The wrapper shares ``model``'s parameters: optimise and checkpoint ``model`` itself (:func:`unwrap`).
    DDP broadcasts rank 0's weights and buffers at construction, so every rank starts from the same model.
    """
    if not info.enabled:
        return model
    if has_batchnorm(model):
        if device.type == "cuda":  # replaces the BatchNorm children in place, keeping their Parameter objects
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif info.is_main:
            log.warning("the model has BatchNorm and SyncBatchNorm needs CUDA: on CPU each process normalises "
                        "with its own per-process batch, so results differ from one process with the global batch")
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model``)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (a detached copy; the value itself for a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed the global torch RNG with (seed, step, rank): a rank's dropout masks for ``step``, the same on resume."""
    torch.manual_seed(mix_seed(seed, step, rank, 0xDD9))
