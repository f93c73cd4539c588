"""IVF recall against the size of the k-means training sample (why the old bench_index ``ivf`` row lagged).

bench_index.py's 100k synthetic catalog (D = 128, 1,000-Gaussian mixture, 1,000 held-out queries, k = 10, FAISS
on 1 thread): ``IndexIVFFlat`` with nlist = sqrt(N) and 4 sqrt(N), trained on 39, 64 or 256 vectors per cluster
(256 is FAISS's own sample cap, ``max_points_per_centroid``), with cosine ("spherical") k-means on and off;
recall@10 against exact search at nprobe 1, 2, 4 and speed as a ratio to FAISS flat in the same run.

    python benchmarks/bench_kmeans_sample.py        # ~3 min on the 2-core machine

Writes benchmarks/results/index_kmeans_sample.json.
"""

from __future__ import annotations

import math
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write  # noqa: E402
from bench_index import K, recall, synthetic_catalog  # noqa: E402


def main() -> None:
    faiss.omp_set_num_threads(1)
    cat = synthetic_catalog(100_000, 128, 1000, 1000)
    x, q = cat["x"], cat["q"]
    start = time.perf_counter()
    truth = faiss.knn(q, x, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
    flat_s = time.perf_counter() - start
    rows = []
    for nlist in (round(math.sqrt(len(x))), round(4 * math.sqrt(len(x)))):
        for per_cluster in (39, 64, 256):
            for spherical in (True, False):
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(128), 128, nlist, faiss.METRIC_INNER_PRODUCT)
                index.cp.spherical = spherical
                sample = x[np.random.default_rng(0).permutation(len(x))[: per_cluster * nlist]]
                index.train(sample)
                index.add(x)
                for nprobe in (1, 2, 4):
                    index.nprobe = nprobe
                    t = time.perf_counter()
                    found = index.search(q, K)[1]
                    secs = time.perf_counter() - t
                    rows.append({"nlist": nlist, "per_cluster": per_cluster, "train_vectors": len(sample),
                                 "spherical": spherical, "nprobe": nprobe, "recall@10": recall(truth, found),
                                 "speed_vs_faiss_flat": flat_s / secs})
                    r = rows[-1]
                    print(f"nlist {nlist:5d}  {per_cluster:3d}/cluster  spherical={spherical!s:5}  nprobe {nprobe}  "
                          f"recall@10 {r['recall@10']:.3f}  x flat {r['speed_vs_faiss_flat']:.1f}", flush=True)
    print(f"wrote {write('index_kmeans_sample', {'k': K, 'faiss_threads': 1, 'results': rows})}")


if __name__ == "__main__":
    main()
