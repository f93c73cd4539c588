"""Evaluate a trained run on a data spec: metrics JSON, and with ``out_dir`` a Markdown report and plots."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fashionlens.data.readers import parse_spec, read
from fashionlens.evaluation.report import compute_metrics, json_ready, retrieval_metrics
from fashionlens.hierarchy.hedging import hedged_metrics
from fashionlens.runs.calibrate import load_hedger
from fashionlens.runs.outputs import run_outputs
from fashionlens.runs.report import attention_grid, write_report


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


def evaluate_run(run: str, spec: str, *, split: str = "test", out_dir: str | None = None, batch_size: int = 64,
                 progress: bool = True, num_workers: int = 0, target_accuracy: float | None = None,
                 tta: bool | None = None, eval_scale: float | None = None) -> dict[str, Any]:
    """All metrics of the model in ``run`` on ``spec``'s ``split`` (see ``report.compute_metrics``);
    ``tta`` switches mirror test-time augmentation on/off (None = the run's ``model.tta_flip``), ``eval_scale``
    sets the input side to image_size x this (None = the run's ``data.eval_scale``).

    With ``target_accuracy`` (needs the run's calibration.json, see ``fashionlens calibrate``) also the
    hedged answers' ``hedged_accuracy`` and ``hedged_specificity`` (bits) and the trade-off curve."""
    if target_accuracy is not None:
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


__all__ = ["evaluate_run", "inshop_protocol"]
