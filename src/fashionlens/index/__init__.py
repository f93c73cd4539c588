"""Vector indexes for retrieval: exact flat, IVF (k-means clusters) and IVF-PQ, on FAISS or Milvus.

    index = create_index("ivf", 128)                 # FAISS, in memory; save(path) writes a file
    index.train(vectors)                             # k-means clusters (no-op for flat)
    index.add(ids, vectors)                          # (N,) int64 ids, (N, 128) unit vectors
    scores, found = index.search(queries, k=10, allowed_ids=same_category_ids)
    index.save("catalog/index.faiss"); index = open_index("catalog/index.faiss")

Every backend implements ``VectorIndex`` (base.py) and passes the same tests.
"""

from __future__ import annotations

import math
import os

from fashionlens.config import IndexConfig
from fashionlens.index.base import KINDS, VectorIndex, l2_normalize, read_sidecar
from fashionlens.index.faiss_index import FaissIndex

BACKENDS = ("faiss", "milvus")
#: ``kind="auto"`` (catalog build): exact search below this many vectors, IVF from here on.
AUTO_FLAT_MAX = 50_000


def auto_index(n: int) -> dict[str, int | str]:
    """The index settings ``kind="auto"`` stands for with ``n`` vectors: exact ``flat`` below
    :data:`AUTO_FLAT_MAX`; else ``ivfsq`` (IVF with float16 lists on FAISS, IVF_SQ8 on Milvus) with ~2 sqrt(n)
    clusters, trained once up to 256 vectors per cluster are stored (FAISS's own k-means sample cap; 64 per
    cluster cost 8 points of recall@10 in the benchmark), and nprobe 0: tuned then on the catalog's own vectors
    to recall@10 0.95 (``VectorIndex.tune_nprobe``).  Measured in benchmarks/bench_index.py (one run, 1 thread,
    ratios to FAISS flat): tuned nprobe 1 at 100k (recall@10 0.994, 54x) and 2 at 1M (0.948, 81x), where ``ivf``
    with 4 sqrt(n) clusters (the previous choice) needed nprobe 2 and 8 (0.998 at 41x, 0.999 at 28x) and k-means
    3.4x as long at 1M (354 vs 104 s); sqrt(n) clusters needed nprobe 2 at 100k (~16-29x)."""
    if n < AUTO_FLAT_MAX:
        return {"kind": "flat"}
    nlist = max(1, int(round(2 * math.sqrt(n))))
    return {"kind": "ivfsq", "nlist": nlist, "nprobe": 0, "min_train": min(n, 256 * nlist)}


def create_index(
    kind: str,
    dim: int,
    *,
    backend: str = "faiss",
    nlist: int = 0,
    nprobe: int = 0,
    pq_m: int = 16,
    pq_bits: int = 8,
    uri: str | None = None,
    collection: str = "fashionlens",
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 0,
    refine: int = 0,
    sq_bits: int = 0,
) -> VectorIndex:
    """A new, empty index of ``kind`` ("flat", "ivf", "ivfsq", "ivfpq", "hnsw") for vectors of size ``dim``.

    Args:
        backend: "faiss" (embedded; ``save`` writes files) or "milvus" (needs ``uri``: a milvus-lite
            file "path/index.db" or a server "http://host:19530").
        nlist: IVF clusters (0 = auto: ~4 sqrt(N) at train time on FAISS, 128 on Milvus).
        nprobe: clusters scanned per query by default (0 = nlist / 8).
        pq_m, pq_bits: product quantization: ``pq_m`` codes of ``pq_bits`` bits per vector (ivfpq).
        collection: Milvus collection name (must not exist yet).
        hnsw_m, ef_construction: HNSW links per node and build breadth; ef_search: search breadth (0 = 64).
        refine: ivfpq (faiss): re-rank ``refine * k`` PQ candidates with exact vectors (0 = off).
        sq_bits: ivfsq: 16 (float16; FAISS only) or 8 bits per dimension (0 = the backend's: 16 FAISS, 8 Milvus).
    """
    graph = dict(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    if backend == "faiss":
        return FaissIndex(kind, dim, nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits, refine=refine,
                          sq_bits=sq_bits or 16, **graph)
    if backend == "milvus":
        if refine:
            raise ValueError("refine is a faiss ivfpq option (Milvus IVF_PQ has its own server-side settings)")
        # lazy: pymilvus + milvus-lite take ~2.8 s to import (measured); only the milvus backend needs them
        from fashionlens.index.milvus_index import MilvusIndex

        return MilvusIndex(kind, dim, uri=uri or "", collection=collection, nlist=nlist, nprobe=nprobe,
                           pq_m=pq_m, pq_bits=pq_bits, sq_bits=sq_bits or 8, **graph)
    raise ValueError(f"unknown index backend {backend!r}; choose one of {BACKENDS}")


def index_from_config(cfg: IndexConfig, dim: int) -> VectorIndex:
    """``create_index`` with the settings of an ``IndexConfig``."""
    return create_index(cfg.kind, dim, backend=cfg.backend, nlist=cfg.nlist, nprobe=cfg.nprobe,
                        pq_m=cfg.pq_m, pq_bits=cfg.pq_bits, uri=cfg.uri or None, collection=cfg.collection,
                        hnsw_m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search,
                        refine=cfg.refine, sq_bits=cfg.sq_bits)


def open_index(path: str | os.PathLike) -> VectorIndex:
    """The index saved at ``path`` (reads ``path.json`` to find its backend and kind).

    Raises FileNotFoundError when the index or its description is missing, ValueError when either
    is corrupt or they disagree; both name the file.
    """
    meta = read_sidecar(path)
    if meta["backend"] == "faiss":
        return FaissIndex.load(path, meta)
    if meta["backend"] == "milvus":
        # lazy: pymilvus + milvus-lite take ~2.8 s to import (measured); only the milvus backend needs them
        from fashionlens.index.milvus_index import MilvusIndex

        return MilvusIndex.load(path, meta)
    raise ValueError(f"{os.fspath(path)}.json: unknown backend {meta['backend']!r}")


__all__ = ["AUTO_FLAT_MAX", "BACKENDS", "KINDS", "FaissIndex", "VectorIndex", "auto_index", "create_index",
           "index_from_config", "l2_normalize", "open_index"]
