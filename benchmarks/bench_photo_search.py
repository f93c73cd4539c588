"""Catalog search with a trained model on real photos: same-class retrieval, score spread, ``--category auto``.

    python benchmarks/bench_photo_search.py --run RUN_DIR [--photos DIR] [--k 10] [--target-accuracy 0.9 0.7 0.5]

On clothing-small (``../shared/data/clothing-small``): the run embeds every photo (``Predictor.analyse``: the
embedding a catalog stores, and the category probabilities ``--category auto`` uses).

1. Same-class retrieval on the validation photos (each queries the other 340; hit = same class): Recall@1/2/4/8
   and MAP@R (pytorch-metric-learning's ``AccuracyCalculator``), and validation photos against a catalog of the
   3,068 training photos (precision of the top result and of the top 10).
2. Score spread: mean cosine similarity of validation photos of different classes and of the same class, the norm
   of the mean embedding (1 = every vector in one direction), and the top-1 score of each query against the
   training catalog (what the web page shows).
3. Pre-classification (``Catalog.auto_category``): each validation photo searches only its predicted category,
   widened up the taxonomy when the model is unsure and to everything when fewer than k items remain; recall@k
   against unfiltered search of the same catalog, the share of the catalog searched, and same-class precision,
   at each ``--target-accuracy``.

The embeddings and probabilities are cached next to the run (``photo_search_cache.npz``, keyed by the photo list),
so other targets cost seconds.  Writes benchmarks/results/photo_search.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PHOTOS, write  # noqa: E402

KS = (1, 2, 4, 8)


def analyse_all(predictor, samples, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, D), category probabilities (N, C)) of every sample, through ``Predictor.analyse``."""
    from fashionlens.data.decode import load_image

    vectors, probs = [], []
    for start in range(0, len(samples), batch):
        answers = predictor.analyse([load_image(s) for s in samples[start:start + batch]])
        vectors += [a["embedding"] for a in answers]
        probs += [a["probabilities"] for a in answers]
    return np.stack(vectors).astype(np.float32), np.stack(probs)


