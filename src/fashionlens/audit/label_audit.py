"""Suspected label errors: out-of-fold probabilities, confident learning, and cleanlab as a cross-check.

Pipeline (``audit_labels``):

1. **Out-of-fold probabilities.**  A logistic regression on image features (standardised; the scaler
   is fitted inside each fold too) is trained K times, each time on K - 1 folds, and predicts the fold
   it did not see (``sklearn.model_selection.cross_val_predict``).  Why out-of-fold: a model that was
   trained on an image has fitted that image's label, so its probability for the given label is
   inflated precisely on the wrongly labelled images we are looking for (a flexible model memorises
   them outright).  Out of fold, every row comes from a model that never saw that image or its label,
   so ``pred_probs[i]`` does not depend on ``labels[i]`` (only through the fold assignment, which is
   fixed once per audit; ``stratified_folds`` keeps class shares equal across folds).
2. **Confident learning** (Northcutt, Jiang & Chuang 2021; the seed thesis's error-correction step),
   implemented here with NumPy:
   * per-class threshold ``t_j`` = mean self-confidence, the mean of ``p(j)`` over images labelled j;
   * confident joint ``C[given, true]``: image i counts under the class j with the highest ``p(j)``
     among those with ``p(j) >= t_j`` (images confident in no class are not counted);
   * calibration: each row is rescaled to sum to the number of images given that label; its
     off-diagonal mass estimates how many of them are wrong (``noise_matrix`` = row-normalised);
   * flags: for each given class, that many of its images with the largest margin
     ``p(suggested) - p(given)`` (suggested = the most probable other class), never one whose given
     label is the model's top prediction.  ``confidence`` = that margin, in [-1, 1]; suspects are
     ranked by it (1 = most certainly wrong) and the suggested correction is the predicted class.
3. **cleanlab** ``cleanlab.filter.find_label_issues(labels, pred_probs)`` on the SAME probabilities, so
   that the two sets of flags differ only by the method, never by the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

#: Default inverse L2 strength of the audit's logistic regression: the best out-of-fold log-loss on the
#: ORIGINAL train labels of clothing-small with ImageNet Lite0 features among 0.02 / 0.1 / 0.5 (0.396 /
#: 0.429 / 0.498); better-calibrated probabilities make confident learning flag fewer hard-but-correct images.
AUDIT_C = 0.02


def _labels(labels: Any, n: int | None = None, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0)):
        raise ValueError(f"labels must be a 1-D array of non-negative class indices, got {y.dtype} {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"labels has {len(y)} entries for {n} feature rows")
    k = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    if y.size and y.max() >= k:
        raise ValueError(f"labels go up to {int(y.max())} but num_classes is {k}")
    return y.astype(np.int64), k


def stratified_folds(labels: Any, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) fold index in [0, folds) of every sample: each class is shuffled (seeded) and dealt round-robin,
    continuing where the previous class stopped, so classes and fold sizes are both balanced."""
    y, _ = _labels(labels)
    if folds < 2 or folds > len(y):
        raise ValueError(f"folds must be in [2, number of samples = {len(y)}], got {folds}")
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        out[idx] = (start + np.arange(len(idx))) % folds
        start = (start + len(idx)) % folds
    return out


def blas_threads(threads: int | None = 1) -> Any:
    """Context limiting BLAS (OpenBLAS / MKL) threads during the logistic-regression fits (None = no limit).

    The fits are small matrix products repeated hundreds of times by L-BFGS; extra BLAS threads cost more
    in synchronisation than they gain, badly so on a busy machine (one fit on 2,400 x 1,280 features:
    0.35 s with 1 thread, 9-17 s with 2 threads on a shared 2-core machine)."""
    return nullcontext() if threads is None else threadpool_limits(limits=int(threads), user_api="blas")


