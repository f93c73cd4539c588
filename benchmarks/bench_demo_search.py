"""The demo's shop catalog as a new user meets it: score spread, and consumer photos finding their item.

    make demo   (or: fashionlens demo --no-serve --workdir out/demo)
    python benchmarks/bench_demo_search.py [--workdir out/demo] [--k 10]

Reads what ``fashionlens demo`` left in ``--workdir`` (the render, the trained run, the shop catalog of every
item's shop photos, SKU = the item id).

1. Spread of the stored embeddings: mean cosine similarity of items of different SKUs and of the same SKU, the
   norm of the mean embedding (1 = every vector in one direction), and the 5th / 50th / 95th percentile of
   the top-1 score of the queries below (what the page shows).
2. Every consumer photo of the test items searches the catalog (``Catalog.search``): best-match rate (the top
   result is the same item), hit rate in the top k, the mean rank of the item's first shop photo, with and
   without the garment crop (``crop``) and one result per SKU (``group_sku``).

Writes benchmarks/results/demo_search.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="out/demo")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    from fashionlens.catalog import Catalog
    from fashionlens.data.decode import load_image
    from fashionlens.data.readers import read

    directory = os.path.join(args.workdir, "catalog")
    if not os.path.isdir(directory):
        sys.exit(f"no demo catalog at {directory}: run `make demo` (or fashionlens demo --no-serve) first")
    cat = Catalog.open(directory)
    ids, vectors = [], []
    for chunk_ids, chunk in cat.store.embeddings(None):
        ids.append(chunk_ids)
        vectors.append(chunk)
    ids, x = np.concatenate(ids), np.concatenate(vectors)
    sku = np.array([cat.get(int(i))["sku"] for i in ids])
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(x), 20000), rng.integers(0, len(x), 20000)
    cos = np.sum(x[a] * x[b], axis=1)
    different, same = sku[a] != sku[b], (sku[a] == sku[b]) & (a != b)
    spread = {"items": int(len(x)), "mean_cos_different_skus": float(cos[different].mean()),
              "mean_cos_same_sku": float(cos[same].mean()) if same.any() else None,
              "share_of_different_pairs_above_0.9": float((cos[different] > 0.9).mean()),
              "mean_embedding_norm": float(np.linalg.norm(x.mean(0)))}

    data = read(f"garments:{os.path.join(args.workdir, 'garments')}")
    queries = [s for s in data.split("test").samples if s.domain == "consumer"]
    rows, top1 = {}, []
    for crop in (False, True):
        for group in (False, True):
            best, hit, ranks, start = [], [], [], time.perf_counter()
            for s in queries:
                image = load_image(s)
                hits = cat.search(image, args.k if group else 100, crop=crop, group_sku=group)
                found = [h["sku"] for h in hits]
                best.append(bool(found) and found[0] == s.item_id)
                hit.append(s.item_id in found[: args.k])
                ranks.append(found.index(s.item_id) + 1 if s.item_id in found else len(found) + 1)
                if not crop and not group and hits:
                    top1.append(hits[0]["score"])
            rows[f"crop={crop}, group_sku={group}"] = {
                "best_match_rate": float(np.mean(best)), f"hit@{args.k}": float(np.mean(hit)),
                "mean_rank_of_item (capped at results + 1)": float(np.mean(ranks)),
                "ms_per_query": 1000 * (time.perf_counter() - start) / len(queries)}
            print(list(rows)[-1], {k: round(v, 3) for k, v in rows[list(rows)[-1]].items()}, flush=True)
    spread["top1_score_percentiles_5_50_95"] = [float(v) for v in np.percentile(top1, [5, 50, 95])]
    cat.close()
    print("spread", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in spread.items()})
    print("wrote", write("demo_search", {"workdir": os.path.abspath(args.workdir), "queries": len(queries),
                                         "spread": spread, "search": rows}))


if __name__ == "__main__":
    main()
