"""``fashionlens export-onnx --model RUN_DIR --out model.onnx``: a self-describing ONNX file of a trained run."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def cmd_export_onnx(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.transforms import eval_size
    from fashionlens.export import export_onnx, read_metadata

    path = export_onnx(args.model, args.out, opset=args.opset, dynamic_batch=not args.static_batch,
                       exporter=args.exporter)
    cfg, labels, outputs = read_metadata(path)
    print(json.dumps({"onnx": os.path.abspath(path), "bytes": os.path.getsize(path), "outputs": outputs,
                      "image_size": eval_size(cfg.data), "categories": len(labels["categories"])}))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``export-onnx`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("export-onnx", help="export a trained model to a self-describing ONNX file")
    p.add_argument("--model", required=True, help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (dynamo needs the onnxscript package)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1 instead of a dynamic axis")
    p.set_defaults(func=cmd_export_onnx)
