"""A run's outputs on a data spec: the model's predictions and the data's targets, row by row."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.readers import read
from fashionlens.data.samples import SampleSet
from fashionlens.data.transforms import build_transforms
from fashionlens.training.checkpoint import load_model
from fashionlens.training.loop import collect_outputs


def _check_labels(data: SampleSet, labels: dict[str, Any]) -> None:
    """The data must use the model's label space (same category and attribute names, in order)."""
    if data.info.categories and data.info.categories != labels["categories"]:
        raise ValueError(f"{data.info.root}: its {data.info.num_categories} categories differ from the model's "
                         f"{len(labels['categories'])} (first difference: "
                         f"{next((a, b) for a, b in zip(data.info.categories + [None], labels['categories'] + [None]) if a != b)})")
    if data.info.attributes and data.info.attributes != labels["attributes"]:
        raise ValueError(f"{data.info.root}: its attributes differ from the model's")


def run_outputs(run: str, spec: str, *, split: str = "test", batch_size: int = 64, progress: bool = True,
                num_workers: int = 0, tta: bool | None = None, eval_scale: float | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list, dict[str, Any], SampleSet]:
    """(predictions, targets, sample of each row, the model's labels, the data) of ``run`` on ``spec``'s ``split``;
    see ``training.loop.collect_outputs`` for the arrays.  ``tta``: mirror test-time augmentation on/off
    (None = as the run was configured, ``model.tta_flip``); ``eval_scale``: input side = image_size x this
    (None = the run's ``data.eval_scale``)."""
    model, cfg, labels = load_model(run)
    if tta is not None:
        model.tta_flip = bool(tta)
    if eval_scale is not None:
        cfg.data.eval_scale = float(eval_scale)
    data = read(spec)
    _check_labels(data, labels)
    part = data.split(*split.split(","))
    if not len(part):
        raise ValueError(f"no samples in split {split!r} of {spec}; splits: {data.splits()}")
    ds = GarmentDataset(part, build_transforms(cfg.data, train=False), num_attributes=len(labels["attributes"]))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    preds, targets, _ = collect_outputs(model, loader, channels_last=cfg.train.channels_last, progress=progress)
    return preds, targets, [ds.samples[i] for i in targets["index"]], labels, data



__all__ = ["run_outputs"]
