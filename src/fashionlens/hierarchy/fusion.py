"""Fusing the per-level classifiers (the category head and one head per taxonomy level).

Methods compared, each giving an accuracy per taxonomy level (``level_0`` = coarsest ... ``leaf``):

* ``flat``: the category head's argmax; coarser levels are that leaf's ancestors.
* ``summed``: the category head's probabilities summed into each level's nodes, argmax per level.
* ``heads``: each level head's own argmax (the leaf from the category head).
* ``stacked``: multinomial logistic regression on the concatenated log-probabilities of the category
  head and of every level head (standardised), trained on validation outputs (stacked generalisation,
  Wolpert 1992).
  Its accuracy is measured out-of-fold (k-fold cross-validation on the validation set) so it is not
  flattered by fitting and scoring on the same rows; with ``groups`` (item ids) the folds keep every
  item's images together, as a test split of unseen items would.  Coarser levels sum its leaf probabilities.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from fashionlens.hierarchy.taxonomy import Hierarchy
from fashionlens.utils import log_softmax


def stacking_features(leaf_logits: np.ndarray, level_logits: Sequence[np.ndarray] = ()) -> np.ndarray:
    """(N, C + sum n_l) float64: log-softmax of the category logits (N, C) and of each level's (N, n_l)."""
    parts = [log_softmax(leaf_logits)] + [log_softmax(z) for z in level_logits]
    if any(len(p) != len(parts[0]) for p in parts):
        raise ValueError(f"level logits rows {[len(p) for p in parts]} differ")
    return np.concatenate(parts, axis=1)


def level_probabilities(leaf_probs: np.ndarray, hierarchy: Hierarchy) -> list[np.ndarray]:
    """(N, C) leaf probabilities summed into every level: a list of (N, n_l) arrays, coarsest first."""
    out = []
    for names, mapping in zip(hierarchy.levels, hierarchy.maps):
        onehot = np.zeros((len(mapping), len(names)))
        onehot[np.arange(len(mapping)), mapping] = 1.0
        out.append(np.asarray(leaf_probs, np.float64) @ onehot)
    return out


