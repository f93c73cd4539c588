"""Geometric re-ranking: local features verify the vector index's top candidates (spatial verification).

The embedding finds garments that look alike; a near-duplicate (the same photo cropped, rescaled, rotated,
recoloured, recompressed) is better told apart by local features that agree on one geometric transform, as
instance-retrieval systems do (Philbin et al., "Object retrieval with large vocabularies and fast spatial
matching", CVPR 2007).  For a query and each candidate:

1. keypoints: OpenCV SIFT, RootSIFT descriptors (:func:`fashionlens.baselines.sift.extract_keypoints`) of the
   grayscale image resized to a longer side of ``image_size`` pixels, the ``max_features`` strongest;
2. tentative matches: each query descriptor's two nearest candidate descriptors (``cv2.BFMatcher``, L2),
   kept when the nearest is closer than ``ratio`` times the second (Lowe's ratio test);
3. a homography fit to them by RANSAC (``cv2.findHomography``, ``threshold`` pixels of reprojection
   error); its inliers are the candidate's verification score.

Candidates with at least ``min_inliers`` inliers move to the front, most inliers first (ties: the index's
order); the others keep the index's order behind them.  Keypoints of stored images are cached (LRU, keyed by
the caller, e.g. path and modification time), so repeated searches pay only for the query and the matching.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import cv2
import numpy as np

from fashionlens.baselines.sift import ImageLike, extract_keypoints


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image: ``points`` (n, 2) float32 pixel positions, ``descriptors`` (n, 128) float32."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


class GeometricReranker:
    """Re-rank candidates by RANSAC-verified RootSIFT matches (module docstring).

    Args:
        max_features: keypoints kept per image (strongest responses).
        image_size: longer image side in pixels before detection.
        ratio: Lowe's ratio-test threshold (nearest / second-nearest descriptor distance).
        threshold: RANSAC reprojection threshold, pixels of the resized image.
        min_inliers: inliers that make a candidate verified (moved to the front).
        cache_size: stored images whose keypoints are kept in memory (0 = no cache).
    """

    def __init__(self, max_features: int = 1000, image_size: int = 384, ratio: float = 0.8, threshold: float = 8.0,
                 min_inliers: int = 12, cache_size: int = 2048):
        for name, value, low in (("max_features", max_features, 1), ("image_size", image_size, 16),
                                 ("min_inliers", min_inliers, 4), ("cache_size", cache_size, 0)):
            if int(value) < low:
                raise ValueError(f"GeometricReranker: {name} must be at least {low}, got {value}")
        if not 0 < ratio <= 1:
            raise ValueError(f"GeometricReranker: ratio must be in (0, 1], got {ratio}")
        if not threshold > 0:
            raise ValueError(f"GeometricReranker: threshold must be positive, got {threshold}")
        self.max_features, self.image_size, self.ratio = int(max_features), int(image_size), float(ratio)
        self.threshold, self.min_inliers, self.cache_size = float(threshold), int(min_inliers), int(cache_size)
        self._cache: OrderedDict[Hashable, LocalFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    def features(self, image: ImageLike, key: Hashable | None = None) -> LocalFeatures:
        """Keypoints of ``image``; with a ``key`` they are cached (least recently used dropped first)."""
        if key is not None:
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    return found
        points, desc = extract_keypoints(image, self.max_features, self.image_size, rootsift=True)
        feats = LocalFeatures(points, desc)
        if key is not None and self.cache_size:
            with self._lock:
                self._cache[key] = feats
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return feats

    def matches(self, query: LocalFeatures, candidate: LocalFeatures) -> np.ndarray:
        """(m, 2) int64 pairs (query keypoint, candidate keypoint) that pass the ratio test."""
        if len(query) == 0 or len(candidate) < 2:
            return np.zeros((0, 2), np.int64)
        pairs = self._matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
        kept = [(m[0].queryIdx, m[0].trainIdx) for m in pairs
                if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        return np.array(kept, np.int64).reshape(-1, 2)

    def inliers(self, query: LocalFeatures, candidate: LocalFeatures) -> int:
        """Matches consistent with the RANSAC homography between the two images (0 below 4 matches)."""
        pairs = self.matches(query, candidate)
        if len(pairs) < 4:
            return 0
        src = query.points[pairs[:, 0]].reshape(-1, 1, 2)
        dst = candidate.points[pairs[:, 1]].reshape(-1, 1, 2)
        homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, self.threshold, maxIters=2000, confidence=0.995)
        return 0 if homography is None or mask is None else int(mask.sum())

    def rerank(self, query: ImageLike | LocalFeatures, candidates: Sequence[ImageLike | LocalFeatures],
               keys: Sequence[Hashable | None] | None = None) -> tuple[list[int], list[int]]:
        """``(order, inliers)``: the candidates' indices in the new order, and each candidate's inlier count
        (in the given order).  ``keys`` (one per candidate) cache the candidates' keypoints."""
        if keys is not None and len(keys) != len(candidates):
            raise ValueError(f"got {len(keys)} keys for {len(candidates)} candidates")
        q = query if isinstance(query, LocalFeatures) else self.features(query)
        counts = []
        for i, cand in enumerate(candidates):
            feats = cand if isinstance(cand, LocalFeatures) else self.features(cand, None if keys is None else keys[i])
            counts.append(self.inliers(q, feats))
        return rerank_order(counts, self.min_inliers), counts


def rerank_order(inliers: Sequence[int], min_inliers: int) -> list[int]:
    """Indices of candidates (given in the index's order): verified ones (``inliers >= min_inliers``) first,
    most inliers first, ties in the given order; then the unverified ones in the given order."""
    verified = sorted((i for i, n in enumerate(inliers) if n >= min_inliers), key=lambda i: (-inliers[i], i))
    return verified + [i for i, n in enumerate(inliers) if n < min_inliers]


def rerank_hits(reranker: GeometricReranker, query: Any, hits: list[dict[str, Any]], image_key: str = "image",
                ) -> list[dict[str, Any]]:
    """Search results (dicts with a stored image path under ``image_key``) re-ranked; each gets ``inliers``
    and ``verified``.  A result whose image cannot be read keeps its place among the unverified ones."""
    feats = []
    for hit in hits:
        path = hit.get(image_key)
        try:
            key = (path, os.stat(path).st_mtime_ns)
            feats.append(reranker.features(path, key))
        except (OSError, ValueError, TypeError):  # missing or unreadable stored image: nothing to verify
            feats.append(LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)))
    order, counts = reranker.rerank(query, feats)
    return [{**hits[i], "inliers": counts[i], "verified": counts[i] >= reranker.min_inliers} for i in order]
