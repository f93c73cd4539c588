"""Report figures written straight to PNG files (matplotlib's Agg canvas; no pyplot state, no display).

Each function takes the numbers to draw and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fashionlens.evaluation.classification import _as_numpy

GREEN, RED = "#1a9850", "#d73027"


def _save(fig: Figure, path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight")
    return path


def plot_confusion(cm: Any, names: Sequence[str], path: str | os.PathLike[str], normalize: bool = True) -> str:
    """Confusion matrix (C, C), rows = true class, columns = predicted.

    With ``normalize`` the colours show each row divided by its count (per-class recall on the
    diagonal); cells show counts when C <= 20.
    """
    counts = _as_numpy(cm, "cm", ndim=2).astype(np.float64)
    c = counts.shape[0]
    if counts.shape != (c, c) or len(names) != c:
        raise ValueError(f"cm must be (C, C) with C = len(names) = {len(names)}, got {counts.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = counts / counts.sum(axis=1, keepdims=True) if normalize else counts
    side = min(max(4.0, 0.35 * c + 2.0), 24.0)
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(shown), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row share" if normalize else "count")
    ax.set_xticks(range(c), labels=names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), labels=names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 20:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                        color="white" if np.nan_to_num(shown[i, j]) > 0.5 * np.nanmax(shown) else "black")
    return _save(fig, path)


def plot_per_class(acc: Any, names: Sequence[str], path: str | os.PathLike[str], title: str = "per-class accuracy") -> str:
    """Horizontal bars of a per-class score in [0, 1] (NaN = class absent, drawn as an empty row)."""
    values = _as_numpy(acc, "acc", ndim=1).astype(np.float64)
    if len(values) != len(names):
        raise ValueError(f"{len(values)} values for {len(names)} names")
    fig = Figure(figsize=(6, max(2.0, 0.22 * len(values) + 1.0)), dpi=100)
    ax = fig.add_subplot()
    y = np.arange(len(values))
    ax.barh(y, np.nan_to_num(values), color="#4575b4")
    ax.set_yticks(y, labels=[f"{n} (n/a)" if np.isnan(v) else n for n, v in zip(names, values)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    filled = values[~np.isnan(values)]
    if filled.size:
        ax.axvline(filled.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {filled.mean():.3f}")
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_curves(history: Sequence[Mapping[str, Any]], keys: Sequence[str], path: str | os.PathLike[str]) -> str:
    """Training curves: one panel per key, x = epoch (``history[i]["epoch"]`` if present, else i + 1).

    ``history`` is a list of per-epoch metric dicts; epochs missing a key leave a gap.
    """
    if not keys:
        raise ValueError("plot_curves: no keys to plot")
    epochs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows), dpi=100)
    for n, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, n + 1)
        values = [float(h[key]) if key in h and h[key] is not None else np.nan for h in history]
        ax.plot(epochs, values, marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _show(ax: Any, image: Any, frame: str | None, title: str = "") -> None:
    ax.imshow(np.asarray(image.convert("RGB")))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(4)


def plot_retrieval_grid(query_images: Sequence[Any], results: Sequence[Sequence[Any]],
                        correct: Sequence[Sequence[bool]], path: str | os.PathLike[str]) -> str:
    """One row per query: the query image, then its ranked results framed green (correct) or red.

    ``query_images``: Q PIL images; ``results[q]``: the top results of query q (PIL images, best
    first); ``correct[q][j]``: whether result j has the query's id.
    """
    if len(results) != len(query_images) or len(correct) != len(query_images) or not query_images:
        raise ValueError("need one results list and one correct list per query, and at least one query")
    if any(len(r) != len(c) for r, c in zip(results, correct)):
        raise ValueError("each results list and its correct list must have the same length")
    cols = 1 + max((len(r) for r in results), default=0)
    fig = Figure(figsize=(1.6 * cols, 1.8 * len(query_images)), dpi=100)
    axes = fig.subplots(len(query_images), cols, squeeze=False)
    for q, query in enumerate(query_images):
        _show(axes[q, 0], query, None, "query")
        for j in range(1, cols):
            if j - 1 < len(results[q]):
                _show(axes[q, j], results[q][j - 1], GREEN if correct[q][j - 1] else RED, f"#{j}")
            else:
                axes[q, j].axis("off")
    return _save(fig, path)


def plot_attention_grid(images: Sequence[Any], maps: Sequence[Any], path: str | os.PathLike[str],
                        titles: Sequence[str] | None = None) -> str:
    """Each network-input image (H, W, 3 uint8) with its spatial saliency map (h, w in [0, 1]) drawn over it
    (upsampled to the image, semi-transparent heat colours), one column per image."""
    n = len(images)
    if n == 0 or n != len(maps):
        raise ValueError(f"plot_attention_grid needs as many maps as images (got {n} and {len(maps)})")
    fig = Figure(figsize=(2.0 * n, 2.3))
    for i, (image, sal) in enumerate(zip(images, maps)):
        ax = fig.add_subplot(1, n, i + 1)
        h, w = np.asarray(image).shape[:2]
        ax.imshow(image)
        ax.imshow(np.asarray(sal, dtype=float), cmap="inferno", alpha=0.45, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                  interpolation="bilinear", vmin=0.0, vmax=1.0)
        ax.set_title(titles[i] if titles else "", fontsize=7)
        ax.axis("off")
    return _save(fig, path)


def plot_tradeoff(curve: dict[str, list[Any]], path: str, point: tuple[float, float] | None = None) -> str:
    """PNG of accuracy (y, 0..1) against specificity (x, bits of information gain) over lambda, from
    :meth:`fashionlens.hierarchy.hedging.HedgedClassifier.tradeoff_curve`; ``point`` (specificity, accuracy) marks the chosen target."""
    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.plot(curve["specificity"], curve["accuracy"], "o-", markersize=3, label="hedged (lambda sweep)")
    if point is not None:
        ax.plot([point[0]], [point[1]], "r*", markersize=12, label="at the target accuracy")
    ax.set_xlabel("specificity (mean information gain, bits)")
    ax.set_ylabel("accuracy (true leaf or an ancestor)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("accuracy-specificity trade-off")
    return _save(fig, path)
