"""``fashionlens embed --model RUN_DIR|model.onnx (--data SPEC | --images DIR) [--split S] --out emb.npz``:
embed every image of a data set or folder into an .npz file."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

from fashionlens.utils import add_device_argument


def cmd_embed(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.embedding import embed_spec, save_embeddings
    from fashionlens.export import load_predictor
    from fashionlens.utils import set_threads

    set_threads(args.threads)
    predictor = load_predictor(args.model, threads=args.threads, device=args.device)  # checks the device first
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ images could not be read")  # listed below instead
        ids, vectors = embed_spec(predictor, args.data or args.images, split=args.split, batch_size=args.batch_size,
                                  num_workers=args.workers, progress=not args.quiet)
    for entry in ids["skipped"]:
        print(f"skipped {entry['path']}: {entry['error']}", file=sys.stderr)
    if not len(vectors):
        raise ValueError(f"none of the {len(ids['skipped'])} images could be read; nothing written")
    path = save_embeddings(args.out, ids, vectors, model=os.path.abspath(args.model))
    summary: dict[str, Any] = {"out": os.path.abspath(path), "num_images": int(vectors.shape[0]),
                               "dim": int(vectors.shape[1]), "skipped": len(ids["skipped"])}
    print(json.dumps(summary))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``embed`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("embed", help="embed every image of a data set or folder into an .npz file")
    p.add_argument("--model", required=True, help="run directory, checkpoint file or exported .onnx")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="data spec, e.g. garments:DIR, folder:DIR, deepfashion-inshop:DIR")
    source.add_argument("--images", help="a folder of images (searched recursively)")
    p.add_argument("--split", help="only these splits of --data (comma-separated)")
    p.add_argument("--out", required=True, help="output .npz (vectors, paths, item ids, categories)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--threads", type=int, help="torch / ONNX Runtime threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p, "run the model (an .onnx model runs on the CPU)")
    p.set_defaults(func=cmd_embed)
