"""``fashionlens catalog build|add|remove|list|reindex|export|review|answer|audit``: build and edit a catalog, re-embed
it with a new model, export the labels people gave as a training manifest, review the model's least sure answers
(:mod:`fashionlens.catalog`).

Each command parses its arguments and calls the library, nothing more; ValueError / FileNotFoundError become
exit code 2 in ``cli.main``.  ``catalog build --model A --model B`` builds an ensemble catalog (the members'
normalised embeddings concatenated, ``inference.EnsemblePredictor``): the catalog records both runs, in order,
and ``catalog add``, ``search`` and ``serve`` on it use the same ensemble.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from fashionlens.cli.predict import add_model_argument, model_spec
from fashionlens.utils import add_device_argument


def cmd_build(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import build
    from fashionlens.config import IndexConfig
    from fashionlens.export import check_device, load_predictor
    from fashionlens.utils import resolve_device

    model = model_spec(args.model)  # one path, or the list of an ensemble (the catalog records it, in order)
    check_device(model, args.device)  # a GPU asked of an .onnx model: one clear error, before anything is read
    resolve_device(args.device)  # an absent GPU is one clear error, before anything is read
    given = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe), ("pq_m", args.pq_m),
                               ("refine", args.refine), ("hnsw_m", args.hnsw_m), ("ef_search", args.ef_search),
                               ("sq_bits", args.sq_bits)) if v is not None}
    if args.milvus_uri:
        given.update(uri=args.milvus_uri)
    index = IndexConfig(backend="milvus" if args.milvus_uri else args.backend, kind=args.index, **given)
    predictor = load_predictor(model, device=args.device)  # a run directory, an exported .onnx, or several
    if args.crop:  # before the catalog is created or any image read
        predictor.require_box("--crop")
    summary = build(args.out, predictor, args.data or args.images, split=args.split, model_run=model,
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
    resolve_device(args.device)  # an absent GPU: one clear error; the catalog's model resolves "auto" itself
    with Catalog.open(args.catalog, device=args.device) as catalog:  # (an .onnx model: auto = the CPU)
        if args.crop:  # before any image is read
            catalog.predictor.require_box("--crop")
        ids = catalog.add(args.images, metadata, crop=args.crop, label=args.label)
        for item_id in ids:
            item = catalog.get(item_id)
            print(json.dumps({"item_id": item_id, "image": item["image"], "source": item["source"],
                              "category": item["category"], "attributes": item["attributes"],
                              "label": (item["label"] or {}).get("provenance")}))
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


def cmd_export(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import export_manifest

    summary = export_manifest(args.catalog, args.out, args.labels)
    counts = ", ".join(f"{n} {p}" for p, n in summary["by_provenance"].items())
    skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in summary["skipped"].items() if n)
    print(f"wrote {summary['rows']} row(s) to {summary['manifest']}: {counts}"
          + (f" (skipped: {skipped})" if skipped else ""))
    if summary.get("label_space"):
        print(f"the served model's label space (every category, in its order): {summary['label_space']}")
    print("train on them: fashionlens train --recipe finetune --init-from SERVED_RUN "
          f"--data manifest:{summary['manifest']} --out NEW_RUN")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        queue, total = catalog.review_queue(args.limit, args.offset), catalog.review_count()
    if args.json:
        print(json.dumps(queue))
        return 0
    print(f"{'id':>6}  {'why':<8} {'margin':>7}  {'category':<16} guesses")
    for entry in queue:
        item, suspect = entry["item"], entry.get("suspect")
        guesses = ", ".join(f"{g['name']} {g['score']:.2f}" for g in entry["guesses"][:3])
        if suspect:
            guesses = f"audit: {suspect['model_category']} more likely ({item['category']} {suspect['score']:.2f})"
        margin = "-" if entry["margin"] is None else f"{entry['margin']:.3f}"
        print(f"{item['item_id']:>6}  {entry['reason']:<8} {margin:>7}  {cut(item['category'], 16):<16} {guesses}")
    print(f"{len(queue)} of {total} item(s) to review shown (the audit's suspects first, then least sure first)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        summary = catalog.audit(labels=[p.strip() for p in args.labels.split(",") if p.strip()], folds=args.folds,
                                seed=args.seed)
    if args.json:
        print(json.dumps(summary, default=float))
        return 0
    print(f"audited {summary['audited']} items of {len(summary['categories'])} categories (labels: "
          f"{', '.join(summary['labels'])}); out-of-fold accuracy {summary['oof_accuracy']:.3f}; "
          f"{len(summary['suspects'])} suspect(s) put first in the review queue")
    for row in summary["suspects"][:args.show]:
        print(f"  item {row['item_id']}: stored {row['category']}, more likely {row['suggested']} "
              f"(confidence {row['confidence']:.2f})")
    print(f"review them: fashionlens catalog review {args.catalog}  (or the page's Review view)")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog

    with Catalog.open(args.catalog) as catalog:
        try:
            item = catalog.answer(args.item, args.verdict, category=args.category, attributes=args.attributes)
        except KeyError as e:
            raise ValueError(f"no item {args.item} in catalog {args.catalog}; nothing recorded") from e
    label = item["label"]
    print(json.dumps({"item_id": item["item_id"], "category": item["category"], "attributes": item["attributes"],
                      "label": label["provenance"], "at": label["at"]}))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.catalog import Catalog
    from fashionlens.export import check_device, load_predictor, model_label
    from fashionlens.utils import resolve_device

    if args.abort or args.status:
        if args.model or (args.abort and args.status):
            raise ValueError("--abort and --status take no --model (and not each other)")
        with Catalog.open(args.catalog) as catalog:
            job = catalog.abort_reindex() if args.abort else catalog.reindex_status()
        if args.json:
            print(json.dumps(job))
        elif job is None:
            print(f"no reindex under way in {args.catalog}" + ("; nothing to abort" if args.abort else ""))
        elif args.abort:
            print(f"aborted the reindex to {model_label(job['model_run'])}: {job['staged']} staged embedding(s) "
                  "dropped; the catalog is as it was before it started")
        else:
            print(f"a reindex to {job['model_run']} (dim {job['dim']}) is under way since {job['started_at']}: "
                  f"{job['staged']} of {job['items']} item(s) staged, {job['failed']} failed; resume it with "
                  f"`fashionlens catalog reindex {args.catalog} --model {job['model_run']}` or drop it with --abort")
        return 0
    if not args.model:
        raise ValueError("catalog reindex needs --model NEW_RUN (or --abort / --status)")
    check_device(args.model, args.device)  # a GPU asked of an .onnx model: one clear error, before anything is read
    resolve_device(args.device)  # an absent GPU is one clear error, before anything is read
    predictor = load_predictor(args.model, device=args.device)  # a run directory or an exported .onnx
    if args.crop:
        predictor.require_box("--crop")
    with Catalog.open(args.catalog, device=args.device) as catalog:
        summary = catalog.reindex(predictor, batch_size=args.batch_size, crop=args.crop, skip_bad=args.skip_bad,
                                  switch=not args.stage_only, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary))
        return 0
    for line in summary["skipped"]:
        print(f"skipped {line}")
    print(f"re-embedded {summary['reembedded']} item(s) in {summary['seconds']:.1f} s ({summary['resumed']} staged "
          f"by an earlier run), skipped {len(summary['skipped'])}")
    if summary["switched"]:
        removed = summary["removed"]
        print(f"catalog {summary['catalog']} now uses {model_label(summary['model_run'])} ({summary['dim']}-dimensional "
              f"embeddings; was {model_label(summary['previous_model_run'])}, {summary['previous_dim']}): "
              f"{summary['items']} item(s)" + (f"; removed {len(removed)} skipped item(s): {', '.join(map(str, removed))}"
                                               if removed else ""))
    else:
        print(f"staged only: the catalog still serves {model_label(summary['previous_model_run'])}; run the same "
              "command without --stage-only to switch")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``catalog {build,add,remove,list,reindex,export,review,answer,audit}`` on the ``fashionlens`` subparsers."""
    catalog = subparsers.add_parser("catalog", help="build and edit a searchable catalog of garment images")
    sub = catalog.add_subparsers(dest="catalog_command", required=True)
    _add_build(sub)
    _add_edit_commands(sub)
    _add_reindex(sub)
    _add_label_commands(sub)


