"""The trained network itself as the audit's scorer and as the cleaning loop's learner.

The seed's deployed system cleaned its data with the network it was building: hand-check about 100 photos
per class, train the network on them, let it gather the rest (keep the images whose label it confirms,
relabel those it confidently puts elsewhere), retrain on everything gathered, repeat.  This module gives
``audit`` and ``clean`` that option next to the logistic regression on frozen features:

* :func:`run_logits` / :func:`category_probabilities`: a run's category logits on any samples (its own eval
  transform, cached like ``audit.features``) and the temperature-scaled probabilities ``softmax(z / T)``
  (T from the run's ``calibration.json``, fitted on held-out images), columns matched to a data set's
  categories by name;
* :func:`trained_images`: the images a run trained on, as far as its config tells (its data spec and train
  split, less the held-out validation part): probabilities of those images are IN-SAMPLE, the network has
  fitted their labels, wrong ones included, so an audit of them is over-confident in the given labels;
* :class:`NetworkLearner`: a ``cleaning.Scorer`` that trains a network through the product's own trainer
  (``training.fit.fit``) in every round of ``cleaning.clean_labels``: a manifest of the round's trusted +
  accepted images (about 10% of their items held out for validation), a few epochs from a run's backbone
  or a recipe, a temperature fitted on the held-out part, then the probabilities of the images to score.
  Every round's run directory is kept (``round-R`` or ``round-R-fold-F`` with cross-fitting), with the
  manifest it trained on and ``round.json`` (temperature, counts, the images it scored).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fashionlens.audit.cleaning import write_manifest
from fashionlens.audit.features import LOGITS, FeatureModel, compute_features, feature_identity
from fashionlens.config import RunConfig
from fashionlens.data.readers import read
from fashionlens.data.samples import DatasetInfo, Sample, SampleSet
from fashionlens.data.splits import split_train_val
from fashionlens.data.transforms import build_transforms
from fashionlens.files import atomic_write
from fashionlens.hierarchy.calibration import calibration_summary, fit_temperature
from fashionlens.training.checkpoint import find_checkpoint, load_model
from fashionlens.training.fit import fit
from fashionlens.utils import resolve_device, softmax

TRAIN_MANIFEST = "train.csv"  # in every round's run directory: what that round trained on
ROUND_FILE = "round.json"  # in every round's run directory: temperature, counts, scored images
#: Fewest held-out images a round fits its temperature on: one scalar fitted on 1-3 images swings to the
#: bounds of the search (T = 0.007 on one image the model gets right), worse than no scaling.
MIN_HELD_OUT = 10


@dataclass
class RunLogits:
    """A run's category logits on samples: ``logits`` (M, C) of the samples ``rows`` (M,) that could be read,
    the run's category names (C) and its config."""

    logits: np.ndarray
    rows: np.ndarray
    categories: list[str]
    config: RunConfig


def run_logits(samples: Sequence[Sample], run: str, *, batch_size: int = 64, num_workers: int = 0,
               device: str | None = "cpu", cache_dir: str | None = None, progress: bool = False) -> RunLogits:
    """The category logits of ``run`` (a run directory or checkpoint) on ``samples``, with the run's own
    deterministic eval transform (mirror averaging when the run has ``tta_flip``); unreadable images are
    skipped with one warning (``audit.features.compute_features``), cached in ``cache_dir`` when given."""
    if not os.path.exists(run):
        raise FileNotFoundError(f"--model {run}: not an existing run directory / checkpoint")
    path = os.path.abspath(find_checkpoint(run))
    model, cfg, labels = load_model(path)
    categories = list(labels.get("categories") or [])
    if not categories:
        raise ValueError(f"{path}: the model has no category head (no categories)")
    target = resolve_device(device)
    model = model.to(target)

    @torch.no_grad()
    def encode(x: torch.Tensor) -> np.ndarray:
        return model(x.to(target))[LOGITS].float().cpu().numpy()

    fm = FeatureModel(feature_identity(path, 0, LOGITS), build_transforms(cfg.data, train=False), encode)
    logits, rows = compute_features(samples, fm, batch_size=batch_size, num_workers=num_workers,
                                    cache_dir=cache_dir, progress=progress)
    return RunLogits(logits.astype(np.float64), rows, categories, cfg)


