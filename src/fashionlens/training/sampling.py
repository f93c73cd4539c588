"""What a training epoch draws from: class-balanced sampling weights, and instance views for self-supervised
(exemplar identity) pre-training."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch


def class_balance_weights(samples: Any, power: float) -> torch.Tensor:
    """Sampling weight of each sample, ``1 / count(its category) ** power`` (unlabelled samples: the mean
    weight), so ``power`` 1 draws every class equally often and 0.5 halves the imbalance in log scale."""
    cats = np.array([-1 if s.category is None else s.category for s in samples])
    counts = np.bincount(cats[cats >= 0]) if (cats >= 0).any() else np.zeros(0)
    weights = np.ones(len(cats), dtype=np.float64)
    labelled = cats >= 0
    weights[labelled] = 1.0 / counts[cats[labelled]].astype(np.float64) ** power
    if labelled.any() and not labelled.all():
        weights[~labelled] = weights[labelled].mean()
    return torch.as_tensor(weights, dtype=torch.double)


def instance_views(samples: Any, views: int) -> list:
    """Instance discrimination (self-supervised / exemplar identity pre-training): every sample becomes
    its own item ``instance-<i>``, listed ``views`` times so a P x K batch holds K augmented views of it;
    category, attribute, landmark and box labels are dropped, so no annotation is used."""
    if views < 2:
        raise ValueError(f"instance_views must be >= 2 (views of one image form the positive pairs), got {views}")
    return [dataclasses.replace(s, item_id=f"instance-{i}", category=None, category_name=None, attributes=None,
                                landmarks=None, visibility=None, bbox=None)
            for i, s in enumerate(samples) for _ in range(views)]
