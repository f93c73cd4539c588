"""``fashionlens clean --model RUN_DIR|imagenet --data SPEC --out MANIFEST --seed-clean FRACTION|MANIFEST``:
clean a noisy labelled set with a model trained on a trusted subset, in rounds."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from fashionlens.cli.audit import add_feature_arguments, features, read_samples


def _seed(spec: str, samples: list, labels: np.ndarray, categories: list[str], seed: int) -> np.ndarray:
    """The trusted mask from ``--seed-clean`` (FRACTION or MANIFEST); a manifest also corrects ``labels``."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
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
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.cleaning import CLEAN_C, clean_labels, write_manifest

    samples, info, others = read_samples(args.data, args.split, args.skip_missing, default="train")
    samples, vectors = features(args, samples)
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


def add_commands(subparsers: Any) -> None:
    """Register ``clean`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("clean", help="clean a noisy labelled set with a model trained on a trusted subset")
    add_feature_arguments(p)
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
