"""Hedged answers ("Hedging your bets", DARTS) on a trained run: fit on one split, report on another.

    python benchmarks/bench_hedging.py --run RUN_DIR --garments RENDER_DIR [--fit-split val] [--split test]
                                       [--targets 0.90,0.95,0.99] [--threads 1]

Fits the temperature and one lambda per target accuracy on the ``--fit-split`` outputs (in memory: the run's
calibration.json is not touched), then reports on ``--split`` the achieved accuracy (answer = true leaf or
an ancestor) and the specificity (mean information gain, bits; log2(#categories) = always a leaf) of the
hedged answers, with the flat classifier as the reference.  Also: ECE before/after temperature scaling on
the report split, and the level-fusion accuracies (stacked = out-of-fold on the fit split).  Prints
Markdown tables and writes benchmarks/results/hedging.json.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import table, write

from fashionlens.runs import run_outputs
from fashionlens.hierarchy.calibration import calibrate_outputs, calibration_summary
from fashionlens.hierarchy.hedging import HedgedClassifier
from fashionlens.utils import set_threads


def outputs(run: str, spec: str, split: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], dict, list]:
    """(category logits, labels, level logits, the model's labels, item ids) over the labelled rows of ``split``."""
    preds, targets, samples, labels, _ = run_outputs(run, spec, split=split, progress=False)
    keep = targets["category"] >= 0
    levels = [preds[f"level_{i}"][keep] for i in range(len(labels.get("hierarchy_levels") or []))]
    items = [s.item_id if s.item_id is not None else f"row{i}" for i, s in enumerate(samples)]
    return preds["category"][keep], targets["category"][keep], levels, labels, [g for g, k in zip(items, keep) if k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--garments", required=True, help="a render of `fashionlens synth` (or --spec)")
    parser.add_argument("--spec", help="any data spec with the run's categories, instead of garments:RENDER")
    parser.add_argument("--fit-split", default="val")
    parser.add_argument("--split", default="test")
    parser.add_argument("--targets", default="0.90,0.95,0.99")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the forward passes")
    args = parser.parse_args()
    set_threads(args.threads)
    spec = args.spec or f"garments:{args.garments}"
    targets = [float(t) for t in args.targets.split(",")]
    start = time.perf_counter()
    z_fit, y_fit, levels_fit, labels, items = outputs(args.run, spec, args.fit_split)
    state = calibrate_outputs(z_fit, y_fit, labels, levels_fit, targets=targets, groups=items)
    hedger = HedgedClassifier.from_dict(state)
    z, y, *_ = outputs(args.run, spec, args.split)
    probs = hedger.calibrate(z)
    rows = {"flat (always a leaf)": {"accuracy": float(np.mean(z.argmax(1) == y)),
                                     "specificity": math.log2(z.shape[1]), "root_share": 0.0}}
    fit_rows = {row["target_accuracy"]: row for row in state["table"]}
    for target in targets:
        res = hedger.evaluate(probs, y, target)
        rows[f"hedged @ {target:g}"] = {"lambda": res["lambda"], "fit_accuracy": fit_rows[target]["val_accuracy"],
                                        "accuracy": res["hedged_accuracy"], "specificity": res["hedged_specificity"],
                                        "root_share": res["hedged_root_share"]}
    test_cal = calibration_summary(z, y, hedger.temperature)
    fusion = state["fusion"]["accuracy"]
    print(f"{args.run} on {spec}: fit on {args.fit_split} ({len(y_fit)} images), report on {args.split} "
          f"({len(y)} images); temperature {hedger.temperature:.3f}, {args.split} ECE "
          f"{test_cal['ece_before']:.4f} -> {test_cal['ece_after']:.4f}\n")
    print(table(rows, ("lambda", "fit_accuracy", "accuracy", "specificity", "root_share")))
    print(f"\nlevel accuracies on {args.fit_split} (stacked: 5-fold out-of-fold, folds split by item)\n")
    print(table(fusion, list(next(iter(fusion.values())))))
    path = write("hedging", {"run": args.run, "data": spec, "fit_split": args.fit_split, "split": args.split,
                             "fit_images": len(y_fit), "images": len(y), "temperature": hedger.temperature,
                             "calibration_fit": state["calibration"], "calibration_report": test_cal,
                             "rows": {k: {kk: (None if isinstance(vv, float) and math.isinf(vv) else vv)
                                          for kk, vv in r.items()} for k, r in rows.items()},
                             "fusion": fusion, "seconds": time.perf_counter() - start})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
