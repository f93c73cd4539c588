"""INT8 ONNX Runtime vs float ONNX Runtime vs eager PyTorch on a trained run: accuracy, agreement, images/s.

The run is exported (``fashionlens.export.export_onnx``) and quantised (``quantize_onnx``: static QDQ, activation
ranges measured on ``--calibration-images`` images of ``--calibration-split``, by default the training split, so
the evaluated split stays unseen; or ``--quantization dynamic``).  All three runtimes classify the same eval-transform
inputs of ``--split``; their speed is measured on one batch in interleaved rounds (median kept, so a background load
drifting during the run hits them alike).  ``--shifted`` also classifies the split's photos under each distribution
shift of ``fashionlens.evaluation.distortions`` (zoomed out, low resolution + JPEG, lighting, crop; seed 1000 + photo
index, as bench_photos' shifted copies) with the same float and INT8 files: accuracy and agreement per shift.

    python benchmarks/bench_onnx_int8.py --model RUN --data folder:../shared/data/clothing-small --split val \
        [--limit 200] [--shifted] [--calibration-images 32] [--calibration-shifts] [--float-first-convs N] [--out NAME] [--batch 8] [--threads 2] [--rounds 3] [--seconds 3]

Writes benchmarks/results/onnx_int8.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rate, write

from fashionlens.export import INPUT_NAME, OnnxEmbedder, export_onnx, network_inputs, quantize_onnx, shifted_inputs
from fashionlens.inference import Predictor

RUNTIMES = ("eager", "onnx_float", "onnx_int8")


def predictions(step, inputs: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(category argmax, L2-normalised embeddings) of ``step(batch_array) -> (logits, embeddings)`` over ``inputs``."""
    cats, embs = [], []
    for i in range(0, len(inputs), batch):
        logits, emb = step(np.ascontiguousarray(inputs[i:i + batch]))
        cats.append(np.asarray(logits).argmax(1))
        embs.append(np.asarray(emb, np.float32))
    return np.concatenate(cats), np.concatenate(embs)


