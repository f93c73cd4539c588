"""``fashionlens export-onnx --model RUN_DIR --out model.onnx [--int8 --data SPEC]``: a self-describing ONNX file
of a trained run; with ``--int8`` its INT8-quantised twin, compared with the float model on the data."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any


def cmd_export_onnx(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.data.transforms import eval_size
    from fashionlens.export import export_onnx, read_metadata

    if not args.int8:
        if args.data or args.float_out:
            raise ValueError("--data and --float-out go with --int8")
        path = export_onnx(args.model, args.out, opset=args.opset, dynamic_batch=not args.static_batch,
                           exporter=args.exporter)
        cfg, labels, outputs = read_metadata(path)
        print(json.dumps({"onnx": os.path.abspath(path), "bytes": os.path.getsize(path), "outputs": outputs,
                          "image_size": eval_size(cfg.data), "categories": len(labels["categories"]),
                          "calibrated": _calibrated(path)}))
        return 0
    print(json.dumps(export_int8(args)))
    return 0


def _calibrated(path: str) -> bool:
    from fashionlens.export import OnnxEmbedder  # lazy: start-up (cli/__init__.py)

    return OnnxEmbedder(path, threads=1).calibration() is not None


def export_int8(args: argparse.Namespace) -> dict[str, Any]:
    """Export the float model, quantise it to ``args.out`` and compare the two on ``--data`` (or random inputs)."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    import numpy as np

    from fashionlens.export import (OnnxEmbedder, compare_onnx, export_onnx, network_inputs, quantize_onnx,
                                   shifted_inputs)

    method = args.quantization or ("static" if args.data else "dynamic")
    if method == "static" and not args.data:
        raise ValueError("--int8 with static quantization needs --data SPEC (a few dozen images to measure the "
                         "activation ranges on); or --quantization dynamic")
    if args.static_batch:
        raise ValueError("--int8 needs the dynamic batch axis (calibration and comparison run in batches)")
    if args.calibration_shifts and method != "static":
        raise ValueError("--calibration-shifts needs static quantization (--data SPEC): dynamic INT8 measures no "
                         "activation ranges")
    with tempfile.TemporaryDirectory(prefix="fashionlens-int8-") as tmp:
        float_path = export_onnx(args.model, args.float_out or os.path.join(tmp, "float.onnx"), opset=args.opset,
                                 exporter=args.exporter)
        reference = OnnxEmbedder(float_path, threads=args.threads)
        labels = None
        if args.data:
            inputs, labels, paths = network_inputs(reference, args.data, split=args.split,
                                                   limit=args.calibration_images + args.eval_images)
            pick = np.zeros(len(inputs), bool)
            pick[np.linspace(0, len(inputs) - 1, min(args.calibration_images, len(inputs))).round().astype(int)] = True
            calibration = inputs[pick]
            if args.calibration_shifts:  # the same photos under every distribution shift, next to the plain ones
                calibration = np.concatenate([calibration, shifted_inputs(
                    reference, [paths[i] for i in np.flatnonzero(pick)])])
            held_out = ~pick if (~pick).any() else pick  # compare on images the ranges were not measured on
            inputs, labels = inputs[held_out], labels[held_out]
        else:
            size = reference.size
            calibration = None
            inputs = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
        path = quantize_onnx(float_path, args.out, method=method, calibration=calibration,
                             float_first_convs=args.float_first_convs if method == "static" else 0,
                             float_depthwise=args.float_depthwise and method == "static",
                             calibration_method=args.calibration_method,
                             float_sensitive=args.float_sensitive if method == "static" else 0)
        report = compare_onnx(float_path, path, inputs, labels, threads=args.threads, seconds=args.seconds)
        float_bytes = os.path.getsize(float_path)
    if not args.data:  # random inputs: only the speed means something
        report = {k: v for k, v in report.items() if k not in ("top1_agreement", "embedding_cosine_mean",
                                                                 "embedding_cosine_min", "images")}
    return {"onnx": os.path.abspath(path), "bytes": os.path.getsize(path), "float_bytes": float_bytes,
            "float_onnx": os.path.abspath(args.float_out) if args.float_out else None,
            "quantization": OnnxEmbedder(path, threads=1).quantization, "data": args.data, "split": args.split,
            "calibration_images": 0 if calibration is None else len(calibration),
            "calibration_shifts": bool(args.calibration_shifts), "comparison": report}


def add_commands(subparsers: Any) -> None:
    """Register ``export-onnx`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("export-onnx", help="export a trained model to a self-describing ONNX file")
    p.add_argument("--model", required=True, help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (dynamo needs the onnxscript package)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1 instead of a dynamic axis")
    q = p.add_argument_group("INT8 quantization (--int8)")
    q.add_argument("--int8", action="store_true",
                   help="write an INT8-quantised model to --out and report its agreement with the float one")
    q.add_argument("--quantization", choices=("static", "dynamic"),
                   help="static (default with --data): QDQ, activation ranges measured on --data images; "
                        "dynamic (default without): weights only (slow for conv nets on CPUs without VNNI)")
    q.add_argument("--data", help="data spec or image folder: calibration images and the comparison with float")
    q.add_argument("--split", help="only these splits of --data (comma-separated), e.g. val")
    q.add_argument("--calibration-images", type=int, default=32, help="images to measure activation ranges on")
    q.add_argument("--float-first-convs", type=int, default=0, metavar="N",
                   help="static: keep the first N convolutions and the heads in float (accuracy for speed; README)")
    q.add_argument("--float-depthwise", action="store_true",
                   help="static: keep every depthwise convolution and the heads in float (README)")
    q.add_argument("--float-sensitive", type=int, default=0, metavar="N",
                   help="static: keep the nodes around the N activations INT8 hurts most (measured) in float")
    q.add_argument("--calibration-shifts", action="store_true",
                   help="static: also measure activation ranges on the calibration images' shifted copies (zoomed "
                        "out, low resolution, relit, cropped: evaluation.distortions), 5x the calibration images")
    q.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="static: how activation ranges are read from the calibration images")
    q.add_argument("--eval-images", type=int, default=200, help="other images to compare float and INT8 on")
    q.add_argument("--threads", type=int, help="ONNX Runtime threads for the comparison (default: all cores)")
    q.add_argument("--seconds", type=float, default=2.0, help="timing per model per round (3 interleaved rounds)")
    q.add_argument("--float-out", help="also keep the float .onnx here")
    p.set_defaults(func=cmd_export_onnx)
