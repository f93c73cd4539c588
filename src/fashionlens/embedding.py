"""Embed a whole data set or image folder in batches, and keep the vectors in an ``.npz`` file.

``embed_spec(predictor, "garments:DIR")`` or ``embed_spec(predictor, "photos/")`` decodes every image,
applies the predictor's deterministic eval transform in a DataLoader, runs the model in batches and
returns ``(ids, vectors)``:

* ``vectors``: float32 (N, D), unit L2 norm (the model's retrieval embedding), one row per image read.
* ``ids``: a dict of per-row lists ``paths`` (image file), ``item_ids``, ``categories`` (category
  names), ``domains``, ``splits`` (None where the data has no such label), and ``skipped``: one
  ``{"path", "error"}`` per unreadable image, left out of the rows instead of stopping the run.

The predictor is a :class:`~fashionlens.inference.Predictor` (PyTorch), an
:class:`~fashionlens.export.OnnxEmbedder` (ONNX Runtime) or a path to either (run directory,
checkpoint or ``.onnx``); batches run on its ``device``.  With ``crop_to_bbox`` in the model's data
config, samples with an annotated box are cropped to it, as in evaluation.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from fashionlens.data.dataset import encode_tolerant
from fashionlens.data.readers import read_source
from fashionlens.data.samples import Sample
from fashionlens.export import load_predictor
from fashionlens.inference import DeviceLike, Predictor, to_numpy

ID_FIELDS = ("paths", "item_ids", "categories", "domains", "splits")


def embed_batch(predictor: Predictor, images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) normalised network inputs -> (B, D) float32 embeddings (PyTorch or ONNX Runtime), run on
    the predictor's device (:meth:`Predictor.to_device`)."""
    with torch.no_grad():
        out = predictor.model(predictor.to_device(images))
    return to_numpy(out["embedding"]).astype(np.float32, copy=False)


def embed_spec(predictor: Predictor | str, source: str, *, split: str | None = None, batch_size: int = 32,
               num_workers: int = 0, progress: bool = True,
               device: DeviceLike = None) -> tuple[dict[str, Any], np.ndarray]:
    """Embed every image of a data spec or image folder: ``(ids, vectors (N, D) float32)`` (module docstring).

    ``device`` is where a ``predictor`` given as a path is loaded (default: the CPU; a Predictor keeps its
    own).  Unreadable images are skipped, listed in ``ids["skipped"]`` and announced by one warning."""
    if isinstance(predictor, str):
        predictor = load_predictor(predictor) if device is None else load_predictor(predictor, device=device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    samples = list(read_source(source, split).samples)
    chunks, rows, failed = encode_tolerant(samples, predictor.transform, lambda x: embed_batch(predictor, x),
                                           batch_size=batch_size, num_workers=num_workers, progress=progress,
                                           desc="embedding")
    dim = predictor.embedding_dim
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    ids = _ids([samples[i] for i in rows])
    ids["skipped"] = [{"path": samples[i].image, "error": err} for i, err in failed]
    if failed:
        names = ", ".join(os.path.basename(d["path"]) for d in ids["skipped"][:5])
        warnings.warn(f"{len(failed)} of {len(samples)} images could not be read and were skipped "
                      f"({names}{', ...' if len(failed) > 5 else ''})", stacklevel=2)
    return ids, vectors


def _ids(samples: Sequence[Sample]) -> dict[str, Any]:
    return {"paths": [s.image for s in samples], "item_ids": [s.item_id for s in samples],
            "categories": [s.category_name for s in samples], "domains": [s.domain for s in samples],
            "splits": [s.split for s in samples]}


def save_embeddings(path: str, ids: dict[str, Any], vectors: np.ndarray, *, model: str = "") -> str:
    """Write ``vectors`` (N, D) and the per-row ``ids`` lists to an ``.npz`` (no pickled objects; None -> "")."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {vectors.shape}")
    arrays: dict[str, np.ndarray] = {"vectors": vectors, "model": np.array(model)}
    for name in ID_FIELDS:
        values = list(ids.get(name) or [None] * len(vectors))
        if len(values) != len(vectors):
            raise ValueError(f"ids[{name!r}] has {len(values)} entries for {len(vectors)} vectors")
        arrays[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    skipped = ids.get("skipped") or []
    arrays["skipped_paths"] = np.array([d["path"] for d in skipped], dtype=str)
    arrays["skipped_errors"] = np.array([d["error"] for d in skipped], dtype=str)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path if path.endswith(".npz") else path + ".npz"


def load_embeddings(path: str) -> tuple[dict[str, Any], np.ndarray]:
    """``(ids, vectors (N, D) float32)`` as :func:`save_embeddings` wrote them ("" read back as None)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embeddings file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    with data:
        missing = [k for k in ("vectors", *ID_FIELDS) if k not in data.files]
        if missing:
            raise ValueError(f"{path}: not a fashionlens embeddings file (missing {', '.join(missing)})")
        vectors = data["vectors"].astype(np.float32, copy=False)
        ids: dict[str, Any] = {k: [v or None for v in data[k].tolist()] for k in ID_FIELDS}
        ids["model"] = str(data["model"]) if "model" in data.files else ""
        ids["skipped"] = [{"path": p, "error": e}
                          for p, e in zip(data["skipped_paths"].tolist(), data["skipped_errors"].tolist())]
    return ids, vectors


__all__ = ["embed_batch", "embed_spec", "load_embeddings", "save_embeddings"]
