"""The ``fashionlens`` command: each subcommand parses its arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence


def _read(spec: str, skip_missing: bool):
    from fashionlens.data.readers import read

    return read(spec, missing="skip" if skip_missing else "error")


def cmd_synth(args: argparse.Namespace) -> int:
    from fashionlens.data.garments import render_dataset

    summary = render_dataset(args.out, items=args.items, views=args.views, size=args.size, seed=args.seed,
                             workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from fashionlens.data.stats import dataset_stats, format_stats

    stats = dataset_stats(_read(args.spec, args.skip_missing))
    print(json.dumps(stats) if args.json else format_stats(stats))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from fashionlens.data.show import contact_sheet

    data = _read(args.spec, args.skip_missing)
    if args.split:
        data = data.split(*args.split.split(","))
    path = contact_sheet(data, args.out, n=args.n, cols=args.cols, thumb=args.thumb, seed=args.seed)
    print(f"contact sheet written to {os.path.abspath(path)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default data: render the garment set, print its statistics, draw a sheet."""
    from fashionlens.data.garments import render_dataset
    from fashionlens.data.readers import read
    from fashionlens.data.show import contact_sheet
    from fashionlens.data.stats import dataset_stats, format_stats

    root = os.path.join(args.workdir, "garments")
    marker = os.path.join(root, "params.json")
    if os.path.exists(marker) and not args.fresh:
        print(f"reusing the rendered garment set in {root} (--fresh renders it again)")
    else:
        render_dataset(root, items=args.items, views=args.views, size=args.size, seed=args.seed, progress=True)
    data = read(f"garments:{root}")
    print(format_stats(dataset_stats(data)))
    sheet = contact_sheet(data, os.path.join(args.workdir, "garments_sheet.png"), n=48)
    print(f"contact sheet: {os.path.abspath(sheet)}")
    return 0


def _add_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="data spec, e.g. garments:DIR, folder:DIR, deepfashion-category:DIR, fashion-mnist")
    p.add_argument("--skip-missing", action="store_true", help="drop samples whose image file is missing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashionlens", description="Garment recognition and retrieval.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the procedural garment data set in the DeepFashion layouts")
    p.add_argument("out", help="output directory (gets category/, inshop/, c2s/)")
    p.add_argument("--items", type=int, default=300, help="number of garment items (designs)")
    p.add_argument("--views", type=int, default=6, help="views per item (shop + consumer)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="render processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    data = sub.add_parser("data", help="inspect data sets").add_subparsers(dest="data_command", required=True)
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

    p = sub.add_parser("demo", help="run the main job on the embedded default data")
    p.add_argument("--workdir", default="out/demo", help="where the demo keeps its data and runs")
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="render again even if a rendered set exists")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad user input: one clear line, exit code 2
        print(f"fashionlens: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
