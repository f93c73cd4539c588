"""Train / validation splits of a SampleSet."""

from __future__ import annotations

import numpy as np

from fashionlens.data.samples import SampleSet

VAL_FRACTION = 0.1  # share of training items held out when the validation split is empty


def split_train_val(data: SampleSet, train_split: str, val_split: str, seed: int) -> tuple[SampleSet, SampleSet]:
    """The configured splits.  When ``val_split`` is set but has no samples, hold out ~10% of the training
    *items* (images when there are no item ids; at least one when there are two or more), chosen by
    ``seed``, so no item has images on both sides.  ``val_split`` "" means no validation."""
    train = data.split(train_split)
    if not len(train):
        raise ValueError(f"no samples in the training split {train_split!r}; splits: {data.splits()}")
    val = data.split(val_split) if val_split else SampleSet([], data.info)
    if val_split and not len(val):
        keys = [s.item_id or s.image for s in train.samples]
        unique = sorted(set(keys))
        count = max(1, round(VAL_FRACTION * len(unique))) if len(unique) > 1 else 0
        held = set(np.random.default_rng(seed).permutation(unique)[:count].tolist())
        val = SampleSet([s for s, k in zip(train.samples, keys) if k in held], data.info)
        train = SampleSet([s for s, k in zip(train.samples, keys) if k not in held], data.info)
    return train, val
