"""``fashionlens audit --model RUN_DIR|imagenet --data SPEC --out DIR [--split train] [--folds 5]
[--scorer features|probabilities]``: images whose category label is probably wrong; the feature options and
helpers here are shared with ``clean``.

Two scorers give the probabilities that confident learning reads:

* ``features`` (default): out-of-fold probabilities of a logistic regression on frozen features of the model
  (ImageNet or the run's), cross-validated on the audited labels: no image is scored by a classifier that saw
  its own label;
* ``probabilities``: the run's OWN category probabilities (its network, temperature-scaled with its
  calibration.json when there is one).  They are out-of-sample only for images the run did not train on;
  the summary counts the audited images it trained on (``in_sample``), each suspect says whether it is one,
  and ``--held-out-only`` audits the others alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

import numpy as np

FEATURES, PROBABILITIES = "features", "probabilities"  # the audit's scorers (--scorer)


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
    from fashionlens.utils import set_threads

    set_threads(args.threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors, rows = compute_features(samples, args.model, image_size=args.image_size, kind=args.features,
                                         batch_size=args.batch_size, num_workers=args.workers,
                                         cache_dir=_cache(args), progress=not args.quiet)
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
    categories = list(info.categories)
    if args.held_out_only and args.scorer != PROBABILITIES:
        raise ValueError("--held-out-only applies to --scorer probabilities (the features scorer is out-of-fold "
                         "for every image)")
    if args.scorer == PROBABILITIES:
        samples, probs, scoring, in_sample = network_scores(args, samples, categories)
        vectors, C, folds = None, None, None
    else:
        samples, vectors = features(args, samples)
        probs, scoring, in_sample = None, {"scorer": FEATURES}, None
        C, folds = (AUDIT_C if args.C is None else args.C), args.folds
    labels = np.array([s.category for s in samples], np.int64)
    result = audit_labels(vectors, labels, folds=args.folds, seed=args.seed, class_names=categories,
                          C=C or AUDIT_C, compare_cleanlab=not args.no_cleanlab, pred_probs=probs)
    if in_sample is not None:
        for row in result.suspects:
            row["in_sample"] = bool(in_sample[row["index"]])
    os.makedirs(args.out, exist_ok=True)
    images = [s.image for s in samples]
    summary = {**result.summary(), **scoring, "unlabelled_skipped": unlabelled, "model": args.model,
               "data": args.data, "split": args.split, "folds": folds, "seed": args.seed, "C": C,
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


def is_imagenet(model: str | None) -> bool:
    return model is not None and (model == "imagenet" or model.startswith("imagenet:"))


def network_scores(args: argparse.Namespace, samples: list,
                   categories: list[str]) -> tuple[list, np.ndarray, dict[str, Any], np.ndarray | None]:
    """``--scorer probabilities``: (the samples scored, their (N, K) probabilities under the run's own network,
    what the summary records about them, (N,) bool whether the run trained on each; None when unknown)."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.audit.network import category_probabilities, image_key, run_logits, trained_images
    from fashionlens.runs.calibrate import calibration_path, load_hedger
    from fashionlens.utils import set_threads

    if is_imagenet(args.model):
        raise ValueError(f"--scorer probabilities scores with a trained run's own category probabilities: --model "
                         f"must be a run directory, not {args.model} (ImageNet features name no garment "
                         f"categories; --scorer features fits a classifier on them)")
    set_threads(args.threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run_logits(samples, args.model, batch_size=args.batch_size, num_workers=args.workers,
                         device=args.device, cache_dir=_cache(args), progress=not args.quiet)
        calibrated = os.path.isfile(calibration_path(args.model))
        temperature = load_hedger(args.model, {"categories": out.categories}).temperature if calibrated else 1.0
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    samples = [samples[i] for i in out.rows]
    unknown = sorted({s.category_name or categories[s.category] for s in samples} - set(out.categories))
    if unknown:
        raise ValueError(f"--scorer probabilities: the model {args.model} does not know the categories "
                         f"{', '.join(map(repr, unknown))} of the audited images (it knows "
                         f"{', '.join(out.categories)}); --scorer features fits a classifier on the data's own labels")
    probs = category_probabilities(out.logits, temperature, out.categories, categories)
    trained = trained_images(out.config)
    in_sample = None if trained is None else np.array([image_key(s.image) in trained for s in samples])
    if args.held_out_only:
        if in_sample is None:
            raise ValueError(f"--held-out-only: cannot tell which images {args.model} trained on (its data spec "
                             f"{out.config.data.spec!r} cannot be read)")
        keep = np.flatnonzero(~in_sample)
        if len(keep) == 0:
            raise ValueError(f"--held-out-only: {args.model} trained on every audited image; nothing is held out")
        samples, probs, in_sample = [samples[i] for i in keep], probs[keep], in_sample[keep]
    if not calibrated:
        print(f"warning: {args.model} has no calibration.json: its raw probabilities (temperature 1) are used; "
              f"`fashionlens calibrate --model {args.model} --data SPEC` fits a temperature on held-out images",
              file=sys.stderr)
    count = None if in_sample is None else int(in_sample.sum())
    if count is None:
        note = (f"unknown: the run's training data ({out.config.data.spec}) cannot be read, so nobody can tell "
                "whether these probabilities are in-sample")
    elif count:
        note = (f"IN-SAMPLE for {count} of {len(samples)} images: the run trained on them and has fitted their "
                "labels (wrong ones included), so its probabilities of the given labels are over-confident and "
                "those images are under-flagged; --held-out-only audits the others, --scorer features is "
                "out-of-fold for every image")
    else:
        note = "out-of-sample: the run trained on none of the audited images"
    if count is None or count:
        print(f"warning: probabilities {note}", file=sys.stderr)
    scoring = {"scorer": PROBABILITIES, "temperature": round(float(temperature), 6), "calibrated": calibrated,
               "model_categories": len(out.categories), "in_sample": count,
               "out_of_sample": None if count is None else len(samples) - count, "sample_note": note}
    return samples, probs, scoring, in_sample


def _cache(args: argparse.Namespace) -> str | None:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.utils import cache_dir

    return None if args.no_cache else (args.cache or os.path.join(cache_dir(), "features"))


def _num(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def add_feature_arguments(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    """The options of ``audit`` and ``clean``: which model's features, of which data, cached where."""
    p.add_argument("--model", required=model_required,
                   help="'imagenet' (pretrained EfficientNet-Lite0 features) or a run dir")
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
    p.add_argument("--scorer", choices=(FEATURES, PROBABILITIES), default=FEATURES,
                   help="features: out-of-fold logistic regression on the model's frozen features (default); "
                        "probabilities: the run's own network, temperature-scaled with its calibration.json "
                        "(in-sample for the images it trained on: the output says how many)")
    p.add_argument("--held-out-only", action="store_true",
                   help="--scorer probabilities: audit only the images the run did not train on")
    p.add_argument("--device", default="cpu", help="--scorer probabilities: where the network runs (cpu, cuda, auto)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the out-of-fold probabilities")
    p.add_argument("--no-cleanlab", action="store_true", help="skip the cleanlab comparison")
    p.add_argument("--thumb", type=int, default=128, help="thumbnail size in the HTML page, pixels")
    p.add_argument("--html-limit", type=int, default=1000, help="at most this many suspects on the page")
    p.add_argument("--link-images", action="store_true", help="link the images instead of inlining thumbnails")
    p.set_defaults(func=cmd_audit)
