"""``fashionlens catalog build|add|remove|list``: build and edit a catalog (:mod:`fashionlens.catalog`).

Each command parses its arguments and calls the library, nothing more; ValueError / FileNotFoundError become
exit code 2 in ``cli.main``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fashionlens.utils import add_device_argument


def cmd_build(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import build
    from fashionlens.config import IndexConfig
    from fashionlens.inference import Predictor
    from fashionlens.utils import resolve_device

    device = resolve_device(args.device)  # an absent GPU is one clear error, before anything is read
    given = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe), ("pq_m", args.pq_m),
                               ("refine", args.refine), ("hnsw_m", args.hnsw_m), ("ef_search", args.ef_search),
                               ("sq_bits", args.sq_bits)) if v is not None}
    if args.milvus_uri:
        given.update(uri=args.milvus_uri)
    index = IndexConfig(backend="milvus" if args.milvus_uri else args.backend, kind=args.index, **given)
    predictor = Predictor.load(args.model, device=device)
    if args.crop:  # before the catalog is created or any image read
        predictor.require_box("--crop")
    summary = build(args.out, predictor, args.data or args.images, split=args.split, model_run=args.model,
                    batch_size=args.batch_size, progress=not args.quiet, crop=args.crop, index=index,
                    skip_bad=args.skip_bad)
    print(json.dumps(summary))
    return 0


def _metadata(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One metadata dict per image: --meta-json (an object for all images or a list, one per image),
    then the --meta KEY=VALUE pairs on top."""
    base: list[dict[str, Any]] = [{} for _ in args.images]
    if args.meta_json:
        if not os.path.isfile(args.meta_json):
            raise FileNotFoundError(f"metadata file not found: {args.meta_json}")
        with open(args.meta_json, encoding="utf-8") as f:
            try:
                loaded = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{args.meta_json}:{e.lineno}: not valid JSON: {e.msg}") from e
        if isinstance(loaded, dict):
            base = [dict(loaded) for _ in args.images]
        elif isinstance(loaded, list) and len(loaded) == len(args.images) and all(isinstance(m, dict) for m in loaded):
            base = [dict(m) for m in loaded]
        else:
            raise ValueError(f"{args.meta_json}: expected a JSON object, or a list of {len(args.images)} objects "
                             "(one per image)")
    pairs = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return [{**m, **pairs} for m in base]


def cmd_add(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog
    from fashionlens.utils import resolve_device

    metadata = _metadata(args)
    with Catalog.open(args.catalog, device=resolve_device(args.device)) as catalog:
        if args.crop:  # before any image is read
            catalog.predictor.require_box("--crop")
        ids = catalog.add(args.images, metadata, crop=args.crop)
        for item_id in ids:
            item = catalog.get(item_id)
            print(json.dumps({"item_id": item_id, "image": item["image"], "source": item["source"],
                              "category": item["category"], "attributes": item["attributes"]}))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        known = set(catalog.ids().tolist())
        unknown = [i for i in args.ids if i not in known]
        if unknown:
            raise ValueError(f"no item(s) {', '.join(map(str, unknown))} in catalog {args.catalog}; nothing removed")
        removed = catalog.remove(args.ids)
    print(f"removed {removed} item(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        items, total = catalog.list(args.offset, args.limit), len(catalog)
    if args.json:
        print(json.dumps(items))
        return 0
    print(f"{'id':>6}  {'category':<16} {'sku':<14} {'title':<24} source")
    for it in items:
        print(f"{it['item_id']:>6}  {cut(it['category'], 16):<16} {cut(it['sku'], 14):<14} {cut(it['title'], 24):<24} "
              f"{it['source'] or ''}")
    print(f"{len(items)} of {total} item(s) shown")
    return 0


def cut(text: Any, width: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def add_commands(subparsers: Any) -> None:
    """Register ``catalog {build,add,remove,list}`` on the ``fashionlens`` subparsers."""
    catalog = subparsers.add_parser("catalog", help="build and edit a searchable catalog of garment images")
    sub = catalog.add_subparsers(dest="catalog_command", required=True)
    _add_build(sub)
    _add_edit_commands(sub)


def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="embed a data set or a folder of images into a catalog (resumable)")
    p.add_argument("--model", required=True, help="run directory of the model that embeds the images")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="data spec, e.g. garments:DIR, folder:DIR, deepfashion-inshop:DIR")
    source.add_argument("--images", help="folder of image files (searched recursively)")
    p.add_argument("--out", required=True, help="catalog directory (created, or resumed when it exists)")
    p.add_argument("--split", help="only these splits of the data set (comma-separated)")
    p.add_argument("--backend", choices=("faiss", "milvus"), default="faiss", help="vector index backend")
    p.add_argument("--milvus-uri", metavar="URI", help="a Milvus server (standalone or cluster, e.g. "
                   "http://host:19530) holds the vectors; SQLite in the catalog stays the source of truth")
    p.add_argument("--index", choices=("flat", "ivf", "ivfsq", "ivfpq", "hnsw", "auto"), default="flat",
                   help="vector index kind (auto: exact below 50,000 images, else ivfsq (float16 lists) with ~2 sqrt(N) "
                        "clusters and nprobe tuned to recall@10 0.95; the summary says which)")
    p.add_argument("--nlist", type=int, help="IVF clusters (default 64)")
    p.add_argument("--nprobe", type=int, help="IVF clusters scanned per query (default 8)")
    p.add_argument("--sq-bits", type=int, choices=(16, 8), help="ivfsq: float16 (16, faiss) or 8-bit lists "
                   "(default 16 on faiss, 8 on milvus)")
    p.add_argument("--pq-m", type=int, help="PQ codes per vector (ivfpq; must divide the embedding size)")
    p.add_argument("--refine", type=int, help="ivfpq: re-rank refine x k PQ candidates with the exact vectors "
                   "(kept in memory beside the codes; e.g. 10)")
    p.add_argument("--hnsw-m", type=int, help="HNSW links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (default 64)")
    p.add_argument("--crop", action="store_true", help="embed the garment crop (predicted box) of each image")
    p.add_argument("--batch-size", type=int, default=32, help="images per committed batch")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p, "run the model that embeds the images")
    p.set_defaults(func=cmd_build)


def _add_edit_commands(sub: Any) -> None:
    p = sub.add_parser("add", help="add images to a catalog (prints one JSON line per new item)")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="metadata for every image: sku, title, category, attributes=a,b, or any other key")
    p.add_argument("--meta-json", metavar="FILE",
                   help="JSON object (for every image) or list of objects (one per image)")
    p.add_argument("--crop", action="store_true", help="embed the garment crop (predicted box)")
    add_device_argument(p, "run the catalog's model")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove items by id")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("ids", nargs="+", type=int, help="item ids")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("list", help="list the items of a catalog")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_list)


__all__ = ["add_commands"]
