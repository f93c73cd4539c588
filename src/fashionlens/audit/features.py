"""Image features for auditing and cleaning, computed once and cached to ``.npz``.

Two sources (``model`` argument):

* ``"imagenet"``: EfficientNet-Lite0 with the offline ImageNet weights, global-average-pooled last
  feature map, (N, 1280); ``"imagenet:tf_efficientnet_lite2"`` (any backbone name) for another network.
  Needs no training, so it can audit a data set before any model exists.
  Inputs: the image padded to a square (keeping its aspect), resized to ``image_size`` pixels, scaled
  with the backbone's mean/std (0.5/0.5, i.e. [-1, 1]).
* a run directory or checkpoint: the trained model with its own deterministic eval transform (the one
  ``Predictor.load`` uses), giving its fused ``"features"`` (N, hidden_dim; what the category head
  reads) or its L2-normalised ``"embedding"`` (N, embedding_dim); ``"category"`` gives the category head's
  logits (N, categories), the network's own answer (``audit.network``).

The cache file name holds a SHA-1 of the model identity (weights file, size, modification time; or
the ImageNet backbone and image size), the feature kind and every image's path, size and modification
time, so a changed image list or model never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fashionlens.config import DataConfig
from fashionlens.data.dataset import encode_tolerant
from fashionlens.data.samples import Sample
from fashionlens.data.transforms import build_transforms
from fashionlens.models.backbones import backbone_normalization, create_backbone
from fashionlens.training.checkpoint import find_checkpoint, load_model

IMAGENET = "imagenet"
IMAGENET_BACKBONE = "tf_efficientnet_lite0"
FEATURE_KINDS = ("features", "embedding")
#: The category head's logits of a trained run (what ``audit.network`` turns into probabilities).
LOGITS = "category"


@dataclass
class FeatureModel:
    """A network plus its eval transform: ``encode(images (B, 3, S, S)) -> (B, D)`` float32."""

    identity: str  # what the cache key records about the model
    transform: Callable[..., Any]  # GarmentTransform: (PIL image, target) -> ((3, S, S) tensor, target)
    encode: Callable[[torch.Tensor], np.ndarray]


def _is_imagenet(model: object) -> bool:
    return isinstance(model, str) and (model == IMAGENET or model.startswith(IMAGENET + ":"))


def _imagenet_backbone(model: str) -> str:
    """``"imagenet"`` -> the default backbone; ``"imagenet:NAME"`` -> NAME."""
    name = model.partition(":")[2]
    return name or IMAGENET_BACKBONE


def _imagenet_model(image_size: int, backbone: str = IMAGENET_BACKBONE, flip: bool = False) -> FeatureModel:
    net = create_backbone(backbone, pretrained=True).eval()
    net = net.to(memory_format=torch.channels_last)
    mean, std = backbone_normalization(backbone)
    cfg = DataConfig(image_size=int(image_size), mean=mean, std=std, resize_mode="pad")

    @torch.no_grad()
    def encode(x: torch.Tensor) -> np.ndarray:
        x = x.contiguous(memory_format=torch.channels_last)
        pooled = net.forward_features(x).mean(dim=(2, 3))  # (B, C) from the (B, C, h, w) last feature map
        if flip:  # test-time augmentation: the mean over the image and its mirror
            pooled = (pooled + net.forward_features(torch.flip(x, dims=[3])).mean(dim=(2, 3))) / 2
        return pooled.float().numpy()

    return FeatureModel(_imagenet_identity(backbone, image_size, flip), build_transforms(cfg, train=False), encode)


def _imagenet_identity(backbone: str, image_size: int, flip: bool) -> str:
    return f"{IMAGENET}:{backbone}:{int(image_size)}" + (":flip" if flip else "")


def _run_model(run: str, kind: str) -> FeatureModel:
    path = os.path.abspath(find_checkpoint(run))
    model, cfg, _ = load_model(path)

    @torch.no_grad()
    def encode(x: torch.Tensor) -> np.ndarray:
        out = model(x)
        if kind not in out:
            raise ValueError(f"{path}: the model has no {kind!r} output (it has {', '.join(sorted(out))})")
        return out[kind].float().numpy()  # (B, hidden_dim) or (B, embedding_dim)

    return FeatureModel(feature_identity(path, 0, kind), build_transforms(cfg.data, train=False), encode)


def load_feature_model(model: str, *, image_size: int = 224, kind: str = "features",
                       flip: bool = False) -> FeatureModel:
    """``"imagenet"`` (pretrained EfficientNet-Lite0 at ``image_size`` pixels; ``"imagenet:NAME"`` for another
    backbone; ``flip``: average with the mirrored image) or a run directory / checkpoint (its own image size;
    ``kind`` = ``"features"``, ``"embedding"`` or ``"category"`` (logits))."""
    if kind not in FEATURE_KINDS + (LOGITS,):
        raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS + (LOGITS,))}, got {kind!r}")
    if _is_imagenet(model):
        if kind == LOGITS:
            raise ValueError(f"--model {model} has no garment categories: category logits need a trained run")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        return _imagenet_model(image_size, _imagenet_backbone(model), flip)
    if flip:
        raise ValueError("flip (test-time mirroring) applies to the ImageNet feature models only")
    if not os.path.exists(model):
        raise FileNotFoundError(f"--model {model}: neither 'imagenet' nor an existing run directory / checkpoint")
    return _run_model(model, kind)


def cache_key(samples: Sequence[Sample], identity: str) -> str:
    """SHA-1 over the model identity and every image's path, byte size and modification time."""
    h = hashlib.sha1(identity.encode())
    for s in samples:
        try:
            st = os.stat(s.image) if s.array is None else None
        except OSError:
            st = None
        h.update(f"\n{s.image}|{st.st_size if st else ''}|{st.st_mtime_ns if st else ''}".encode())
    return h.hexdigest()


