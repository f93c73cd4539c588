"""The embedded FAISS backend: exact flat, IVF (k-means clusters) and IVF-PQ indexes in one file.

``flat``  ``IndexIDMap2(IndexFlatIP)``: exact inner-product search, 4 * dim bytes per vector.
``ivf``   ``IndexIVFFlat`` with a flat inner-product coarse quantizer: k-means (faiss, fixed seed)
          splits the catalog into ``nlist`` clusters; a query scans the ``nprobe`` closest ones.
          Vectors are stored uncompressed, so recall depends only on ``nprobe`` and reaches exact
          search at ``nprobe = nlist``.
``ivfsq`` ``IndexIVFScalarQuantizer``: the same clusters, vectors stored as float16 (``sq_bits=16``, exact to
          ~1e-3 in score, half the memory; scanning half the bytes made nprobe-1 search 1.3-1.6x faster than
          ``ivf`` in benchmarks/bench_index.py at equal recall) or as 8-bit codes per dimension (``sq_bits=8``,
          residuals to the centroid; a quarter of the memory, recall@10 ~0.01-0.02 lower).
``ivfpq`` ``IndexIVFPQ`` (METRIC_INNER_PRODUCT, residuals to the cluster centroid): every vector
          becomes ``pq_m`` codes of ``pq_bits`` bits (16 bytes for the defaults instead of 512 for
          dim 128). Scores are approximations, so even with ``nprobe = nlist`` the top-k order
          differs from exact search. On the clustered vectors of benchmarks/bench_index.py (dim 128,
          neighbours nearly tied inside a cluster) recall@10 was 0.26-0.80 at 16 bytes per vector and
          0.84-0.96 at 64 bytes (pq_m=64). ``refine = R`` re-ranks the ``R * k`` best PQ candidates
          with the exact vectors (kept beside the codes in an ``IndexIDMap2(IndexFlatIP)``, as FAISS's
          ``IndexRefineFlat`` does; that one cannot add under ids or remove, so the pair is kept here):
          scan speed of the codes, order of exact search, memory of a flat index plus the codes.
``hnsw``  ``IndexHNSWFlat`` (inner product, ``hnsw_m`` links per node, ``ef_construction`` breadth while
          building): no training; a query walks the graph keeping ``ef_search`` candidates. FAISS's HNSW
          cannot delete, so removed and replaced vectors become tombstones that every search filters out
          (an ``IDSelectorBitmap`` over graph positions); once they exceed a quarter of the graph it is
          rebuilt from the live vectors. A filtered search over few ids (pre-classification) gathers
          those vectors and searches them exactly instead of walking a mostly filtered graph.

Saved as ``faiss.write_index`` bytes at ``path`` plus ``path.json`` (kind, dim, nprobe, version,
size), and for hnsw ``path.ids.npy`` (the id at each graph position, -1 = tombstone), each written to a
temporary file and renamed into place.
"""

from __future__ import annotations

import os
from typing import Any

import faiss
import numpy as np

from fashionlens.files import atomic_write
from fashionlens.index.base import SQ_BITS, VectorIndex, auto_nlist, empty_results, read_sidecar, write_sidecar

_GATHER_MIN_QUERIES = 20  # filtered flat search: from this batch size on, gather the subset (BLAS)
_HNSW_EXACT_MAX = 20_000  # filtered hnsw search over at most this many ids: exact search of the gathered subset
_HNSW_COMPACT_SHARE = 0.25  # tombstones above this share of the graph (and 1024): rebuild it from the live vectors
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80


