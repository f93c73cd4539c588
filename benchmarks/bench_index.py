"""Vector-index benchmark: build time, memory, queries/s and recall@10 against exact search.

Catalogs of clustered synthetic unit vectors (a Gaussian mixture of ``--clusters`` centres, noise of
about the centres' norm so neighbours spread over nearby clusters) at 10k and 100k vectors (1M with
``--full``), and the rows of a real embedding file with ``--real FILE.npy``. For each catalog:

  faiss  flat (exact: the reference), ivf at several nprobe (nlist = sqrt(N)), ivfsq (the same IVF with
         float16 or 8-bit lists; float16 also at 2 sqrt(N) and 4 sqrt(N) clusters, with the catalog's tuned
         nprobe), ivfpq with 16 and 64
         bytes per vector (``--pq-m``; 512 bytes uncompressed), hnsw (M 32, efConstruction 80) at several
         ef_search; k-means is trained on up to 256 vectors per cluster (FAISS's own cap): an earlier
         version sampled 64 per cluster, which cost the ivf row 8 points of recall@10 at 100k
         (0.878 vs 0.961 at nprobe 1, same nlist)
  pre-classification: search only the ~1/14 of the catalog in the query's category (``allowed_ids``),
         with an oracle category and with a 90 %-accurate classifier; recall is measured against the
         unfiltered exact result, so it shows the recall cost of pre-classification
  milvus milvus-lite flat, IVF_FLAT and IVF_SQ8 (same nlist/nprobe), HNSW (same M / ef) and pre-classification, up to
         --milvus-max

Synthetic categories: cluster id mod 14 (a garment's category is shared by its cluster). For --real,
``--real-labels FILE.npy`` gives one int category per row, else 14 k-means groups stand in for them.
Queries are held-out points of the same distribution; searched as one batch (throughput), each search
timed three times and the fastest kept.
Search speed is reported as a ratio to FAISS flat in the same run (machines are noisy; ratios travel).
faiss uses ``--threads`` OpenMP threads (default 1: this 2-core machine is shared, and contended
OpenMP spinning made 2 threads slower than 1).

    python benchmarks/bench_index.py [--full] [--queries 1000] [--threads 1] [--real FILE.npy]

On the shared 2-core machine (1 thread): the default run (10k + 100k) took ~2 min, --full ~4 min.

Writes benchmarks/results/index.json and benchmarks/results/index_recall_speed.png.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, write  # noqa: E402

from fashionlens.index import VectorIndex, create_index, l2_normalize  # noqa: E402
from fashionlens.index.base import auto_nlist  # noqa: E402

K = 10
N_CATEGORIES = 14
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80  # the catalog's defaults (IndexConfig)
EF_SEARCH = (16, 32, 64, 128)


def mixture(n: int, dim: int, clusters: int, seed: int, centre_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) unit vectors and their (n,) cluster ids; noise of norm ~1 around unit centres."""
    centres = l2_normalize(np.random.default_rng(centre_seed).standard_normal((clusters, dim)))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, n)
    x = centres[labels]
    for start in range(0, n, 100_000):  # chunks keep the float64 noise small at 1M
        stop = min(n, start + 100_000)
        x[start:stop] += (rng.standard_normal((stop - start, dim)) / math.sqrt(dim)).astype(np.float32)
    return l2_normalize(x), labels


def real_catalog(path: str, labels_path: str | None, n_queries: int) -> dict[str, Any]:
    """Rows of ``path`` split into catalog and held-out queries, with categories."""
    x = l2_normalize(np.load(path).astype(np.float32))
    if labels_path:
        cats = np.load(labels_path).astype(np.int64)
    else:  # 14 k-means groups stand in for predicted categories
        km = faiss.Kmeans(x.shape[1], N_CATEGORIES, niter=20, seed=0, spherical=True)
        km.train(x)
        cats = km.index.search(x, 1)[1][:, 0]
    order = np.random.default_rng(0).permutation(len(x))
    q, c = order[:n_queries], order[n_queries:]
    return {"name": f"real:{os.path.basename(path)}", "x": x[c], "cat": cats[c], "q": x[q], "qcat": cats[q]}


def synthetic_catalog(n: int, dim: int, clusters: int, n_queries: int) -> dict[str, Any]:
    x, lab = mixture(n, dim, clusters, seed=1)
    q, qlab = mixture(n_queries, dim, clusters, seed=2)
    return {"name": f"synthetic-{n}", "x": x, "cat": lab % N_CATEGORIES, "q": q, "qcat": qlab % N_CATEGORIES}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def recall(reference: np.ndarray, found: np.ndarray) -> float:
    """Mean fraction of each row's reference ids present in the same row of ``found``."""
    hits = (found[:, :, None] == reference[:, None, :]) & (reference[:, None, :] >= 0)
    return float(hits.any(axis=1).sum() / max(1, (reference >= 0).sum()))


