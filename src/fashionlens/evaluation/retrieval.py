"""Retrieval metrics: DeepFashion top-k accuracy and mAP (query set vs gallery), Recall@K and MAP@R (one set).

Similarity is the inner product of L2-normalised embeddings (cosine similarity), computed as matrix
products over blocks of queries, so a 10k x 50k evaluation never holds the full similarity matrix.

Ranking and ties: the gallery is ordered by decreasing similarity; where a relevant and an irrelevant
gallery item have exactly the same similarity, the irrelevant one is ranked first (pessimistic, so a
degenerate model that maps everything to one point scores at chance level, not perfectly).
"""

from __future__ import annotations

from typing import Any, Sequence

import faiss
import numpy as np
import torch

from fashionlens.evaluation.classification import _as_numpy

#: k values of the DeepFashion in-shop / consumer-to-shop top-k accuracy curves.
RETRIEVAL_KS = (1, 5, 10, 20, 30, 40, 50)


def _embeddings(x: Any, name: str) -> torch.Tensor:
    """(N, D) float32 L2-normalised tensor (on the input tensor's device, else the CPU)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(_as_numpy(x, name))
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(t.shape)}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return torch.nn.functional.normalize(t, dim=1)


def _id_codes(query_ids: Any, gallery_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids (ints or strings such as 'id_00000002') to shared int64 codes."""
    q = _as_numpy(query_ids, "query_ids", ndim=1)
    g = _as_numpy(gallery_ids, "gallery_ids", ndim=1)
    _, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
    return codes[: len(q)].astype(np.int64), codes[len(q):].astype(np.int64)


def _exclusion(exclude_self: Any | None, n_query: int, n_gallery: int) -> torch.Tensor:
    """(Q,) int64 gallery index to drop for each query, -1 for none."""
    if exclude_self is None:
        return torch.full((n_query,), -1, dtype=torch.int64)
    ex = _as_numpy(exclude_self, "exclude_self", ndim=1).astype(np.int64)
    if len(ex) != n_query:
        raise ValueError(f"exclude_self has {len(ex)} entries for {n_query} queries")
    if ((ex < -1) | (ex >= n_gallery)).any():
        raise ValueError(f"exclude_self entries must be -1 or a gallery index in [0, {n_gallery})")
    return torch.from_numpy(ex)


