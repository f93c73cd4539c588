"""Hedged predictions over the category tree: "Hedging your bets" (Deng, Krause, Berg, Fei-Fei, CVPR 2012).

Instead of always naming a leaf category, the classifier may answer an internal node of the taxonomy
("upper.tops" or even the root, "garment"): an answer is *correct* when it is the true leaf or one of
its ancestors.  Every node ``v`` has a reward, its information gain in bits,

    r(v) = log2(#leaves) - log2(#leaves under v)      (every leaf: log2(#leaves); the root: 0),

and a posterior ``p(v | x)`` = the sum of its leaves' calibrated probabilities.  For a given lambda >= 0
the decision rule is ``f_lambda(x) = argmax_v (r(v) + lambda) * p(v | x)``: lambda = 0 maximises the
expected reward, and as lambda grows the answer moves to nodes of higher posterior (towards the root,
whose posterior is 1), so it becomes less specific and more often correct.

DARTS (the paper's algorithm) picks the smallest lambda whose accuracy on a validation set reaches a
target ``1 - epsilon``: lambda = 0 when that already meets it, else a binary search on
``[0, lambda_bar]`` with ``lambda_bar = r_max (1 - epsilon) / epsilon``.  At ``lambda_bar`` a node other
than the root can only win when its posterior exceeds ``1 - epsilon`` (``(r + lambda) p > lambda`` needs
``p > lambda / (r_max + lambda)``), so with calibrated posteriors the expected accuracy there is at least
the target.

Monotonicity assumption.  For lambda_1 < lambda_2 with answers a and b, adding the two optimality
inequalities gives ``(lambda_2 - lambda_1)(p(b) - p(a)) >= 0``: the posterior of the answer never falls
as lambda grows, hence the *expected* accuracy (the mean posterior of the answers, under calibration) is
non-decreasing.  The *empirical* validation accuracy need not be monotone sample by sample; the binary
search assumes it is (up to noise) and always returns a lambda at which the measured validation accuracy
meets the target.  When no finite lambda does (a confidently wrong sample keeps a non-root answer for
every lambda), the answer is the root for every image (lambda = inf), which is always correct.

Node order: leaves first (node ``c`` is category ``c``), then internal nodes deepest first, the root last,
so that ``argmax`` ties (e.g. a node with a single child) go to the more specific node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fashionlens.utils import softmax

ROOT_NAME = "garment"
LAMBDA_MAX = 1e12  # beyond this the binary search gives up and answers the root for every image
SEARCH_STEPS = 60  # bisection steps (or fewer: stops at a relative width of 1e-6)


@dataclass(frozen=True)
class CategoryTree:
    """The taxonomy as a tree of ``V`` nodes over ``C`` leaves (the categories), plus a root.

    ``membership`` (V, C) bool: leaf ``c`` lies under node ``v`` (a leaf lies under itself, every leaf
    under the root).  ``rewards`` (V,) information gain in bits.  ``paths[v]`` the node's taxonomy path
    as a list (the root's is empty); ``names[v]`` a leaf's category name, an internal node's last path
    component, ``ROOT_NAME`` for the root; ``depths[v]`` = len(paths[v]) for internal nodes."""

    names: list[str]
    paths: list[list[str]]
    parents: list[int]
    membership: np.ndarray
    rewards: np.ndarray

    @classmethod
    def from_paths(cls, paths: Sequence[str], names: Sequence[str] | None = None) -> "CategoryTree":
        """Tree of dotted paths (``"upper.tops.tee"``, one per category); ``names`` default to the paths.

        Every proper prefix of a path is an internal node; an empty path hangs the leaf off the root."""
        if not len(paths):
            raise ValueError("a category tree needs at least one category path")
        names = list(names) if names is not None else list(paths)
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} category names for {len(paths)} paths")
        parts = [[p for p in str(path).split(".") if p] for path in paths]
        prefixes = sorted({tuple(p[:k]) for p in parts for k in range(1, len(p))}, key=lambda t: (-len(t), t))
        index = {t: len(parts) + i for i, t in enumerate(prefixes)}
        root = len(parts) + len(prefixes)
        index[()] = root
        parents = [index[tuple(p[:-1])] for p in parts] + [index[t[:-1]] for t in prefixes] + [-1]
        membership = np.zeros((root + 1, len(parts)), bool)
        for c, p in enumerate(parts):
            membership[c, c] = True
            membership[[index[tuple(p[:k])] for k in range(len(p))], c] = True  # its prefixes and the root
        counts = membership.sum(axis=1)
        rewards = math.log2(len(parts)) - np.log2(counts)
        node_names = names + [t[-1] for t in prefixes] + [ROOT_NAME]
        node_paths = parts + [list(t) for t in prefixes] + [[]]
        return cls(node_names, node_paths, parents, membership, rewards)

    @property
    def num_leaves(self) -> int:
        return self.membership.shape[1]

    @property
    def num_nodes(self) -> int:
        return self.membership.shape[0]

    @property
    def root(self) -> int:
        return self.num_nodes - 1

    def node_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) leaf probabilities -> (N, V) node posteriors (sums over each node's leaves)."""
        return np.asarray(probs, np.float64) @ self.membership.T.astype(np.float64)

    def is_correct(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N,) bool: node ``nodes[i]`` is the true leaf ``labels[i]`` or one of its ancestors."""
        return self.membership[np.asarray(nodes, np.int64), np.asarray(labels, np.int64)]


def decide(tree: CategoryTree, node_probs: np.ndarray, lam: float) -> np.ndarray:
    """(N,) node indices ``argmax_v (r(v) + lam) * p(v)`` of (N, V) node posteriors; ``lam = inf``: the root."""
    if math.isinf(lam):
        return np.full(len(node_probs), tree.root, np.int64)
    return np.argmax((tree.rewards + lam)[None, :] * node_probs, axis=1)


class HedgedClassifier:
    """DARTS over a :class:`CategoryTree` with temperature-scaled leaf probabilities.

    ``lambdas`` maps a target accuracy (0..1] to its fitted lambda (``math.inf`` = always the root);
    ``base_accuracy`` is the validation accuracy at lambda = 0 (targets up to it need no hedging beyond
    the reward-maximising rule).  Every method except :meth:`calibrate` takes *calibrated* probabilities."""

    def __init__(self, tree: CategoryTree, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tree, self.temperature = tree, float(temperature)
        self.lambdas: dict[float, float] = {}
        self.base_accuracy: float | None = None

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) logits -> (N, C) calibrated probabilities ``softmax(logits / T)``."""
        return softmax(np.atleast_2d(logits), self.temperature)

    def _check(self, probs: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        p = np.atleast_2d(np.asarray(probs, np.float64))
        if p.shape[1] != self.tree.num_leaves:
            raise ValueError(f"probabilities have {p.shape[1]} columns for {self.tree.num_leaves} categories")
        if labels is None:
            return p, None
        y = np.asarray(labels, np.int64)
        if y.shape != (len(p),) or ((y < 0) | (y >= p.shape[1])).any():
            raise ValueError(f"labels must be (N,) = ({len(p)},) category indices in [0, {p.shape[1]})")
        return p, y

    def accuracy(self, node_probs: np.ndarray, labels: np.ndarray, lam: float) -> float:
        """Share of correct hedged answers at ``lam`` for (N, V) node posteriors."""
        return float(self.tree.is_correct(decide(self.tree, node_probs, lam), labels).mean())

    def fit_lambda(self, val_probs: np.ndarray, val_labels: np.ndarray, target_accuracy: float) -> float:
        """The smallest lambda (to a relative 1e-6) whose validation accuracy reaches ``target_accuracy``.

        ``val_probs`` (N, C) calibrated probabilities, ``val_labels`` (N,) true categories.  Stores and
        returns the lambda (``math.inf`` when only the root-only answer reaches the target)."""
        if not 0 < target_accuracy <= 1:
            raise ValueError(f"target accuracy must be in (0, 1], got {target_accuracy}")
        p, y = self._check(val_probs, val_labels)
        if not len(p):
            raise ValueError("no validation sample to fit lambda on")
        node_probs = self.tree.node_probabilities(p)
        meets = lambda lam: self.accuracy(node_probs, y, lam) >= target_accuracy  # noqa: E731
        self.base_accuracy = self.accuracy(node_probs, y, 0.0)
        lam = 0.0 if meets(0.0) else _bisect(meets, self._lambda_bar(target_accuracy))
        self.lambdas[round(float(target_accuracy), 6)] = lam
        return lam

    def _lambda_bar(self, target: float) -> float:
        """DARTS' upper end r_max (1 - eps) / eps (LAMBDA_MAX for a target of 1)."""
        eps = 1.0 - target
        return LAMBDA_MAX if eps <= 0 else min(max(float(self.tree.rewards.max()), 1.0) * target / eps, LAMBDA_MAX)

    def fit_table(self, val_probs: np.ndarray, val_labels: np.ndarray,
                  targets: Sequence[float]) -> list[dict[str, Any]]:
        """Fit every target; rows {target_accuracy, lambda, val_accuracy, val_specificity}."""
        rows = []
        for target in targets:
            lam = self.fit_lambda(val_probs, val_labels, target)
            rows.append({"target_accuracy": float(target), "lambda": lam,
                         **_prefixed("val_", self.evaluate_lambda(val_probs, val_labels, lam))})
        return rows

    def lambda_for(self, target_accuracy: float) -> float:
        """Lambda of the smallest fitted target >= ``target_accuracy`` (so the target is met on validation);
        0 when the reward-maximising rule already met it."""
        if not 0 < target_accuracy <= 1:
            raise ValueError(f"target accuracy must be in (0, 1], got {target_accuracy}")
        if self.base_accuracy is not None and target_accuracy <= self.base_accuracy:
            return 0.0
        above = [t for t in self.lambdas if t >= target_accuracy - 1e-9]
        if not above:
            known = ", ".join(f"{t:g}" for t in sorted(self.lambdas)) or "none"
            raise ValueError(f"no lambda fitted for target accuracy {target_accuracy:g} (fitted targets: {known}); "
                             "rerun `fashionlens calibrate` with --targets including it")
        return self.lambdas[min(above)]

    def predict(self, probs: np.ndarray, target_accuracy: float) -> np.ndarray:
        """(N,) node indices: the hedged answers for (N, C) calibrated probabilities at a target accuracy."""
        p, _ = self._check(probs)
        return decide(self.tree, self.tree.node_probabilities(p), self.lambda_for(target_accuracy))

    def answers(self, probs: np.ndarray, target_accuracy: float) -> list[dict[str, Any]]:
        """One {"name", "path", "probability", "target_accuracy"} dict per row of (N, C) calibrated probabilities;
        ``probability`` is the chosen node's calibrated posterior."""
        p, _ = self._check(probs)
        nodes = self.predict(p, target_accuracy)
        post = self.tree.node_probabilities(p)[np.arange(len(p)), nodes]
        return [{"name": self.tree.names[v], "path": list(self.tree.paths[v]), "probability": round(float(q), 5),
                 "target_accuracy": float(target_accuracy)} for v, q in zip(nodes.tolist(), post)]

    def evaluate_lambda(self, probs: np.ndarray, labels: np.ndarray, lam: float) -> dict[str, float]:
        """{accuracy, specificity (mean information gain of the answers, bits), root_share} at ``lam``."""
        p, y = self._check(probs, labels)
        nodes = decide(self.tree, self.tree.node_probabilities(p), lam)
        return {"accuracy": float(self.tree.is_correct(nodes, y).mean()),
                "specificity": float(self.tree.rewards[nodes].mean()),
                "root_share": float(np.mean(nodes == self.tree.root))}

    def evaluate(self, probs: np.ndarray, labels: np.ndarray, target_accuracy: float) -> dict[str, float]:
        """Held-out figures at a target: hedged_accuracy, hedged_specificity (bits), flat_accuracy (argmax leaf),
        max_specificity (log2 #categories, the specificity of always naming a leaf), lambda."""
        p, y = self._check(probs, labels)
        lam = self.lambda_for(target_accuracy)
        res = self.evaluate_lambda(p, y, lam)
        return {"target_accuracy": float(target_accuracy), "lambda": lam, "hedged_accuracy": res["accuracy"],
                "hedged_specificity": res["specificity"], "hedged_root_share": res["root_share"],
                "flat_accuracy": float(np.mean(p.argmax(axis=1) == y)),
                "max_specificity": float(self.tree.rewards.max())}

    def tradeoff_curve(self, probs: np.ndarray, labels: np.ndarray, num: int = 40) -> dict[str, list[float]]:
        """Accuracy and specificity over lambda = 0, a geometric grid up to r_max * 1e4, and inf (the root)."""
        p, y = self._check(probs, labels)
        node_probs = self.tree.node_probabilities(p)
        top = max(float(self.tree.rewards.max()), 1.0)
        grid = [0.0, *np.geomspace(1e-3 * top, 1e4 * top, num).tolist(), math.inf]
        curve: dict[str, list[float]] = {"lambda": [], "accuracy": [], "specificity": []}
        for lam in grid:
            nodes = decide(self.tree, node_probs, lam)
            curve["lambda"].append(lam)
            curve["accuracy"].append(float(self.tree.is_correct(nodes, y).mean()))
            curve["specificity"].append(float(self.tree.rewards[nodes].mean()))
        return curve

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON state (lambda inf -> null)."""
        leaves = range(self.tree.num_leaves)
        return {"temperature": self.temperature, "base_accuracy": self.base_accuracy,
                "category_names": [self.tree.names[c] for c in leaves],
                "category_paths": [".".join(self.tree.paths[c]) for c in leaves],
                "lambdas": [{"target_accuracy": t, "lambda": None if math.isinf(v) else v}
                            for t, v in sorted(self.lambdas.items())]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "HedgedClassifier":
        tree = CategoryTree.from_paths(state["category_paths"], state["category_names"])
        out = cls(tree, float(state["temperature"]))
        out.base_accuracy = state.get("base_accuracy")
        out.lambdas = {float(row["target_accuracy"]): math.inf if row["lambda"] is None else float(row["lambda"])
                       for row in state.get("lambdas") or []}
        return out


def _bisect(meets: Any, hi: float) -> float:
    """Smallest lambda in (0, LAMBDA_MAX] with ``meets(lambda)`` (meets(0) is False), assuming monotonicity;
    ``hi`` doubles until it meets; ``math.inf`` when even LAMBDA_MAX does not."""
    while not meets(hi):
        if hi >= LAMBDA_MAX:
            return math.inf
        hi = min(hi * 2.0, LAMBDA_MAX)
    lo = 0.0
    for _ in range(SEARCH_STEPS):
        if hi - lo <= 1e-6 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def hedged_metrics(hedger: HedgedClassifier, preds: dict, targets: dict, target_accuracy: float) -> dict[str, Any]:
    """:meth:`HedgedClassifier.evaluate` figures (lambda inf -> None) and ``hedged_curve`` of collected
    outputs (``preds["category"]`` logits, ``targets["category"]`` labels, -1 = unlabelled)."""
    if "category" not in preds or "category" not in targets or not (targets["category"] >= 0).any():
        raise ValueError("hedged metrics need category labels in the evaluated data")
    known = targets["category"] >= 0
    probs, labels = hedger.calibrate(preds["category"][known]), targets["category"][known]
    res = hedger.evaluate(probs, labels, target_accuracy)
    curve = hedger.tradeoff_curve(probs, labels)
    finite = lambda v: v if np.isfinite(v) else None  # noqa: E731
    return {**res, "lambda": finite(res["lambda"]),
            "hedged_curve": {**curve, "lambda": [finite(v) for v in curve["lambda"]]}}


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {prefix + k: v for k, v in values.items() if k != "root_share"}


__all__ = ["ROOT_NAME", "CategoryTree", "HedgedClassifier", "decide", "hedged_metrics"]
