"""All metrics of one evaluation, computed from collected model outputs and targets.

``compute_metrics(preds, targets, samples, info)`` gives the flat JSON-ready dict the CLI prints
(``category_top1`` ... ``retrieval_top20``, null where the data lacks what a key needs) plus details.
Retrieval protocols follow the data: in-shop (split query -> split gallery), consumer-to-shop
(consumer photos -> shop photos) and, failing both, leave-one-out over items; top-k at k = 1, 5, 10, 20,
30, 40, 50 (``retrieval.RETRIEVAL_KS``).

Landmarks: ``landmark_ne`` is the paper's normalized error, in coordinates normalized by the ORIGINAL
image's width and height (the targets' ``landmark_affine`` maps the network-input [0, 1] coordinates
there); ``landmark_ne_input`` is the same error in [0, 1] of the padded square network input, and
``landmark_ne_frame`` says which frame ``landmark_ne`` used ("original" or, without an affine, "input").
Boxes: ``bbox_iou_mean`` and ``bbox_acc_iou50`` (share of images with a true box whose predicted box has
IoU >= 0.5), in the network input's frame (IoU does not change under the per-axis affine).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fashionlens.data.samples import DatasetInfo, Sample
from fashionlens.evaluation.boxes import box_metrics
from fashionlens.evaluation.classification import (
    attribute_topk_recall,
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
    topk_accuracy,
)
from fashionlens.evaluation.landmarks import apply_affine, detection_rate, normalized_error
from fashionlens.evaluation.retrieval import RETRIEVAL_KS, retrieval_topk
from fashionlens.utils import softmax

#: Keys every ``compute_metrics`` result holds (None when the data or the model lacks what they need).
HEADLINE_KEYS = ("category_top1", "category_top3", "category_top5", "attribute_recall_top3", "attribute_recall_top5",
                 "landmark_ne", "bbox_iou_mean", "bbox_acc_iou50", "retrieval_top1", "retrieval_top20")
#: The keys that say something was measured (``evaluate`` refuses data where all of them are None).
MEASURED_KEYS = ("category_top1", "attribute_recall_top3", "landmark_ne", "bbox_iou_mean", "retrieval_top1")


def category_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Top-1/3/5 accuracy, per-class accuracy, confusion matrix and ECE over samples with a known label."""
    known = labels >= 0
    if not known.any() or logits.shape[1] == 0:
        return {}
    logits, labels = logits[known], labels[known]
    ks = [k for k in (1, 3, 5) if k <= logits.shape[1]]
    top = topk_accuracy(logits, labels, ks)
    pred = logits.argmax(1)
    return {
        **{f"category_top{k}": top.get(k) for k in (1, 3, 5)},
        "category_per_class": per_class_accuracy(pred, labels, num_classes).tolist(),
        "category_confusion": confusion_matrix(pred, labels, num_classes).tolist(),
        "category_ece": expected_calibration_error(softmax(logits), labels),
    }


def attribute_metrics(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, groups: Sequence[int],
                      group_names: dict[int, str]) -> dict[str, Any]:
    """DeepFashion top-3/5 attribute recall, overall and per attribute group."""
    if scores.shape[1] == 0 or not ((labels > 0) & (mask > 0)).any():
        return {}
    res = attribute_topk_recall(scores, labels, mask=mask, ks=(3, 5), groups=list(groups) or None)
    per_group = {
        group_names.get(g, str(g)): {f"top{k}": v for k, v in r["top_k_recall"].items()}
        for g, r in (res.get("per_group") or {}).items()
    }
    return {"attribute_recall_top3": res["top_k_recall"][3], "attribute_recall_top5": res["top_k_recall"][5],
            "attribute_recall_per_group": per_group}


def landmark_metrics(pred: np.ndarray, true: np.ndarray, visibility: np.ndarray, present: np.ndarray,
                     affine: np.ndarray | None = None) -> dict[str, Any]:
    """DeepFashion normalized error and detection rates over the visible landmarks.

    ``pred``/``true`` (N, K, 2) are in [0, 1] of the network input; with ``affine`` (N, 2, 2) (the targets'
    ``landmark_affine``) both are first mapped to coordinates normalized by the original image, the paper's
    frame.  Returns {} without a visible landmark, else ``landmark_ne`` (+ per slot, ``landmark_within_0.05``
    / ``0.1``) in that frame, ``landmark_ne_frame`` ("original" or "input") and ``landmark_ne_input`` (the
    error in the network input's [0, 1], for comparison)."""
    visible = present.astype(bool) & (visibility == 0)
    if not visible.any():
        return {}
    on_input = normalized_error(pred, true, visible)["normalized_error"]
    frame = "input"
    if affine is not None:
        pred, true, frame = apply_affine(pred, affine), apply_affine(true, affine), "original"
    ne = normalized_error(pred, true, visible)
    rates = detection_rate(pred, true, visible, thresholds=(0.05, 0.1))
    return {"landmark_ne": ne["normalized_error"], "landmark_ne_per_slot": ne["per_landmark"],
            "landmark_within_0.05": rates[0.05], "landmark_within_0.1": rates[0.1],
            "landmark_ne_frame": frame, "landmark_ne_input": on_input}