def shifted_rows(float_model: OnnxEmbedder, int8_model: OnnxEmbedder, paths: list[str], labels: np.ndarray,
                 batch: int) -> dict[str, dict]:
    """Per shift kind: float and INT8 accuracy (labelled photos) and their top-1 agreement, on the shifted photos."""
    from fashionlens.evaluation.distortions import SHIFTS  # lazy: only with --shifted

    known = labels >= 0
    out = {}
    for kind in SHIFTS:
        x = shifted_inputs(float_model, paths, [kind], seed=1000)
        cats = {name: predictions(lambda b, m=m: m.session.run(["category", "embedding"], {INPUT_NAME: b}), x,
                                  batch)[0] for name, m in (("float", float_model), ("int8", int8_model))}
        out[kind] = {"float_accuracy": float(np.mean(cats["float"][known] == labels[known])),
                     "int8_accuracy": float(np.mean(cats["int8"][known] == labels[known])),
                     "top1_agreement": float(np.mean(cats["float"] == cats["int8"]))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run directory")
    parser.add_argument("--data", required=True, help="data spec with the model's categories")
    parser.add_argument("--split", default="val", help="split to evaluate")
    parser.add_argument("--limit", type=int, help="evaluate at most this many images (spread evenly)")
    parser.add_argument("--calibration-split", default="train", help="split the INT8 activation ranges come from")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--quantization", choices=("static", "dynamic"), default="static")
    parser.add_argument("--float-first-convs", type=int, default=0,
                        help="keep the first N convolutions and the heads in float (static INT8)")
    parser.add_argument("--float-depthwise", action="store_true",
                        help="keep every depthwise convolution and the heads in float (static INT8)")
    parser.add_argument("--float-sensitive", type=int, default=0,
                        help="keep the nodes around the N activations INT8 hurts most in float (static INT8)")
    parser.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    parser.add_argument("--calibration-shifts", action="store_true",
                        help="calibrate on the calibration photos' shifted copies too (seed 2000 + index)")
    parser.add_argument("--shifted", action="store_true",
                        help="also evaluate float and INT8 on the shifted copies of --split (distortions.SHIFTS)")
    parser.add_argument("--out", default="onnx_int8", help="result name under benchmarks/results/")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT intra-op threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per runtime per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_onnx(args.model, os.path.join(tmp, "float.onnx"))
        float_model = OnnxEmbedder(float_path, threads=args.threads)
        calibration = None
        if args.quantization == "static":
            calibration, _, calibration_paths = network_inputs(float_model, args.data, split=args.calibration_split,
                                                               limit=args.calibration_images)
            if args.calibration_shifts:
                calibration = np.concatenate([calibration, shifted_inputs(float_model, calibration_paths)])
        t0 = time.perf_counter()
        int8_path = quantize_onnx(float_path, os.path.join(tmp, "int8.onnx"), method=args.quantization,
                                  calibration=calibration, float_first_convs=args.float_first_convs,
                                  float_depthwise=args.float_depthwise, calibration_method=args.calibration_method,
                                  float_sensitive=args.float_sensitive)
        quantize_s = time.perf_counter() - t0
        int8_model = OnnxEmbedder(int8_path, threads=args.threads)
        int8_info = int8_model.quantization
        inputs, labels, paths = network_inputs(float_model, args.data, split=args.split, limit=args.limit)
        eager = Predictor.load(args.model).model.eval()

        def run_eager(x: np.ndarray):
            with torch.no_grad():
                out = eager(torch.from_numpy(x))
            return out["category"].float().numpy(), out["embedding"].float().numpy()

        def session_step(model: OnnxEmbedder):
            return lambda x: model.session.run(["category", "embedding"], {INPUT_NAME: x})

        steps = {"eager": run_eager, "onnx_float": session_step(float_model), "onnx_int8": session_step(int8_model)}
        answers = {name: predictions(step, inputs, args.batch) for name, step in steps.items()}
        batch = np.ascontiguousarray(np.resize(inputs, (args.batch, *inputs.shape[1:])), np.float32)
        samples: dict[str, list[float]] = {name: [] for name in RUNTIMES}
        for _ in range(args.rounds):
            for name in RUNTIMES:
                samples[name].append(rate(lambda step=steps[name]: step(batch), args.batch, args.seconds))
        shifted = shifted_rows(float_model, int8_model, paths, labels, args.batch) if args.shifted else {}
        sizes = {"onnx_float": os.path.getsize(float_path) / 2**20, "onnx_int8": os.path.getsize(int8_path) / 2**20}
    known = labels >= 0
    ref_cat, ref_emb = answers["onnx_float"]
    rows = {}
    for name in RUNTIMES:
        cat, emb = answers[name]
        rows[name] = {
            "accuracy": float(np.mean(cat[known] == labels[known])) if known.any() else None,
            "top1_agreement_with_float": float(np.mean(cat == ref_cat)),
            "embedding_cosine_with_float": float(np.mean(np.sum(emb * ref_emb, axis=1))),
            "images_per_s": statistics.median(samples[name]),
            "over_onnx_float": statistics.median(a / b for a, b in zip(samples[name], samples["onnx_float"])),
            "mib": sizes.get(name), "rounds": [round(r, 2) for r in samples[name]],
        }
    print(f"{args.model}: {len(inputs)} images of {args.data} ({args.split}), {int(known.sum())} labelled; "
          f"{args.quantization} INT8 ({0 if calibration is None else len(calibration)} calibration images "
          f"of {args.calibration_split}{', with shifted copies' if args.calibration_shifts else ''}, {quantize_s:.0f} s); batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    print("| runtime | accuracy | top-1 agreement with float | embedding cosine | images/s | x float ORT | MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        mib = "-" if r["mib"] is None else f"{r['mib']:.1f}"
        print(f"| {name} | {acc} | {r['top1_agreement_with_float']:.4f} | {r['embedding_cosine_with_float']:.4f} | "
              f"{r['images_per_s']:.1f} | {r['over_onnx_float']:.2f} | {mib} |")
    if shifted:
        print("| shift | float accuracy | INT8 accuracy | INT8 - float | top-1 agreement |")
        print("|---|---|---|---|---|")
        for kind, r in shifted.items():
            print(f"| {kind} | {r['float_accuracy']:.4f} | {r['int8_accuracy']:.4f} | "
                  f"{r['int8_accuracy'] - r['float_accuracy']:+.4f} | {r['top1_agreement']:.4f} |")
    path = write(args.out, {
        "model": os.path.abspath(args.model), "data": args.data, "split": args.split, "images": len(inputs),
        "labelled": int(known.sum()), "quantization": args.quantization, "float_first_convs": args.float_first_convs,
        "float_depthwise": args.float_depthwise, "float_sensitive": args.float_sensitive,
        "quantization_info": int8_info, "calibration_method": args.calibration_method, "calibration_split": args.calibration_split,
        "calibration_shifts": args.calibration_shifts,
        "calibration_images": 0 if calibration is None else len(calibration), "batch": args.batch,
        "threads": args.threads, "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "quantize_seconds": quantize_s, "wall_seconds": time.perf_counter() - start, "results": rows,
        "shifted": shifted})
    print(f"written {path}")


if __name__ == "__main__":
    main()
