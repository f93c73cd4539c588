"""Temperature scaling (Guo et al., ICML 2017): one scalar T > 0 that divides the logits.

``fit_temperature(logits, labels)`` minimises the negative log-likelihood of ``softmax(logits / T)`` on
held-out (validation) outputs.  The NLL is convex in the inverse temperature 1/T, hence unimodal in
log T, so a bounded Brent search over log T finds the optimum.  Scaling never changes the argmax, so the
top-1 accuracy is untouched; only the confidence moves.

A run's calibration (``calibrate_run``) also fits the hedging lambdas (see ``hierarchy.hedging``) and the
stacked level fusion (``hierarchy.fusion``) on validation outputs, and stores everything as plain JSON in
``calibration.json`` next to the checkpoint, where ``load_hedger`` finds it.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from fashionlens.evaluation.classification import expected_calibration_error

#: Search range of log T: T in [e^-5, e^5] ~ [0.0067, 148].
LOG_T_BOUNDS = (-5.0, 5.0)
CALIBRATION_FILE = "calibration.json"
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


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) log-probabilities of ``softmax(logits / temperature)``, computed stably."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) probabilities ``softmax(logits / temperature)`` (rows sum to 1)."""
    return np.exp(log_softmax(logits, temperature))


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


# -- a run's calibration.json ---------------------------------------------------------------------------------
def calibration_path(run: str) -> str:
    """``calibration.json`` in the run directory (or next to a checkpoint file given directly)."""
    return os.path.join(run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)), CALIBRATION_FILE)


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
    from fashionlens.hierarchy.fusion import StackedFusion, compare_fusion, stacking_features
    from fashionlens.hierarchy.hedging import CategoryTree, HedgedClassifier
    from fashionlens.hierarchy.taxonomy import Hierarchy

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


def calibrate_run(run: str, spec: str, *, split: str = "val", targets: Sequence[float] = DEFAULT_TARGETS,
                  batch_size: int = 64, progress: bool = True, num_workers: int = 0) -> dict[str, Any]:
    """Collect the run's outputs on ``spec``'s ``split``, fit everything (:func:`calibrate_outputs`) and write
    ``calibration.json`` into the run.  Returns the stored state plus ``path``."""
    from fashionlens.evaluation.run import run_outputs
    from fashionlens.training.checkpoint import find_checkpoint

    preds, targets_, samples, labels, _ = run_outputs(run, spec, split=split, batch_size=batch_size,
                                                     progress=progress, num_workers=num_workers)
    if "category" not in preds or "category" not in targets_:
        raise ValueError(f"{run}: the model or {spec} has no category labels to calibrate")
    levels = [preds[f"level_{i}"] for i in range(len(labels.get("hierarchy_levels") or [])) if f"level_{i}" in preds]
    items = [s.item_id if s.item_id is not None else f"row{i}" for i, s in enumerate(samples)]
    state = calibrate_outputs(preds["category"], targets_["category"], labels, levels, targets, groups=items)
    ckpt = find_checkpoint(run)
    state.update(data=spec, split=split, checkpoint=os.path.basename(ckpt), checkpoint_mtime_ns=os.stat(ckpt).st_mtime_ns)
    path = calibration_path(run)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, allow_nan=False)
    os.replace(tmp, path)
    return {**state, "path": path}


def load_calibration(run: str) -> dict[str, Any]:
    """The calibration.json state of ``run``; FileNotFoundError telling to run ``fashionlens calibrate`` first."""
    path = calibration_path(run)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: hedged answers (--target-accuracy) need a calibrated model; "
                                f"run `fashionlens calibrate --model {run} --data SPEC` first")
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); rerun `fashionlens calibrate`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fashionlens calibration file; rerun `fashionlens calibrate`")
    return state


def load_hedger(run: str, labels: dict[str, Any] | None = None) -> Any:
    """The :class:`~fashionlens.hierarchy.hedging.HedgedClassifier` stored in ``run``; with ``labels`` (the
    checkpoint's) its categories must match the model's and a checkpoint newer than the file warns."""
    from fashionlens.hierarchy.hedging import HedgedClassifier
    from fashionlens.training.checkpoint import find_checkpoint

    state = load_calibration(run)
    path = calibration_path(run)
    if labels is None:
        return HedgedClassifier.from_dict(state)
    if state.get("category_names") != list(labels["categories"]):
        raise ValueError(f"{path}: its categories differ from the model's; rerun `fashionlens calibrate`")
    ckpt = find_checkpoint(run)
    if os.path.basename(ckpt) == state.get("checkpoint") and os.stat(ckpt).st_mtime_ns != state.get("checkpoint_mtime_ns"):
        warnings.warn(f"{ckpt} changed after {path} was written; rerun `fashionlens calibrate`", stacklevel=2)
    return HedgedClassifier.from_dict(state)


__all__ = ["CALIBRATION_FILE", "DEFAULT_TARGETS", "calibrate_outputs", "calibrate_run", "calibration_path",
           "calibration_summary", "fit_temperature", "load_calibration", "load_hedger", "log_softmax", "nll",
           "softmax", "tree_paths"]
