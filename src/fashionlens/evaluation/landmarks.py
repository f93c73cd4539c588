"""Landmark metrics: the DeepFashion normalized error and a detection rate.

"Normalized by image size" means each axis is divided by its own extent: x / W and y / H (not by
the diagonal, nor by one common side), so coordinates lie in [0, 1] and the error of a landmark is
    sqrt(((x_pred - x_true) / W) ** 2 + ((y_pred - y_true) / H) ** 2).
Only visible landmarks count.  Note that DeepFashion's visibility flag is 0 for visible: pass
``visibility == 0`` as the mask (occluded and truncated landmarks are left out, as in the paper).
Slots follow ``fashionlens.data.samples.LANDMARK_SLOTS`` when K = 8.

The image is the ORIGINAL photo: model outputs are in [0, 1] of the (cropped, padded, resized) network
input, and :func:`apply_affine` with the dataset's ``landmark_affine`` (see ``data.dataset``) maps them to
coordinates normalized by the original width and height first.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fashionlens.data.samples import LANDMARK_SLOTS
from fashionlens.evaluation.classification import _as_numpy


def _normalized_distances(pred: Any, true: Any, visible_mask: Any, image_size: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) distances in normalized coordinates (NaN where invisible) and the (N, K) bool mask."""
    p = _as_numpy(pred, "pred", ndim=3).astype(np.float64)
    t = _as_numpy(true, "true", ndim=3).astype(np.float64)
    m = _as_numpy(visible_mask, "visible_mask", ndim=2).astype(bool)
    if p.shape != t.shape or p.shape[-1] != 2 or m.shape != p.shape[:2]:
        raise ValueError(f"shapes must be pred/true (N, K, 2) and visible_mask (N, K); got {p.shape}, {t.shape}, {m.shape}")
    if image_size is not None:
        size = _as_numpy(image_size, "image_size", ndim=2).astype(np.float64)  # (N, 2) = (width, height)
        if size.shape != (len(p), 2) or (size <= 0).any():
            raise ValueError(f"image_size must be (N, 2) positive (width, height) pixels, got shape {size.shape}")
        p, t = p / size[:, None, :], t / size[:, None, :]
    diff = np.where(m[..., None], p - t, np.nan)
    if np.isnan(diff[m]).any():
        raise ValueError("pred/true have NaN coordinates at visible landmarks")
    return np.sqrt((diff ** 2).sum(axis=-1)), m


def apply_affine(points: Any, affine: Any) -> np.ndarray:
    """(N, K, 2) points mapped per image and axis: ``points * affine[:, 0] + affine[:, 1]`` (float64).

    ``affine`` (N, 2, 2) holds rows (scale, offset) for x and y, e.g. the batch key ``landmark_affine``
    (network-input [0, 1] -> original-image normalized coordinates)."""
    p = _as_numpy(points, "points", ndim=3).astype(np.float64)
    a = _as_numpy(affine, "affine", ndim=3).astype(np.float64)
    if a.shape != (len(p), 2, 2) or p.shape[-1] != 2:
        raise ValueError(f"need points (N, K, 2) and affine (N, 2, 2), got {p.shape} and {a.shape}")
    return p * a[:, None, 0, :] + a[:, None, 1, :]


def _slot_names(k: int, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != k:
            raise ValueError(f"{len(names)} names for {k} landmark slots")
        return list(names)
    return list(LANDMARK_SLOTS) if k == len(LANDMARK_SLOTS) else [str(i) for i in range(k)]


def normalized_error(pred: Any, true: Any, visible_mask: Any, image_size: Any | None = None,
                     names: Sequence[str] | None = None) -> dict[str, Any]:
    """DeepFashion normalized error: mean L2 distance in image-size-normalized coordinates over visible landmarks.

    Args:
        pred, true: (N, K, 2) landmark (x, y): pixels when ``image_size`` is given, else already
            normalized to [0, 1] by the image width/height.
        visible_mask: (N, K) bool, True where the true landmark is visible.
        image_size: (N, 2) image (width, height) in pixels, or None if coordinates are normalized.
        names: optional K slot names (default: LANDMARK_SLOTS for K = 8, else "0".."K-1").
    Returns:
        {"normalized_error": mean over ALL visible landmarks (not the mean of the slot means),
         "per_landmark": {slot name: mean over that slot's visible landmarks, NaN if none},
         "num_visible": number of visible landmarks}.
    Raises:
        ValueError: no visible landmark, bad shapes, NaN at a visible landmark.
    """
    dist, m = _normalized_distances(pred, true, visible_mask, image_size)
    if not m.any():
        raise ValueError("normalized_error: no visible landmark")
    count = m.sum(axis=0)
    with np.errstate(invalid="ignore"):
        per_slot = np.where(m, dist, 0.0).sum(axis=0) / count
    return {"normalized_error": float(dist[m].mean()),
            "per_landmark": dict(zip(_slot_names(m.shape[1], names), per_slot.tolist())),
            "num_visible": int(m.sum())}


def detection_rate(pred: Any, true: Any, visible_mask: Any, image_size: Any | None = None,
                   thresholds: Sequence[float] = (0.05, 0.1)) -> dict[float, float]:
    """Share of visible landmarks whose normalized error is at most each threshold.

    Same inputs and normalization as ``normalized_error``; thresholds are in normalized units
    (0.1 = a tenth of the image).  Returns {threshold: rate in [0, 1]}.
    """
    dist, m = _normalized_distances(pred, true, visible_mask, image_size)
    if not m.any():
        raise ValueError("detection_rate: no visible landmark")
    visible = dist[m]
    return {float(t): float(np.mean(visible <= t)) for t in thresholds}