class FaissIndex(VectorIndex):
    """A FAISS index of unit vectors under int64 ids (see the module docstring for the kinds)."""

    backend = "faiss"

    def __init__(self, kind: str, dim: int, *, nlist: int = 0, nprobe: int = 0, pq_m: int = 16, pq_bits: int = 8,
                 hnsw_m: int = DEFAULT_HNSW_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION, ef_search: int = 0,
                 refine: int = 0, sq_bits: int = 16):
        super().__init__(kind, dim, nlist=nlist, nprobe=nprobe, ef_search=ef_search)
        if kind == "ivfsq" and sq_bits not in SQ_BITS:
            raise ValueError(f"sq_bits must be 16 (float16) or 8 (one byte per dimension), got {sq_bits}")
        self.sq_bits = int(sq_bits)
        if refine < 0 or (refine and kind != "ivfpq"):
            raise ValueError(f"refine (exact re-ranking of refine x k PQ candidates) applies to ivfpq only and "
                             f"must be >= 0, got {refine} for {kind}")
        if kind == "hnsw" and (hnsw_m < 2 or ef_construction < 1):
            raise ValueError(f"hnsw needs hnsw_m >= 2 and ef_construction >= 1, got {hnsw_m}, {ef_construction}")
        if kind == "ivfpq" and (pq_m < 1 or dim % pq_m):
            raise ValueError(f"pq_m={pq_m} must divide the vector size {dim} (e.g. {dim // 8} or {dim // 4})")
        if kind == "ivfpq" and not 1 <= pq_bits <= 16:
            raise ValueError(f"pq_bits must be in 1..16, got {pq_bits}")
        self.pq_m, self.pq_bits = int(pq_m), int(pq_bits)
        self.hnsw_m, self.ef_construction = int(hnsw_m), int(ef_construction)
        self.refine = int(refine)
        self._exact: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim)) if self.refine else None
        self._index: Any = None
        if kind == "flat":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            self._index = self._new_graph()
        self._ids = np.empty(0, np.int64)  # sorted ids present, kept beside the index for replace/ids()
        self._positions = np.empty(0, np.int64)  # hnsw: the id at each graph position, -1 = tombstone

    def _new_graph(self) -> Any:
        graph = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        return graph

    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    def __len__(self) -> int:
        if self.kind == "hnsw":
            return len(self._ids)
        return 0 if self._index is None else int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def index(self) -> Any:
        """The underlying ``faiss.Index`` (None for an IVF index before train())."""
        return self._index

    # -- training ----------------------------------------------------------------------------
    def _train(self, x: np.ndarray) -> None:
        if len(self):
            raise ValueError(f"the {self.kind} index already holds {len(self)} vectors; build a new index to retrain")
        nlist = self._nlist or auto_nlist(len(x))
        needed = max(nlist, 2**self.pq_bits if self.kind == "ivfpq" else 1)
        if len(x) < needed:
            raise ValueError(
                f"train: {len(x)} vectors cannot train {self.kind} with nlist={nlist}"
                + (f", pq_bits={self.pq_bits}" if self.kind == "ivfpq" else "")
                + f"; give at least {needed} (about 40 per cluster is better) or lower nlist"
            )
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        elif self.kind == "ivfsq":
            qtype = _SQ_TYPES[self.sq_bits]
            # float16 needs no residual (it is nearly exact); 8-bit codes quantise the residual to the centroid
            index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT,
                                                  self.sq_bits == 8)
        else:
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.pq_m, self.pq_bits, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit-norm centroids: clusters of directions, as the metric sees them
        index.train(x)
        self._nlist = nlist
        index.nprobe = self.nprobe
        self._index = index

    # -- writes ------------------------------------------------------------------------------
    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        if self.kind == "hnsw":
            self._bury(ids)  # a replaced id's old vector becomes a tombstone
            self._index.add(x)
            self._positions = np.concatenate([self._positions, ids])
            self._ids = np.union1d(self._ids, ids)
            self._compact_if_needed()
            return
        present = ids[np.isin(ids, self._ids, assume_unique=True)]
        for index in (self._index, self._exact):
            if index is None:
                continue
            if len(present):
                index.remove_ids(faiss.IDSelectorBatch(present))
            index.add_with_ids(x, ids)
        self._ids = np.union1d(self._ids, ids)

    def _remove(self, ids: np.ndarray) -> int:
        present = ids[np.isin(ids, self._ids, assume_unique=True)]
        if not len(present):
            return 0
        if self.kind == "hnsw":
            self._bury(present)
            self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
            self._compact_if_needed()
            return len(present)
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(present)))
        if self._exact is not None:
            self._exact.remove_ids(faiss.IDSelectorBatch(present))
        self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
        return removed

    def _bury(self, ids: np.ndarray) -> None:
        """hnsw: the graph positions holding ``ids`` become tombstones."""
        self._positions[np.isin(self._positions, ids)] = -1

    def _compact_if_needed(self) -> None:
        """hnsw: rebuild the graph from the live vectors once tombstones exceed a quarter of it."""
        dead = int((self._positions < 0).sum())
        if dead <= max(1024, _HNSW_COMPACT_SHARE * len(self._positions)):
            return
        live = np.flatnonzero(self._positions >= 0)
        vectors = self._graph_vectors()[live]
        self._index = self._new_graph()
        self._index.add(vectors)
        self._positions = self._positions[live]

    def _graph_vectors(self) -> np.ndarray:
        """hnsw: (ntotal, dim) view of the vectors at every graph position (tombstones included)."""
        n = int(self._index.ntotal)
        storage = faiss.downcast_index(self._index.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def _search_graph(self, q: np.ndarray, k: int, allowed: np.ndarray | None, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """hnsw: graph search that skips tombstones and ids outside ``allowed``; small ``allowed`` sets exactly."""
        keep = self._positions >= 0
        if allowed is not None:
            keep &= np.isin(self._positions, allowed)
            if int(keep.sum()) <= _HNSW_EXACT_MAX:
                return _exact_among(q, k, self._graph_vectors(), self._positions, np.flatnonzero(keep))
        params = faiss.SearchParametersHNSW(efSearch=int(ef))
        bitmap = None
        if not keep.all():
            bitmap = np.packbits(keep, bitorder="little")  # bit i = position i; alive while faiss reads it
            params.sel = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
        search = getattr(self._index, "search_numpy", self._index.search)
        scores, found = search(q, k, params=params)
        del bitmap
        return scores, np.where(found >= 0, self._positions[np.maximum(found, 0)], -1)

    # -- search ------------------------------------------------------------------------------
    def _search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "hnsw":  # ``nprobe`` carries the search effort: ef_search (base.VectorIndex.search)
            return self._search_graph(q, k, allowed, nprobe)
        if self.kind == "flat" and allowed is not None and len(q) >= _GATHER_MIN_QUERIES:
            return self._search_subset(q, k, allowed)
        selector = None if allowed is None else faiss.IDSelectorBatch(allowed)  # alive while faiss uses it
        if self.kind == "flat":
            params = None if selector is None else faiss.SearchParameters(sel=selector)
        else:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if selector is not None:
                params.sel = selector
        # faiss.contrib.torch_utils (imported by pytorch-metric-learning) swaps Index.search for a wrapper
        # without ``params``; the original stays reachable as ``search_numpy``.
        search = getattr(self._index, "search_numpy", self._index.search)
        if self._exact is None:
            return search(q, k, params=params)
        return self._refined(q, k, *search(q, k * self.refine, params=params))

    def _refined(self, q: np.ndarray, k: int, _scores: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ivfpq + refine: the PQ shortlist ``found`` (Q, R*k) re-scored with the exact vectors; top ``k``."""
        flat = found.reshape(-1)
        valid = flat >= 0
        vectors = np.zeros((len(flat), self.dim), np.float32)
        if valid.any():
            vectors[valid] = self._exact.reconstruct_batch(flat[valid])  # one call: ids -> exact vectors
        exact = np.einsum("qcd,qd->qc", vectors.reshape(*found.shape, self.dim), q)
        exact[found < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]  # ties keep the PQ order
        scores, ids = np.take_along_axis(exact, order, 1), np.take_along_axis(found, order, 1)
        ids[~np.isfinite(scores)] = -1
        if ids.shape[1] < k:  # fewer candidates than k: pad
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), ids

    def _search_subset(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search among ``allowed`` ids: gather their vectors, then one BLAS product.

        faiss's flat search with an IDSelector skips BLAS and tests every stored id: for 1000 queries
        over 100k vectors and a 1/14 subset it took 3-4x longer than unfiltered search, gathering took
        1/8-1/15 of it. For a few queries the selector is faster (~1.8 vs 2.5 ms per query at 100k).
        """
        n = int(self._index.ntotal)
        stored = faiss.rev_swig_ptr(self._index.id_map.data(), n)  # position -> id (views, no copy)
        vectors = faiss.rev_swig_ptr(faiss.downcast_index(self._index.index).get_xb(), n * self.dim)
        return _exact_among(q, k, vectors.reshape(n, self.dim), stored, np.flatnonzero(np.isin(stored, allowed)))

    # -- persistence -------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        extra = {"pq_m": self.pq_m, "pq_bits": self.pq_bits, "refine": self.refine} if self.kind == "ivfpq" else {}
        if self.kind == "ivfsq":
            extra = {"sq_bits": self.sq_bits}
        if self.kind == "hnsw":
            extra = {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction}
        return {**super().metadata(), **extra, "ntotal": len(self)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` and its description to ``path.json`` (both atomically)."""
        self._require_trained("save")
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write(path, lambda tmp: faiss.write_index(self._index, tmp))
        if self.kind == "hnsw":
            atomic_write(path + ".ids.npy", lambda tmp: _save_array(tmp, self._positions))
        if self._exact is not None:
            atomic_write(path + ".exact", lambda tmp: faiss.write_index(self._exact, tmp))
        write_sidecar(path, {**self.metadata(), "index_bytes": os.path.getsize(path)})

    @classmethod
    def load(cls, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> "FaissIndex":
        """The index saved at ``path``; FileNotFoundError / ValueError name the file at fault."""
        path = os.fspath(path)
        meta = read_sidecar(path) if meta is None else meta
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: index file not found (its description {path}.json exists)")
        if "index_bytes" in meta and os.path.getsize(path) != meta["index_bytes"]:
            raise ValueError(
                f"{path}: {os.path.getsize(path)} bytes but its description records {meta['index_bytes']}"
                " (interrupted save or a file from another index); rebuild or restore both files"
            )
        try:
            raw = faiss.read_index(path)
        except RuntimeError as e:
            raise ValueError(f"{path}: not a readable faiss index: {str(e).strip().splitlines()[-1]}") from e
        self = cls(meta["kind"], int(meta["dim"]), nprobe=int(meta.get("nprobe", 0)),
                   pq_m=int(meta.get("pq_m", 16)), pq_bits=int(meta.get("pq_bits", 8)),
                   hnsw_m=int(meta.get("hnsw_m", DEFAULT_HNSW_M)),
                   ef_construction=int(meta.get("ef_construction", DEFAULT_EF_CONSTRUCTION)),
                   ef_search=int(meta.get("ef_search", 0)), refine=int(meta.get("refine", 0)),
                   sq_bits=int(meta.get("sq_bits", 16)))
        self._index = _check_loaded(raw, meta, path)
        if self.refine:
            exact_path = path + ".exact"
            if not os.path.exists(exact_path):
                raise FileNotFoundError(f"{exact_path}: the exact vectors of a refined ivfpq index are missing")
            try:
                self._exact = faiss.read_index(exact_path)
            except RuntimeError as e:
                raise ValueError(f"{exact_path}: not a readable faiss index") from e
            if int(self._exact.ntotal) != int(raw.ntotal):
                raise ValueError(f"{exact_path}: {self._exact.ntotal} exact vectors for {raw.ntotal} codes "
                                 "(files from different saves); rebuild the index")
        if meta["kind"] == "hnsw":
            self._positions = _load_positions(path + ".ids.npy", int(raw.ntotal))
            self._ids = np.sort(self._positions[self._positions >= 0])
            return self
        self._nlist = 0 if meta["kind"] == "flat" else int(raw.nlist)
        self._ids = np.sort(_stored_ids(raw))
        return self


_TYPES = {"flat": faiss.IndexIDMap2, "ivf": faiss.IndexIVFFlat, "ivfsq": faiss.IndexIVFScalarQuantizer,
          "ivfpq": faiss.IndexIVFPQ, "hnsw": faiss.IndexHNSWFlat}
_SQ_TYPES = {16: faiss.ScalarQuantizer.QT_fp16, 8: faiss.ScalarQuantizer.QT_8bit}


def _exact_among(q: np.ndarray, k: int, vectors: np.ndarray, ids_at: np.ndarray,
                 positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``q`` among ``vectors[positions]`` (one BLAS product), as (scores, ids) padded with -1."""
    if not len(positions):
        return empty_results(len(q), k)
    scores, local = faiss.knn(q, vectors[positions], min(k, len(positions)), metric=faiss.METRIC_INNER_PRODUCT)
    found = np.where(local >= 0, ids_at[positions][np.maximum(local, 0)], -1)
    pad = ((0, 0), (0, k - found.shape[1]))  # fewer allowed vectors than k: -1 padding (scores -> -inf later)
    return np.pad(scores, pad), np.pad(found, pad, constant_values=-1)


def _save_array(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
        np.save(f, array)


def _load_positions(path: str, ntotal: int) -> np.ndarray:
    """The hnsw graph's position -> id array saved beside it; errors name the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the id table of the hnsw index is missing; rebuild the index")
    try:
        positions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable id table ({e})") from e
    if positions.ndim != 1 or len(positions) != ntotal or positions.dtype.kind != "i":
        raise ValueError(f"{path}: {positions.shape} {positions.dtype} ids for a graph of {ntotal} vectors")
    return positions.astype(np.int64)


def _check_loaded(raw: Any, meta: dict[str, Any], path: str) -> Any:
    """``raw`` if it is the kind and size the description says, else ValueError naming ``path``."""
    expected = _TYPES.get(meta["kind"])
    if expected is None or not isinstance(raw, expected):
        raise ValueError(f"{path}: holds a {type(raw).__name__}, but its description says kind {meta['kind']!r}")
    if raw.d != int(meta["dim"]):
        raise ValueError(f"{path}: vectors of size {raw.d}, but its description says dim {meta['dim']}")
    if raw.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"{path}: index does not use the inner-product metric")
    if meta["kind"] == "ivfsq" and raw.sq.qtype != _SQ_TYPES.get(int(meta.get("sq_bits", 16))):
        raise ValueError(f"{path}: scalar quantiser differs from its description (sq_bits {meta.get('sq_bits')})")
    return raw


def _stored_ids(raw: Any) -> np.ndarray:
    """Every id stored in a loaded flat (IDMap2) or IVF index, (N,) int64."""
    if isinstance(raw, faiss.IndexIDMap2):
        return faiss.vector_to_array(raw.id_map).astype(np.int64)
    lists = raw.invlists
    parts = [np.empty(0, np.int64)]
    for i in range(raw.nlist):
        n = lists.list_size(i)
        if n:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).astype(np.int64))
    return np.concatenate(parts)
