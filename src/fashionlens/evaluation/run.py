"""Evaluate a trained run on a data spec: metrics JSON, and with ``out_dir`` a Markdown report and plots."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.readers import parse_spec, read
from fashionlens.data.samples import SampleSet
from fashionlens.data.transforms import build_transforms
from fashionlens.evaluation.report import compute_metrics, json_ready, retrieval_metrics
from fashionlens.training.checkpoint import load_model
from fashionlens.training.loop import collect_outputs


def _check_labels(data: SampleSet, labels: dict[str, Any]) -> None:
    """The data must use the model's label space (same category and attribute names, in order)."""
    if data.info.categories and data.info.categories != labels["categories"]:
        raise ValueError(f"{data.info.root}: its {data.info.num_categories} categories differ from the model's "
                         f"{len(labels['categories'])} (first difference: "
                         f"{next((a, b) for a, b in zip(data.info.categories + [None], labels['categories'] + [None]) if a != b)})")
    if data.info.attributes and data.info.attributes != labels["attributes"]:
        raise ValueError(f"{data.info.root}: its attributes differ from the model's")


def inshop_protocol(spec: str, samples: list, embeddings: np.ndarray) -> dict[str, Any]:
    """For a ``garments:`` render, the in-shop protocol (query -> gallery shop views) over the rows evaluated."""
    kind, path = parse_spec(spec)
    if kind != "garments":
        return {}
    inshop = read(f"deepfashion-inshop:{os.path.join(path, 'inshop')}")
    role = {os.path.realpath(s.image): s for s in inshop.samples if s.split in ("query", "gallery")}
    rows = [i for i, s in enumerate(samples) if os.path.realpath(s.image) in role]
    if not rows:
        return {}
    picked = [role[os.path.realpath(samples[i].image)] for i in rows]
    res = retrieval_metrics(embeddings[rows], picked)
    return {k: v for k, v in res.items() if k.startswith("inshop_")}


def run_outputs(run: str, spec: str, *, split: str = "test", batch_size: int = 64, progress: bool = True,
                num_workers: int = 0, tta: bool | None = None, eval_scale: float | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list, dict[str, Any], SampleSet]:
    """(predictions, targets, sample of each row, the model's labels, the data) of ``run`` on ``spec``'s ``split``;
    see ``training.loop.collect_outputs`` for the arrays.  ``tta``: mirror test-time augmentation on/off
    (None = as the run was configured, ``model.tta_flip``); ``eval_scale``: input side = image_size x this
    (None = the run's ``data.eval_scale``)."""
    model, cfg, labels = load_model(run)
    if tta is not None:
        model.tta_flip = bool(tta)
    if eval_scale is not None:
        cfg.data.eval_scale = float(eval_scale)
    data = read(spec)
    _check_labels(data, labels)
    part = data.split(*split.split(","))
    if not len(part):
        raise ValueError(f"no samples in split {split!r} of {spec}; splits: {data.splits()}")
    ds = GarmentDataset(part, build_transforms(cfg.data, train=False), num_attributes=len(labels["attributes"]))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    preds, targets, _ = collect_outputs(model, loader, channels_last=cfg.train.channels_last, progress=progress)
    return preds, targets, [ds.samples[i] for i in targets["index"]], labels, data


def evaluate_run(run: str, spec: str, *, split: str = "test", out_dir: str | None = None, batch_size: int = 64,
                 progress: bool = True, num_workers: int = 0, target_accuracy: float | None = None,
                 tta: bool | None = None, eval_scale: float | None = None) -> dict[str, Any]:
    """All metrics of the model in ``run`` on ``spec``'s ``split`` (see ``report.compute_metrics``);
    ``tta`` switches mirror test-time augmentation on/off (None = the run's ``model.tta_flip``), ``eval_scale``
    sets the input side to image_size x this (None = the run's ``data.eval_scale``).

    With ``target_accuracy`` (needs the run's calibration.json, see ``fashionlens calibrate``) also the
    hedged answers' ``hedged_accuracy`` and ``hedged_specificity`` (bits) and the trade-off curve."""
    if target_accuracy is not None:
        from fashionlens.hierarchy.calibration import load_hedger

        load_hedger(run).lambda_for(target_accuracy)  # no calibration / a bad target fails before the forward passes
    preds, targets, samples, labels, data = run_outputs(run, spec, split=split, batch_size=batch_size,
                                                        progress=progress, num_workers=num_workers, tta=tta,
                                                        eval_scale=eval_scale)
    metrics = compute_metrics(preds, targets, samples, data.info)
    if "embedding" in preds:
        metrics.update(json_ready(inshop_protocol(spec, samples, preds["embedding"])))
    if target_accuracy is not None:
        metrics.update(hedged_metrics(load_hedger(run, labels), preds, targets, target_accuracy))
    metrics.update({"model": run, "data": spec, "split": split, "num_images": len(samples)})
    if out_dir:
        write_report(metrics, preds, targets, samples, labels, out_dir)
        if "attention" in preds:  # saliency maps over the images as the network saw them
            attention_grid(run, preds["attention"], samples, os.path.join(out_dir, "attention.png"))
            with open(os.path.join(out_dir, "report.md"), "a", encoding="utf-8") as f:
                f.write("\n![attention](attention.png)\n")
    return metrics


