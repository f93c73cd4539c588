"""A run's familiarity file: what it was trained on, as ImageNet guide features (``openworld.Familiarity``).

:func:`fit_familiarity` runs the guide (``openworld.ImageNetGuide``: the run's own EfficientNet-Lite, Lite0 for
other backbones) over the training split of a data spec (at most ``max_reference`` photos, evenly spaced beyond
that) and sets the threshold at the similarity that ``1 - FAMILIAR_QUANTILE`` of the validation photos reach;
``familiarity.npz`` lands next to the checkpoint, where ``Predictor`` finds it.  ``fashionlens calibrate
--familiarity`` and the demo call it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fashionlens.data.decode import load_image
from fashionlens.data.readers import read_source
from fashionlens.openworld import FAMILIAR_QUANTILE, FAMILIARITY_FILE, Familiarity, ImageNetGuide, guide_backbone
from fashionlens.runs.calibrate import run_directory
from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint


def familiarity_path(run: str) -> str:
    """``familiarity.npz`` in the run directory (or next to a checkpoint file given directly)."""
    return os.path.join(run_directory(run), FAMILIARITY_FILE)


def _features(guide: ImageNetGuide, spec: str, split: str, limit: int, progress: bool) -> np.ndarray:
    """The guide's (N, F) features of at most ``limit`` photos (evenly spaced) of ``split``; unreadable photos
    are an error naming the file."""
    samples = list(read_source(spec, split).samples)
    if len(samples) > limit:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    batches: list[np.ndarray] = []
    step = guide.batch_size
    chunks = range(0, len(samples), step)
    if progress:
        from tqdm import tqdm  # lazy: progress bars only when asked

        chunks = tqdm(chunks, desc=f"familiarity ({split})", unit="batch")
    for start in chunks:
        batches.append(guide.look([load_image(s) for s in samples[start:start + step]])[0])
    return np.concatenate(batches) if batches else np.zeros((0, 1), np.float32)


def fit_familiarity(run: str, spec: str, *, train_split: str = "train", val_split: str = "val",
                    max_reference: int = 4000, max_validation: int = 2000, quantile: float = FAMILIAR_QUANTILE,
                    guide: ImageNetGuide | None = None, progress: bool = True) -> dict[str, Any]:
    """Fit and write ``familiarity.npz`` of ``run`` from ``spec``; returns {path, reference, threshold, ...}."""
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    if guide is None:
        cfg = load_checkpoint(find_checkpoint(run)).get("config") or {}
        guide = ImageNetGuide(guide_backbone(str((cfg.get("model") or {}).get("backbone", ""))))
    train = _features(guide, spec, train_split, max_reference, progress)
    val = _features(guide, spec, val_split, max_validation, progress)
    if not len(train) or not len(val):
        raise ValueError(f"{spec}: familiarity needs photos in both the {train_split!r} and the {val_split!r} split "
                         f"(got {len(train)} and {len(val)})")
    train = train.astype(np.float16).astype(np.float32)  # as stored: the threshold fits the file's vectors
    threshold = float(np.quantile(Familiarity(train, 0.0).scores(val), quantile))
    path = Familiarity(train, threshold, source=familiarity_path(run), space=guide.space).save(familiarity_path(run))
    return {"path": path, "reference": len(train), "validation": len(val), "threshold": threshold,
            "quantile": quantile, "data": spec, "space": guide.space}


def load_familiarity(run: str) -> Familiarity | None:
    """The run's Familiarity, None when it has no familiarity file."""
    path = familiarity_path(run)
    return Familiarity.load(path) if os.path.isfile(path) else None


__all__ = ["familiarity_path", "fit_familiarity", "load_familiarity"]
