"""SIFT bag-of-visual-words retrieval: the classical reference for the learned embeddings.

The pipeline of Sivic & Zisserman ("Video Google", ICCV 2003) with RootSIFT (Arandjelovic & Zisserman,
"Three things everyone should know to improve object retrieval", CVPR 2012):

1. the image in grayscale, resized so that its longer side is ``image_size`` pixels (aspect kept);
2. up to ``max_features`` OpenCV SIFT keypoints (the strongest responses), one 128-d descriptor each;
   RootSIFT maps a descriptor d to sqrt(d / |d|_1), so that the inner product of two RootSIFT vectors is
   the Hellinger kernel of the originals;
3. a vocabulary of ``vocab_size`` visual words: k-means centroids (faiss.Kmeans, ``kmeans_iterations``
   Lloyd iterations) of a random sample of at most ``max_train_descriptors`` training descriptors;
4. per image, the histogram of nearest words (term frequencies) times the inverse document frequency of
   the training images (scikit-learn's smoothed idf: ln((1 + n) / (1 + df)) + 1), L2-normalised, so the
   cosine similarity of two images is the inner product of their vectors, as for the CNN embeddings.
   An image without keypoints (blank, tiny) gets the zero vector: similarity 0 to everything.

Images are ``PIL.Image`` objects, file paths, :class:`~fashionlens.data.samples.Sample` records or
(H, W[, 3|4]) uint8 arrays.  A fitted model is saved as a plain ``.npz`` (no pickle).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence, Union

import cv2
import faiss
import numpy as np
from PIL import Image
from sklearn.feature_extraction.text import TfidfTransformer

from fashionlens.data.decode import array_to_rgb, load_image, to_rgb
from fashionlens.data.samples import Sample

ImageLike = Union[Image.Image, str, "os.PathLike[str]", Sample, np.ndarray]

DESCRIPTOR_DIM = 128
_FORMAT = "fashionlens.sift_bovw/1"


def to_gray(image: ImageLike, image_size: int) -> np.ndarray:
    """(H', W') uint8 grayscale of ``image`` with its longer side resized to ``image_size`` pixels."""
    if isinstance(image, Image.Image):
        rgb = to_rgb(image)
    elif isinstance(image, np.ndarray):
        rgb = array_to_rgb(image)
    else:
        rgb = load_image(image)
    gray = np.asarray(rgb.convert("L"))
    h, w = gray.shape
    if h == 0 or w == 0 or max(h, w) == image_size:
        return gray
    scale = image_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def extract_keypoints(image: ImageLike, max_features: int = 500, image_size: int = 256,
                      rootsift: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """SIFT (or RootSIFT) keypoints of one image: ``(points (n, 2) float32 x, y in pixels of the resized
    image, descriptors (n, 128) float32)``, n <= ``max_features`` (the strongest responses), n = 0 if none.

    Keypoints are detected on the grayscale image resized to a longer side of ``image_size`` pixels.
    """
    gray = to_gray(image, image_size)
    empty = np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.float32)
    if gray.size == 0:
        return empty
    sift = cv2.SIFT_create(nfeatures=int(max_features))
    keypoints, desc = sift.detectAndCompute(gray, None)
    if desc is None or len(keypoints) == 0:
        return empty
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    if len(desc) > max_features:  # equal responses at the cut can let a few more through
        order = np.sort(np.argsort([-k.response for k in keypoints], kind="stable")[:max_features])
        desc, points = desc[order], points[order]
    desc = desc.astype(np.float32)
    if rootsift:
        desc = np.sqrt(desc / (np.abs(desc).sum(axis=1, keepdims=True) + 1e-7))
    return points, desc


def extract_descriptors(image: ImageLike, max_features: int = 500, image_size: int = 256,
                        rootsift: bool = True) -> np.ndarray:
    """SIFT (or RootSIFT) descriptors of one image: (n, 128) float32, n <= ``max_features``, n = 0 if none
    (:func:`extract_keypoints` without the positions)."""
    return extract_keypoints(image, max_features, image_size, rootsift)[1]


class SiftBoVW:
    """Bag of visual words over SIFT descriptors with TF-IDF weighting.

    Args:
        vocab_size: number of visual words V (k-means clusters).
        max_features: keypoints kept per image (strongest responses).
        image_size: longer image side in pixels before detection.
        rootsift: use RootSIFT descriptors (else raw SIFT).
        seed: seed of the descriptor sample and of k-means (same seed + same images = same model).
        kmeans_iterations: Lloyd iterations of k-means.
        max_train_descriptors: descriptors sampled for k-means (all images still count for the idf).
        workers: threads for descriptor extraction (OpenCV releases the GIL); 1 = sequential.

    After :meth:`fit`: ``vocabulary`` (V, 128) float32 centroids and ``idf`` (V,) float32 weights.
    """

    def __init__(self, vocab_size: int = 1000, max_features: int = 500, image_size: int = 256,
                 rootsift: bool = True, seed: int = 0, kmeans_iterations: int = 20,
                 max_train_descriptors: int = 200_000, workers: int = 1):
        for name, value, low in (("vocab_size", vocab_size, 2), ("max_features", max_features, 1),
                                 ("kmeans_iterations", kmeans_iterations, 1),
                                 ("image_size", image_size, 16), ("max_train_descriptors", max_train_descriptors, 2),
                                 ("workers", workers, 1)):
            if int(value) < low:
                raise ValueError(f"SiftBoVW: {name} must be at least {low}, got {value}")
        self.vocab_size, self.max_features, self.image_size = int(vocab_size), int(max_features), int(image_size)
        self.rootsift, self.seed, self.kmeans_iterations = bool(rootsift), int(seed), int(kmeans_iterations)
        self.max_train_descriptors, self.workers = int(max_train_descriptors), int(workers)
        self.vocabulary: np.ndarray | None = None
        self.idf: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        """The constructor arguments that define the model (``workers`` excluded: it changes nothing)."""
        return {"vocab_size": self.vocab_size, "max_features": self.max_features, "image_size": self.image_size,
                "rootsift": self.rootsift, "seed": self.seed, "kmeans_iterations": self.kmeans_iterations,
                "max_train_descriptors": self.max_train_descriptors}

    def describe(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Descriptors of every image, in order: a list of (n_i, 128) float32 arrays."""
        def one(image: ImageLike) -> np.ndarray:
            return extract_descriptors(image, self.max_features, self.image_size, self.rootsift)

        if self.workers == 1 or len(images) < 2:
            return [one(im) for im in images]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(one, images))

    def fit(self, images: Sequence[ImageLike]) -> "SiftBoVW":
        """Learn the vocabulary and the idf weights from training images; returns ``self``.

        Raises ValueError when the images yield fewer descriptors than ``vocab_size``.
        """
        descriptors = self.describe(images)
        return self.fit_descriptors(descriptors)

    def fit_descriptors(self, descriptors: Sequence[np.ndarray]) -> "SiftBoVW":
        """:meth:`fit` from already extracted descriptors (one (n_i, 128) array per training image)."""
        stacked = np.concatenate([_check_desc(d) for d in descriptors]) if len(descriptors) else np.zeros((0, 128))
        if len(stacked) < self.vocab_size:
            raise ValueError(f"SiftBoVW.fit: {len(descriptors)} images gave {len(stacked)} SIFT descriptors, fewer "
                             f"than vocab_size={self.vocab_size}; use more (or larger, textured) images or a "
                             "smaller vocabulary")
        rng = np.random.default_rng(self.seed)
        if len(stacked) > self.max_train_descriptors:
            stacked = stacked[np.sort(rng.choice(len(stacked), self.max_train_descriptors, replace=False))]
        kmeans = faiss.Kmeans(DESCRIPTOR_DIM, self.vocab_size, niter=self.kmeans_iterations, seed=self.seed,
                              max_points_per_centroid=len(stacked), min_points_per_centroid=1, verbose=False)
        kmeans.train(np.ascontiguousarray(stacked, dtype=np.float32))
        self.vocabulary = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        counts = self.histograms(descriptors)
        self.idf = TfidfTransformer(smooth_idf=True).fit(counts).idf_.astype(np.float32)
        return self

    def histograms(self, descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """Raw visual-word counts: (N, V) float32, one row per descriptor array."""
        if self.vocabulary is None:
            raise RuntimeError("SiftBoVW is not fitted: call fit(images) or SiftBoVW.load(path) first")
        vocab = self.vocabulary
        out = np.zeros((len(descriptors), self.vocab_size), np.float32)
        for i, desc in enumerate(descriptors):
            if len(desc):
                out[i] = np.bincount(assign_words(_check_desc(desc), vocab), minlength=self.vocab_size)
        return out

    def transform(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, V) float32 L2-normalised TF-IDF histograms (rows of images without keypoints are zero)."""
        return self.transform_descriptors(self.describe(images))

    def transform_descriptors(self, descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """:meth:`transform` from already extracted descriptors."""
        idf = self._fitted()[1]
        x = self.histograms(descriptors) * idf[None, :]
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.vocabulary is None or self.idf is None:
            raise RuntimeError("SiftBoVW is not fitted: call fit(images) or SiftBoVW.load(path) first")
        return self.vocabulary, self.idf

    def save(self, path: str) -> None:
        """Write the fitted model to ``path`` (an ``.npz`` archive: vocabulary, idf, config as JSON)."""
        vocab, idf = self._fitted()
        with open(path, "wb") as f:
            np.savez(f, vocabulary=vocab, idf=idf,
                     config=np.array(json.dumps({"format": _FORMAT, **self.config()})))

    @classmethod
    def load(cls, path: str, workers: int = 1) -> "SiftBoVW":
        """Read a model written by :meth:`save`.

        Raises FileNotFoundError for a missing file and ValueError (naming the file) for anything else.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SIFT BoVW model file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("vocabulary", "idf", "config")}
            config = json.loads(str(arrays["config"]))
        except (KeyError, OSError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a SIFT BoVW model saved by SiftBoVW.save ({e})") from e
        if not isinstance(config, dict) or config.pop("format", None) != _FORMAT:
            raise ValueError(f"{path}: config is not of format {_FORMAT!r}")
        model = cls(**config, workers=workers)
        vocab, idf = arrays["vocabulary"], arrays["idf"]
        if vocab.shape != (model.vocab_size, DESCRIPTOR_DIM) or idf.shape != (model.vocab_size,):
            raise ValueError(f"{path}: vocabulary {vocab.shape} / idf {idf.shape} do not match "
                             f"vocab_size={model.vocab_size}")
        model.vocabulary, model.idf = vocab.astype(np.float32), idf.astype(np.float32)
        return model


def assign_words(descriptors: np.ndarray, vocabulary: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of each descriptor: (n,) int64.

    descriptors (n, 128), vocabulary (V, 128); squared distances as |c|^2 - 2 d.c (|d|^2 is constant per row).
    """
    c_sq = (vocabulary.astype(np.float32) ** 2).sum(axis=1)  # (V,)
    out = np.empty(len(descriptors), np.int64)
    for start in range(0, len(descriptors), chunk):
        block = descriptors[start:start + chunk].astype(np.float32)
        out[start:start + chunk] = np.argmin(c_sq[None, :] - 2.0 * block @ vocabulary.T, axis=1)
    return out


def _check_desc(desc: np.ndarray) -> np.ndarray:
    desc = np.asarray(desc, np.float32)
    if desc.ndim != 2 or desc.shape[1] != DESCRIPTOR_DIM:
        raise ValueError(f"SIFT descriptors must be (n, {DESCRIPTOR_DIM}), got shape {desc.shape}")
    return desc


__all__ = ["SiftBoVW", "assign_words", "extract_descriptors", "to_gray"]
