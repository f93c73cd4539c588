"""Box metrics: intersection over union of paired boxes, and the share of images localised at IoU >= 0.5.

Boxes are ``x1, y1, x2, y2`` (edges) in any common frame.  A box with ``x2 <= x1`` or ``y2 <= y1`` is
empty (area 0); the IoU of a pair whose union is empty (two empty boxes) is 0, never NaN.

IoU is invariant to a per-axis affine map with positive scales (every area is multiplied by the same
``sx * sy``), so boxes in [0, 1] of the network input give the same IoU as in the original image's pixels
when the eval transform is crop / pad / resize (``data.transforms``, ``landmark_affine``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashionlens.evaluation.classification import _as_numpy

IOU_THRESHOLD = 0.5  # the usual "correct localisation" criterion (PASCAL VOC)


def _boxes(x: Any, name: str) -> np.ndarray:
    """(N, 4) finite float64 boxes."""
    b = _as_numpy(x, name, ndim=2).astype(np.float64)
    if b.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) x1, y1, x2, y2 boxes, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return b


def box_area(boxes: Any) -> np.ndarray:
    """(N,) float64 areas of (N, 4) x1, y1, x2, y2 boxes; 0 for empty or inverted boxes."""
    b = _boxes(boxes, "boxes")
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(pred: Any, true: Any) -> np.ndarray:
    """(N,) float64 IoU of the paired boxes ``pred[i]`` and ``true[i]`` (both (N, 4) x1, y1, x2, y2).

    Returns values in [0, 1]; 0 where the boxes do not overlap or the union is empty (see the module
    docstring).  Raises ValueError on other shapes, different lengths or non-finite values."""
    p, t = _boxes(pred, "pred"), _boxes(true, "true")
    if len(p) != len(t):
        raise ValueError(f"pred has {len(p)} boxes, true has {len(t)}")
    w = np.clip(np.minimum(p[:, 2], t[:, 2]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
    h = np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None)
    inter = w * h
    union = box_area(p) + box_area(t) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_metrics(pred: Any, true: Any, has_box: Any, threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Mean IoU and localisation accuracy over the images that have a true box.

    Args:
        pred, true: (N, 4) x1, y1, x2, y2 predicted and true boxes (same frame).
        has_box: (N,) bool, True where the image has a true box (others are left out).
        threshold: IoU at or above which a predicted box counts as correct.
    Returns:
        {"iou_mean": mean IoU, "accuracy": share with IoU >= threshold, "num_boxes": images counted}, or {}
        when no image has a true box.
    """
    keep = _as_numpy(has_box, "has_box", ndim=1).astype(bool)
    p, t = _boxes(pred, "pred"), _boxes(true, "true")
    if len(keep) != len(p):
        raise ValueError(f"has_box has {len(keep)} entries for {len(p)} boxes")
    if not keep.any():
        return {}
    iou = box_iou(p[keep], t[keep])
    return {"iou_mean": float(iou.mean()), "accuracy": float(np.mean(iou >= threshold)), "num_boxes": int(keep.sum())}


__all__ = ["IOU_THRESHOLD", "box_area", "box_iou", "box_metrics"]