def cross_fitted_temperature(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Two-fold temperature scaling: each half's probabilities are re-scaled with the temperature fitted on the
    other half (``softmax(log p / T)`` = ``softmax(logits / T)``), so no photo is scored by a fit that saw it."""
    from fashionlens.hierarchy.calibration import fit_temperature

    logits = np.log(np.clip(probs, 1e-12, 1.0))
    out, temps = np.empty_like(probs), []
    fold = np.arange(len(probs)) % 2
    for f in (0, 1):
        t = fit_temperature(logits[fold != f], labels[fold != f])
        z = logits[fold == f] / t
        z = np.exp(z - z.max(1, keepdims=True))
        out[fold == f] = z / z.sum(1, keepdims=True)
        temps.append(float(t))
    return out, temps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run directory (e.g. the photos recipe)")
    ap.add_argument("--photos", default=PHOTOS)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--target-accuracy", type=float, nargs="+", default=[0.9, 0.7, 0.5])
    ap.add_argument("--calibrate", action="store_true", help="--category auto with temperature-scaled probabilities "
                    "(temperature fitted on half of the validation photos, measured on the other half, both ways)")
    args = ap.parse_args()

    from fashionlens.catalog import Catalog
    from fashionlens.data.readers import read
    from fashionlens.evaluation.retrieval import recall_at_k_and_map_at_r
    from fashionlens.inference import Predictor

    if not os.path.isdir(args.photos):
        sys.exit(f"skipped: {args.photos} not found")
    data = read(f"folder:{args.photos}")
    train, val = list(data.split("train")), list(data.split("val"))
    predictor = Predictor.load(args.run)
    start = time.perf_counter()
    cache = os.path.join(args.run, "photo_search_cache.npz")
    key = hashlib.sha1("\n".join(s.image for s in val + train).encode()).hexdigest()
    if os.path.isfile(cache) and str(np.load(cache)["key"]) == key:
        found = np.load(cache)
        val_x, val_p, train_x = found["val_x"], found["val_p"], found["train_x"]
    else:
        val_x, val_p = analyse_all(predictor, val)
        train_x, _ = analyse_all(predictor, train)
        np.savez(cache, key=key, val_x=val_x, val_p=val_p, train_x=train_x)
    embed_s = time.perf_counter() - start
    val_y = np.array([s.category for s in val])
    train_y = np.array([s.category for s in train])

    m = recall_at_k_and_map_at_r(val_x, val_y, ks=KS)
    sims = val_x @ val_x.T
    different = val_y[:, None] != val_y[None]
    same = ~different & ~np.eye(len(val_y), dtype=bool)
    to_train = val_x @ train_x.T
    top = np.argsort(-to_train, axis=1)[:, : args.k]
    result = {
        "run": os.path.abspath(args.run), "val_photos": len(val), "train_photos": len(train),
        "embed_seconds": round(embed_s, 1),
        "same_class": {**{f"R@{k}": float(v) for k, v in m["recall_at_k"].items()}, "MAP@R": float(m["map_at_r"]),
                       "catalog_P@1": float((train_y[top[:, 0]] == val_y).mean()),
                       f"catalog_P@{args.k}": float((train_y[top] == val_y[:, None]).mean())},
        "spread": {"mean_cos_different_classes": float(sims[different].mean()),
                   "mean_cos_same_class": float(sims[same].mean()),
                   "mean_embedding_norm": float(np.linalg.norm(val_x.mean(0))),
                   "top1_score_percentiles_5_50_95": [float(v) for v in np.percentile(to_train.max(1), [5, 50, 95])]},
    }

    with tempfile.TemporaryDirectory(prefix="fl-photo-search-") as tmp:
        cat = Catalog.create(os.path.join(tmp, "cat"), dim=train_x.shape[1], model_run=args.run)
        names = data.info.categories
        cat.add_embeddings(train_x, [{"category": names[c]} for c in train_y])
        result["category_auto"] = {}
        if args.calibrate:  # temperature fitted on one half of the validation photos, applied to the other
            val_p, temps = cross_fitted_temperature(val_p, val_y)
            result["calibration"] = {"temperatures_per_fold": temps, "folds": 2}
        for target in args.target_accuracy:
            kept, scanned, p1_auto, p1_all, widened, secs_all, secs_auto = [], [], [], [], 0, 0.0, 0.0
            for i in range(len(val)):
                t = time.perf_counter()
                everything = cat.search(val_x[i], args.k)
                secs_all += time.perf_counter() - t
                t = time.perf_counter()
                scope = cat.auto_category({"probabilities": val_p[i]}, args.k, target, predictor=predictor)
                narrowed = cat.search(val_x[i], args.k, category=scope["category"])
                secs_auto += time.perf_counter() - t
                kept.append(len({h["item_id"] for h in everything} & {h["item_id"] for h in narrowed}) / args.k)
                scanned.append(scope["items"] / len(train))
                widened += scope["category"] is None
                p1_all.append(everything[0]["category"] == names[val_y[i]])
                p1_auto.append(narrowed[0]["category"] == names[val_y[i]])
            result["category_auto"][f"target {target:g}" + (" (calibrated)" if args.calibrate else "")] = {
                f"recall@{args.k}_vs_unfiltered": float(np.mean(kept)),
                "share_of_catalog_searched": float(np.mean(scanned)),
                "queries_searching_everything": widened / len(val),
                "P@1_unfiltered": float(np.mean(p1_all)), "P@1_auto": float(np.mean(p1_auto)),
                "ms_per_query_unfiltered": 1000 * secs_all / len(val), "ms_per_query_auto": 1000 * secs_auto / len(val)}
        cat.close()
    for section in ("same_class", "spread"):
        print(section, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result[section].items()})
    for target, row in result["category_auto"].items():
        print("category auto,", target, {k: round(v, 4) for k, v in row.items()})
    print("wrote", write("photo_search_calibrated" if args.calibrate else "photo_search", result))


if __name__ == "__main__":
    main()
