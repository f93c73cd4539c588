"""Temperature scaling (Guo et al., ICML 2017): one scalar T > 0 that divides the logits.

``fit_temperature(logits, labels)`` minimises the negative log-likelihood of ``softmax(logits / T)`` on
held-out (validation) outputs.  The NLL is convex in the inverse temperature 1/T, hence unimodal in
log T, so a bounded Brent search over log T finds the optimum.  Scaling never changes the argmax, so the
top-1 accuracy is untouched; only the confidence moves.

``calibrate_outputs`` also fits the hedging lambdas (see ``hierarchy.hedging``) and the stacked level
fusion (``hierarchy.fusion``) on validation outputs and returns the plain-JSON state that
``runs.calibrate.calibrate_run`` stores as ``calibration.json`` next to a run's checkpoint.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from fashionlens.evaluation.classification import expected_calibration_error
from fashionlens.hierarchy.fusion import StackedFusion, compare_fusion, stacking_features
from fashionlens.hierarchy.hedging import CategoryTree, HedgedClassifier
from fashionlens.hierarchy.taxonomy import Hierarchy
from fashionlens.utils import log_softmax, softmax

#: Search range of log T: T in [e^-5, e^5] ~ [0.0067, 148].
LOG_T_BOUNDS = (-5.0, 5.0)
FORMAT = "fashionlens-calibration"
#: Target accuracies of the stored lambda table: 0.80, 0.81, ..., 0.99.
DEFAULT_TARGETS = tuple(round(0.80 + 0.01 * i, 2) for i in range(20))


def _checked(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float64 finite logits and (N,) int64 labels in [0, C), labelled rows only (-1 dropped)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y):
        raise ValueError(f"logits must be (N, C) and labels (N,), got {z.shape} and {y.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinite values")
    y = y.astype(np.int64)
    if ((y < -1) | (y >= z.shape[1])).any():
        raise ValueError(f"labels outside [0, {z.shape[1]}) (or -1 = unlabelled)")
    keep = y >= 0
    if not keep.any():
        raise ValueError("no labelled sample to calibrate on")
    return z[keep], y[keep]


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of the true labels under ``softmax(logits / temperature)``."""
    z, y = _checked(logits, labels)
    return float(-log_softmax(z, temperature)[np.arange(len(y)), y].mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature T minimising the validation NLL of ``softmax(logits / T)``.

    Args:
        logits: (N, C) uncalibrated logits of held-out samples.
        labels: (N,) true class indices (-1 = unlabelled, ignored).
    Returns:
        T > 0 (T > 1 softens over-confident outputs, T < 1 sharpens), within ``exp(LOG_T_BOUNDS)``.
    """
    z, y = _checked(logits, labels)
    rows = np.arange(len(y))

    def objective(log_t: float) -> float:
        return float(-log_softmax(z, np.exp(log_t))[rows, y].mean())

    res = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    best = float(res.x)
    if objective(0.0) <= objective(best):  # never worse than no scaling (flat objective, e.g. zero logits)
        best = 0.0
    return float(np.exp(best))


def calibration_summary(logits: Any, labels: Any, temperature: float, n_bins: int = 15) -> dict[str, float]:
    """NLL (nats) and top-label ECE (15 equal-width bins) before (T = 1) and after scaling by ``temperature``."""
    z, y = _checked(logits, labels)
    return {"temperature": float(temperature),
            "nll_before": nll(z, y, 1.0), "nll_after": nll(z, y, temperature),
            "ece_before": expected_calibration_error(softmax(z), y, n_bins),
            "ece_after": expected_calibration_error(softmax(z, temperature), y, n_bins)}


def tree_paths(labels: dict[str, Any]) -> list[str]:
    """The dotted category paths of a checkpoint's labels (the names, as one-level paths, when it has none)."""
    paths = list(labels.get("category_paths") or [])
    return paths if paths else [str(n).replace(".", "_") for n in labels["categories"]]


def calibrate_outputs(logits: np.ndarray, labels: np.ndarray, label_names: dict[str, Any],
                      level_logits: Sequence[np.ndarray] = (), targets: Sequence[float] = DEFAULT_TARGETS,
                      folds: int = 5, groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """Temperature, lambda table and stacked fusion fitted on validation outputs -> the calibration.json state.

    ``logits`` (N, C) category logits, ``labels`` (N,) categories (-1 dropped), ``label_names`` a
    checkpoint's labels dict, ``level_logits`` one (N, n_l) array per hierarchy level head, ``groups`` (N,)
    item ids keeping an item's images in one cross-validation fold of the fusion."""
    z, y = _checked(logits, labels)
    keep = np.asarray(labels) >= 0
    levels = [np.asarray(l)[keep] for l in level_logits]
    temperature = fit_temperature(z, y)
    hedger = HedgedClassifier(CategoryTree.from_paths(tree_paths(label_names), label_names["categories"]), temperature)
    table = hedger.fit_table(hedger.calibrate(z), y, targets)
    hierarchy = (Hierarchy(label_names["hierarchy_levels"], label_names["hierarchy_maps"])
                 if label_names.get("hierarchy_levels") else Hierarchy.from_paths(tree_paths(label_names)))
    groups = None if groups is None else [g for g, k in zip(groups, keep) if k]
    fusion = {"accuracy": compare_fusion(z, levels, y, hierarchy, folds=folds, groups=groups),
              "model": StackedFusion(z.shape[1]).fit(stacking_features(z, levels), y).to_dict()}
    return {"format": FORMAT, "version": 1, "num_images": len(y),
            "calibration": calibration_summary(z, y, temperature), **hedger.to_dict(),
            "table": [{**row, "lambda": None if np.isinf(row["lambda"]) else row["lambda"]} for row in table],
            "fusion": fusion}


__all__ = ["DEFAULT_TARGETS", "FORMAT", "calibrate_outputs", "calibration_summary", "fit_temperature", "nll",
           "tree_paths"]
