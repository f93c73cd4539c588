"""The explicit training loop: one epoch of optimisation, and a no-grad pass that collects outputs.

Both run on any device: the batches come from the CPU data loader (pinned memory when the device is a
GPU) and are moved with ``non_blocking``; mixed precision follows the device (:func:`precision_for`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fashionlens.training.schedule import set_lr

# Batch keys kept by collect_outputs (targets) and model output keys kept (predictions).
TARGET_KEYS = ("category", "clothes_type", "attributes", "attribute_mask", "landmarks", "visibility",
               "landmark_mask", "bbox", "has_bbox", "item", "domain", "index", "landmark_affine")
OUTPUT_KEYS = ("category", "attributes", "landmarks", "visibility", "embedding", "item", "bbox", "attention")


@dataclass
class Precision:
    """How a step runs its arithmetic: ``torch.autocast(device_type, dtype, enabled)``, and a gradient
    scaler for float16 (whose small gradients underflow without one; bfloat16 has float32's range)."""

    device_type: str = "cpu"
    dtype: torch.dtype = torch.bfloat16
    enabled: bool = False
    scaler: Any = None  # torch.amp.GradScaler, or None

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def describe(self) -> str:
        if not self.enabled:
            return "float32"
        return f"{str(self.dtype).removeprefix('torch.')} autocast" + (" + gradient scaler" if self.scaler else "")


def precision_for(device: torch.device, amp: bool) -> Precision:
    """Mixed precision for ``device`` when ``amp``: bfloat16 on CPUs and on GPUs that have it (Ampere and
    later), float16 with a gradient scaler on older GPUs; MPS and others stay float32 (not tried here)."""
    device = torch.device(device)
    if not amp or device.type not in ("cpu", "cuda"):
        return Precision(device.type, torch.float32, False)
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        return Precision(device.type, torch.bfloat16, True)
    return Precision("cuda", torch.float16, True, torch.amp.GradScaler("cuda"))


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """The batch with every tensor on ``device`` (``non_blocking``: overlaps the copy from pinned memory
    with compute); the images in NHWC layout with ``channels_last``.  Nothing is copied on the CPU."""
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    *,
    weights: dict[str, float] | None = None,
    step: int,
    lr_fn: Callable[[int], float],
    backbone_fn: Callable[[int], bool] | None = None,
    device: torch.device | str = "cpu",
    precision: Precision | None = None,
    grad_clip: float = 0.0,
    channels_last: bool = False,
    stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[dict, int]:
    """Optimise over ``loader`` once, or until ``stop()`` (asked before every batch) says so.

    ``model(images, batch, weights)`` returns ``(outputs, losses)`` with ``losses["loss"]`` the scalar to
    minimise: a :class:`~fashionlens.training.distributed.ModelWithLoss`, or DDP around one.
    ``on_step(global_step, batch_index)`` runs after every optimiser step (checkpointing).
    Returns (mean of every loss term weighted by batch size + throughput, the new global step).
    """
    precision = precision or Precision()
    device = torch.device(device)
    model.train()
    sums: dict[str, float] = defaultdict(float)
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for batch_index, batch in enumerate(bar):
        if stop is not None and stop():
            break
        set_lr(optimizer, lr_fn(step), backbone=backbone_fn(step) if backbone_fn is not None else True)
        batch = to_device(batch, device, channels_last)
        with precision.autocast():
            _, losses = model(batch["image"], batch, weights)
        optimizer.zero_grad(set_to_none=True)
        scaler = precision.scaler
        (scaler.scale(losses["loss"]) if scaler else losses["loss"]).backward()
        if scaler:
            scaler.unscale_(optimizer)  # clip the true gradients
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        step += 1
        size = len(batch["image"])
        seen += size
        for key, value in losses.items():
            sums[key] += float(value.detach()) * size
        if progress:
            rate = seen / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", img_s=f"{rate:.1f}", lr=f"{lr_fn(step):.2e}")
        if on_step is not None:
            on_step(step, batch_index)
    elapsed = time.perf_counter() - start
    metrics = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    metrics.update(train_images=seen, train_seconds=elapsed, train_images_per_s=seen / max(elapsed, 1e-9))
    return metrics, step


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    loader: Iterable[dict],
    loss_fn: Callable[[dict, dict], dict] | None = None,
    *,
    device: torch.device | str = "cpu",
    precision: Precision | None = None,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Run the model in eval mode over ``loader`` on ``device``.

    Returns (predictions: model output key -> concatenated array, the ``levels`` list as ``level_0``,
    ``level_1``, ... (N, n_l) logits; targets: batch key -> array; mean losses when ``loss_fn`` is given).
    """
    precision = precision or Precision()
    device = torch.device(device)
    model.eval()
    preds: dict[str, list] = defaultdict(list)
    targets: dict[str, list] = defaultdict(list)
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        for key in TARGET_KEYS:  # from the CPU batch: no copy back
            if key in batch:
                targets[key].append(batch[key].numpy())
        batch = to_device(batch, device, channels_last)
        with precision.autocast():
            outputs = model(batch["image"])
            losses = loss_fn(outputs, batch) if loss_fn is not None else {}
        size = len(batch["image"])
        seen += size
        for key, value in losses.items():
            sums[key] += float(value) * size
        for key in OUTPUT_KEYS:
            if isinstance(outputs.get(key), torch.Tensor):
                preds[key].append(outputs[key].float().cpu().numpy())
        for level, logits in enumerate(outputs.get("levels") or []):  # hierarchy heads, flattened
            preds[f"level_{level}"].append(logits.float().cpu().numpy())
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(preds), cat(targets), {f"val_{k}": v / max(seen, 1) for k, v in sums.items()}
