"""The vector-index interface shared by every backend, and the checks every backend applies.

Vectors are float32 rows of length ``dim`` with unit L2 norm (``l2_normalize`` makes them so);
similarity is the inner product, which for unit vectors is the cosine similarity in [-1, 1].
Ids are non-negative int64 values chosen by the caller (``-1`` marks padding in results).

Index kinds:
  ``flat``   exact search over every vector: the reference the others are measured against.
  ``ivf``    inverted file: k-means splits the catalog into ``nlist`` clusters and a query scans only
             the ``nprobe`` clusters whose centroids are closest (speed for a little recall).
  ``ivfsq``  IVF whose vectors are stored as scalar-quantised numbers (``sq_bits`` 16: float16, half the
             memory and faster to scan than ``ivf`` at the same recall; 8: one byte per dimension, a
             little recall lost; Milvus has IVF_SQ8 only).
  ``ivfpq``  IVF whose vectors are stored as product-quantization codes (``pq_m`` bytes per vector at
             8 bits instead of ``4 * dim``): catalogs larger than memory, at a further cost in recall.
  ``hnsw``   a hierarchical navigable small-world graph over the uncompressed vectors (``hnsw_m``
             links per node): no training, fast at any size; ``ef_search`` (the search breadth) trades
             speed for recall as ``nprobe`` does for IVF.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fashionlens.files import atomic_write
from fashionlens.utils import read_json_file

KINDS = ("flat", "ivf", "ivfsq", "ivfpq", "hnsw")
IVF_KINDS = ("ivf", "ivfsq", "ivfpq")
SQ_BITS = (16, 8)  # ivfsq: float16 or 8-bit scalar quantisation per dimension
DEFAULT_EF_SEARCH = 64  # HNSW search breadth (candidates kept while walking the graph); raised to k when smaller
FORMAT = "fashionlens-index"
FORMAT_VERSION = 1
NORM_TOLERANCE = 1e-2  # |1 - ||x||| above this is rejected as "not L2-normalised"


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit L2 norm, as contiguous float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=np.float32)


def auto_nlist(n: int) -> int:
    """Default IVF cluster count for ``n`` training vectors: ~4 sqrt(n), at least 39 points per cluster."""
    return int(max(1, min(round(4 * math.sqrt(max(n, 1))), n // 39)))


def auto_nprobe(nlist: int) -> int:
    """Default number of clusters scanned per query: an eighth of them (at least 1)."""
    return max(1, nlist // 8)


def sidecar_path(path: str | os.PathLike) -> str:
    """The JSON description saved next to an index: ``<path>.json``."""
    return os.fspath(path) + ".json"


def write_sidecar(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Atomically write ``meta`` (plus format name and version) to ``<path>.json``."""
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **meta}

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)

    atomic_write(sidecar_path(path), write)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata saved with the index at ``path``; FileNotFoundError / ValueError name the file."""
    side = sidecar_path(path)
    if not os.path.exists(side):
        raise FileNotFoundError(f"{side}: index description not found (was the index saved to {os.fspath(path)}?)")
    meta = read_json_file(side, "index description")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{side}: not a fashionlens index description (no format '{FORMAT}')")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{side}: format version {meta['version']} is newer than this fashionlens ({FORMAT_VERSION})")
    missing = {"backend", "kind", "dim"} - set(meta)
    if missing:
        raise ValueError(f"{side}: missing key(s) {sorted(missing)}")
    return meta


def empty_results(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All-padding search results: scores (Q, k) of -inf, ids (Q, k) of -1."""
    return np.full((n_queries, k), -np.inf, np.float32), np.full((n_queries, k), -1, np.int64)


def _as_vectors(x: Any, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1 and x.size == dim:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what}: expected shape (N, {dim}), got {x.shape} (dimension mismatch?)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"{what}: row {bad} contains NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad = int(np.flatnonzero(off)[0])
        raise ValueError(f"{what}: row {bad} has L2 norm {norms[bad]:.4f}, expected 1 (use l2_normalize)")
    return x


