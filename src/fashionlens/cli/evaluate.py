"""``fashionlens evaluate``: the DeepFashion metrics of a trained run on a data set (``runs.evaluate_run``).

Without ``--split`` the data's own protocol is evaluated (``evaluation.protocol``): in-shop query -> gallery,
consumer-to-shop test (consumer -> shop), category test, else test / query,gallery / val; the output names it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fashionlens.cli.calibrate import add_target_accuracy
from fashionlens.cli.predict import add_model_argument, model_spec
from fashionlens.utils import add_device_argument


def _print_metrics(metrics: dict[str, Any]) -> None:
    """The scalar metrics as aligned ``key  value`` lines, then one ``note:`` line per note."""
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {f'{value:.4f}' if isinstance(value, float) else value}")
    for note in metrics.get("notes") or []:
        print(f"note: {note}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.runs import evaluate_run
    from fashionlens.utils import resolve_device

    onnx = [m for m in args.model if m.lower().endswith(".onnx")]
    if onnx:
        raise ValueError(f"evaluate takes run directories or checkpoints, not {onnx[0]}: evaluate the run it was "
                         "exported from (the .onnx answers alike: fashionlens export-onnx checks that)")
    device = resolve_device(args.device)  # an absent device is a clear error before anything is read
    metrics = evaluate_run(model_spec(args.model), args.data, split=args.split, out_dir=args.out, batch_size=args.batch_size,
                           progress=not args.json, target_accuracy=args.target_accuracy,
                           tta={"on": True, "off": False}.get(args.tta), eval_scale=args.eval_scale, device=device)
    if args.json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics)
        if args.out:
            print(f"report written to {os.path.abspath(args.out)}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``evaluate`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("evaluate", help="DeepFashion metrics of a trained model on a data set")
    add_model_argument(p, help_text="run directory or checkpoint file; repeat it (--model A --model B) to evaluate "
                       "the ensemble: mean calibrated probabilities, concatenated embeddings")
    p.add_argument("--data", required=True, help="data spec")
    p.add_argument("--split", default="auto",
                   help="split(s) to evaluate, comma-separated; auto (default): the data's protocol "
                        "(in-shop: query,gallery; consumer-to-shop and category: test; else test, query,gallery "
                        "or val)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="write report.json, report.md and plots here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", choices=("run", "on", "off"), default="run",
                   help="mirror test-time augmentation: as the run was configured (model.tta_flip), on or off")
    p.add_argument("--eval-scale", type=float, default=None,
                   help="input side = the run's image_size x this (default: the run's data.eval_scale)")
    add_device_argument(p, "run the model")
    add_target_accuracy(p)
    p.set_defaults(func=cmd_evaluate)
