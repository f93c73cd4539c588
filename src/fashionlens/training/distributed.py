"""Data-parallel training across processes: process group, rank helpers, batch sharding, DDP wrapping.

``torchrun --nproc-per-node N -m fashionlens train ...`` starts N processes whose environment holds
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` joins them into one process group (nothing happens without those variables,
so the same code runs single-process): NCCL when the run trains on GPUs (one per process, ``cuda:LOCAL_RANK``),
gloo on the CPU.  Every rank draws the same seeded *global* batches and trains on its own shard of each
(:class:`RankBatches`; resuming skips the same batches everywhere); the model and its loss run as one
DDP module (:class:`ModelWithLoss`), so the gradients of both are averaged and the weights stay identical
on every rank.  The metric loss gathers the embeddings of every rank (``losses.metric``), so its
negatives come from the global batch.  Only rank 0 writes files and logs.

A process should create the default group once: PyTorch reuses the group's store keys, so destroying
and re-creating it inside one torchrun worker can hang.  To run several trainings in one worker, call
:func:`init_distributed` before them and :func:`cleanup` after (a trainer leaves a group it did not create).

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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when absent: not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` from the environment (0 when absent): who prints, also before or after the group exists."""
    return int(os.environ.get("RANK", "0"))


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


# Groups left by :func:`cleanup`, kept alive until the process exits.  Destroying a gloo group joins its
# worker threads while the caller holds the GIL, and a worker may still be releasing the last collective's
# work, whose tensors have Python objects: it waits for the GIL, the join waits for it, and the process
# hangs (seen about once in 25 two-process runs, under DDP's Reducer freeing the group just after
# ``destroy_process_group``).  A retired group costs its idle threads; they end with the process.
_RETIRED_GROUPS: list[Any] = []


def cleanup() -> None:
    """Leave the process group (safe to call when none is running).

    The group object is kept (not freed) until the process exits; see ``_RETIRED_GROUPS``.
    """
    if dist.is_available() and dist.is_initialized():
        group = dist.group.WORLD
        dist.destroy_process_group()
        _RETIRED_GROUPS.append(group)


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
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _collective_device() -> torch.device:
    """Where tensors for a collective must live: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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


class RankBatches(Sampler[list[int]]):
    """This rank's shard (:func:`shard_batch`) of every batch of ``batch_sampler`` after the first ``skip``.

    Every rank wraps the same seeded batch sampler, so the global batches (and resuming mid-epoch by
    skipping ``skip`` batches) are identical everywhere; single-process (``world`` 1) the batches pass
    through whole.
    """

    def __init__(self, batch_sampler: Any, rank: int = 0, world: int = 1, group: int = 1, skip: int = 0):
        self.batch_sampler, self.rank, self.world, self.group, self.skip = batch_sampler, rank, world, group, skip

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self.batch_sampler):
            if i < self.skip:
                continue
            shard = shard_batch(list(batch), self.rank, self.world, self.group)
            if not shard:
                raise ValueError(f"a batch of {len(batch)} images cannot be shared by {self.world} processes: "
                                 "use a larger batch (or more P x K items) or fewer processes")
            yield shard


def gather_outputs(preds: dict[str, np.ndarray], targets: dict[str, np.ndarray], losses: dict[str, float],
                   count: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Join the ``collect_outputs`` results of every rank's part of a set (``count`` images here): arrays
    concatenated in rank order, mean losses weighted by part size.  Identity single-process."""
    if not is_distributed():
        return preds, targets, losses
    parts = all_gather_objects((preds, targets, losses, count))
    total = max(1, sum(p[3] for p in parts))
    merged = [_concat([p[i] for p in parts]) for i in (0, 1)]
    keys = dict.fromkeys(k for p in parts for k in p[2])
    return merged[0], merged[1], {k: sum(p[2].get(k, 0.0) * p[3] for p in parts) / total for k in keys}


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate dicts of arrays key by key, in order (dicts without a key are skipped)."""
    keys = dict.fromkeys(k for part in parts for k in part)
    return {k: np.concatenate([part[k] for part in parts if k in part]) for k in keys}


class ModelWithLoss(nn.Module):
    """The model and its loss as one module: ``forward(images (B, 3, S, S), batch, weights)`` returns
    ``(model outputs, loss dict)``.  One forward computes both, so DDP sees (and all-reduces the
    gradients of) the loss's own parameters, e.g. ProxyAnchor proxies, with the model's.

    ``teacher`` (optional, frozen): a backbone whose pooled features of the same images join the outputs
    as ``"teacher_pooled"`` (the feature-distillation term of the loss keeps the model's near them).
    ``teachers`` (optional, frozen): a ``teachers.TeacherEnsemble`` of trained runs whose averaged softened
    category probabilities of the same images join the outputs as ``"teacher_category"`` (``loss.kd``)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, teacher: nn.Module | None = None,
                 teachers: nn.Module | None = None):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.teacher, self.teachers = teacher, teachers
        if teacher is not None:
            teacher.requires_grad_(False)
        if teachers is not None:
            teachers.requires_grad_(False)

    def train(self, mode: bool = True) -> "ModelWithLoss":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # its BatchNorm statistics stay the pretrained ones
        if self.teachers is not None:
            self.teachers.eval()
        return self

    def forward(self, images: torch.Tensor, batch: dict, weights: dict[str, float]) -> tuple[dict, dict]:
        outputs = self.model(images)
        if self.teacher is not None:
            with torch.no_grad():
                outputs = {**outputs, "teacher_pooled": self.teacher.forward_features(images).mean(dim=(2, 3))}
        if self.teachers is not None:
            outputs = {**outputs, "teacher_category": self.teachers(images)}
        return outputs, self.loss_fn(outputs, batch, weights)


