"""Model-in-the-loop cleaning: a classifier trained on noisy, cleaned and clean labels, accuracy on validation.

    python benchmarks/bench_cleaning.py [--photos DIR] [--noise 0.3] [--kinds uniform,confusable]
        [--seed-fraction 0.1] [--rounds 3] [--threshold 0.9] [--keep-threshold 0.0] [--image-size 224]
        [--C 0.1] [--audit-C 0.02] [--threads 1]

Data: ../shared/data/clothing-small (skipped with a message when absent).  Features: ImageNet
EfficientNet-Lite0 pooled features of every image (computed once, cached; shared with bench_audit.py).
``--noise`` of the TRAIN labels are flipped (uniform, or to the most confused class of an out-of-fold
classifier on the original labels); the validation labels stay as published.  The trusted seed is a
stratified ``--seed-fraction`` of the train images whose labels were NOT flipped (the "small hand-checked
set" of the seed thesis).  Every row trains the same classifier (StandardScaler + logistic regression on
the frozen features, ``--C``) on a different training set and reports its validation accuracy:

  clean labels        every train image with its published label (upper reference)
  noisy labels        every train image with its noisy label (what one gets without cleaning)
  trusted seed only   the seed images alone
  audit: drop / relabel flagged   confident learning on out-of-fold probabilities (bench_audit.py), the
                      flagged images removed / given their suggested class
  loop round r        the cleaning loop (fashionlens.audit.cleaning, relabel mode) after r rounds
  loop, drop mode     the loop with confidently contradicted images dropped instead of relabelled

``label_accuracy`` is the share of the training set's labels that equal the published label.  The final
loop result is also written as a manifest and read back with ``fashionlens.read("manifest:...")``.
Prints Markdown tables and writes benchmarks/results/cleaning.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from _common import PHOTOS, table, write

from fashionlens.audit.cleaning import (
    CLEAN_C,
    clean_labels,
    seed_fraction,
    write_manifest,
)
from fashionlens.audit.features import compute_features
from fashionlens.audit.label_audit import (
    AUDIT_C,
    audit_labels,
    blas_threads,
    make_classifier,
    out_of_fold_probabilities,
)
from fashionlens.audit.noise import inject_noise
from fashionlens.data.readers import read
from fashionlens.utils import cache_dir


def evaluate(x: np.ndarray, labels: np.ndarray, keep: np.ndarray, truth: np.ndarray, xv: np.ndarray,
             yv: np.ndarray, C: float) -> dict:
    """Validation accuracy of the classifier trained on the ``keep`` rows with ``labels``."""
    with blas_threads(1):
        clf = make_classifier(C).fit(x[keep], labels[keep])
        accuracy = float((clf.predict(xv) == yv).mean())
    return {"val_accuracy": accuracy, "train_images": int(keep.sum()),
            "label_accuracy": float((labels[keep] == truth[keep]).mean())}


def trusted_seed(noisy: np.ndarray, wrong: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified ``fraction`` of the images whose label was not flipped."""
    clean = np.flatnonzero(~wrong)
    mask = np.zeros(len(noisy), bool)
    mask[clean[seed_fraction(noisy[clean], fraction, seed)]] = True
    return mask


