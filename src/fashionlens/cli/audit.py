"""``fashionlens audit --model RUN_DIR|imagenet --data SPEC --out DIR [--split train] [--folds 5]``: images whose
category label is probably wrong; the feature options and helpers here are shared with ``clean``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

import numpy as np


def read_samples(spec: str, split: str | None, skip_missing: bool, default: str | None = None) -> tuple[list, Any, list]:
    """(samples of ``split``, the data set's info, the samples of the other splits).  Without ``split``:
    the ``default`` split when the data has one, else every sample."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.readers import read

    data = read(spec, missing="skip" if skip_missing else "error")
    if not split and default in data.splits():
        split = default
    if not split:
        return list(data.samples), data.info, []
    wanted = set(split.split(","))
    chosen = [s for s in data.samples if s.split in wanted]
    if not chosen:
        raise ValueError(f"no samples in split {split!r} of {spec}; splits: {data.splits()}")
    return chosen, data.info, [s for s in data.samples if s.split not in wanted]


def features(args: argparse.Namespace, samples: list) -> tuple[list, np.ndarray]:
    """(the samples that could be read, their features (M, D))."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.features import compute_features
    from fashionlens.utils import cache_dir, set_threads

    set_threads(args.threads)
    cache = None if args.no_cache else (args.cache or os.path.join(cache_dir(), "features"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors, rows = compute_features(samples, args.model, image_size=args.image_size, kind=args.features,
                                         batch_size=args.batch_size, num_workers=args.workers, cache_dir=cache,
                                         progress=not args.quiet)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return [samples[i] for i in rows], vectors


def cmd_audit(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.label_audit import AUDIT_C, audit_labels
    from fashionlens.audit.report_html import write_suspects_csv, write_suspects_html

    samples, info, _ = read_samples(args.data, args.split, args.skip_missing)
    unlabelled = sum(s.category is None for s in samples)
    samples = [s for s in samples if s.category is not None]
    if not samples:
        raise ValueError(f"{args.data}: no image has a category label; nothing to audit")
    samples, vectors = features(args, samples)
    labels = np.array([s.category for s in samples], np.int64)
    C = AUDIT_C if args.C is None else args.C
    result = audit_labels(vectors, labels, folds=args.folds, seed=args.seed, class_names=list(info.categories),
                          C=C, compare_cleanlab=not args.no_cleanlab)
    os.makedirs(args.out, exist_ok=True)
    images = [s.image for s in samples]
    summary = {**result.summary(), "unlabelled_skipped": unlabelled, "model": args.model, "data": args.data,
               "split": args.split, "folds": args.folds, "seed": args.seed, "C": C,
               "thresholds": {n: _num(t) for n, t in zip(info.categories, result.thresholds)},
               "class_names": list(info.categories), "noise_matrix": np.round(result.noise_matrix(), 4).tolist(),
               "confident_joint": result.joint.tolist()}
    write_suspects_csv(os.path.join(args.out, "suspects.csv"), result.suspects, images)
    write_suspects_html(os.path.join(args.out, "index.html"), result.suspects, samples,
                        summary={k: v for k, v in summary.items() if not isinstance(v, (dict, list))},
                        title=f"Suspected label errors: {args.data}", thumb=args.thumb, limit=args.html_limit,
                        embed_images=not args.link_images)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}))
    print(f"suspects: {os.path.abspath(os.path.join(args.out, 'index.html'))}", file=sys.stderr)
    return 0


def _num(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def add_feature_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``audit`` and ``clean``: which model's features, of which data, cached where."""
    p.add_argument("--model", required=True, help="'imagenet' (pretrained EfficientNet-Lite0 features) or a run dir")
    p.add_argument("--data", required=True, help="data spec, e.g. folder:DIR, manifest:FILE, garments:DIR")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds / seed subset")
    p.add_argument("--C", type=float, help="inverse L2 strength of the logistic regression (default: audit 0.02, "
                   "clean 0.1)")
    p.add_argument("--image-size", type=int, default=224, help="input side in pixels for --model imagenet")
    p.add_argument("--features", choices=("features", "embedding"), default="features",
                   help="which output of a trained run to use (fused features or the retrieval embedding)")
    p.add_argument("--cache", help="feature cache folder (default: $FASHIONLENS_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="always recompute the features")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--skip-missing", action="store_true", help="drop samples whose image file is missing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(subparsers: Any) -> None:
    """Register ``audit`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("audit", help="find images whose category label is probably wrong")
    add_feature_arguments(p)
    p.add_argument("--out", required=True, help="folder for suspects.csv, index.html, summary.json")
    p.add_argument("--split", help="only these splits (comma-separated; default: every labelled image)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the out-of-fold probabilities")
    p.add_argument("--no-cleanlab", action="store_true", help="skip the cleanlab comparison")
    p.add_argument("--thumb", type=int, default=128, help="thumbnail size in the HTML page, pixels")
    p.add_argument("--html-limit", type=int, default=1000, help="at most this many suspects on the page")
    p.add_argument("--link-images", action="store_true", help="link the images instead of inlining thumbnails")
    p.set_defaults(func=cmd_audit)
