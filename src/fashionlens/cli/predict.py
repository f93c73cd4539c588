"""``fashionlens predict``: classify images, one JSON object per line per image."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fashionlens.cli.calibrate import add_target_accuracy
from fashionlens.utils import add_device_argument


def cmd_predict(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.inference import Predictor
    from fashionlens.utils import resolve_device

    device = resolve_device(args.device)  # an absent GPU is one clear error, before the model is read
    predictor = Predictor.load(args.model, attribute_threshold=args.threshold, batch_size=args.batch_size,
                               device=device)
    for answer in predictor.predict_paths(args.images, target_accuracy=args.target_accuracy):
        print(json.dumps(answer), flush=True)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``predict`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("predict", help="classify images: one JSON object per line per image")
    p.add_argument("--model", required=True, help="run directory or checkpoint file")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--threshold", type=float, default=0.5, help="attribute score threshold")
    p.add_argument("--batch-size", type=int, default=16)
    add_target_accuracy(p)
    add_device_argument(p, "run the model")
    p.set_defaults(func=cmd_predict)
