"""``fashionlens calibrate`` (and the ``--target-accuracy`` argument that predict / evaluate share).

    fashionlens calibrate --model RUN_DIR --data SPEC [--split val] [--targets 0.9,0.95,0.99]
    fashionlens calibrate --model A --model B --data SPEC     (an ensemble)
    fashionlens calibrate --model RUN_DIR --data SPEC --familiarity   (also RUN_DIR/familiarity.npz)

Fits, on the split's outputs, the temperature of the category logits, the hedging lambdas for every
target accuracy and the stacked level fusion, and writes them to RUN_DIR/calibration.json; afterwards
``predict`` / ``evaluate`` / the API accept ``--target-accuracy T`` (see fashionlens.hierarchy).  With several
``--model`` the same is fitted on the ensemble's averaged calibrated probabilities and written to
A/calibration.ensemble-<key>.json (``runs.calibrate``: keyed by the member set, found in any order); the
members' own calibration.json stay as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def target_accuracy(text: str) -> float:
    """argparse type: a target accuracy in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a target accuracy is in (0, 1], got {value:g}")
    return value


def targets_list(text: str) -> list[float]:
    """argparse type: comma-separated target accuracies."""
    values = [target_accuracy(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one target accuracy")
    return sorted(set(values))


def add_target_accuracy(p: argparse.ArgumentParser) -> None:
    """The ``--target-accuracy T`` option of the commands that give hedged answers."""
    p.add_argument("--target-accuracy", type=target_accuracy, metavar="T",
                   help="also answer the most specific taxonomy node that is right with probability T "
                        "(e.g. 0.95; needs `fashionlens calibrate` first)")


def _summary(state: dict[str, Any]) -> dict[str, Any]:
    """What the command prints: the file, the calibration figures, the lambda table and the fusion accuracies."""
    return {"path": state["path"], "num_images": state["num_images"], **state["calibration"],
            "table": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
                      for row in state["table"]],
            "fusion_accuracy": state["fusion"]["accuracy"]}


def cmd_calibrate(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.hierarchy.calibration import DEFAULT_TARGETS
    from fashionlens.runs import calibrate_run
    from fashionlens.runs.ensemble import calibrate_ensemble

    fit = calibrate_run if len(args.model) == 1 else calibrate_ensemble
    state = fit(args.model[0] if len(args.model) == 1 else args.model, args.data, split=args.split,
                targets=args.targets or DEFAULT_TARGETS, batch_size=args.batch_size, progress=not args.quiet)
    summary = _summary(state)
    if args.familiarity:
        from fashionlens.runs.familiarity import fit_familiarity  # lazy: as above

        summary["familiarity"] = [fit_familiarity(run, args.data, train_split=args.train_split, val_split=args.split,
                                                  progress=not args.quiet) for run in args.model]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"calibration written to {summary['path']} ({summary['num_images']} images of split {args.split})")
    print(f"temperature {summary['temperature']:.3f}: ECE {summary['ece_before']:.4f} -> {summary['ece_after']:.4f}, "
          f"NLL {summary['nll_before']:.4f} -> {summary['nll_after']:.4f}")
    print("target  lambda      val_accuracy  val_specificity(bits)")
    for row in summary["table"]:
        lam = "root" if row["lambda"] is None else f"{row['lambda']:.4g}"
        print(f"{row['target_accuracy']:<7g} {lam:<11} {row['val_accuracy']:<13.4f} {row['val_specificity']:.3f}")
    print("fusion accuracy (out-of-fold for stacked):", json.dumps(summary["fusion_accuracy"]), file=sys.stdout)
    for fam in summary.get("familiarity", []):
        print(f"familiarity written to {fam['path']}: {fam['reference']} training photos; a photo is familiar at "
              f"similarity >= {fam['threshold']:.3f} (as {1 - fam['quantile']:.0%} of the validation photos are)")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``calibrate`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("calibrate", help="fit temperature scaling and hedged-answer lambdas on validation data")
    p.add_argument("--model", action="append", required=True, help=(
        "run directory or checkpoint file (calibration.json goes next to it); repeat it (--model A --model B) to "
        "calibrate their ensemble (A/calibration.ensemble-<key>.json; the members' own files are untouched)"))
    p.add_argument("--data", required=True, help="data spec with the model's categories")
    p.add_argument("--split", default="val", help="held-out split(s) to fit on, comma-separated (not the test split)")
    p.add_argument("--targets", type=targets_list, help="target accuracies, comma-separated (default 0.80..0.99 by 0.01)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--familiarity", action="store_true", help=(
        "also write familiarity.npz (each run's embeddings of --train-split): photos as close to them as the "
        "split's photos are count as known to the model when it answers with --guide imagenet"))
    p.add_argument("--train-split", default="train", help="the split the model was trained on (with --familiarity)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)