def bbox_metrics(pred: np.ndarray, true: np.ndarray, has_bbox: np.ndarray) -> dict[str, Any]:
    """``bbox_iou_mean``, ``bbox_acc_iou50`` and ``bbox_images`` over the images with a true box ({} if none)."""
    res = box_metrics(pred, true, has_bbox, threshold=0.5)
    if not res:
        return {}
    return {"bbox_iou_mean": res["iou_mean"], "bbox_acc_iou50": res["accuracy"], "bbox_images": res["num_boxes"]}


def retrieval_protocols(samples: Sequence[Sample]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Protocol name -> (query mask, gallery mask) over ``samples`` (items must be known)."""
    has_item = np.array([s.item_id is not None for s in samples])
    split = np.array([s.split or "" for s in samples])
    domain = np.array([s.domain or "" for s in samples])
    out = {}
    if (split == "query").any() and (split == "gallery").any():
        out["inshop"] = (has_item & (split == "query"), has_item & (split == "gallery"))
    if (domain == "consumer").any() and (domain == "shop").any():
        out["c2s"] = (has_item & (domain == "consumer"), has_item & (domain == "shop"))
    if not out and has_item.sum() > 1:
        out["loo"] = (has_item, has_item)
    return out


def retrieval_metrics(embeddings: np.ndarray, samples: Sequence[Sample], ks: Sequence[int] = RETRIEVAL_KS) -> dict:
    """Top-k accuracy and mAP for every protocol the samples support; the first protocol also fills
    the generic ``retrieval_top{k}`` / ``retrieval_map`` keys (consumer-to-shop preferred)."""
    out: dict[str, Any] = {}
    ids = np.array([s.item_id or "" for s in samples], dtype=object)
    protocols = retrieval_protocols(samples)
    for name, (qmask, gmask) in protocols.items():
        q, g = np.flatnonzero(qmask), np.flatnonzero(gmask)
        exclude = None
        if name == "loo":
            exclude = np.arange(len(q))
        try:
            res = retrieval_topk(embeddings[q], ids[q], embeddings[g], ids[g], ks=ks, exclude_self=exclude)
        except ValueError:  # no query has a relevant gallery item
            continue
        out.update({f"{name}_top{k}": v for k, v in res["top_k_accuracy"].items()})
        out[f"{name}_map"] = res["mean_average_precision"]
        out[f"{name}_queries"] = res["num_evaluated"]
    main = next((p for p in ("c2s", "inshop", "loo") if f"{p}_top1" in out), None)
    if main:
        out.update({f"retrieval_top{k}": out[f"{main}_top{k}"] for k in ks})
        out["retrieval_map"], out["retrieval_protocol"] = out[f"{main}_map"], main
    return out


def compute_metrics(preds: dict[str, np.ndarray], targets: dict[str, np.ndarray], samples: Sequence[Sample],
                    info: DatasetInfo, *, categories: bool = True, attributes: bool = True) -> dict[str, Any]:
    """Every metric the outputs and the data allow, JSON-ready, with every :data:`HEADLINE_KEYS` present.

    ``samples[i]`` is the sample of row ``i``.  ``categories`` / ``attributes`` False skip those metrics
    (the data's labels mean other classes than the model's); landmarks, box and retrieval need no shared
    label space."""
    out: dict[str, Any] = {}
    if categories and "category" in preds and "category" in targets:
        out.update(category_metrics(preds["category"], targets["category"], max(info.num_categories, 1)))
    if attributes and "attributes" in preds and "attributes" in targets:
        out.update(attribute_metrics(preds["attributes"], targets["attributes"], targets["attribute_mask"],
                                     info.attribute_groups, info.group_names))
    if "landmarks" in preds and "landmarks" in targets:
        out.update(landmark_metrics(preds["landmarks"], targets["landmarks"], targets["visibility"],
                                    targets["landmark_mask"], targets.get("landmark_affine")))
    if "bbox" in preds and "bbox" in targets and "has_bbox" in targets:
        out.update(bbox_metrics(preds["bbox"], targets["bbox"], targets["has_bbox"]))
    if "embedding" in preds:
        out.update(retrieval_metrics(preds["embedding"], samples))
    for key in HEADLINE_KEYS:
        out.setdefault(key, None)
    return json_ready(out)


def json_ready(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, dict keys -> str (recursively)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