def make_classifier(C: float = AUDIT_C, max_iter: int = 2000, seed: int = 0) -> Any:
    """StandardScaler + multinomial LogisticRegression: fast on CPU on frozen features (seconds for thousands
    of 1280-d rows) and gives calibrated-enough probabilities; ``C`` is the inverse L2 strength."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def out_of_fold_probabilities(features: Any, labels: Any, *, folds: int | np.ndarray = 5, seed: int = 0,
                              num_classes: int | None = None, C: float = AUDIT_C, max_iter: int = 2000,
                              threads: int | None = 1) -> np.ndarray:
    """(N, K) float64 out-of-fold class probabilities of ``features`` (N, D) given ``labels`` (N,).

    ``folds``: the number of stratified folds (assigned by :func:`stratified_folds` with ``seed``) or an
    explicit (N,) array of fold ids.  Columns of classes absent from ``labels`` are 0; a class absent from
    a training fold gets probability 0 in that fold (sklearn's handling).  ``threads``: BLAS threads
    (:func:`blas_threads`)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"features must be a finite (N, D) array, got shape {x.shape}")
    y, k = _labels(labels, len(x), num_classes)
    fold_ids = stratified_folds(y, int(folds), seed) if np.isscalar(folds) else np.asarray(folds, np.int64)
    if fold_ids.shape != y.shape:
        raise ValueError(f"folds must be an int or an (N,) array of fold ids, got shape {fold_ids.shape}")
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError("an audit needs at least 2 classes in the labels")
    with warnings.catch_warnings(), blas_threads(threads):
        warnings.filterwarnings("ignore", message=".*number of classes in training fold.*")
        probs = cross_val_predict(make_classifier(C, max_iter, seed), x, y, cv=PredefinedSplit(fold_ids),
                                  method="predict_proba")
    out = np.zeros((len(y), k))
    out[:, present] = probs  # cross_val_predict's columns are the sorted classes present in y
    return out


def confident_joint(labels: Any, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (K,), confident joint (K, K) int counts, rows given label, columns confident class).

    ``thresholds[j]`` = mean ``pred_probs[:, j]`` over the images labelled j (inf for an absent class)."""
    p = np.asarray(pred_probs, np.float64)
    y, k = _labels(labels, len(p), p.shape[1])
    counts = np.bincount(y, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, y, p[np.arange(len(y)), y])
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    above = p >= thresholds[None, :]
    masked = np.where(above, p, -np.inf)
    true = masked.argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((k, k), np.int64)
    np.add.at(joint, (y[confident], true[confident]), 1)
    return thresholds, joint


def calibrate_joint(joint: np.ndarray, labels: Any) -> np.ndarray:
    """(K, K) float: each row of the confident joint rescaled to the number of images given that label."""
    c = np.asarray(joint, np.float64)
    y, k = _labels(labels, None, c.shape[0])
    counts = np.bincount(y, minlength=k).astype(np.float64)
    rows = c.sum(axis=1, keepdims=True)
    return np.where(rows > 0, c / np.maximum(rows, 1e-12) * counts[:, None], 0.0)


def rank_suspects(labels: Any, pred_probs: np.ndarray,
                  calibrated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident-learning flags: (flagged (N,) bool, suggested class (N,), margin p(suggested) - p(given) (N,)).

    For given class g, the ``round(sum of off-diagonal calibrated[g])`` images labelled g with the largest
    margins are flagged, minus those whose given label is the top prediction."""
    p = np.asarray(pred_probs, np.float64)
    y, _ = _labels(labels, len(p), p.shape[1])
    rows = np.arange(len(y))
    others = p.copy()
    others[rows, y] = -np.inf
    suggested = others.argmax(axis=1)
    margin = p[rows, suggested] - p[rows, y]
    flagged = np.zeros(len(y), bool)
    for g in np.unique(y):
        n_wrong = int(np.rint(calibrated[g].sum() - calibrated[g, g]))
        members = np.flatnonzero(y == g)
        if n_wrong > 0:
            order = members[np.argsort(-margin[members], kind="stable")]
            flagged[order[:n_wrong]] = True
    flagged &= p.argmax(axis=1) != y
    return flagged, suggested, margin


