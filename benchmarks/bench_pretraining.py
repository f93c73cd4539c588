"""Identity pre-training before fine-tuning (the ClothingID strategy) against random and ImageNet init.

1. Pre-train a backbone on item identities only (recipe `identity`) on a separate render (other seed,
   no category/attribute/landmark labels used), once from random weights and once from ImageNet.
2. Fine-tune the same task four times (recipe `garments`, a small labelled render): from random weights,
   from each identity-pre-trained backbone (--init-from) and from ImageNet (EfficientNet-Lite0).
   Finished rows are kept in the results file and not trained again (delete it to start over).

    python benchmarks/bench_pretraining.py [--pre-items 600] [--items 120] [--epochs 8] [--work /tmp/fl-pretrain]

Prints a Markdown table and writes benchmarks/results/pretraining.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re

from _common import RESULTS, table, train_and_evaluate, write

from fashionlens.recipes import load_recipe
from fashionlens.data.garments import render_dataset
from fashionlens.training.fit import fit

COLUMNS = ("category_top1", "category_top3", "attribute_recall_top5", "landmark_ne", "c2s_top20", "inshop_top20",
           "train_minutes")


def render(path: str, items: int, seed: int, size: int) -> str:
    if not os.path.isfile(os.path.join(path, "garments.json")):
        render_dataset(path, items=items, views=6, size=size, seed=seed, progress=False)
    return f"garments:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pre-items", type=int, default=600)
    parser.add_argument("--pre-epochs", type=int, default=8)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--work", default="/tmp/fl-pretrain")
    args = parser.parse_args()
    pre_spec = render(os.path.join(args.work, "pre_data"), args.pre_items, 101, args.size)
    spec = render(os.path.join(args.work, "task_data"), args.items, 7, args.size)
    pre_dirs = {}
    for name, imagenet in (("identity_pretrain", False), ("identity_pretrain_imagenet", True)):
        pre_dirs[name] = os.path.join(args.work, name)
        if not os.path.isfile(os.path.join(pre_dirs[name], "best.pt")):
            cfg = load_recipe("identity")
            cfg.data.spec, cfg.train.epochs, cfg.data.image_size = pre_spec, args.pre_epochs, args.size
            cfg.model.pretrained = imagenet
            print(f"== identity pre-training ({'from ImageNet' if imagenet else 'from random weights'})", flush=True)
            fit(cfg, pre_dirs[name], resume=False, progress=False, log=lambda m: print("   ", m, flush=True))
    inits = {"random init": (False, ""), "identity pre-training": (False, pre_dirs["identity_pretrain"]),
             "ImageNet init": (True, ""),
             "ImageNet, then identity pre-training": (False, pre_dirs["identity_pretrain_imagenet"])}
    previous = os.path.join(RESULTS, "pretraining.json")
    rows = json.load(open(previous))["rows"] if os.path.isfile(previous) else {}
    for name, (pretrained, init_from) in inits.items():
        if name in rows:
            continue
        cfg = copy.deepcopy(load_recipe("garments"))
        cfg.data.spec, cfg.train.epochs, cfg.data.image_size = spec, args.epochs, args.size
        cfg.model.pretrained, cfg.train.init_from = pretrained, init_from
        print(f"== fine-tune: {name}", flush=True)
        result = train_and_evaluate(cfg, os.path.join(args.work, re.sub(r"[^a-z0-9]+", "_", name.lower())), spec)
        rows[name] = {c: result.get(c) for c in COLUMNS}
        write("pretraining", {"pre_items": args.pre_items, "items": args.items, "epochs": args.epochs,
                              "size": args.size, "rows": rows})
    print(table(rows, COLUMNS))
    print(f"wrote {previous}")


if __name__ == "__main__":
    main()