class StackedFusion:
    """Multinomial logistic regression over standardised :func:`stacking_features`; stored as plain arrays
    (``mean``, ``scale`` (F,), ``coef`` (K, F), ``intercept`` (K,), ``classes`` (K,) of the K seen classes)."""

    def __init__(self, num_classes: int, coef: np.ndarray | None = None, intercept: np.ndarray | None = None,
                 classes: np.ndarray | None = None, mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.num_classes = int(num_classes)
        self.coef, self.intercept, self.classes = coef, intercept, classes
        self.mean, self.scale = mean, scale

    def fit(self, features: np.ndarray, labels: np.ndarray, C: float = 1.0) -> "StackedFusion":
        """Fit on (N, F) features and (N,) leaf labels (at least one class; a single class predicts itself)."""
        y = np.asarray(labels, np.int64)
        classes = np.unique(y)
        x = np.asarray(features, np.float64)
        self.mean, self.scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-12)
        if len(classes) == 1:
            self.coef, self.intercept = np.zeros((1, features.shape[1])), np.zeros(1)
        else:
            with threadpool_limits(1):  # tiny problems: BLAS threads only contend (measured 15x slower with 2)
                clf = LogisticRegression(C=C, max_iter=2000).fit((x - self.mean) / self.scale, y)
            coef, intercept = clf.coef_, clf.intercept_
            if len(classes) == 2:  # sklearn keeps one row for two classes: logits (0, z) give the same softmax
                coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
            self.coef, self.intercept = coef, intercept
        self.classes = classes
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, num_classes) probabilities; classes absent from the training rows get 0."""
        if self.coef is None or self.classes is None or self.intercept is None:
            raise ValueError("StackedFusion is not fitted")
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        out = np.zeros((len(z), self.num_classes))
        out[:, self.classes] = np.exp(log_softmax(z))
        return out

    def to_dict(self) -> dict[str, Any]:
        if self.coef is None or self.classes is None or self.intercept is None:
            raise ValueError("StackedFusion is not fitted")
        return {"num_classes": self.num_classes, "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "classes": self.classes.tolist(), "mean": np.asarray(self.mean).tolist(),
                "scale": np.asarray(self.scale).tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "StackedFusion":
        arrays = {k: np.asarray(state[k], np.float64) for k in ("coef", "intercept", "mean", "scale")}
        return cls(state["num_classes"], classes=np.asarray(state["classes"], np.int64), **arrays)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5,
                              seed: int = 0, C: float = 1.0, groups: Sequence[Any] | None = None) -> np.ndarray:
    """(N, num_classes) stacked probabilities, each row from a model fitted on the other folds; rows of the
    same group (e.g. the images of one item) always share a fold."""
    y = np.asarray(labels, np.int64)
    if groups is not None:
        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} groups for {len(y)} rows")
        g = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
        folds = max(2, min(folds, int(g.max()) + 1))
        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(features, y, g)
    else:
        folds = max(2, min(folds, len(y)))
        counts = np.bincount(y)
        stratify = counts[counts > 0].min() >= folds
        splits = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True,
                                                          random_state=seed).split(features, y)
    out = np.zeros((len(y), num_classes))
    for train, test in splits:
        out[test] = StackedFusion(num_classes).fit(features[train], y[train], C).predict_proba(features[test])
    return out


def _accuracies(leaf_pred: np.ndarray, level_preds: Sequence[np.ndarray], labels: np.ndarray,
                hierarchy: Hierarchy) -> dict[str, float]:
    out = {}
    for i, (pred, mapping) in enumerate(zip(level_preds, hierarchy.maps)):
        out[f"level_{i}"] = float(np.mean(pred == np.asarray(mapping)[labels]))
    out["leaf"] = float(np.mean(leaf_pred == labels))
    return out


def compare_fusion(leaf_logits: np.ndarray, level_logits: Sequence[np.ndarray], labels: np.ndarray,
                   hierarchy: Hierarchy, *, folds: int = 5, seed: int = 0,
                   groups: Sequence[Any] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy per level (``level_0`` coarsest ... ``leaf``) of each method (see the module docstring).

    Args:
        leaf_logits: (N, C) category logits.  level_logits: one (N, n_l) array per level of ``hierarchy``
            (empty when the model has no level heads: ``heads`` is then left out).
        labels: (N,) true categories (rows with -1 are dropped).
        groups: optional (N,) group of every row (item ids) for the stacked model's cross-validation.
    """
    y = np.asarray(labels, np.int64)
    keep = y >= 0
    if keep.sum() < 2:
        raise ValueError("fusion needs at least 2 labelled validation samples")
    z, y = np.asarray(leaf_logits)[keep], y[keep]
    levels = [np.asarray(l)[keep] for l in level_logits]
    groups = None if groups is None else [g for g, k in zip(groups, keep) if k]
    if levels and len(levels) != len(hierarchy.levels):
        raise ValueError(f"{len(levels)} level outputs for a hierarchy of {len(hierarchy.levels)} levels")
    probs = np.exp(log_softmax(z))
    flat = probs.argmax(axis=1)
    result = {"flat": _accuracies(flat, [np.asarray(m)[flat] for m in hierarchy.maps], y, hierarchy),
              "summed": _accuracies(flat, [p.argmax(1) for p in level_probabilities(probs, hierarchy)], y, hierarchy)}
    if levels:
        result["heads"] = _accuracies(flat, [l.argmax(1) for l in levels], y, hierarchy)
    stacked = out_of_fold_probabilities(stacking_features(z, levels), y, z.shape[1], folds=folds, seed=seed,
                                        groups=groups)
    result["stacked"] = _accuracies(stacked.argmax(1), [p.argmax(1) for p in level_probabilities(stacked, hierarchy)],
                                    y, hierarchy)
    return result


__all__ = ["StackedFusion", "compare_fusion", "level_probabilities", "out_of_fold_probabilities",
           "stacking_features"]
