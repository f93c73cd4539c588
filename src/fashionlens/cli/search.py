"""``fashionlens search --catalog DIR IMAGE``: the catalog items most similar to an image."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fashionlens.cli.catalog import cut
from fashionlens.utils import add_device_argument


def cmd_search(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog
    from fashionlens.catalog.files import image_entry
    from fashionlens.utils import resolve_device

    scope = None
    resolve_device(args.device)  # an absent GPU: one clear error; the catalog's model resolves "auto" itself
    with Catalog.open(args.catalog, device=args.device) as catalog:  # (an .onnx model: auto = the CPU)
        if args.crop:  # before the query is read
            catalog.predictor.require_box("--crop")
        query, category = args.image, args.category
        if category == "auto":  # the query's predicted category, widened when unsure: said before the results
            picture = image_entry(args.image, 0, keep_bytes=False).image
            answer = catalog.predictor.analyse([picture], crop=args.crop)[0]
            scope = catalog.auto_category(answer, args.k, target_accuracy=args.target_accuracy)
            query, category = picture, scope["category"]
        hits = catalog.search(query, args.k, category=category, attribute=args.attribute, crop=args.crop,
                              rerank=args.rerank_candidates if args.rerank else 0)
    if scope:  # on stderr, so that --json stays a plain list of results
        where = scope["category"] or "the whole catalog"
        print(f"searched {where}: {scope['items']} items (the model is {scope['probability']:.0%} sure"
              f"{', calibrated' if scope['hedged'] else ''})", file=sys.stderr)
    if args.json:
        print(json.dumps(hits))
        return 0
    for rank, hit in enumerate(hits, 1):
        mark = f"  {hit['inliers']:>4} inliers{' *' if hit['verified'] else '  '}" if "inliers" in hit else ""
        print(f"{rank:>3}  {hit['score']:.4f}{mark}  id {hit['item_id']:<6} {cut(hit['category'], 16):<16} "
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
    p.add_argument("--category", help="only items of this category name or taxonomy path prefix (e.g. upper); "
                   "'auto': the query's predicted category, widened up the taxonomy when the model is unsure "
                   "and to everything when fewer than k items remain")
    p.add_argument("--target-accuracy", type=float, default=0.9,
                   help="--category auto: how sure the model must be of a node to search only within it")
    p.add_argument("--attribute", help="only items with this attribute")
    p.add_argument("--crop", action="store_true", help="embed the garment crop of the query")
    p.add_argument("--rerank", action="store_true",
                   help="re-rank the top candidates by geometric verification of local features (RootSIFT "
                        "matches + RANSAC homography): near-duplicates of the query first, marked *")
    p.add_argument("--rerank-candidates", type=int, default=50, metavar="N",
                   help="candidates --rerank verifies (default 50)")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    add_device_argument(p, "run the catalog's model on the query")
    p.set_defaults(func=cmd_search)
