"""Spatial saliency ablation on consumer photos: the global model with and without `model.spatial_attention`.

    python benchmarks/bench_attention.py [--items 300] [--epochs 8] [--work /tmp/fl-attention]

Same render, recipe (`garments`, global preset) and seed for both; evaluated on the test split, where the
consumer-to-shop queries are the cluttered photos. Prints a table, writes benchmarks/results/attention.json.
"""

from __future__ import annotations

import argparse
import copy
import os

from _common import table, train_and_evaluate, write

from fashionlens.data.garments import render_dataset
from fashionlens.recipes import load_recipe

COLUMNS = ("category_top1", "c2s_top1", "c2s_top20", "c2s_map", "inshop_top1", "train_minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--work", default="/tmp/fl-attention")
    args = parser.parse_args()
    data = os.path.join(args.work, "garments")
    if not os.path.isfile(os.path.join(data, "garments.json")):
        render_dataset(data, items=args.items, views=6, size=args.size, seed=3, progress=False)
    spec = f"garments:{data}"
    rows = {}
    for name, attention in (("global, average pooling", False), ("global, spatial saliency pooling", True)):
        cfg = copy.deepcopy(load_recipe("garments"))
        cfg.data.spec, cfg.train.epochs, cfg.data.image_size = spec, args.epochs, args.size
        cfg.model.name, cfg.model.spatial_attention = "global", attention
        print(f"== {name}", flush=True)
        rows[name] = train_and_evaluate(cfg, os.path.join(args.work, "attention" if attention else "plain"), spec)
    print(table(rows, COLUMNS))
    path = write("attention", {"items": args.items, "epochs": args.epochs, "size": args.size,
                               "rows": {n: {c: r.get(c) for c in COLUMNS} for n, r in rows.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