def cleanlab_issues(labels: Any, pred_probs: np.ndarray, filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """(N,) bool: ``cleanlab.filter.find_label_issues`` on the same probabilities (classes absent from the
    labels are dropped and the rows renormalised first, as cleanlab needs every class to occur)."""
    from cleanlab.filter import find_label_issues  # lazy: 3.6 s to import (measured), for the optional comparison

    p = np.asarray(pred_probs, np.float64)
    y, _ = _labels(labels, len(p), p.shape[1])
    present = np.unique(y)
    compact = p[:, present]
    compact = compact / np.maximum(compact.sum(axis=1, keepdims=True), 1e-12)
    remap = np.searchsorted(present, y)
    return np.asarray(find_label_issues(remap, compact, filter_by=filter_by, n_jobs=1), bool)


@dataclass
class AuditResult:
    """Everything an audit computed; ``suspects`` is the ranked table (one dict per flagged image)."""

    pred_probs: np.ndarray  # (N, K) out-of-fold probabilities
    labels: np.ndarray  # (N,) given labels
    thresholds: np.ndarray  # (K,) per-class mean self-confidence
    joint: np.ndarray  # (K, K) confident joint counts, rows given, columns estimated true class
    calibrated: np.ndarray  # (K, K) calibrated joint (rows sum to the given-label counts)
    flagged: np.ndarray  # (N,) bool, ours
    suggested: np.ndarray  # (N,) suggested class (the most probable other class)
    margin: np.ndarray  # (N,) p(suggested) - p(given)
    cleanlab_flagged: np.ndarray | None  # (N,) bool, cleanlab's find_label_issues (None when skipped)
    class_names: list[str] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)

    def noise_matrix(self) -> np.ndarray:
        """(K, K) estimated P(true = j | given = i) (rows of absent classes are 0)."""
        rows = self.calibrated.sum(axis=1, keepdims=True)
        return np.where(rows > 0, self.calibrated / np.maximum(rows, 1e-12), 0.0)

    def summary(self) -> dict[str, Any]:
        """Counts and rates (plain JSON types)."""
        n = len(self.labels)
        out: dict[str, Any] = {
            "images": n, "classes": int(self.pred_probs.shape[1]), "flagged": int(self.flagged.sum()),
            "oof_accuracy": float((self.pred_probs.argmax(1) == self.labels).mean()) if n else 0.0,
            "estimated_noise_rate": float(1 - np.trace(self.calibrated) / max(self.calibrated.sum(), 1e-12)),
        }
        if self.cleanlab_flagged is not None:
            both = self.flagged & self.cleanlab_flagged
            out.update(cleanlab_flagged=int(self.cleanlab_flagged.sum()), flagged_by_both=int(both.sum()),
                       agreement_jaccard=float(both.sum() / max((self.flagged | self.cleanlab_flagged).sum(), 1)))
        return out


def _suspect_rows(result: AuditResult) -> list[dict[str, Any]]:
    names = result.class_names or [str(i) for i in range(result.pred_probs.shape[1])]
    idx = np.flatnonzero(result.flagged)
    idx = idx[np.argsort(-result.margin[idx], kind="stable")]
    rows = []
    for rank, i in enumerate(idx, 1):
        g, s = int(result.labels[i]), int(result.suggested[i])
        rows.append({"rank": rank, "index": int(i), "given": names[g], "suggested": names[s],
                     "given_index": g, "suggested_index": s, "confidence": round(float(result.margin[i]), 6),
                     "p_given": round(float(result.pred_probs[i, g]), 6),
                     "p_suggested": round(float(result.pred_probs[i, s]), 6),
                     "cleanlab": None if result.cleanlab_flagged is None else bool(result.cleanlab_flagged[i])})
    return rows


def audit_labels(features: Any, labels: Any, *, folds: int | np.ndarray = 5, seed: int = 0,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None, C: float = AUDIT_C,
                 compare_cleanlab: bool = True, pred_probs: np.ndarray | None = None) -> AuditResult:
    """Audit ``labels`` (N,) against ``features`` (N, D) (module docstring); ``pred_probs`` (N, K), when given,
    replaces step 1 (e.g. probabilities of a trained model on held-out images)."""
    if pred_probs is None:
        pred_probs = out_of_fold_probabilities(features, labels, folds=folds, seed=seed,
                                               num_classes=num_classes or (len(class_names) if class_names else None),
                                               C=C)
    p = np.asarray(pred_probs, np.float64)
    y, k = _labels(labels, len(p), p.shape[1])
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for {k} probability columns")
    thresholds, joint = confident_joint(y, p)
    calibrated = calibrate_joint(joint, y)
    flagged, suggested, margin = rank_suspects(y, p, calibrated)
    result = AuditResult(p, y, thresholds, joint, calibrated, flagged, suggested, margin,
                         cleanlab_issues(y, p) if compare_cleanlab else None, list(class_names or []))
    result.suspects = _suspect_rows(result)
    return result


def audit(features: Any, labels: Any, **kw: Any) -> list[dict[str, Any]]:
    """The ranked suspects of :func:`audit_labels`: one dict per flagged image, most certain first, with keys
    rank, index, given, suggested (names), given_index, suggested_index, confidence (margin), p_given,
    p_suggested, cleanlab (whether cleanlab flags it too)."""
    return audit_labels(features, labels, **kw).suspects


def flag_scores(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of ``flagged`` (N,) bool against the truly wrong labels ``truth`` (N,) bool."""
    f, t = np.asarray(flagged, bool), np.asarray(truth, bool)
    tp = float((f & t).sum())
    precision = tp / float(f.sum()) if f.sum() else 0.0
    recall = tp / float(t.sum()) if t.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(f.sum()), "wrong": int(t.sum())}


__all__ = ["AUDIT_C", "AuditResult", "audit", "audit_labels", "blas_threads", "calibrate_joint", "cleanlab_issues",
           "confident_joint", "flag_scores", "make_classifier", "out_of_fold_probabilities", "rank_suspects",
           "stratified_folds"]
