"""``fashionlens demo``: the main job on the embedded default data (see ``fashionlens.demo``), then the page."""

from __future__ import annotations

import argparse
import os
from typing import Any

from fashionlens.cli.serve import serve_demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default data (see fashionlens.demo)."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.demo import DemoSettings, run_demo

    settings = DemoSettings(workdir=args.workdir, items=args.items, views=args.views, size=args.size, seed=args.seed,
                            minutes=args.minutes, epochs=args.epochs, quick=args.quick, fresh=args.fresh)
    result = run_demo(settings)
    print(f"report: {os.path.abspath(result['report'])}/report.md")
    if not args.no_serve:
        serve_demo(result["run"], result["catalog"], args.host, args.port)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``demo`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("demo", help="run the main job on the embedded default data")
    p.add_argument("--workdir", default="out/demo", help="where the demo keeps its data and runs")
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (the time budget may stop earlier)")
    p.add_argument("--quick", action="store_true", help="tiny data and model (a smoke test in seconds)")
    p.add_argument("--no-serve", action="store_true", help="stop after building the catalog")
    p.add_argument("--host", default="127.0.0.1", help="where the demo serves the page")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--fresh", action="store_true", help="start over instead of reusing the render and the run")
    p.set_defaults(func=cmd_demo)
