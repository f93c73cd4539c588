"""Ablation on the rendered garments: full FashionNet (global + predicted-landmark local branch) against
global-only, and the two landmark heads (heatmap vs direct regression), same data, same budget.

    python benchmarks/bench_ablation.py [--items 600] [--epochs 12] [--size 128] [--work /tmp/fl-ablation]

Renders the set once (seeded), trains every variant with the `garments` recipe, evaluates on the test
split, prints a Markdown table and writes benchmarks/results/ablation.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import re

from _common import table, train_and_evaluate, write

from fashionlens.recipes import load_recipe
from fashionlens.data.garments import render_dataset

VARIANTS = {  # name -> config overrides (section, field, value)
    "global only": [("model", "name", "global")],
    "full (heatmap landmarks)": [("model", "name", "fashionnet"), ("model", "landmark_head", "heatmap")],
    "full (regression landmarks)": [("model", "name", "fashionnet"), ("model", "landmark_head", "regression")],
}
COLUMNS = ("category_top1", "category_top3", "attribute_recall_top5", "landmark_ne", "c2s_top1", "c2s_top20",
           "inshop_top1", "inshop_top20", "train_minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/fl-ablation")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    data = os.path.join(args.work, "garments")
    if not os.path.isfile(os.path.join(data, "garments.json")):
        render_dataset(data, items=args.items, views=args.views, size=args.size, seed=args.seed, progress=False)
    spec = f"garments:{data}"
    rows = {}
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = copy.deepcopy(load_recipe("garments"))
        cfg.data.spec, cfg.train.epochs, cfg.data.image_size, cfg.seed = spec, args.epochs, args.size, args.seed
        for section, field, value in overrides:
            setattr(getattr(cfg, section), field, value)
        print(f"== {name}", flush=True)
        rows[name] = train_and_evaluate(cfg, os.path.join(args.work, re.sub(r"[^a-z0-9]+", "_", name).strip("_")), spec)
    print(table(rows, COLUMNS))
    path = write("ablation", {"items": args.items, "views": args.views, "epochs": args.epochs, "size": args.size,
                              "rows": {n: {c: r.get(c) for c in COLUMNS} for n, r in rows.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