def _encode_all(samples: Sequence[Sample], fm: FeatureModel, batch_size: int, num_workers: int,
                progress: bool) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    chunks, rows, failed = encode_tolerant(samples, fm.transform, fm.encode, batch_size=batch_size,
                                           num_workers=num_workers, progress=progress, desc="features")
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return vectors, np.asarray(rows, np.int64), failed


def compute_features(samples: Sequence[Sample], model: str | FeatureModel = IMAGENET, *, image_size: int = 224,
                     kind: str = "features", flip: bool = False, batch_size: int = 32, num_workers: int = 0,
                     cache_dir: str | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``samples``: ``(vectors (M, D) float32, rows (M,) int64)``, ``rows`` = the indices of the
    samples that could be read (an unreadable image is skipped with one warning, not an error).

    ``model``: ``"imagenet"``, a run directory / checkpoint, or a loaded :class:`FeatureModel`.
    ``cache_dir``: where ``features-<sha1>.npz`` is read from / written to (None = no cache)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if flip and not _is_imagenet(model):
        raise ValueError("flip (test-time mirroring) applies to the ImageNet feature models only")
    if kind == LOGITS and _is_imagenet(model):
        raise ValueError(f"--model {model} has no garment categories: category logits need a trained run")
    if not samples:
        raise ValueError("no samples to compute features of")
    fm = model if isinstance(model, FeatureModel) else None
    identity = fm.identity if fm else feature_identity(model, image_size, kind, flip)
    key = cache_key(samples, identity)
    path = os.path.join(cache_dir, f"features-{key[:20]}.npz") if cache_dir else None
    cached = _read_cache(path, key) if path else None
    if cached is not None:
        return cached
    fm = fm or load_feature_model(str(model), image_size=image_size, kind=kind, flip=flip)
    vectors, rows, failed = _encode_all(samples, fm, batch_size, num_workers, progress)
    if failed:
        names = ", ".join(os.path.basename(samples[i].image) for i, _ in failed[:5])
        warnings.warn(f"{len(failed)} of {len(samples)} images could not be read and were skipped ({names}"
                      f"{', ...' if len(failed) > 5 else ''}); first error: {failed[0][1]}", stacklevel=2)
    if not len(rows):
        raise ValueError(f"none of the {len(samples)} images could be read")
    if path:
        os.makedirs(cache_dir or ".", exist_ok=True)
        np.savez_compressed(path, vectors=vectors, rows=rows, key=np.array(key),
                            info=np.array(json.dumps({"model": identity, "images": len(samples)})))
    return vectors, rows


def feature_identity(model: str | FeatureModel, image_size: int, kind: str, flip: bool = False) -> str:
    """The model identity without loading it (same string the loaded FeatureModel carries)."""
    if _is_imagenet(model):
        return _imagenet_identity(_imagenet_backbone(str(model)), image_size, flip)

    if not os.path.exists(str(model)):
        raise FileNotFoundError(f"--model {model}: neither 'imagenet' nor an existing run directory / checkpoint")
    path = os.path.abspath(find_checkpoint(str(model)))
    stat = os.stat(path)
    return f"run:{path}:{stat.st_size}:{stat.st_mtime_ns}:{kind}"


def _read_cache(path: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (vectors, rows) when ``path`` exists and was written for ``key``; None otherwise."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return data["vectors"].astype(np.float32), data["rows"].astype(np.int64)
    except (OSError, ValueError, KeyError):  # unreadable or foreign file: recompute and overwrite
        return None


__all__ = ["FEATURE_KINDS", "IMAGENET", "LOGITS", "FeatureModel", "cache_key", "compute_features", "load_feature_model"]