def _sort_rows_(x: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending, in place on the CPU (no index tensor: saves 8 bytes per entry)."""
    if x.device.type == "cpu":
        x.numpy().sort(axis=1)
        return x
    return torch.sort(x, dim=1).values


def _chunk_ranks(sim: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the relevant items of each query in a block.

    sim (c, G) similarities (excluded items already -inf), rel (c, G) bool relevance.  Returns
    ``rank`` (c, R) float64: the 1-based rank of each query's i-th best relevant item (i = 0..R-1,
    R = the block's largest relevant count), and ``valid`` (c, R) bool marking real entries.
    rank_i = i + 1 + number of irrelevant items with similarity >= that item's similarity.
    """
    n_rel = rel.sum(dim=1)
    r = int(n_rel.max())
    rel_sims = sim.masked_fill(~rel, float("-inf")).topk(r, dim=1).values  # (c, R) descending
    irr_sorted = _sort_rows_(sim.masked_fill_(rel, float("-inf")))  # (c, G) ascending, relevant -> -inf
    n_irr_below = torch.searchsorted(irr_sorted, rel_sims.contiguous(), side="left")  # irrelevant < s
    n_irr_ge = sim.shape[1] - n_irr_below
    position = torch.arange(1, r + 1, device=sim.device)
    valid = position[None, :] <= n_rel[:, None]
    return (position[None, :] + n_irr_ge).double(), valid


def retrieval_topk(query_emb: Any, query_ids: Any, gallery_emb: Any, gallery_ids: Any,
                   ks: Sequence[int] = RETRIEVAL_KS, exclude_self: Any | None = None,
                   chunk: int = 1024) -> dict[str, Any]:
    """DeepFashion retrieval top-k accuracy (hit rate, a.k.a. Recall@K) and mean average precision.

    A query is correct at k when one of the k most similar gallery items has the query's id.
    Average precision of a query = mean over its relevant gallery items of (relevant items ranked at
    or above it) / (its rank); mAP averages it over queries.  Both are computed over the queries that
    have at least one relevant gallery item; the others are excluded and counted.

    Args:
        query_emb: (Q, D) query embeddings (normalised here).  query_ids: (Q,) item ids (ints or str).
        gallery_emb: (G, D) gallery embeddings.  gallery_ids: (G,) item ids.
        ks: the k values of the top-k accuracy.
        exclude_self: optional (Q,) gallery index of each query's own image (-1 for none), dropped from
            its ranking: the "same set as query and gallery" protocol.
        chunk: queries per block; peak extra memory is about chunk * G * 14 bytes
            (~0.7 GB for chunk 1024 and a 50,000-image gallery; 10k x 50k took 18 s on 2 CPU cores).
    Returns:
        {"top_k_accuracy": {k: acc}, "mean_average_precision": mAP, "num_queries": Q,
         "num_evaluated": queries with >= 1 relevant item, "num_without_relevant": the others}.
    Raises:
        ValueError: no query has a relevant gallery item (e.g. ids of different types), bad shapes.
    """
    q, g = _embeddings(query_emb, "query_emb"), _embeddings(gallery_emb, "gallery_emb")
    g = g.to(q.device)
    if q.shape[1] != g.shape[1] or len(q) == 0 or len(g) == 0:
        raise ValueError(f"need non-empty embeddings of equal width, got {tuple(q.shape)} and {tuple(g.shape)}")
    q_codes, g_codes = _id_codes(query_ids, gallery_ids)
    if len(q_codes) != len(q) or len(g_codes) != len(g):
        raise ValueError("ids and embeddings differ in length")
    q_codes_t, g_codes_t = torch.from_numpy(q_codes).to(q.device), torch.from_numpy(g_codes).to(q.device)
    exclude = _exclusion(exclude_self, len(q), len(g)).to(q.device)
    best_rank, ap, has_rel = [], [], []
    for start in range(0, len(q), max(int(chunk), 1)):
        stop = min(start + max(int(chunk), 1), len(q))
        sim = q[start:stop] @ g.T  # (c, G) cosine similarity
        rel = q_codes_t[start:stop, None] == g_codes_t[None, :]  # (c, G)
        rows = torch.nonzero(exclude[start:stop] >= 0).flatten()
        sim[rows, exclude[start:stop][rows]] = float("-inf")
        rel[rows, exclude[start:stop][rows]] = False
        n_rel = rel.sum(dim=1)
        has_rel.append(n_rel > 0)
        if not bool(has_rel[-1].any()):
            continue
        keep = has_rel[-1]
        if not bool(keep.all()):  # boolean indexing copies: only when some rows must go
            sim, rel = sim[keep], rel[keep]
        rank, valid = _chunk_ranks(sim, rel)
        best_rank.append(rank[:, 0])
        ap.append(torch.where(valid, torch.arange(1, rank.shape[1] + 1, device=rank.device) / rank, 0.0).sum(1)
                  / n_rel[keep])
    n_eval = int(torch.cat(has_rel).sum())
    if n_eval == 0:
        raise ValueError("retrieval_topk: no query has a relevant gallery item (check the id types and splits)")
    best = torch.cat(best_rank)
    return {"top_k_accuracy": {int(k): float((best <= k).double().mean()) for k in ks},
            "mean_average_precision": float(torch.cat(ap).mean()),
            "num_queries": len(q), "num_evaluated": n_eval, "num_without_relevant": len(q) - n_eval}


def nearest_neighbors(query_emb: Any, gallery_emb: Any, k: int, exclude_self: Any | None = None,
                      chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar gallery items of each query (cosine similarity), e.g. for result grids.

    Returns ``indices`` (Q, k') int64 and ``similarities`` (Q, k') float32, best first,
    k' = min(k, G).  With ``exclude_self`` (Q,), that gallery index is never returned
    (if k' = G it comes last with similarity -inf).  Ties are broken arbitrarily (torch.topk).
    """
    q, g = _embeddings(query_emb, "query_emb"), _embeddings(gallery_emb, "gallery_emb")
    g = g.to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding widths differ: {q.shape[1]} vs {g.shape[1]}")
    exclude = _exclusion(exclude_self, len(q), len(g)).to(q.device)
    k = min(int(k), len(g))
    indices, sims = [], []
    for start in range(0, len(q), max(int(chunk), 1)):
        sim = q[start:start + chunk] @ g.T  # (c, G)
        ex = exclude[start:start + chunk]
        rows = torch.nonzero(ex >= 0).flatten()
        sim[rows, ex[rows]] = float("-inf")
        top = sim.topk(k, dim=1)
        indices.append(top.indices.cpu())
        sims.append(top.values.cpu())
    if not indices:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return torch.cat(indices).numpy(), torch.cat(sims).numpy()


def _label_codes(labels: Any) -> np.ndarray:
    y = _as_numpy(labels, "labels", ndim=1)
    return np.unique(y, return_inverse=True)[1].astype(np.int64)


def recall_at_k_and_map_at_r(emb: Any, labels: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Category-level retrieval on one set, leave-one-out (each item queries all the others).

    Computed by ``pytorch_metric_learning``'s AccuracyCalculator (Musgrave et al., "A Metric
    Learning Reality Check", 2020), with inner-product search over L2-normalised embeddings:
      - Recall@K: share of queries with a same-label item among their K nearest others (hit rate);
      - MAP@R: R = number of other items with the query's label; mean over the first R neighbours'
        correct positions of the precision there, divided by R;
      - R-Precision: share of same-label items among the first R neighbours.
    Queries whose label occurs only once have no relevant item and are excluded (counted).
    Neighbour ties follow faiss's order.

    Args:
        emb: (N, D) embeddings.  labels: (N,) class labels (ints or str).  ks: the K values.
    Returns:
        {"recall_at_k": {K: recall}, "map_at_r": float, "r_precision": float, "num_queries": N,
         "num_evaluated": n, "num_without_relevant": N - n}.
    Raises:
        ValueError: no label occurs twice, or bad shapes.
    """
    x = _embeddings(emb, "emb").cpu()
    codes = _label_codes(labels)
    if len(codes) != len(x):
        raise ValueError(f"labels has {len(codes)} entries for {len(x)} embeddings")
    counts = np.bincount(codes)
    n_eval = int((counts[codes] > 1).sum())
    if n_eval == 0:
        raise ValueError("recall_at_k_and_map_at_r: no label occurs twice, nothing to retrieve")
    calc = _make_calculator(ks)
    result = calc.get_accuracy(x, torch.from_numpy(codes),
                               include=("recall_at_k", "mean_average_precision_at_r", "r_precision"))
    return {"recall_at_k": result["recall_at_k"], "map_at_r": float(result["mean_average_precision_at_r"]),
            "r_precision": float(result["r_precision"]), "num_queries": len(x), "num_evaluated": n_eval,
            "num_without_relevant": len(x) - n_eval}


def _make_calculator(ks: Sequence[int]) -> Any:
    """An AccuracyCalculator with inner-product kNN and a Recall@K metric for the given ks."""
    # lazy: FaissKNN imports faiss.contrib.torch_utils, which replaces every faiss Index.search in the process;
    # loaded at import time it breaks milvus-lite's IVF search (tests/test_index.py, milvus-ivf)
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator, try_getting_not_lone_labels
    from pytorch_metric_learning.utils.inference import FaissKNN

    class _Calculator(AccuracyCalculator):
        def calculate_recall_at_k(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):  # noqa: ANN001
            knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
            hits = knn_labels == query_labels[:, None]  # (n, depth)
            return {int(k): float(hits[:, :k].any(dim=1).double().mean()) for k in ks}

        def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):  # noqa: ANN001
            # deep enough for MAP@R (largest class - 1) and for the largest K, never beyond N - 1
            needed = max(int(bin_counts.max()) - int(ref_includes_query), max(int(k) for k in ks))
            return min(needed, num_reference_embeddings - int(ref_includes_query))

    return _Calculator(device=torch.device("cpu"), knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP))
