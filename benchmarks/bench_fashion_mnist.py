"""Fashion-MNIST: train the `fashion-mnist` recipe on this CPU, report test accuracy and training minutes.

Reference points (zalando's benchmark table): ResNet-18 0.949, best entry 0.967.

    python benchmarks/bench_fashion_mnist.py [--epochs N] [--max-minutes M] [--work /tmp/fl-fmnist]

Needs the Fashion-MNIST files (Debian package dataset-fashion-mnist, or a DIR with the four IDX files).
Prints a table and writes benchmarks/results/fashion_mnist.json (recipe fashion-mnist-preact:
fashion_mnist_preact.json).
"""

from __future__ import annotations

import argparse
import os

from _common import table, train_and_evaluate, write

from fashionlens.recipes import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist", help="data spec (fashion-mnist[:DIR])")
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="time budget (default: the recipe's)")
    parser.add_argument("--work", default="/tmp/fl-fmnist")
    args = parser.parse_args()
    cfg = load_recipe(args.recipe)
    cfg.data.spec = args.data
    if args.max_minutes is not None:
        cfg.train.max_minutes = args.max_minutes
    if args.epochs:
        cfg.train.epochs = args.epochs
    run_dir = os.path.join(args.work, args.recipe)
    row = train_and_evaluate(cfg, run_dir, args.data, split="test")
    if cfg.model.tta_flip:  # the same weights without mirror test-time augmentation
        from fashionlens.runs import evaluate_run

        row["category_top1_without_tta"] = evaluate_run(run_dir, args.data, split="test", progress=False,
                                                        tta=False)["category_top1"]
    rows = {f"fashionlens ({args.recipe} recipe, {cfg.model.backbone}, this CPU)": row,
            "zalando table: ResNet-18": {"category_top1": 0.949}, "zalando table: best entry": {"category_top1": 0.967}}
    print(table(rows, ("category_top1", "category_top1_without_tta", "train_minutes", "epochs")))
    name = "fashion_mnist" if args.recipe == "fashion-mnist" else "fashion_mnist_" + args.recipe.removeprefix(
        "fashion-mnist-").replace("-", "_")  # one JSON per recipe: fashion_mnist.json, fashion_mnist_preact.json
    path = write(name, {"recipe": args.recipe, "backbone": cfg.model.backbone,
                                   "image_size": cfg.data.image_size, "test_accuracy": row["category_top1"],
                                   "test_accuracy_without_tta": row.get("category_top1_without_tta"),
                                   "train_minutes": row["train_minutes"], "epochs": row["epochs"],
                                   "per_class": row.get("category_per_class")})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
