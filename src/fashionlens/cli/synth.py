"""``fashionlens synth``: render the procedural garment data set in the DeepFashion layouts."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_synth(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.garments import render_dataset

    summary = render_dataset(args.out, items=args.items, views=args.views, size=args.size, seed=args.seed,
                             workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``synth`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("synth", help="render the procedural garment data set in the DeepFashion layouts")
    p.add_argument("out", help="output directory (gets category/, inshop/, c2s/)")
    p.add_argument("--items", type=int, default=300, help="number of garment items (designs)")
    p.add_argument("--views", type=int, default=6, help="views per item (shop + consumer)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="render processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)
