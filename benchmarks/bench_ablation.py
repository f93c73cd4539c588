"""Ablation on the rendered garments: full FashionNet (global + predicted-landmark local branch) against
global-only, the two landmark heads (heatmap vs direct regression), and the map the local branch samples
(``model.local_stride``: 32 = the final map, 16 / 8 = a mid-level stage like FashionNet's conv4), same data,
same budget.

    python benchmarks/bench_ablation.py [--items 600] [--epochs 12] [--size 128] [--work /tmp/fl-ablation]
        [--only NAME ...] [--out ablation]

Renders the set once (seeded), trains every variant (or the ``--only`` ones) with the `garments` recipe,
evaluates on the test split, prints a Markdown table and writes benchmarks/results/OUT.json (``ablation``
for the default settings, else ``ablation_<items>x<views>_e<epochs>_<size>px``).  Rows already in that file
from a run with the same settings are kept, so variants can be run one at a time.
"""

from __future__ import annotations

import argparse
import copy
import os
import re

from _common import load, table, train_and_evaluate, write

from fashionlens.recipes import load_recipe
from fashionlens.data.garments import render_dataset

VARIANTS = {  # name -> config overrides (section, field, value)
    "global only": [("model", "name", "global")],
    "full (heatmap landmarks)": [("model", "name", "fashionnet"), ("model", "landmark_head", "heatmap")],
    "full (regression landmarks)": [("model", "name", "fashionnet"), ("model", "landmark_head", "regression")],
    "full, local branch at stride 16": [("model", "name", "fashionnet"), ("model", "landmark_head", "heatmap"),
                                        ("model", "local_stride", 16)],
    "full, local branch at stride 8": [("model", "name", "fashionnet"), ("model", "landmark_head", "heatmap"),
                                       ("model", "local_stride", 8)],
}
DEFAULTS = {"items": 600, "views": 6, "epochs": 12, "size": 128, "seed": 0}
COLUMNS = ("category_top1", "category_top3", "attribute_recall_top5", "landmark_ne", "c2s_top1", "c2s_top20",
           "inshop_top1", "inshop_top20", "train_minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=DEFAULTS["items"])
    parser.add_argument("--views", type=int, default=DEFAULTS["views"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--size", type=int, default=DEFAULTS["size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--work", default="/tmp/fl-ablation")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--out", help="results name (default: ablation, with the settings appended unless default)")
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choices: {list(VARIANTS)}")
    settings = {"items": args.items, "views": args.views, "epochs": args.epochs, "size": args.size, "seed": args.seed}
    out = args.out or "ablation"
    if not args.out and settings != DEFAULTS:
        out += f"_{args.items}x{args.views}_e{args.epochs}_{args.size}px" + (f"_s{args.seed}" if args.seed else "")
    previous = load(out, {})
    same = {k: previous.get(k, DEFAULTS["seed"] if k == "seed" else None) for k in settings} == settings
    rows = dict(previous.get("rows", {})) if same else {}  # keep the rows of earlier runs with these settings
    data = os.path.join(args.work, "garments")
    if not os.path.isfile(os.path.join(data, "garments.json")):
        render_dataset(data, items=args.items, views=args.views, size=args.size, seed=args.seed, progress=False)
    spec = f"garments:{data}"
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = copy.deepcopy(load_recipe("garments"))
        cfg.data.spec, cfg.train.epochs, cfg.data.image_size, cfg.seed = spec, args.epochs, args.size, args.seed
        for section, field, value in overrides:
            setattr(getattr(cfg, section), field, value)
        print(f"== {name}", flush=True)
        result = train_and_evaluate(cfg, os.path.join(args.work, re.sub(r"[^a-z0-9]+", "_", name).strip("_")), spec)
        rows[name] = {c: result.get(c) for c in COLUMNS}
    rows = {n: rows[n] for n in VARIANTS if n in rows}  # table order = VARIANTS order
    print(table(rows, COLUMNS))
    path = write(out, {**settings, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
