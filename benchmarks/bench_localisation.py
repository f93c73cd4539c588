"""Garment localisation before embedding: consumer-to-shop retrieval with and without cropping the photo to the
model's predicted garment box (issue: retrieval engine).

    python benchmarks/bench_localisation.py --run RUN_DIR --garments RENDER_DIR [--split test] [--margin 0.1]

Queries are the consumer photos of the split, the gallery its shop photos. Three settings: no crop, crop the
queries only, crop queries and gallery. Prints a table and writes benchmarks/results/localisation.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import table, write

from fashionlens.data.decode import load_image
from fashionlens.data.readers import read
from fashionlens.evaluation.retrieval import retrieval_topk
from fashionlens.inference import Predictor


def embed(predictor: Predictor, samples: list, crop: bool, margin: float, batch: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(samples), batch):
        images = [load_image(s) for s in samples[start:start + batch]]
        out.append(predictor.embed(images, crop=crop, margin=margin))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--garments", required=True, help="a render of `fashionlens synth`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--margin", type=float, default=0.1)
    args = parser.parse_args()
    predictor = Predictor.load(args.run)
    data = read(f"garments:{args.garments}").split(args.split)
    queries = [s for s in data.samples if s.domain == "consumer"]
    gallery = [s for s in data.samples if s.domain == "shop"]
    qid, gid = [s.item_id for s in queries], [s.item_id for s in gallery]
    rows = {}
    cache: dict[tuple[str, bool], np.ndarray] = {}
    for name, (crop_q, crop_g) in {"no crop": (False, False), "crop queries": (True, False),
                                   "crop queries and gallery": (True, True)}.items():
        start = time.perf_counter()
        q = cache.setdefault(("q", crop_q), embed(predictor, queries, crop_q, args.margin))
        g = cache.setdefault(("g", crop_g), embed(predictor, gallery, crop_g, args.margin))
        res = retrieval_topk(q, qid, g, gid, ks=(1, 5, 10, 20))
        rows[name] = {**{f"top{k}": v for k, v in res["top_k_accuracy"].items()},
                      "mAP": res["mean_average_precision"], "seconds": time.perf_counter() - start}
    print(f"consumer-to-shop on {args.garments} ({args.split}): {len(queries)} queries, {len(gallery)} gallery")
    print(table(rows, ("top1", "top5", "top10", "top20", "mAP")))
    path = write("localisation", {"run": args.run, "garments": args.garments, "split": args.split,
                                  "margin": args.margin, "queries": len(queries), "gallery": len(gallery), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