def unused_parameters(module: nn.Module, *inputs: Any) -> list[str]:
    """Names of trainable parameters of ``module`` left without a gradient by one forward (in eval mode)
    on ``inputs`` and a backward of its ``[1]["loss"]`` (a :class:`ModelWithLoss` call); grads are cleared."""
    module.eval()
    module(*inputs)[1]["loss"].backward()
    names = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    module.zero_grad(set_to_none=True)
    return names


def wrap_data_parallel(joint: nn.Module, batch: dict, weights: dict[str, float], log: Any = print) -> nn.Module:
    """``DistributedDataParallel(joint)`` for a :class:`ModelWithLoss` on the CPU (gloo) or on this rank's GPU
    (NCCL, ``device_ids``); ``batch`` is a probe batch on that device.  The (slower) search for unused
    parameters is switched on only when the probe finds parameters without gradient on some rank."""
    unused = unused_parameters(joint, batch["image"], batch, weights)
    if unused:
        log(f"parameters without gradient ({', '.join(unused[:5])}): DDP searches for unused parameters")
    device = next(joint.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(joint, device_ids=ids, find_unused_parameters=any_rank(bool(unused)))


def sync_batchnorm(model: nn.Module, device: torch.device, world: int, log: Any = print) -> nn.Module:
    """``train.sync_bn``: the model with every BatchNorm as ``SyncBatchNorm`` (statistics over the global
    batch) when training data-parallel on GPUs; single-process there is nothing to sync (returned as is),
    and on the CPU it is a ValueError (PyTorch's SyncBatchNorm has CUDA kernels only)."""
    if world <= 1:
        log("sync_bn: one process, BatchNorm already sees the whole batch")
        return model
    if torch.device(device).type != "cuda":
        raise ValueError(f"train.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU kernels); this run trains on "
                         f"{device}: switch sync_bn off")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def merge_train_metrics(parts: list[dict]) -> dict:
    """One epoch's training metrics over all ranks: loss means weighted by images, images and throughput
    summed, the slowest rank's seconds."""
    if len(parts) == 1:
        return parts[0]
    images = sum(p.get("train_images", 0) for p in parts)
    seconds = max(p.get("train_seconds", 0.0) for p in parts)
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        if key not in ("train_images", "train_seconds", "train_images_per_s"):
            out[key] = sum(p.get(key, 0.0) * p.get("train_images", 0) for p in parts) / max(images, 1)
    out.update(train_images=images, train_seconds=seconds, train_images_per_s=images / max(seconds, 1e-9))
    return out


__all__ = [
    "ModelWithLoss", "RankBatches", "all_gather_objects",
    "any_rank", "barrier", "broadcast_object", "cleanup", "default_backend", "env_rank", "env_world_size",
    "gather_outputs", "get_rank", "get_world_size", "init_distributed", "is_distributed", "is_main",
    "local_threads", "merge_train_metrics", "shard_batch", "shard_range", "sync_batchnorm", "sync_buffers",
    "unused_parameters", "wrap_data_parallel",
]
