"""``fashionlens search --catalog DIR IMAGE``: the catalog items most similar to an image."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fashionlens.cli.catalog import cut


def cmd_search(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        hits = catalog.search(args.image, args.k, category=args.category, attribute=args.attribute, crop=args.crop)
    if args.json:
        print(json.dumps(hits))
        return 0
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}  {hit['score']:.4f}  id {hit['item_id']:<6} {cut(hit['category'], 16):<16} "
              f"{hit['sku'] or ''} {hit['title'] or ''}  {hit['source'] or hit['image']}")
    if not hits:
        print("no matching items")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``search`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("search", help="find the catalog items most similar to an image")
    p.add_argument("--catalog", required=True, help="catalog directory (it knows its model)")
    p.add_argument("image", help="query image file")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--category", help="only items of this category name or taxonomy path prefix (e.g. upper)")
    p.add_argument("--attribute", help="only items with this attribute")
    p.add_argument("--crop", action="store_true", help="embed the garment crop of the query")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.set_defaults(func=cmd_search)