def run_kind(kind: str, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, confusion: np.ndarray,
             args: argparse.Namespace) -> tuple[dict, object]:
    everyone = np.ones(len(y), bool)
    noisy, wrong = inject_noise(y, args.noise, kind, seed=args.seed, num_classes=len(confusion), confusion=confusion)
    seed = trusted_seed(noisy, wrong, args.seed_fraction, args.seed)
    rows = {"clean labels": evaluate(x, y, everyone, y, xv, yv, args.C),
            "noisy labels": evaluate(x, noisy, everyone, y, xv, yv, args.C),
            "trusted seed only": evaluate(x, noisy, seed, y, xv, yv, args.C)}
    audit = audit_labels(x, noisy, seed=args.seed, C=args.audit_C, compare_cleanlab=False)
    rows["audit: drop flagged"] = evaluate(x, noisy, ~audit.flagged, y, xv, yv, args.C)
    rows["audit: relabel flagged"] = evaluate(x, np.where(audit.flagged, audit.suggested, noisy), everyone, y, xv,
                                              yv, args.C)
    start = time.perf_counter()

    def after_round(summary: dict, labels: np.ndarray, status: np.ndarray) -> None:
        row = evaluate(x, labels, labels >= 0, y, xv, yv, args.C)
        rows[f"loop round {summary['round']}"] = {**row, **{k: summary[k] for k in ("kept", "relabelled", "dropped")}}

    final = clean_labels(x, noisy, seed, rounds=args.rounds, threshold=args.threshold,
                         keep_threshold=args.keep_threshold, C=args.C, seed=args.seed, on_round=after_round)
    loop_seconds = time.perf_counter() - start
    dropped = clean_labels(x, noisy, seed, rounds=args.rounds, threshold=args.threshold,
                           keep_threshold=args.keep_threshold, mode="drop", C=args.C, seed=args.seed)
    rows["loop, drop mode"] = {**evaluate(x, dropped.labels, dropped.keep, y, xv, yv, args.C),
                               "dropped": int((dropped.status == "dropped").sum())}
    last = rows[f"loop round {final.rounds[-1]['round']}"]
    print(f"{kind} {args.noise:.0%}: noisy {rows['noisy labels']['val_accuracy']:.4f}, cleaned "
          f"{last['val_accuracy']:.4f}, clean {rows['clean labels']['val_accuracy']:.4f}", flush=True)
    return {"rows": rows, "seed_images": int(seed.sum()), "loop_seconds": round(loop_seconds, 1),
            "rounds": final.rounds}, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=PHOTOS, help="clothing-small root (train/ and validation/ folders)")
    parser.add_argument("--noise", type=float, default=0.3, help="share of train labels flipped")
    parser.add_argument("--kinds", default="uniform,confusable")
    parser.add_argument("--seed-fraction", type=float, default=0.1, help="trusted share of the train images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.9, help="probability needed to relabel")
    parser.add_argument("--keep-threshold", type=float, default=0.0, help="probability needed to keep a label")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--C", type=float, default=CLEAN_C, help="of every classifier compared and of the loop")
    parser.add_argument("--audit-C", type=float, default=AUDIT_C, help="of the audit's out-of-fold classifier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the features")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.photos, "train")):
        print(f"clothing-small not found at {args.photos}: nothing to do (a fresh clone has no ../shared)")
        return
    torch.set_num_threads(args.threads)
    data = read(f"folder:{args.photos}")
    start = time.perf_counter()
    vectors, rows = compute_features(data.samples, "imagenet", image_size=args.image_size,
                                     cache_dir=os.path.join(cache_dir(), "audit-features"))
    feature_seconds = time.perf_counter() - start
    samples = [data.samples[i] for i in rows]
    labels = np.array([s.category for s in samples], np.int64)
    train = np.array([s.split == "train" for s in samples])
    x, y, xv, yv = vectors[train], labels[train], vectors[~train], labels[~train]
    names = list(data.info.categories)
    clean = out_of_fold_probabilities(x, y, seed=args.seed, num_classes=len(names), C=args.audit_C)
    confusion = np.zeros((len(names), len(names)))
    np.add.at(confusion, y, clean)  # soft confusion of the original labels: the confusable-noise targets
    results, manifest_rows = {}, None
    for kind in args.kinds.split(","):
        results[kind], final = run_kind(kind, x, y, xv, yv, confusion, args)
        print(table(results[kind]["rows"], ["val_accuracy", "train_images", "label_accuracy", "relabelled",
                                            "dropped"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cleaned.csv")
            written = write_manifest(path, [s for s, t in zip(samples, train) if t], final.labels, names)
            manifest_rows = len(read(f"manifest:{path}"))
            assert manifest_rows == written == int(final.keep.sum())
    path = write("cleaning", {"data": args.photos, "train_images": int(train.sum()), "val_images": int((~train).sum()),
                              "features": f"imagenet tf_efficientnet_lite0 @ {args.image_size}px",
                              "feature_seconds": round(feature_seconds, 1), "settings": vars(args),
                              "manifest_rows_read_back": manifest_rows, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
