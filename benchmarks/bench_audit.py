"""Label audit: how many injected label errors are found, ours (confident learning in NumPy) vs cleanlab.

    python benchmarks/bench_audit.py [--run RUN_DIR] [--photos DIR] [--garments DIR] [--rates 0.05,0.1,0.2]
        [--kinds uniform,confusable] [--image-size 224] [--folds 5] [--C 0.02] [--threads 1]

Data: (a) a garments render (default: 300 items x 4 views of 128 px, rendered once into the fashionlens
cache), every category image; (b) the train split of ../shared/data/clothing-small (skipped with a message
when absent).  Features are computed once per data set (ImageNet EfficientNet-Lite0, or ``--run``'s fused
features) and cached.  For each noise kind and rate, labels are flipped (exactly ``rate`` of them, seeded;
``confusable`` flips each class to the class the out-of-fold classifier confuses it with most on the
ORIGINAL labels: the largest off-diagonal sum of probabilities), out-of-fold probabilities are computed once, and both methods flag images from the same
probabilities.  Scores: precision / recall / F1 of the flagged set against the flipped set, and
``corrected`` = share of correctly flagged images whose suggested class (the most probable other class)
is the original label.  ``original`` rows audit the unmodified labels: what gets flagged there is either a
real label error of the data set or a hard image (a false alarm floor).
Prints a Markdown table and writes benchmarks/results/audit.json.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _common import PHOTOS, table, write

from fashionlens.audit.features import compute_features
from fashionlens.audit.label_audit import (
    AUDIT_C,
    audit_labels,
    flag_scores,
    out_of_fold_probabilities,
)
from fashionlens.audit.noise import inject_noise
from fashionlens.data.readers import read
from fashionlens.utils import cache_dir


def garments_root(args: argparse.Namespace) -> str:
    """The render given by --garments, else one rendered once into the cache."""
    if args.garments:
        return args.garments
    from fashionlens.data.garments import render_dataset

    root = os.path.join(cache_dir(), f"bench-audit-garments-{args.items}x{args.views}-{args.size}")
    if not os.path.isfile(os.path.join(root, "garments.json")):
        print(f"rendering {args.items} items x {args.views} views into {root}", flush=True)
        render_dataset(root, items=args.items, views=args.views, size=args.size, seed=0, progress=False)
    return root


def load(spec: str, split: str | None, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(features (N, D), labels (N,), class names, timing) of the labelled samples of ``split``."""
    data = read(spec)
    start = time.perf_counter()  # features of every image (the cache is shared with bench_cleaning.py)
    vectors, rows = compute_features(data.samples, args.run or "imagenet", image_size=args.image_size,
                                     cache_dir=os.path.join(cache_dir(), "audit-features"), progress=False)
    seconds = time.perf_counter() - start
    samples = [data.samples[i] for i in rows]
    keep = np.array([s.category is not None and (split is None or s.split == split) for s in samples])
    labels = np.array([s.category for s, k in zip(samples, keep) if k], np.int64)
    return vectors[keep], labels, list(data.info.categories), {"feature_seconds": round(seconds, 1),
                                                               "images": int(keep.sum())}


def scores(result, wrong: np.ndarray, truth: np.ndarray) -> dict[str, dict]:
    """Precision / recall / F1 / corrected of ours and cleanlab's flags."""
    out = {}
    top = result.pred_probs.argmax(axis=1)
    for method, flagged, suggestion in (("ours", result.flagged, result.suggested),
                                        ("cleanlab", result.cleanlab_flagged, top)):
        s = flag_scores(flagged, wrong)
        hits = flagged & wrong
        s["corrected"] = float((suggestion[hits] == truth[hits]).mean()) if hits.any() else 0.0
        out[method] = s
    return out


def audit_dataset(name: str, x: np.ndarray, y: np.ndarray, names: list[str], args: argparse.Namespace) -> dict:
    rows: dict[str, dict] = {}
    start = time.perf_counter()
    clean = out_of_fold_probabilities(x, y, folds=args.folds, seed=args.seed, num_classes=len(names), C=args.C)
    confusion = np.zeros((len(names), len(names)))  # soft: summed probabilities, so every class has a target
    np.add.at(confusion, y, clean)
    base = audit_labels(x, y, pred_probs=clean, class_names=names)
    rows[f"{name} original"] = {"oof_accuracy": float((clean.argmax(1) == y).mean()),
                                "ours_flagged": int(base.flagged.sum()),
                                "cleanlab_flagged": int(base.cleanlab_flagged.sum())}
    print(f"{name}: {len(y)} images, {len(names)} classes, out-of-fold accuracy on the original labels "
          f"{rows[f'{name} original']['oof_accuracy']:.4f}", flush=True)
    for kind in args.kinds.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            noisy, wrong = inject_noise(y, rate, kind, seed=args.seed, num_classes=len(names), confusion=confusion)
            t = time.perf_counter()
            result = audit_labels(x, noisy, folds=args.folds, seed=args.seed, class_names=names, C=args.C)
            for method, s in scores(result, wrong, y).items():
                rows[f"{name} {kind} {rate:.0%} {method}"] = {**s, "seconds": round(time.perf_counter() - t, 2),
                                                              "estimated_noise_rate": result.summary()[
                                                                  "estimated_noise_rate"]}
            print(f"  {kind} {rate:.0%}: ours F1 {rows[f'{name} {kind} {rate:.0%} ours']['f1']:.3f}, cleanlab F1 "
                  f"{rows[f'{name} {kind} {rate:.0%} cleanlab']['f1']:.3f}", flush=True)
    return {"rows": rows, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="", help="a trained run: its fused features instead of ImageNet Lite0")
    parser.add_argument("--photos", default=PHOTOS, help="clothing-small root (image folders)")
    parser.add_argument("--garments", default="", help="a garments render (default: render once into the cache)")
    parser.add_argument("--items", type=int, default=300, help="garment items of the default render")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rates", default="0.05,0.1,0.2")
    parser.add_argument("--kinds", default="uniform,confusable")
    parser.add_argument("--image-size", type=int, default=224, help="ImageNet feature input side, pixels")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=AUDIT_C, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the features")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections: dict[str, dict] = {}
    datasets = [("garments", f"garments:{garments_root(args)}", None)]
    if os.path.isdir(os.path.join(args.photos, "train")):
        datasets.append(("clothing-small", f"folder:{args.photos}", "train"))
    else:
        print(f"clothing-small not found at {args.photos}: skipped (a fresh clone has no ../shared)")
    for name, spec, split in datasets:
        x, y, names, info = load(spec, split, args)
        sections[name] = {**info, **audit_dataset(name, x, y, names, args)}
    rows = {k: v for s in sections.values() for k, v in s["rows"].items() if "precision" in v}
    print(table(rows, ["precision", "recall", "f1", "flagged", "wrong", "corrected"]))
    print(table({k: v for s in sections.values() for k, v in s["rows"].items() if "precision" not in v},
                ["oof_accuracy", "ours_flagged", "cleanlab_flagged"]))
    import cleanlab

    path = write("audit", {"features": args.run or f"imagenet tf_efficientnet_lite0 @ {args.image_size}px",
                           "folds": args.folds, "C": args.C, "seed": args.seed, "cleanlab": cleanlab.__version__,
                           "sections": sections})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
