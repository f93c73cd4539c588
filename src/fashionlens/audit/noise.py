"""Label-noise injection for benchmarks and tests: uniform flips and confusable-pair flips.

Both flip EXACTLY ``round(rate * N)`` labels, chosen uniformly at random among the samples that can be
flipped, with a seeded NumPy generator (same seed, same flips).  They return the noisy labels and the
boolean mask of the flipped samples, which is the ground truth an audit is scored against.

* uniform: the new label is drawn uniformly from the K - 1 other classes;
* confusable: the new label is the class most confused with the true one, taken from a confusion
  matrix (rows true, columns predicted; the largest off-diagonal entry of each row) or from an explicit
  pair map ``{class: other class}``.  Real annotators mostly make such mistakes (shirt vs t-shirt), and
  they are the hard case for an audit because the features of the two classes overlap.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NOISE_KINDS = ("uniform", "confusable")


def _check(labels: np.ndarray, rate: float, num_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise ValueError("labels must be non-negative integer class indices")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= k:
        raise ValueError(f"labels go up to {int(y.max())} but num_classes is {k}")
    if k < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {k}")
    return y.astype(np.int64), k


def _pick(eligible: np.ndarray, n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``round(rate * n)`` indices drawn without replacement from the eligible ones."""
    count = round(rate * n)
    candidates = np.flatnonzero(eligible)
    if count > len(candidates):
        raise ValueError(f"cannot flip {count} labels ({rate:.0%} of {n}): only {len(candidates)} samples "
                         "belong to classes that have a flip target")
    return np.sort(rng.choice(candidates, size=count, replace=False))


def uniform_noise(labels: np.ndarray, rate: float, *, num_classes: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(rate * N)`` random labels to a uniformly drawn OTHER class.

    Args:
        labels: (N,) int class indices in [0, num_classes).
        rate: share of labels to flip, in [0, 1].
        num_classes: K (default: max label + 1).
        seed: generator seed.
    Returns:
        (noisy labels (N,) int64, flipped mask (N,) bool); ``noisy[flipped] != labels[flipped]`` always.
    """
    y, k = _check(labels, rate, num_classes)
    rng = np.random.default_rng(seed)
    idx = _pick(np.ones(len(y), bool), len(y), rate, rng)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, k, size=len(idx))) % k  # an offset of 1..K-1: never the same class
    flipped = np.zeros(len(y), bool)
    flipped[idx] = True
    return noisy, flipped


def confusable_targets(confusion: np.ndarray) -> np.ndarray:
    """(K,) the most confused other class of each class: argmax of each row of ``confusion`` (K, K; rows true,
    columns predicted, counts or rates) with the diagonal ignored; -1 for a row without any off-diagonal mass."""
    c = np.asarray(confusion, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {c.shape}")
    off = c.copy()
    np.fill_diagonal(off, -np.inf)
    targets = off.argmax(axis=1)
    targets[~(off.max(axis=1) > 0)] = -1
    return targets


def confusable_noise(labels: np.ndarray, rate: float, *, confusion: np.ndarray | None = None,
                     pairs: Mapping[int, int] | None = None, num_classes: int | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(rate * N)`` random labels to their class's most confusable other class.

    Exactly one of ``confusion`` ((K, K), rows true, columns predicted) or ``pairs`` ({class: target},
    not necessarily symmetric) gives the target of each class; only samples of classes with a target
    can be flipped (ValueError when too few of them exist).
    Returns (noisy labels (N,) int64, flipped mask (N,) bool).
    """
    if (confusion is None) == (pairs is None):
        raise ValueError("give exactly one of confusion= (a (K, K) matrix) or pairs= ({class: other class})")
    k_hint = np.asarray(confusion).shape[0] if confusion is not None else num_classes
    y, k = _check(labels, rate, k_hint if num_classes is None else num_classes)
    if confusion is not None:
        targets = confusable_targets(confusion)
        if len(targets) != k:
            raise ValueError(f"confusion is {len(targets)}x{len(targets)} but there are {k} classes")
    else:
        targets = np.full(k, -1, np.int64)
        for a, b in (pairs or {}).items():
            if not (0 <= int(a) < k and 0 <= int(b) < k) or int(a) == int(b):
                raise ValueError(f"bad pair {a} -> {b}: need two different classes in [0, {k})")
            targets[int(a)] = int(b)
    rng = np.random.default_rng(seed)
    idx = _pick(targets[y] >= 0, len(y), rate, rng)
    noisy = y.copy()
    noisy[idx] = targets[y[idx]]
    flipped = np.zeros(len(y), bool)
    flipped[idx] = True
    return noisy, flipped


def inject_noise(labels: np.ndarray, rate: float, kind: str = "uniform", *, seed: int = 0,
                 num_classes: int | None = None, confusion: np.ndarray | None = None,
                 pairs: Mapping[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``uniform_noise`` or ``confusable_noise`` by name (``kind`` in :data:`NOISE_KINDS`)."""
    if kind == "uniform":
        return uniform_noise(labels, rate, num_classes=num_classes, seed=seed)
    if kind == "confusable":
        return confusable_noise(labels, rate, confusion=confusion, pairs=pairs, num_classes=num_classes, seed=seed)
    raise ValueError(f"unknown noise kind {kind!r}; choices: {', '.join(NOISE_KINDS)}")


__all__ = ["NOISE_KINDS", "confusable_noise", "confusable_targets", "inject_noise", "uniform_noise"]
