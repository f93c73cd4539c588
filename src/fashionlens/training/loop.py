"""The explicit training loop: one epoch of optimisation, and a no-grad pass that collects outputs."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fashionlens.training.schedule import set_lr

# Batch keys kept by collect_outputs (targets) and model output keys kept (predictions).
TARGET_KEYS = ("category", "clothes_type", "attributes", "attribute_mask", "landmarks", "visibility",
               "landmark_mask", "bbox", "has_bbox", "item", "domain", "index", "landmark_affine")
OUTPUT_KEYS = ("category", "attributes", "landmarks", "visibility", "embedding", "item", "bbox", "attention")


def _images(batch: dict, channels_last: bool) -> torch.Tensor:
    x = batch["image"]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict],
    loss_fn: Callable[[dict, dict], dict],
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    lr_fn: Callable[[int], float],
    grad_clip: float = 0.0,
    amp: bool = False,
    channels_last: bool = False,
    deadline: float | None = None,
    on_step: Callable[[int, int], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[dict, int]:
    """Optimise over ``loader`` once (or until ``deadline``, a ``time.time()`` value).

    ``on_step(global_step, batch_index)`` runs after every optimiser step (checkpointing).
    Returns (mean of every loss term weighted by batch size + throughput, the new global step).
    """
    model.train()
    sums: dict[str, float] = defaultdict(float)
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for batch_index, batch in enumerate(bar):
        set_lr(optimizer, lr_fn(step))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outputs = model(_images(batch, channels_last))
            losses = loss_fn(outputs, batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        step += 1
        size = len(batch["image"])
        seen += size
        for key, value in losses.items():
            sums[key] += float(value.detach()) * size
        rate = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", img_s=f"{rate:.1f}", lr=f"{lr_fn(step):.2e}")
        if on_step is not None:
            on_step(step, batch_index)
        if deadline is not None and time.time() > deadline:
            break
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
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Run the model in eval mode over ``loader``.

    Returns (predictions: model output key -> concatenated array, the ``levels`` list as ``level_0``,
    ``level_1``, ... (N, n_l) logits; targets: batch key -> array; mean losses when ``loss_fn`` is given).
    """
    model.eval()
    preds: dict[str, list] = defaultdict(list)
    targets: dict[str, list] = defaultdict(list)
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        outputs = model(_images(batch, channels_last))
        size = len(batch["image"])
        seen += size
        if loss_fn is not None:
            for key, value in loss_fn(outputs, batch).items():
                sums[key] += float(value) * size
        for key in OUTPUT_KEYS:
            if isinstance(outputs.get(key), torch.Tensor):
                preds[key].append(outputs[key].float().cpu().numpy())
        for level, logits in enumerate(outputs.get("levels") or []):  # hierarchy heads, flattened
            preds[f"level_{level}"].append(logits.float().cpu().numpy())
        for key in TARGET_KEYS:
            if key in batch:
                targets[key].append(batch[key].cpu().numpy())
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(preds), cat(targets), {f"val_{k}": v / max(seen, 1) for k, v in sums.items()}