def _add_reindex(sub: Any) -> None:
    p = sub.add_parser("reindex", help="re-embed every item with a new model while the catalog serves the old one, "
                       "then switch to it at once (resumable; --abort)")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("--model", help="run directory (or .onnx) of the new model")
    p.add_argument("--crop", action="store_true", help="embed the garment crop (predicted box) of each stored image")
    p.add_argument("--batch-size", type=int, default=32, help="images per committed batch")
    p.add_argument("--skip-bad", action="store_true", help=(
        "leave out items whose stored image is missing or unreadable (reported; removed from the catalog at the "
        "switch: their old embeddings can not be compared with the new model's) instead of stopping"))
    p.add_argument("--stage-only", action="store_true", help="embed and stage, but keep serving the old model "
                   "(the same command without it switches later)")
    p.add_argument("--abort", action="store_true", help="drop an unfinished reindex: the catalog stays as it was")
    p.add_argument("--status", action="store_true", help="show the unfinished reindex, if any")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p, "run the new model")
    p.set_defaults(func=cmd_reindex)


def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="embed a data set or a folder of images into a catalog (resumable)")
    add_model_argument(p, help_text="run directory (or .onnx) of the model that embeds the images; repeat it "
                       "(--model A --model B) for an ensemble catalog: the models' normalised embeddings concatenated "
                       "(add, search and serve use the same models, in the same order)")
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
    p.add_argument("--label", choices=("confirmed", "corrected"), help=(
        "a person checked these labels: confirmed (the stored category / attributes are right) or corrected "
        "(the --meta category / attributes are the right ones); default: predicted, or given with a category"))
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


def _add_label_commands(sub: Any) -> None:
    p = sub.add_parser("export", help="write the items people labelled as a training manifest (manifest: reader)")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("--out", required=True, help="manifest file to write: .csv or .jsonl")
    p.add_argument("--labels", default="confirmed,corrected", help=(
        "label provenances to export, comma-separated: confirmed, corrected, given, predicted "
        "(default: confirmed,corrected, the answers people gave)"))
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("review", help="the items the model is least sure of, whose labels nobody checked yet")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("audit", help=(
        "flag items whose stored category is probably wrong (confident learning on the stored embeddings); the "
        "suspects go first in the review queue"))
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("--labels", default="given,predicted", help=(
        "label provenances to audit, comma-separated (default: given,predicted; people's answers are not questioned)"))
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (categories with fewer items are left out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=10, help="suspects printed")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("answer", help="record a person's answer to an item's label")
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("item", type=int, help="item id")
    p.add_argument("verdict", choices=("yes", "no"), help="yes: the label is right; no: --category / --attributes are")
    p.add_argument("--category", help="the right category (with no)")
    p.add_argument("--attributes", help="the right attributes, comma-separated (with no)")
    p.set_defaults(func=cmd_answer)


__all__ = ["add_commands"]
