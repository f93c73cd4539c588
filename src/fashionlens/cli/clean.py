"""``fashionlens clean --data SPEC --out MANIFEST (--seed-clean FILE | --seed-per-class N | --simulate-seed F)
[--learner features|network] [--model RUN_DIR|imagenet] [--recipe NAME]``: clean a noisy labelled set in rounds
with a model trained on a trusted, hand-checked subset.

The trusted seed is always checked by a person: ``--seed-per-class N`` draws N images per class into a review
CSV (and a page of thumbnails) and stops; the person corrects the category where it is wrong and marks the
rows checked; ``--seed-clean REVIEW.csv`` then runs the loop from those images (any manifest of checked
images works too).  ``--simulate-seed FRACTION`` (benchmarks, tests) trusts a random share of the given
labels instead, which on real data would trust their noise.

The learner: ``features`` (default) is a logistic regression on frozen features of ``--model``; ``network``
fine-tunes the network itself in every round through ``training.fit`` (from ``--model RUN``'s config and
backbone, or ``--recipe`` / ``--config``), keeping each round's run directory under ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from fashionlens.cli.audit import add_feature_arguments, features, is_imagenet, read_samples

LEARNERS = ("features", "network")
CROSS_FIT = {"features": 5, "network": 2}  # default folds of each learner (--cross-fit)


def _stem(path: str) -> str:
    root, ext = os.path.splitext(path)
    return root if ext.lower() in (".csv", ".jsonl") else path


def review_path(args: argparse.Namespace) -> str:
    """Where ``--seed-per-class`` writes the review CSV: ``--review``, else next to ``--out``."""
    return args.review or _stem(args.out) + ".review.csv"


def runs_dir(args: argparse.Namespace) -> str:
    """Where ``--learner network`` keeps the rounds' run directories: ``--runs``, else next to ``--out``."""
    return args.runs or _stem(args.out) + ".rounds"


def _seed(args: argparse.Namespace, samples: list, labels: np.ndarray, categories: list[str],
          category_paths: list[str]) -> tuple[np.ndarray, str]:
    """(the trusted mask, where it came from: "file" or "simulated"); a seed file also corrects ``labels``."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.cleaning import seed_fraction, seed_from_manifest

    if args.simulate_seed is not None:
        print(f"warning: SIMULATION (--simulate-seed): a random {args.simulate_seed:g} of the given labels is "
              "trusted as if checked by hand; on real data that trusts their noise: check images "
              "(--seed-per-class N) and pass them with --seed-clean FILE", file=sys.stderr)
        labelled = labels >= 0
        mask = np.zeros(len(labels), bool)
        mask[labelled] = seed_fraction(labels[labelled], args.simulate_seed, args.seed)
        return mask, "simulated"
    spec = args.seed_clean
    if not os.path.exists(spec):
        try:
            fraction = float(spec)
        except ValueError:
            fraction = None
        if fraction is not None:
            raise ValueError(f"--seed-clean {spec}: takes a file of checked images (CSV with columns image, category "
                             f"and optionally checked), not a fraction: a random share of noisy labels is no trusted "
                             f"set (--seed-per-class N picks images for a person to check; --simulate-seed {spec} "
                             f"is the benchmarks' simulation)")
    mask, trusted = seed_from_manifest(samples, spec, categories, category_paths=category_paths)
    labels[mask] = trusted[mask]
    return mask, "file"


def _review(args: argparse.Namespace, samples: list, categories: list[str]) -> int:
    """``--seed-per-class N``: write the review CSV (and its page of thumbnails) and stop."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.cleaning import review_sample, write_review
    from fashionlens.audit.report_html import write_review_html

    labels = np.array([-1 if s.category is None else s.category for s in samples], np.int64)
    picked = review_sample(labels, args.seed_per_class, args.seed)
    if not len(picked):
        raise ValueError(f"{args.data}: no image has a category label to review")
    path = review_path(args)
    written = write_review(path, samples, picked, categories)
    page = write_review_html(_stem(path) + ".html", [samples[i] for i in picked], csv_name=os.path.basename(path),
                             embed_images=not args.link_images)
    counts = np.bincount(labels[picked], minlength=len(categories))
    print(f"check the {written} images of {path} (pictures: {page}): correct the category where it is wrong, "
          f"set checked to yes on each row you checked, then run clean again with --seed-clean {path}",
          file=sys.stderr)
    print(json.dumps({"review": os.path.abspath(path), "page": os.path.abspath(page), "images": written,
                      "per_class": {name: int(n) for name, n in zip(categories, counts) if n}}))
    return 0


