"""Evaluate a trained run on a data spec: metrics JSON, and with ``out_dir`` a Markdown report and plots."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from fashionlens.data.readers import parse_spec, read
from fashionlens.evaluation.protocol import AUTO
from fashionlens.evaluation.report import MEASURED_KEYS, compute_metrics, json_ready, retrieval_metrics
from fashionlens.hierarchy.hedging import hedged_metrics
from fashionlens.runs.calibrate import load_hedger
from fashionlens.runs.ensemble import collect_ensemble
from fashionlens.runs.outputs import collect_run
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


def _retrieval_note(metrics: dict[str, Any], preds: dict, samples: list, split: str) -> list[str]:
    """Why retrieval was not measured (as a note), or [] when it was or the model has no embedding."""
    if "embedding" not in preds or metrics.get("retrieval_top1") is not None or metrics.get("inshop_top1") is not None:
        return []
    if not any(s.item_id is not None for s in samples):
        return [f"retrieval metrics skipped: the images of split {split} have no item ids"]
    return [f"retrieval metrics skipped: no query of split {split} has a gallery image of its item"]


def _write_notes(out_dir: str, metrics: dict[str, Any]) -> None:
    """Append the protocol and the notes to ``out_dir``/report.md."""
    lines = ["", f"Protocol: {metrics['protocol']}."]
    lines += [f"- {note}" for note in metrics["notes"]]
    with open(os.path.join(out_dir, "report.md"), "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def evaluate_run(run: str | Sequence[str], spec: str, *, split: str = AUTO, out_dir: str | None = None, batch_size: int = 64,
                 progress: bool = True, num_workers: int = 0, target_accuracy: float | None = None,
                 tta: bool | None = None, eval_scale: float | None = None,
                 device: str | torch.device | None = "cpu") -> dict[str, Any]:
    """All metrics of the model in ``run`` on ``spec`` (see ``report.compute_metrics``), JSON-ready.

    ``split`` "auto" (default) evaluates what the data's benchmark defines (``evaluation.protocol``: in-shop
    query,gallery; consumer-to-shop test; category test; else test, query/gallery or val); the result says
    which in ``split``, ``protocol`` (a sentence) and ``retrieval_protocol`` ("inshop", "c2s", "loo" or None).
    Any model can be evaluated on any data: category / attribute metrics are computed only where the data's
    names are the model's, and ``notes`` (a list of sentences) says what was skipped and why; ValueError
    when nothing at all could be measured.  ``device``: where the model runs ("auto", "cpu", "cuda", ...).
    ``tta`` switches mirror test-time augmentation on/off (None = the run's ``model.tta_flip``), ``eval_scale``
    sets the input side to image_size x this (None = the run's ``data.eval_scale``).

    With ``target_accuracy`` (needs the run's calibration.json, see ``fashionlens calibrate``, and data with the
    model's categories) also the hedged answers' ``hedged_accuracy`` and ``hedged_specificity`` (bits) and the
    trade-off curve.

    ``run`` a list of several runs evaluates their ensemble (``runs.ensemble.collect_ensemble``: mean calibrated
    probabilities, concatenated embeddings; hedged answers with the ensemble's own calibration, ``calibrate
    --model A --model B``; no attention figure)."""
    runs = [run] if isinstance(run, (str, os.PathLike)) else [os.fspath(r) for r in run]
    run = runs[0] if len(runs) == 1 else runs
    if target_accuracy is not None:
        load_hedger(run).lambda_for(target_accuracy)  # no calibration / a bad target fails before the forward passes
    collect = collect_run if len(runs) == 1 else collect_ensemble
    out = collect(run, spec, split=split, batch_size=batch_size, progress=progress, num_workers=num_workers,
                  tta=tta, eval_scale=eval_scale, device=device,
                  mismatched="error" if target_accuracy is not None else "drop")
    preds, targets, samples = out.preds, out.targets, out.samples
    metrics = compute_metrics(preds, targets, samples, out.data.info, categories=out.agreement.categories,
                              attributes=out.agreement.attributes)
    if "embedding" in preds:
        metrics.update(json_ready(inshop_protocol(spec, samples, preds["embedding"])))
    if target_accuracy is not None:
        metrics.update(hedged_metrics(load_hedger(run, out.labels), preds, targets, target_accuracy))
    notes = out.agreement.notes + _retrieval_note(metrics, preds, samples, out.protocol.split)
    if not any(metrics.get(k) is not None for k in (*MEASURED_KEYS, "inshop_top1")):
        raise ValueError(f"{spec} (split {out.protocol.split}): nothing could be measured with model {run}: "
                         + "; ".join(notes or ["the model predicts nothing the data annotates"]))
    metrics.setdefault("retrieval_protocol", None)
    metrics.update({"model": run, "data": spec, "split": out.protocol.split, "protocol": out.protocol.description,
                    "num_images": len(samples), "notes": notes})
    if out_dir:
        write_report(metrics, preds, targets, samples, out.labels, out_dir)
        _write_notes(out_dir, metrics)
        if "attention" in preds and len(runs) == 1:  # saliency maps over the images as the network saw them
            attention_grid(run, preds["attention"], samples, os.path.join(out_dir, "attention.png"))
            with open(os.path.join(out_dir, "report.md"), "a", encoding="utf-8") as f:
                f.write("\n![attention](attention.png)\n")
    return metrics


__all__ = ["evaluate_run", "inshop_protocol"]