def category_probabilities(logits: Any, temperature: float, model_categories: Sequence[str],
                           categories: Sequence[str]) -> np.ndarray:
    """(N, K) probabilities over the data set's ``categories`` from a model's (N, C) ``logits`` over
    ``model_categories``: ``softmax(logits / temperature)``, each column taken from the model's class of the
    same name (0 for a category the model does not know); when the model also knows categories the data
    does not name, the rows are renormalised over the shared ones (the probability given that the image
    is one of the data's categories; a row with no mass there stays 0)."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[1] != len(model_categories):
        raise ValueError(f"logits must be (N, {len(model_categories)}), got {z.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = softmax(z, float(temperature))
    index = {name: j for j, name in enumerate(categories)}
    shared = [(j, index[name]) for j, name in enumerate(model_categories) if name in index]
    out = np.zeros((len(z), len(categories)))
    for j, k in shared:
        out[:, k] = p[:, j]
    if len(shared) < len(model_categories):
        total = out.sum(axis=1, keepdims=True)
        out = np.where(total > 0, out / np.maximum(total, 1e-300), 0.0)
    return out


def trained_images(config: RunConfig) -> set[str] | None:
    """The images (normalised absolute paths) a run with ``config`` trained on: its data spec's train split
    less the validation images held out of it (``data.splits.split_train_val``, the trainer's own choice);
    None when the spec cannot be read any more (then nobody can tell)."""
    tc = config.train
    try:
        data = read(config.data.spec, missing="skip")
        train, _ = split_train_val(data, tc.train_split, tc.val_split, config.seed)
    except (OSError, ValueError):
        return None
    return {image_key(s.image) for s in train.samples}


def image_key(image: str) -> str:
    """How images are compared across data specs: the normalised absolute path."""
    return os.path.normcase(os.path.abspath(image))


def _holdout(rows: Sequence[Sample], info: DatasetInfo, seed: int) -> list[str]:
    """"train" or "val" for each row: the trainer's own hold-out (~10% of the items, none sharing an item
    with the training part), drawn once here so that the manifest says which images were held out."""
    copies = [dataclasses.replace(s, split="train") for s in rows]
    _, val = split_train_val(SampleSet(copies, info), "train", "val", seed)
    held = {id(s) for s in val.samples}
    return ["val" if id(s) in held else "train" for s in copies]


@dataclass
class NetworkLearner:
    """A ``cleaning.Scorer`` that trains the network in every round (see the module docstring).

    ``config``: the training recipe (a RunConfig: a run's own config, a shipped recipe, ...; its data spec
    and splits are replaced every round, ``train.init_from`` names the run whose backbone starts each round);
    ``samples`` / ``info``: the images being cleaned and their data set (categories by name);
    ``runs_dir``: where the rounds' run directories go (an existing round directory is trained afresh).
    The temperature is fitted on the round's held-out images when there are at least ``min_held_out``
    (else T = 1, the raw softmax: ``round.json`` then has no ``calibration``).
    ``records``: one dict per trained model, what its ``round.json`` holds."""

    samples: Sequence[Sample]
    info: DatasetInfo
    config: RunConfig
    runs_dir: str
    batch_size: int = 64
    num_workers: int = 0
    device: str | None = None  # scoring device (None: the training device, ``config.train.device``)
    progress: bool = False
    log: Callable[..., Any] = print
    min_held_out: int = MIN_HELD_OUT  # fewer held-out images: no temperature is fitted (T = 1)
    records: list[dict[str, Any]] = field(default_factory=list)

    def run_dir(self, round_: int, part: int = 0, parts: int = 1) -> str:
        """The run directory of a round's model (``part`` of ``parts`` cross-fitted models)."""
        return os.path.join(self.runs_dir, f"round-{round_}" + (f"-fold-{part + 1}" if parts > 1 else ""))

    def __call__(self, train_idx: np.ndarray, train_labels: np.ndarray, score_idx: np.ndarray,
                 info: dict[str, int]) -> np.ndarray:
        categories = list(self.info.categories)
        out = self.run_dir(info["round"], info["part"], info["parts"])
        rows = [self.samples[int(i)] for i in train_idx]
        labels = np.asarray(train_labels, np.int64)
        splits = _holdout(rows, self.info, self.config.seed)
        manifest = os.path.join(out, TRAIN_MANIFEST)
        write_manifest(manifest, rows, labels, categories, category_paths=list(self.info.category_paths),
                       attributes=list(self.info.attributes), splits=splits)
        cfg = copy.deepcopy(self.config)
        cfg.data.spec, cfg.train.train_split, cfg.train.val_split = f"manifest:{manifest}", "train", "val"
        self.log(f"round {info['round']}" + (f", model {info['part'] + 1} of {info['parts']}" if info["parts"] > 1
                                               else "") + f": training on {len(rows)} images into {out}")
        summary = fit(cfg, out, resume=False, progress=self.progress, log=self.log)
        device = self.device or cfg.train.device
        kw: dict[str, Any] = {"batch_size": self.batch_size, "num_workers": self.num_workers, "device": device,
                              "progress": self.progress}
        val = [j for j, s in enumerate(splits) if s == "val"]
        temperature, calibration = 1.0, None
        if val:  # temperature scaling on the held-out part of the round's own training images
            held = run_logits([rows[j] for j in val], out, **kw)
            index = {name: c for c, name in enumerate(held.categories)}
            y = np.array([index.get(categories[labels[val[r]]], -1) for r in held.rows], np.int64)
            if (y >= 0).sum() >= self.min_held_out:
                temperature = fit_temperature(held.logits, y)
                calibration = calibration_summary(held.logits, y, temperature)
        scored = run_logits([self.samples[int(i)] for i in score_idx], out, **kw)
        probs = np.zeros((len(score_idx), len(categories)))
        probs[scored.rows] = category_probabilities(scored.logits, temperature, scored.categories, categories)
        record = {"round": info["round"], "model": info["part"] + 1, "models": info["parts"], "run": out,
                  "trained_on": len(rows) - len(val), "held_out": len(val), "temperature": temperature,
                  "calibration": calibration, "categories": scored.categories, "epochs": summary.get("epochs"),
                  "scored": [self.samples[int(i)].image for i in score_idx],
                  "unreadable": int(len(score_idx) - len(scored.rows))}
        atomic_write(os.path.join(out, ROUND_FILE), json.dumps(record, indent=1))
        self.records.append(record)
        return probs


__all__ = ["MIN_HELD_OUT", "ROUND_FILE", "TRAIN_MANIFEST", "NetworkLearner", "RunLogits", "category_probabilities", "image_key",
           "run_logits", "trained_images"]