def network_config(args: argparse.Namespace):
    """The training recipe of ``--learner network``: ``--config`` / ``--recipe``, else ``--model RUN``'s own
    config; the run's backbone starts every round (``train.init_from``); ``--epochs``, ``--device``,
    ``--threads``, ``--workers`` and ``--set`` on top."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.config import apply_overrides, load_yaml
    from fashionlens.recipes import load_recipe
    from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint
    from fashionlens.training.fit import config_from_checkpoint

    run = args.model if args.model and not is_imagenet(args.model) else None
    if run is not None and not os.path.exists(run):
        raise FileNotFoundError(f"--model {run}: not an existing run directory / checkpoint")
    if args.config:
        cfg = load_yaml(args.config)
    elif args.recipe:
        cfg = load_recipe(args.recipe)
    elif run is not None:
        cfg = config_from_checkpoint(load_checkpoint(find_checkpoint(run)))
    else:
        raise ValueError("--learner network trains from --model RUN_DIR (its config and backbone) or from "
                         "--recipe NAME / --config YAML")
    cfg.train.init_from = os.path.abspath(run) if run is not None else ""
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    cfg.train.epochs = args.epochs
    if args.device:
        cfg.train.device = args.device
    if args.threads:
        cfg.threads = args.threads
    if args.workers:
        cfg.data.num_workers = args.workers
    cfg.seed = args.seed
    apply_overrides(cfg, args.set or [])
    return cfg


def _log(*parts: Any, **_kw: Any) -> None:
    print(*parts, file=sys.stderr)


def cmd_clean(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.cleaning import CLEAN_C, clean_labels, write_manifest

    samples, info, others = read_samples(args.data, args.split, args.skip_missing, default="train")
    categories = list(info.categories)
    if args.seed_per_class is not None:
        return _review(args, samples, categories)
    labels = np.array([-1 if s.category is None else s.category for s in samples], np.int64)
    given = labels.copy()
    mask, source = _seed(args, samples, labels, categories, list(info.category_paths))  # before any model work
    learner = None
    if args.learner == "network":
        # lazy: training is imported only for the network learner
        from fashionlens.audit.network import NetworkLearner

        cfg = network_config(args)
        learner = NetworkLearner(samples, info, cfg, runs_dir(args), batch_size=args.batch_size,
                                 num_workers=args.workers, device=args.device, progress=not args.quiet, log=_log)
        vectors = None
    elif not args.model:
        raise ValueError("--learner features needs --model imagenet or a run directory (whose frozen features the "
                         "classifier reads)")
    else:
        readable, vectors = features(args, samples)
        position = {id(s): i for i, s in enumerate(samples)}
        read_ok = np.array([position[id(s)] for s in readable], np.int64)
        lost = np.setdiff1d(np.flatnonzero(mask), read_ok)
        if len(lost) and source == "file":
            raise ValueError(f"--seed-clean {args.seed_clean}: {len(lost)} checked images could not be read "
                             f"({samples[lost[0]].image}{', ...' if len(lost) > 1 else ''})")
        samples, labels, given, mask = readable, labels[read_ok], given[read_ok], mask[read_ok]
    C = CLEAN_C if args.C is None else args.C
    cross_fit = CROSS_FIT[args.learner] if args.cross_fit is None else args.cross_fit
    result = clean_labels(vectors, labels, mask, rounds=args.rounds, threshold=args.threshold,
                          keep_threshold=args.keep_threshold, mode=args.mode, C=C, seed=args.seed,
                          num_classes=len(categories), cross_fit=cross_fit, scorer=learner)
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
    report: dict[str, Any] = {"manifest": os.path.abspath(args.out), "rows": written, "seed": int(mask.sum()),
                              "seed_source": source, "learner": args.learner, "cross_fit": cross_fit,
                              "passthrough": len(passthrough), "rounds": result.rounds}
    if learner is not None:
        report["runs"] = [{k: v for k, v in record.items() if k not in ("scored", "categories", "calibration")}
                          for record in learner.records]
    print(json.dumps(report))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``clean`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("clean", help="clean a noisy labelled set with a model trained on a checked subset")
    add_feature_arguments(p, model_required=False)
    p.add_argument("--out", required=True, help="output manifest CSV (train on it with --data manifest:FILE)")
    seed = p.add_mutually_exclusive_group(required=True)
    seed.add_argument("--seed-clean", metavar="FILE",
                      help="the trusted images: a CSV of images a person checked (columns image, category and "
                           "optionally checked = yes/no; the review file of --seed-per-class, or any manifest)")
    seed.add_argument("--seed-per-class", type=int, metavar="N",
                      help="draw N images per class for a person to check: writes --review (CSV + HTML page) and "
                           "stops; check them, then run again with --seed-clean REVIEW_FILE")
    seed.add_argument("--simulate-seed", type=float, metavar="FRACTION",
                      help="SIMULATION for benchmarks and tests: trust a random FRACTION (0-1) of the given labels "
                           "as if checked (on real data this trusts their noise)")
    p.add_argument("--review", help="the review CSV of --seed-per-class (default: next to --out, .review.csv)")
    p.add_argument("--link-images", action="store_true", help="review page: link the images instead of inlining")
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
    p.add_argument("--learner", choices=LEARNERS, default="features",
                   help="features: logistic regression on --model's frozen features (default); network: fine-tune "
                        "the network itself every round (training.fit) and score with its calibrated probabilities")
    p.add_argument("--cross-fit", type=int,
                   help="models per round: each scores the images of one fold and trained without them (default: "
                        "5 features, 2 network; 1 = one model, which then scores the images it trained on)")
    net = p.add_argument_group("network learner (--learner network)")
    net.add_argument("--recipe", help="training recipe of every round (default: --model RUN's own config)")
    net.add_argument("--config", help="YAML run config of every round (instead of --recipe)")
    net.add_argument("--epochs", type=int, default=3, help="epochs of every round's training (default 3)")
    net.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a training config field")
    net.add_argument("--runs", help="folder of the rounds' run directories (default: next to --out, .rounds)")
    net.add_argument("--device", help="training and scoring device (default: the recipe's train.device, auto)")
    p.set_defaults(func=cmd_clean)