def _as_ids(ids: Any, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{what}: ids must be >= 0 (-1 marks padding), got {int(arr.min())}")
    return arr


class VectorIndex(ABC):
    """Inner-product search over unit vectors with caller-chosen int64 ids.

    The public methods validate their input identically for every backend, then call the
    backend's ``_train`` / ``_add`` / ``_remove`` / ``_search``.
    """

    backend: str = ""

    def __init__(self, kind: str, dim: int, *, nlist: int = 0, nprobe: int = 0, ef_search: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if nlist < 0 or nprobe < 0 or ef_search < 0:
            raise ValueError(f"nlist, nprobe and ef_search must be >= 0 (0 = auto), got {nlist}, {nprobe}, {ef_search}")
        self.kind = kind
        self.dim = int(dim)
        self._nlist = int(nlist) if kind in IVF_KINDS else 0
        self._nprobe = int(nprobe) if kind in IVF_KINDS else 0
        self._ef_search = int(ef_search) if kind == "hnsw" else 0

    # -- state -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def is_trained(self) -> bool:
        """True when vectors can be added and searched (always for flat; after train() for IVF)."""

    @property
    def nprobe(self) -> int:
        """Clusters scanned per query by default (0 for flat and hnsw)."""
        return 0 if self.kind not in IVF_KINDS else (self._nprobe or auto_nprobe(self.nlist))

    @property
    def ef_search(self) -> int:
        """HNSW search breadth by default (0 for the other kinds)."""
        return 0 if self.kind != "hnsw" else (self._ef_search or DEFAULT_EF_SEARCH)

    @property
    def nlist(self) -> int:
        """IVF cluster count (0 for flat and hnsw, and for an IVF index whose automatic count awaits train())."""
        return 0 if self.kind not in IVF_KINDS else self._nlist

    @abstractmethod
    def __len__(self) -> int:
        """Number of vectors in the index."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """All ids in the index, (N,) int64, sorted ascending."""

    # -- writes ------------------------------------------------------------------------------
    def train(self, vectors: np.ndarray) -> None:
        """Fit the IVF k-means clusters (and PQ codebooks) on ``vectors`` (N, dim); no-op for flat and hnsw."""
        x = _as_vectors(vectors, self.dim, "train vectors")
        if self.kind in IVF_KINDS:
            self._train(x)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (N, dim) under ``ids`` (N,); an id already present is replaced."""
        ids = _as_ids(ids, "add ids")
        x = _as_vectors(vectors, self.dim, "add vectors")
        if len(ids) != len(x):
            raise ValueError(f"add: {len(ids)} ids for {len(x)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("add: duplicate ids within one call (each id may appear once)")
        self._require_trained("add")
        if len(ids):
            self._add(ids, x)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many were removed."""
        ids = np.unique(_as_ids(ids, "remove ids"))
        return self._remove(ids) if len(ids) and self.is_trained else 0

    def flush(self) -> None:
        """Make pending writes durable and indexed (Milvus seals segments and builds the index)."""

    def close(self) -> None:
        """Release connections or servers held by the index (the index object is unusable after)."""

    def __enter__(self) -> "VectorIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- search ------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar vectors for each query.

        Args:
            queries: (Q, dim) unit vectors.
            k: results per query (>= 1).
            allowed_ids: search only among these ids (pre-classification, e.g. items of the
                query's predicted category); None searches everything.
            nprobe: clusters scanned for this call (IVF only; None = the index default).
            ef_search: HNSW search breadth for this call (hnsw only; None = the index default; at least k).
        Returns:
            scores (Q, k) float32 inner products, best first, and ids (Q, k) int64; rows with fewer
            than ``k`` results are padded with score -inf and id -1.
        """
        q = _as_vectors(queries, self.dim, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        self._require_trained("search")
        allowed = None if allowed_ids is None else np.unique(_as_ids(allowed_ids, "allowed_ids"))
        if len(q) == 0 or (allowed is not None and len(allowed) == 0):
            return empty_results(len(q), int(k))
        if self.kind in IVF_KINDS:  # the search effort: clusters scanned (IVF), graph breadth (HNSW)
            effort = min(int(nprobe or self.nprobe), self.nlist or 1 << 30)
        else:
            effort = max(int(ef_search or self.ef_search), int(k)) if self.kind == "hnsw" else 0
        scores, found = self._search(q, int(k), allowed, effort)
        missing = found < 0
        scores[missing], found[missing] = -np.inf, -1
        return scores.astype(np.float32, copy=False), found.astype(np.int64, copy=False)

    def tune_nprobe(self, queries: np.ndarray, truth: np.ndarray, *, query_ids: np.ndarray | None = None,
                    target: float = 0.95, max_nprobe: int | None = None) -> dict[str, Any]:
        """Set the default ``nprobe`` of an IVF index to the smallest power of two whose recall@k reaches
        ``target`` on ``queries`` (Q, dim) with exact answers ``truth`` (Q, k) ids; ``nlist`` (every
        cluster) when none does.  Queries may be stored vectors: pass their ids as ``query_ids`` and
        ``truth`` without them (each query's own id is then dropped from what the index finds, so a vector
        finding itself does not count: with it, tuning at 1M chose a nprobe that gave 0.943 on held-out queries).

        Returns ``{"nprobe": chosen, "recall": {nprobe: recall@k tried}}``.  The right nprobe depends on
        how the data clusters relative to ``nlist`` (in benchmarks/bench_index.py 2 of 1,265 clusters
        reached recall@10 0.998 at 100k, but 8 of 4,000 were needed at 1M), hence measured, not assumed."""
        if self.kind not in IVF_KINDS:
            raise ValueError(f"tune_nprobe: a {self.kind} index has no nprobe")
        truth = np.asarray(truth, np.int64)
        limit = min(self.nlist, max_nprobe or self.nlist)
        tried: dict[int, float] = {}
        probe = 1
        while True:
            found = self._found_others(queries, truth.shape[1], probe, query_ids)
            hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
            tried[probe] = float(hits.any(axis=1).sum() / max(1, (truth >= 0).sum()))
            if tried[probe] >= target or probe >= limit:
                break
            probe = min(2 * probe, limit)
        self._nprobe = probe
        return {"nprobe": probe, "recall": tried}

    def _found_others(self, queries: np.ndarray, k: int, nprobe: int, query_ids: np.ndarray | None) -> np.ndarray:
        """(Q, k) ids found at ``nprobe``; with ``query_ids`` the query's own id is left out (k others kept)."""
        if query_ids is None:
            return self.search(queries, k, nprobe=nprobe)[1]
        found = self.search(queries, k + 1, nprobe=nprobe)[1]
        own = found == np.asarray(query_ids, np.int64)[:, None]
        others = np.where(own, -1, found)
        order = np.argsort(own, axis=1, kind="stable")  # own id (if found) moved last, others keep their order
        return np.take_along_axis(others, order, axis=1)[:, :k]

    # -- persistence -------------------------------------------------------------------------
    @abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Persist the index so that ``open_index(path)`` restores it (``<path>.json`` describes it)."""

    def metadata(self) -> dict[str, Any]:
        """What the sidecar records about this index."""
        meta = {"backend": self.backend, "kind": self.kind, "dim": self.dim, "nlist": self.nlist, "nprobe": self.nprobe}
        return {**meta, "ef_search": self.ef_search} if self.kind == "hnsw" else meta

    def __repr__(self) -> str:
        probe = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind in IVF_KINDS else ""
        probe += f", ef_search={self.ef_search}" if self.kind == "hnsw" else ""
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim}, n={len(self)}{probe})"

    # -- backend hooks -----------------------------------------------------------------------
    def _require_trained(self, action: str) -> None:
        if not self.is_trained:
            raise RuntimeError(f"cannot {action}: the {self.kind} index is not trained; call train(vectors) first")

    @abstractmethod
    def _train(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _add(self, ids: np.ndarray, x: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> int: ...

    @abstractmethod
    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]: ...
