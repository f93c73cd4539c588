"""The files of one evaluation: report.json, report.md and PNG figures (confusion matrix, per-class
accuracy, hedging trade-off, retrieval grid, attention maps)."""

from __future__ import annotations

import json
import os

import numpy as np

from fashionlens.config import from_dict
from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.decode import load_image
from fashionlens.data.transforms import build_transforms
from fashionlens.evaluation import plots
from fashionlens.evaluation.report import retrieval_protocols
from fashionlens.evaluation.retrieval import nearest_neighbors
from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint


def attention_grid(run: str, attention: np.ndarray, samples: list, path: str, n: int = 8) -> str:
    """Up to ``n`` consumer photos (else any) with the model's spatial saliency drawn over its input view."""
    cfg = from_dict(load_checkpoint(find_checkpoint(run))["config"])
    rows = [i for i, s in enumerate(samples) if s.domain == "consumer"][:n] or list(range(min(n, len(samples))))
    ds = GarmentDataset([samples[i] for i in rows], build_transforms(cfg.data, train=False))
    mean, std = np.array(cfg.data.mean)[:, None, None], np.array(cfg.data.std)[:, None, None]
    views = [np.clip((ds[j]["image"].numpy() * std + mean).transpose(1, 2, 0), 0, 1) for j in range(len(rows))]
    return plots.plot_attention_grid([(v * 255).astype(np.uint8) for v in views], [attention[i] for i in rows], path,
                                     titles=[samples[i].category_name or "" for i in rows])


def write_report(metrics: dict, preds: dict, targets: dict, samples: list, labels: dict, out_dir: str) -> None:
    """report.json, report.md and PNG plots (confusion matrix, per-class accuracy, retrieval grid)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    names = labels["categories"]
    figures = []
    if metrics.get("category_confusion"):
        figures.append(plots.plot_confusion(np.array(metrics["category_confusion"]), names,
                                            os.path.join(out_dir, "confusion.png")))
        acc = np.array([np.nan if v is None else v for v in metrics["category_per_class"]], dtype=float)
        figures.append(plots.plot_per_class(acc, names, os.path.join(out_dir, "per_class.png")))
    if metrics.get("hedged_curve"):
        figures.append(plots.plot_tradeoff(metrics["hedged_curve"], os.path.join(out_dir, "hedging.png"),
                                           point=(metrics["hedged_specificity"], metrics["hedged_accuracy"])))
    if "embedding" in preds:
        grid = retrieval_grid(preds["embedding"], samples, os.path.join(out_dir, "retrieval.png"))
        if grid:
            figures.append(grid)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown_report(metrics, [os.path.basename(p) for p in figures]))


def retrieval_grid(embeddings: np.ndarray, samples: list, path: str, n_queries: int = 6, k: int = 5) -> str | None:
    """Queries (consumer photos when there are any) with their top-k gallery results, green = same item."""
    protocols = retrieval_protocols(samples)
    if not protocols:
        return None
    qmask, gmask = next(iter(protocols.values()))
    q, g = np.flatnonzero(qmask)[:n_queries], np.flatnonzero(gmask)
    exclude = np.array([np.searchsorted(g, i) if i in set(g) else -1 for i in q])
    idx, _ = nearest_neighbors(embeddings[q], embeddings[g], k, exclude_self=exclude)
    queries = [load_image(samples[i]) for i in q]
    results = [[load_image(samples[g[j]]) for j in row] for row in idx]
    correct = [[samples[g[j]].item_id == samples[i].item_id for j in row] for i, row in zip(q, idx)]
    return plots.plot_retrieval_grid(queries, results, correct, path)


def markdown_report(metrics: dict, figures: list[str]) -> str:
    lines = [f"# Evaluation of `{metrics['model']}`", "", f"Data: `{metrics['data']}`, split `{metrics['split']}`, "
             f"{metrics['num_images']} images. Metrics as defined in the DeepFashion paper.", "",
             "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4f} |")
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


__all__ = ["attention_grid", "markdown_report", "retrieval_grid", "write_report"]