REPEATS = 3  # searches are timed this many times and the fastest kept (the machine is shared and noisy)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def by_category(index: VectorIndex, q: np.ndarray, qcat: np.ndarray, ids_of: dict[int, np.ndarray],
                nprobe: int | None) -> np.ndarray:
    """Search each query among the ids of its (predicted) category; (Q, K) ids."""
    found = np.full((len(q), K), -1, np.int64)
    for c in np.unique(qcat):
        rows = np.flatnonzero(qcat == c)
        found[rows] = index.search(q[rows], K, allowed_ids=ids_of.get(int(c), np.empty(0, np.int64)),
                                   nprobe=nprobe)[1]
    return found


SQ_NAME = {16: "fp16", 8: "int8"}
REFINE = 10  # ivfpq + refine: PQ candidates per result re-scored exactly


def build(kind: str, cat: dict[str, Any], nlist: int, backend: str, workdir: str, **kw: Any) -> dict[str, Any]:
    """Create, train, fill and save an index; its build time, on-disk size and RSS growth."""
    x, ids = cat["x"], np.arange(len(cat["x"]), dtype=np.int64)
    rss0 = rss_bytes()
    start = time.perf_counter()
    path = os.path.join(workdir, f"{backend}-{kind}")
    index = create_index(kind, x.shape[1], backend=backend, nlist=nlist, uri=path + ".db", collection="bench", **kw)
    sample = x[np.random.default_rng(0).permutation(len(x))[: 256 * max(nlist, 256)]]  # <= 256 per cluster
    index.train(sample)
    for s in range(0, len(x), 100_000):
        index.add(ids[s : s + 100_000], x[s : s + 100_000])
    index.flush()
    seconds = time.perf_counter() - start
    index.save(path)
    size = disk_bytes(path + ".db") if backend == "milvus" else disk_bytes(path) + (
        disk_bytes(path + ".exact") if os.path.exists(path + ".exact") else 0)  # ivfpq + refine: exact vectors too
    return {"index": index, "build_s": seconds, "index_bytes": size, "rss_delta_bytes": rss_bytes() - rss0}