def attention_grid(run: str, attention: np.ndarray, samples: list, path: str, n: int = 8) -> str:
    """Up to ``n`` consumer photos (else any) with the model's spatial saliency drawn over its input view."""
    from fashionlens.config import from_dict
    from fashionlens.evaluation.plots import plot_attention_grid
    from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint

    cfg = from_dict(load_checkpoint(find_checkpoint(run))["config"])
    rows = [i for i, s in enumerate(samples) if s.domain == "consumer"][:n] or list(range(min(n, len(samples))))
    ds = GarmentDataset([samples[i] for i in rows], build_transforms(cfg.data, train=False))
    mean, std = np.array(cfg.data.mean)[:, None, None], np.array(cfg.data.std)[:, None, None]
    views = [np.clip((ds[j]["image"].numpy() * std + mean).transpose(1, 2, 0), 0, 1) for j in range(len(rows))]
    return plot_attention_grid([(v * 255).astype(np.uint8) for v in views], [attention[i] for i in rows], path,
                               titles=[samples[i].category_name or "" for i in rows])


def hedged_metrics(hedger: Any, preds: dict, targets: dict, target_accuracy: float) -> dict[str, Any]:
    """``hierarchy.hedging.HedgedClassifier.evaluate`` figures (lambda inf -> None) and ``hedged_curve``."""
    if "category" not in preds or "category" not in targets or not (targets["category"] >= 0).any():
        raise ValueError("hedged metrics need category labels in the evaluated data")
    known = targets["category"] >= 0
    probs, labels = hedger.calibrate(preds["category"][known]), targets["category"][known]
    res = hedger.evaluate(probs, labels, target_accuracy)
    curve = hedger.tradeoff_curve(probs, labels)
    finite = lambda v: v if np.isfinite(v) else None  # noqa: E731
    return {**res, "lambda": finite(res["lambda"]),
            "hedged_curve": {**curve, "lambda": [finite(v) for v in curve["lambda"]]}}


def write_report(metrics: dict, preds: dict, targets: dict, samples: list, labels: dict, out_dir: str) -> None:
    """report.json, report.md and PNG plots (confusion matrix, per-class accuracy, retrieval grid)."""
    from fashionlens.evaluation import plots

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
        from fashionlens.hierarchy.hedging import plot_tradeoff

        figures.append(plot_tradeoff(metrics["hedged_curve"], os.path.join(out_dir, "hedging.png"),
                                     point=(metrics["hedged_specificity"], metrics["hedged_accuracy"])))
    if "embedding" in preds:
        grid = retrieval_grid(preds["embedding"], samples, os.path.join(out_dir, "retrieval.png"))
        if grid:
            figures.append(grid)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown_report(metrics, [os.path.basename(p) for p in figures]))


def retrieval_grid(embeddings: np.ndarray, samples: list, path: str, n_queries: int = 6, k: int = 5) -> str | None:
    """Queries (consumer photos when there are any) with their top-k gallery results, green = same item."""
    from fashionlens.data.decode import load_image
    from fashionlens.evaluation.plots import plot_retrieval_grid
    from fashionlens.evaluation.report import retrieval_protocols
    from fashionlens.evaluation.retrieval import nearest_neighbors

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
    return plot_retrieval_grid(queries, results, correct, path)


def markdown_report(metrics: dict, figures: list[str]) -> str:
    lines = [f"# Evaluation of `{metrics['model']}`", "", f"Data: `{metrics['data']}`, split `{metrics['split']}`, "
             f"{metrics['num_images']} images. Metrics as defined in the DeepFashion paper.", "",
             "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4f} |")
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"
