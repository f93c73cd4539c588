"""Subcommands ``audit`` and ``clean`` of the ``fashionlens`` command (registered by ``cli.build_parser``).

    fashionlens audit --model RUN_DIR|imagenet --data SPEC --out DIR [--split train] [--folds 5]
    fashionlens clean --model RUN_DIR|imagenet --data SPEC --out MANIFEST --seed-clean FRACTION|MANIFEST [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

import numpy as np


def _samples(spec: str, split: str | None, skip_missing: bool, default: str | None = None) -> tuple[list, Any, list]:
    """(samples of ``split``, the data set's info, the samples of the other splits).  Without ``split``:
    the ``default`` split when the data has one, else every sample."""
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


def _features(args: argparse.Namespace, samples: list) -> tuple[list, np.ndarray]:
    """(the samples that could be read, their features (M, D))."""
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
    from fashionlens.audit.label_audit import AUDIT_C, audit_labels
    from fashionlens.audit.report_html import write_suspects_csv, write_suspects_html

    samples, info, _ = _samples(args.data, args.split, args.skip_missing)
    unlabelled = sum(s.category is None for s in samples)
    samples = [s for s in samples if s.category is not None]
    if not samples:
        raise ValueError(f"{args.data}: no image has a category label; nothing to audit")
    samples, vectors = _features(args, samples)
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


def _seed(spec: str, samples: list, labels: np.ndarray, categories: list[str], seed: int) -> np.ndarray:
    """The trusted mask from ``--seed-clean`` (FRACTION or MANIFEST); a manifest also corrects ``labels``."""
    from fashionlens.audit.cleaning import seed_fraction, seed_from_manifest

    try:
        fraction = float(spec)
    except ValueError:
        fraction = None
    if fraction is not None:
        labelled = labels >= 0
        mask = np.zeros(len(labels), bool)
        mask[labelled] = seed_fraction(labels[labelled], fraction, seed)
        return mask
    mask, trusted = seed_from_manifest(samples, spec, categories)
    labels[mask] = trusted[mask]
    return mask


def cmd_clean(args: argparse.Namespace) -> int:
    from fashionlens.audit.cleaning import CLEAN_C, clean_labels, write_manifest

    samples, info, others = _samples(args.data, args.split, args.skip_missing, default="train")
    samples, vectors = _features(args, samples)
    categories = list(info.categories)
    labels = np.array([-1 if s.category is None else s.category for s in samples], np.int64)
    given = labels.copy()
    mask = _seed(args.seed_clean, samples, labels, categories, args.seed)
    C = CLEAN_C if args.C is None else args.C
    result = clean_labels(vectors, labels, mask, rounds=args.rounds, threshold=args.threshold,
                          keep_threshold=args.keep_threshold, mode=args.mode, C=C, seed=args.seed,
                          num_classes=len(categories))
    passthrough = [] if args.drop_other_splits else [s for s in others if s.category is not None]
    rows = samples + passthrough
    final = np.concatenate([result.labels, [s.category for s in passthrough]]).astype(np.int64)
    name = [categories[i] if i >= 0 else "" for i in given] + [s.category_name for s in passthrough]
    written = write_manifest(args.out, rows, final, categories, category_paths=list(info.category_paths),
                             attributes=list(info.attributes),
                             extra={"status": list(result.status) + ["unchanged"] * len(passthrough),
                                    "given_category": name,
                                    "confidence": list(result.confidence) + [None] * len(passthrough)})
    for r in result.rounds:
        print(f"round {r['round']}: trained on {r['trained_on']}, kept {r['kept']}, relabelled {r['relabelled']}, "
              f"dropped {r['dropped']} ({r['changed']} decisions changed)", file=sys.stderr)
    print(json.dumps({"manifest": os.path.abspath(args.out), "rows": written, "seed": int(mask.sum()),
                      "passthrough": len(passthrough), "rounds": result.rounds}))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
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
    """Register ``audit`` and ``clean`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("audit", help="find images whose category label is probably wrong")
    _common(p)
    p.add_argument("--out", required=True, help="folder for suspects.csv, index.html, summary.json")
    p.add_argument("--split", help="only these splits (comma-separated; default: every labelled image)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the out-of-fold probabilities")
    p.add_argument("--no-cleanlab", action="store_true", help="skip the cleanlab comparison")
    p.add_argument("--thumb", type=int, default=128, help="thumbnail size in the HTML page, pixels")
    p.add_argument("--html-limit", type=int, default=1000, help="at most this many suspects on the page")
    p.add_argument("--link-images", action="store_true", help="link the images instead of inlining thumbnails")
    p.set_defaults(func=cmd_audit)

    p = subparsers.add_parser("clean", help="clean a noisy labelled set with a model trained on a trusted subset")
    _common(p)
    p.add_argument("--out", required=True, help="output manifest CSV (train on it with --data manifest:FILE)")
    p.add_argument("--seed-clean", required=True, metavar="FRACTION_OR_MANIFEST",
                   help="trusted images: a manifest of hand-checked images, or a fraction (0-1) taken as clean")
    p.add_argument("--split", help="split(s) to clean (default: train if the data has it, else every image); "
                   "other splits are copied unchanged")
    p.add_argument("--drop-other-splits", action="store_true", help="write only the cleaned split")
    p.add_argument("--rounds", type=int, default=3, help="train / score / keep rounds")
    p.add_argument("--threshold", type=float, default=0.9, help="probability needed to relabel an image")
    p.add_argument("--keep-threshold", type=float, default=0.0,
                   help="probability of the given label needed to keep it; it must always be the top class "
                        "(0 = agreement alone keeps it)")
    p.add_argument("--mode", choices=("relabel", "drop"), default="relabel",
                   help="what to do with images confidently predicted as another class")
    p.set_defaults(func=cmd_clean)
