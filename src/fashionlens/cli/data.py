"""``fashionlens data stats|show``: inspect data sets."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _read(spec: str, skip_missing: bool):
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.readers import read

    return read(spec, missing="skip" if skip_missing else "error")


def cmd_data_stats(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.stats import dataset_stats, format_stats

    stats = dataset_stats(_read(args.spec, args.skip_missing))
    print(json.dumps(stats) if args.json else format_stats(stats))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.show import contact_sheet

    data = _read(args.spec, args.skip_missing)
    if args.split:
        data = data.split(*args.split.split(","))
    path = contact_sheet(data, args.out, n=args.n, cols=args.cols, thumb=args.thumb, seed=args.seed)
    print(f"contact sheet written to {os.path.abspath(path)}")
    return 0


def _add_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="data spec, e.g. garments:DIR, folder:DIR, deepfashion-category:DIR, fashion-mnist")
    p.add_argument("--skip-missing", action="store_true", help="drop samples whose image file is missing")


def add_commands(subparsers: Any) -> None:
    """Register ``data stats`` and ``data show`` on the ``add_subparsers()`` object of the main parser."""
    data = subparsers.add_parser("data", help="inspect data sets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("stats", help="print counts of a data set")
    _add_spec(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data_stats)
    p = data.add_parser("show", help="draw a contact sheet (boxes, landmarks, labels)")
    _add_spec(p)
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--n", type=int, default=48, help="number of images")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--thumb", type=int, default=160, help="tile size in pixels")
    p.add_argument("--seed", type=int, default=0, help="which random images")
    p.add_argument("--split", help="only these splits (comma-separated)")
    p.set_defaults(func=cmd_data_show)
