"""Category and attribute metrics, as the DeepFashion paper defines them (plus a few diagnostics).

Every function takes NumPy arrays or PyTorch tensors (moved to the CPU) and returns plain Python
numbers or NumPy arrays.  Class labels are 0-based; a label of ``-1`` marks an unlabelled sample and
is ignored everywhere.

Tie rule (used by every top-k quantity here): an item with score ``s`` is "in the top k" when fewer
than ``k`` scores are strictly greater than ``s``, i.e. ``s >= the k-th largest score``.  Ties
therefore count in the true label's favour: a tie is a miss only if at least ``k`` other scores
are strictly greater.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: Top-k values of the DeepFashion paper: category top-3/top-5 accuracy, attribute top-3/top-5 recall.
CATEGORY_KS = (1, 3, 5)
ATTRIBUTE_KS = (3, 5)


def _as_numpy(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert a tensor / array / sequence to a NumPy array and check its number of dimensions."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    return arr


def _check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """(N, C) finite float64 scores."""
    arr = _as_numpy(scores, name, ndim=2).astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def _check_labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """(N,) int64 labels in [0, num_classes) or -1; returns them unchanged."""
    arr = _as_numpy(labels, name, ndim=1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} samples")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < -1) | (arr >= num_classes)
    if bad.any():
        raise ValueError(f"{name} outside [0, {num_classes}) (or -1 = ignore): {np.unique(arr[bad])[:10].tolist()}")
    return arr


def _kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """(N,) the k-th largest value of each row (1-based k, clipped to the row length)."""
    k = min(max(int(k), 1), scores.shape[1])
    return -np.partition(-scores, k - 1, axis=1)[:, k - 1]


def topk_accuracy(scores: Any, labels: Any, ks: Sequence[int] = CATEGORY_KS) -> dict[int, float]:
    """DeepFashion category top-k accuracy: share of samples whose true class is among the k highest scores.

    Args:
        scores: (N, C) class scores (logits or probabilities; only the order matters).
        labels: (N,) true class indices in [0, C); ``-1`` = unlabelled, ignored.
        ks: the k values.
    Returns:
        {k: accuracy in [0, 1]} over the labelled samples.  Ties: see the module docstring (a tie
        is a miss only if at least k scores are strictly greater than the true class's score).
    Raises:
        ValueError: no labelled sample, bad shapes or labels.
    """
    s = _check_scores(scores)
    y = _check_labels(labels, len(s), s.shape[1])
    keep = y >= 0
    if not keep.any():
        raise ValueError("topk_accuracy: no labelled sample (all labels are -1 or the input is empty)")
    s, y = s[keep], y[keep]
    true_score = s[np.arange(len(s)), y]
    return {int(k): float(np.mean(true_score >= _kth_largest(s, k))) for k in ks}


def confusion_matrix(pred: Any, labels: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: rows = true class, columns = predicted class; ``-1`` labels are ignored."""
    p = _as_numpy(pred, "pred", ndim=1).astype(np.int64)
    y = _check_labels(labels, len(p), num_classes)
    keep = y >= 0
    if ((p[keep] < 0) | (p[keep] >= num_classes)).any():
        raise ValueError(f"pred outside [0, {num_classes})")
    flat = y[keep] * num_classes + p[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(pred: Any, labels: Any, num_classes: int) -> np.ndarray:
    """(C,) float64 per-class accuracy (recall of each true class); NaN for classes with no sample.

    ``pred`` (N,) are predicted class indices, ``labels`` (N,) true ones (``-1`` ignored).
    """
    cm = confusion_matrix(pred, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def calibration_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability data over ``n_bins`` equal-width confidence bins.

    The confidence of a sample is its largest probability; bin b holds confidences in
    (b/n_bins, (b+1)/n_bins] (the first bin also holds 0).  Returns arrays of shape (n_bins,):
    ``count``, ``accuracy`` and ``confidence`` (means, NaN for empty bins), plus ``edges`` (n_bins+1,).
    """
    p = _check_scores(probs, "probs")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1] (apply softmax first)")
    y = _check_labels(labels, len(p), p.shape[1])
    keep = y >= 0
    p, y = p[keep], y[keep]
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
        confidence = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return {"count": count, "accuracy": accuracy, "confidence": confidence,
            "edges": np.linspace(0.0, 1.0, n_bins + 1)}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017) with equal-width bins.

    ECE = sum over bins of (bin count / N) * |bin accuracy - bin mean confidence|, in [0, 1].
    ``probs`` (N, C) are class probabilities, ``labels`` (N,) true classes (``-1`` ignored).
    """
    bins = calibration_bins(probs, labels, n_bins)
    total = bins["count"].sum()
    if total == 0:
        raise ValueError("expected_calibration_error: no labelled sample")
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / total * gaps))


def _attribute_hits(s: np.ndarray, pos: np.ndarray, valid: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """Top-k recall over the rows of s (N, A) that have >= 1 positive; masked-out entries are not ranked."""
    n_pos = pos.sum(axis=1)
    rows = n_pos > 0
    out: dict[str, Any] = {"top_k_recall": {}, "num_images": int(rows.sum())}
    ranked = np.where(valid, s, -np.inf)[rows]
    pos, n_pos = pos[rows], n_pos[rows]
    for k in ks:
        if not rows.any():
            out["top_k_recall"][int(k)] = float("nan")
            continue
        in_top = ranked >= _kth_largest(ranked, k)[:, None]
        out["top_k_recall"][int(k)] = float(np.mean((in_top & pos).sum(axis=1) / n_pos))
    return out


def _group_keys(groups: Any, num_attributes: int) -> tuple[np.ndarray, list[Any]]:
    g = _as_numpy(groups, "groups", ndim=1)
    if len(g) != num_attributes:
        raise ValueError(f"groups has {len(g)} entries for {num_attributes} attributes")
    return g, [k.item() if hasattr(k, "item") else k for k in np.unique(g)]


def attribute_topk_recall(scores: Any, labels: Any, mask: Any | None = None, ks: Sequence[int] = ATTRIBUTE_KS,
                          groups: Any | None = None) -> dict[str, Any]:
    """DeepFashion attribute top-k recall.

    For each image, rank its attribute scores, count how many of its positive attributes are among
    the k highest, divide by its number of positives; average over the images with >= 1 positive.
    Ties follow the module rule (a positive is in the top k unless >= k scores are strictly greater).

    Args:
        scores: (N, A) attribute scores (logits or probabilities).
        labels: (N, A) with 1 = positive; every other value (0, -1) is not positive.  Works for the
            DeepFashion {1, -1 negative, 0 unknown} and the fine-grained {1, 0} encodings.
        mask: optional bool (N, A) or (A,): False entries take no part (not ranked, not positive).
        ks: the k values.
        groups: optional (A,) group id of every attribute (e.g. attribute_type 1..5).  Per group the
            scores, labels and mask are restricted to the group's attributes and the same computation
            runs over the images with >= 1 positive in that group (the paper's per-type figures).
    Returns:
        {"top_k_recall": {k: recall}, "num_images": n, "per_group": {group: {"top_k_recall", "num_images"}}}
        ("per_group" only with ``groups``; a group with no positive image has NaN recall, num_images 0).
    Raises:
        ValueError: no image has a positive attribute, or bad shapes.
    """
    s = _check_scores(scores)
    y = _as_numpy(labels, "labels", ndim=2)
    if y.shape != s.shape:
        raise ValueError(f"labels shape {y.shape} differs from scores shape {s.shape}")
    valid = np.ones(s.shape, bool) if mask is None else np.broadcast_to(_as_numpy(mask, "mask").astype(bool), s.shape)
    pos = (y == 1) & valid
    out = _attribute_hits(s, pos, valid, ks)
    if out["num_images"] == 0:
        raise ValueError("attribute_topk_recall: no image has a positive attribute (label 1)")
    if groups is not None:
        g, keys = _group_keys(groups, s.shape[1])
        out["per_group"] = {key: _attribute_hits(s[:, g == key], pos[:, g == key], valid[:, g == key], ks)
                            for key in keys}
    return out


def single_choice_group_accuracy(scores: Any, labels: Any, groups: Any) -> dict[str, Any]:
    """Accuracy of the within-group argmax for single-choice attribute groups (the fine-grained variant).

    Each group (e.g. sleeve: long / short / sleeveless) has exactly one positive attribute per image;
    the prediction is correct when no other attribute of the group scores strictly higher than the
    positive one (the module's tie rule with k = 1).  Images with no positive in a group are skipped
    for that group.

    Args:
        scores: (N, A) attribute scores.  labels: (N, A), 1 = positive.  groups: (A,) group id per attribute.
    Returns:
        {"accuracy": {group: acc (NaN when no image)}, "num_images": {group: n},
         "mean_accuracy": mean over the groups that have images}.
    Raises:
        ValueError: an image has more than one positive in a group (not single-choice), or bad shapes.
    """
    s = _check_scores(scores)
    y = _as_numpy(labels, "labels", ndim=2)
    if y.shape != s.shape:
        raise ValueError(f"labels shape {y.shape} differs from scores shape {s.shape}")
    g, keys = _group_keys(groups, s.shape[1])
    acc: dict[Any, float] = {}
    counts: dict[Any, int] = {}
    for key in keys:
        pos = y[:, g == key] == 1
        n_pos = pos.sum(axis=1)
        if (n_pos > 1).any():
            raise ValueError(f"group {key!r} is not single-choice: image {int(np.argmax(n_pos > 1))} "
                             f"has {int(n_pos.max())} positives")
        rows = n_pos == 1
        counts[key] = int(rows.sum())
        if counts[key] == 0:
            acc[key] = float("nan")
            continue
        acc[key] = topk_accuracy(s[rows][:, g == key], pos[rows].argmax(axis=1), ks=(1,))[1]
    filled = [v for v in acc.values() if not np.isnan(v)]
    if not filled:
        raise ValueError("single_choice_group_accuracy: no image has a positive attribute in any group")
    return {"accuracy": acc, "num_images": counts, "mean_accuracy": float(np.mean(filled))}