def bench_catalog(cat: dict[str, Any], args: argparse.Namespace, workdir: str) -> list[dict[str, Any]]:
    """Every method on one catalog; one result row per (backend, method, nprobe)."""
    n, nq = len(cat["x"]), len(cat["q"])
    nlist = max(16, int(round(math.sqrt(n))))
    probes = [p for p in (1, 4, 16, 64) if p <= nlist]
    ids_of = {int(c): np.flatnonzero(cat["cat"] == c).astype(np.int64) for c in np.unique(cat["cat"])}
    rng = np.random.default_rng(3)
    wrong = rng.random(nq) > args.classifier_accuracy
    noisy_qcat = np.where(wrong, (cat["qcat"] + rng.integers(1, N_CATEGORIES, nq)) % N_CATEGORIES, cat["qcat"])
    rows: list[dict[str, Any]] = []

    def row(backend: str, method: str, built: dict, nprobe: int | None, found: np.ndarray, secs: float,
            **extra: Any) -> None:
        rows.append({"catalog": cat["name"], "n": n, "dim": cat["x"].shape[1], "backend": backend, "method": method,
                     "nprobe": nprobe, "nlist": extra.pop("nlist_used", nlist) if method.startswith("ivf") else None,
                     **{k: v for k, v in built.items() if k != "index"},
                     "qps": nq / secs, "recall@10": recall(truth, found), **extra})
        r = rows[-1]
        print(f"  {backend:6s} {method:22s} nprobe={str(nprobe):4s} ef={str(extra.get('ef_search')):4s} recall@10={r['recall@10']:.3f} "
              f"qps={r['qps']:9.0f} build={r['build_s']:6.1f}s size={r['index_bytes'] / 2**20:7.1f} MiB", flush=True)

    flat = build("flat", cat, nlist, "faiss", workdir)
    flat["index"].search(cat["q"][:10], K)  # warm-up
    (_, truth), secs = timed(lambda: flat["index"].search(cat["q"], K))
    flat_qps = nq / secs
    row("faiss", "flat", flat, None, truth, secs)
    (found, secs) = timed(lambda: by_category(flat["index"], cat["q"], cat["qcat"], ids_of, None))
    row("faiss", "flat+category", {**flat, "build_s": 0.0}, None, found, secs)
    filtered_truth = found
    (found, secs) = timed(lambda: by_category(flat["index"], cat["q"], noisy_qcat, ids_of, None))
    row("faiss", f"flat+category@{args.classifier_accuracy:.0%}", {**flat, "build_s": 0.0}, None, found, secs)
    for kind, m in [("ivf", 0)] + [("ivfpq", m) for m in args.pq_m]:
        built = build(kind, cat, nlist, "faiss", workdir, pq_m=m or 16)
        for p in probes:
            found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=p)[1])
            row("faiss", f"ivfpq m={m}" if m else kind, built, p, found, secs)
        if kind == "ivf":
            p = min(16, nlist)
            found, secs = timed(lambda: by_category(built["index"], cat["q"], cat["qcat"], ids_of, p))
            row("faiss", "ivf+category", {**built, "build_s": 0.0}, p, found, secs,
                recall_vs_filtered_exact=recall(filtered_truth, found))
        built["index"].close()
    m = min(args.pq_m)  # IVF-PQ with exact re-ranking: REFINE x k PQ candidates re-scored with the exact vectors
    built = build("ivfpq", cat, nlist, "faiss", workdir, pq_m=m, refine=REFINE)
    for p in probes:
        found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=p)[1])
        row("faiss", f"ivfpq m={m} + refine {REFINE}", built, p, found, secs)
    built["index"].close()
    fine = auto_nlist(n)  # the index's own default (nlist 0): ~4 sqrt(N) clusters, small lists
    built = build("ivf", cat, fine, "faiss", workdir)
    for p in (1, 2, 4, 8):
        found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=p)[1])
        row("faiss", "ivf 4√N", built, p, found, secs, nlist_used=fine)
    # nprobe 0 in a catalog: tuned on its own vectors (256 stored vectors as queries, exact neighbours among all)
    own_ids = np.random.default_rng(1).choice(n, 256, replace=False)
    own = cat["x"][own_ids]
    near = faiss.knn(own, cat["x"], K + 1, metric=faiss.METRIC_INNER_PRODUCT)[1]
    others = np.array([[i for i in row if i != q][:K] for row, q in zip(near.tolist(), own_ids.tolist())])
    tuned = built["index"].tune_nprobe(own, others, query_ids=own_ids)
    found, secs = timed(lambda: built["index"].search(cat["q"], K)[1])
    row("faiss", "ivf 4√N, tuned nprobe", {**built, "build_s": 0.0}, tuned["nprobe"], found, secs, nlist_used=fine,
        tuning_recall=tuned["recall"])
    built["index"].close()
    # ivfsq: the same IVF with float16 (or 8-bit) lists; at sqrt(N), 2 sqrt(N) (the catalog's auto rule) and 4 sqrt(N)
    for bits in (16, 8):
        built = build("ivfsq", cat, nlist, "faiss", workdir, sq_bits=bits)
        for p in probes[:3]:
            found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=p)[1])
            row("faiss", f"ivfsq {SQ_NAME[bits]} √N", built, p, found, secs)
        built["index"].close()
    for factor in (2, 4):
        wide = int(round(factor * math.sqrt(n)))
        built = build("ivfsq", cat, wide, "faiss", workdir, sq_bits=16)
        for p in (1, 2, 4, 8):
            found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=p)[1])
            row("faiss", f"ivfsq fp16 {factor}√N", built, p, found, secs, nlist_used=wide)
        tuned = built["index"].tune_nprobe(own, others, query_ids=own_ids)
        found, secs = timed(lambda: built["index"].search(cat["q"], K, nprobe=tuned["nprobe"])[1])
        row("faiss", f"ivfsq fp16 {factor}√N, tuned nprobe", {**built, "build_s": 0.0}, tuned["nprobe"], found, secs,
            nlist_used=wide, tuning_recall=tuned["recall"])
        built["index"].close()
    built = build("hnsw", cat, nlist, "faiss", workdir, hnsw_m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
    for ef in EF_SEARCH:
        found, secs = timed(lambda: built["index"].search(cat["q"], K, ef_search=ef)[1])
        row("faiss", "hnsw", built, None, found, secs, ef_search=ef)
    found, secs = timed(lambda: by_category(built["index"], cat["q"], cat["qcat"], ids_of, None))
    row("faiss", "hnsw+category", {**built, "build_s": 0.0}, None, found, secs,
        recall_vs_filtered_exact=recall(filtered_truth, found))
    built["index"].close()
    if n <= args.milvus_max:
        bench_milvus(cat, nlist, probes, ids_of, workdir, row)
    flat["index"].close()
    for r in rows:
        r["speed_vs_faiss_flat"] = r["qps"] / flat_qps
    return rows


def bench_milvus(cat: dict[str, Any], nlist: int, probes: list[int], ids_of: dict[int, np.ndarray],
                 workdir: str, row: Callable[..., None]) -> None:
    """milvus-lite flat and IVF_FLAT (same nlist and nprobe as FAISS); rows are recorded through ``row``."""
    for kind in ("flat", "ivf", "ivfsq", "hnsw"):
        built = build(kind, cat, nlist, "milvus", workdir, hnsw_m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        index = built["index"]
        index.search(cat["q"][:10], K)  # warm-up (first search loads the segments)
        if kind == "hnsw":
            for ef in EF_SEARCH[1:3]:
                found, secs = timed(lambda: index.search(cat["q"], K, ef_search=ef)[1])
                row("milvus", kind, built, None, found, secs, ef_search=ef)
        for p in (probes if kind.startswith("ivf") else [None] if kind == "flat" else []):
            found, secs = timed(lambda: index.search(cat["q"], K, nprobe=p)[1])
            row("milvus", kind, built, p, found, secs)
        if kind == "flat":
            found, secs = timed(lambda: by_category(index, cat["q"], cat["qcat"], ids_of, None))
            row("milvus", "flat+category", {**built, "build_s": 0.0}, None, found, secs)
        index.drop()


def table(rows: list[dict[str, Any]]) -> str:
    head = "| catalog | backend | method | nprobe / ef | recall@10 | queries/s | speed vs flat | build s | index MiB |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        effort = r["nprobe"] or (f"ef {r['ef_search']}" if r.get("ef_search") else "")
        lines.append(f"| {r['catalog']} | {r['backend']} | {r['method']} | {effort} | {r['recall@10']:.3f} "
                     f"| {r['qps']:.0f} | {r['speed_vs_faiss_flat']:.2f} | {r['build_s']:.1f} "
                     f"| {r['index_bytes'] / 2**20:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    catalogs = list(dict.fromkeys(r["catalog"] for r in rows))
    fig, axes = plt.subplots(1, len(catalogs), figsize=(5.5 * len(catalogs), 4.5), squeeze=False)
    for ax, name in zip(axes[0], catalogs):
        series: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            if r["catalog"] == name:
                series.setdefault((r["backend"], r["method"]), []).append(r)
        for (backend, method), pts in series.items():
            xs, ys = [p["speed_vs_faiss_flat"] for p in pts], [p["recall@10"] for p in pts]
            ax.plot(xs, ys, marker="o" if backend == "faiss" else "s", linestyle="-" if len(pts) > 1 else "",
                    label=f"{backend} {method}")
            for p in pts:
                effort = p["nprobe"] or p.get("ef_search")
                if effort and "+" not in method:
                    ax.annotate(str(effort), (p["speed_vs_faiss_flat"], p["recall@10"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel("search speed / FAISS flat (same run)")
        ax.set_ylabel("recall@10 vs exact search")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Vector index: recall vs speed (numbers: nprobe for ivf, ef_search for hnsw)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000],
                    help="synthetic catalog sizes (none: --real only)")
    ap.add_argument("--full", action="store_true", help="also 1M vectors")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000, help="Gaussian-mixture centres")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--pq-m", type=int, nargs="+", default=[16, 64], help="PQ bytes per vector (8-bit codes)")
    ap.add_argument("--classifier-accuracy", type=float, default=0.9, help="of the noisy pre-classification")
    ap.add_argument("--milvus-max", type=int, default=100_000, help="largest catalog also run on milvus-lite")
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    ap.add_argument("--real", default=None, help="(N, D) .npy of real embeddings")
    ap.add_argument("--real-labels", default=None, help="(N,) .npy of int categories for --real")
    ap.add_argument("--out", default="index", help="results name: benchmarks/results/NAME.json (and the figure)")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    sizes = sorted(set(args.sizes + ([1_000_000] if args.full else [])))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    workdir = tempfile.mkdtemp(prefix="bench_index_")
    try:
        catalogs = [lambda n=n: synthetic_catalog(n, args.dim, args.clusters, args.queries) for n in sizes]
        if args.real:
            catalogs.append(lambda: real_catalog(args.real, args.real_labels, args.queries))
        for make in catalogs:
            t0 = time.perf_counter()
            cat = make()
            print(f"{cat['name']}: {len(cat['x'])} x {cat['x'].shape[1]}, {len(cat['q'])} queries", flush=True)
            rows += bench_catalog(cat, args, workdir)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    minutes = (time.perf_counter() - started) / 60
    print(table(rows))
    os.makedirs(RESULTS, exist_ok=True)
    plot(rows, os.path.join(RESULTS, f"{args.out}_recall_speed.png"))
    out = write(args.out, {"faiss_threads": args.threads, "k": K, "categories": N_CATEGORIES,
                          "faiss_version": faiss.__version__, "minutes": minutes, "args": vars(args), "results": rows})
    print(f"wrote {out} and {args.out}_recall_speed.png in {minutes:.1f} min")


if __name__ == "__main__":
    main()
