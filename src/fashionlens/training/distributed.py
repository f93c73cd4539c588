"""Data-parallel training across processes: process group, rank helpers, batch sharding.

``torchrun --nproc-per-node N -m fashionlens train ...`` starts N processes whose environment holds
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` joins them into one process group (nothing happens without those variables,
so the same code runs single-process).  Every rank draws the same seeded *global* batches and trains on
its own shard of each (:class:`ShardedBatches`); DistributedDataParallel averages the gradients, so
the weights stay identical on every rank.  Only rank 0 writes files and logs.

All helpers are no-ops (or identities) when no process group is running.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when absent: not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and logs."""
    return get_rank() == 0


def default_backend() -> str:
    """"nccl" when CUDA is available, else "gloo" (CPU tensors)."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; returns ``(rank, world_size)``.

    Without ``WORLD_SIZE`` > 1 in the environment this does nothing and returns ``(0, 1)``; when a group
    is already initialised (by the caller) it is used as is.  ``backend`` None picks
    :func:`default_backend`; pass "gloo" for models that stay on the CPU (NCCL only reduces CUDA tensors).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if env_world_size() <= 1:
        return 0, 1
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set: launch with torchrun")
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size()


def cleanup() -> None:
    """Leave the process group (safe to call when none is running)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op single-process)."""
    if is_distributed():
        dist.barrier()


def local_threads(num_threads: int = 0) -> int:
    """Intra-op threads for this process: ``num_threads`` when set, else the usable cores shared evenly
    between the processes of this machine (``LOCAL_WORLD_SIZE``), at least 1."""
    if num_threads > 0:
        return int(num_threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(get_world_size())))
    return max(1, cores // max(1, local))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; returns ``obj`` itself single-process)."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` single-process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective: call it on all ranks)."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy the buffers (BatchNorm running statistics) of rank ``src`` to every rank.

    DDP broadcasts buffers at the start of each forward, but each rank then updates them with its own
    shard; syncing at the end of an epoch makes every rank hold exactly the checkpointed state.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def shard_range(n: int, rank: int, world: int) -> range:
    """Contiguous part ``rank`` of ``range(n)`` split into ``world`` near-equal parts."""
    start, stop = n * rank // world, n * (rank + 1) // world
    return range(start, stop)


def shard_batch(batch: Sequence[int], rank: int, world: int, group: int = 1) -> list[int]:
    """Rank ``rank``'s contiguous share of one global batch, cut between groups of ``group`` indices.

    With a P x K batch (``group`` = K) every rank gets whole items: P / world items x K images, so each
    shard still holds positive pairs for metric learning.
    """
    size = group if group > 1 and len(batch) % group == 0 else 1  # uneven batches: cut between images
    part = shard_range(len(batch) // size, rank, world)
    return [int(i) for i in batch[part.start * size: part.stop * size]]


class ShardedBatches(Sampler[list[int]]):
    """Wrap a batch sampler: yield this rank's shard (:func:`shard_batch`) of each of its batches.

    Every rank wraps the same seeded batch sampler, so the global batches (and resuming by skipping
    batches) are identical everywhere; with ``world`` 1 the batches pass through unchanged.
    """

    def __init__(self, batch_sampler: Any, rank: int, world: int, group: int = 1):
        self.batch_sampler, self.rank, self.world, self.group = batch_sampler, rank, world, group

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            shard = shard_batch(list(batch), self.rank, self.world, self.group)
            if not shard:
                raise ValueError(f"a batch of {len(batch)} images cannot be shared by {self.world} processes: "
                                 "use a larger batch (or more P x K items) or fewer processes")
            yield shard


def merge_arrays(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-rank dicts of arrays key by key, in rank order (ranks without a key are skipped)."""
    keys = list(dict.fromkeys(k for part in parts for k in part))
    return {k: np.concatenate([part[k] for part in parts if k in part]) for k in keys}


__all__ = [
    "ShardedBatches", "all_gather_objects", "any_rank", "barrier", "broadcast_object", "cleanup",
    "default_backend", "env_world_size", "get_rank", "get_world_size", "init_distributed", "is_distributed",
    "is_main", "local_threads", "merge_arrays", "shard_batch", "shard_range", "sync_buffers",
]
