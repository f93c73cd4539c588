"""Inference throughput: eager PyTorch (NCHW and channels_last) vs ONNX Runtime, same model, same run.

The default model (FashionNet, EfficientNet-Lite0, landmark + local branches, 128 px; random weights:
speed does not depend on them) is saved as a run, exported with ``fashionlens.export.export_onnx`` and
timed on random input batches (model only, no decoding).  The three runtimes are measured in
interleaved rounds and the median round is kept, so a background load drifting during the run hits
them alike; the ratios ORT / eager are the figures to compare across machines.

    python benchmarks/bench_onnx.py [--size 128] [--batches 1,32] [--threads 2] [--rounds 3] [--seconds 3]

Writes benchmarks/results/onnx.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rate, write  # noqa: E402

from fashionlens.config import RunConfig, to_dict  # noqa: E402
from fashionlens.export import INPUT_NAME, OnnxEmbedder, export_onnx  # noqa: E402
from fashionlens.models import build_model  # noqa: E402
from fashionlens.training.checkpoint import save_checkpoint  # noqa: E402

RUNTIMES = ("eager", "eager_channels_last", "onnxruntime")


def default_run(root: str, size: int) -> str:
    """A run directory holding the default FashionNet (14 categories, 39 attributes, 2 levels) at ``size`` px."""
    cfg = RunConfig()
    cfg.model.pretrained, cfg.data.image_size = False, size
    model = build_model(cfg.model, num_categories=14, num_attributes=39, level_sizes=(3, 9))
    labels = {"categories": [f"c{i}" for i in range(14)], "attributes": [f"a{i}" for i in range(39)],
              "attribute_groups": [1] * 39, "hierarchy_levels": [["x"] * 3, ["y"] * 9], "items": []}
    save_checkpoint(os.path.join(root, "best.pt"), {"model": model.state_dict(), "config": to_dict(cfg),
                                                     "labels": labels})
    return root




def steps(run: str, onnx_path: str, batch: int, size: int, threads: int) -> dict[str, Callable[[], object]]:
    from fashionlens.training.checkpoint import load_model

    model = load_model(run)[0]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model_cl = load_model(run)[0].to(memory_format=torch.channels_last)
    session = OnnxEmbedder(onnx_path, threads=threads).session
    feed = {INPUT_NAME: np.ascontiguousarray(x.numpy())}

    def eager() -> object:
        with torch.no_grad():
            return model(x)

    def eager_cl() -> object:
        with torch.no_grad():
            return model_cl(x_cl)

    return {"eager": eager, "eager_channels_last": eager_cl, "onnxruntime": lambda: session.run(None, feed)}


def measure(run: str, onnx_path: str, batch: int, size: int, threads: int, rounds: int, seconds: float) -> dict:
    fns = steps(run, onnx_path, batch, size, threads)
    samples: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    for _ in range(rounds):
        for name in RUNTIMES:
            samples[name].append(rate(fns[name], batch, seconds))
    row: dict = {f"{name}_images_per_s": statistics.median(v) for name, v in samples.items()}

    def ratio(a: str, b: str) -> float:  # median of the per-round ratios: both sides saw the same load
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    row["ort_over_eager"] = ratio("onnxruntime", "eager")
    row["ort_over_eager_channels_last"] = ratio("onnxruntime", "eager_channels_last")
    row["channels_last_over_plain"] = ratio("eager_channels_last", "eager")
    row["rounds"] = {name: [round(r, 2) for r in v] for name, v in samples.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT intra-op threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per runtime per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = default_run(tmp, args.size)
        t0 = time.perf_counter()
        onnx_path = export_onnx(run, os.path.join(tmp, "model.onnx"))
        export_s, onnx_mb = time.perf_counter() - t0, os.path.getsize(onnx_path) / 2**20
        rows = {f"batch {b}": measure(run, onnx_path, int(b), args.size, args.threads, args.rounds, args.seconds)
                for b in args.batches.split(",")}
    print(f"FashionNet tf_efficientnet_lite0 {args.size} px, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds (export {export_s:.1f} s, {onnx_mb:.1f} MiB)")
    print("| batch | eager img/s | channels_last img/s | ORT img/s | ORT/eager | ORT/eager_cl | cl/plain |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name.split()[1]} | {r['eager_images_per_s']:.1f} | {r['eager_channels_last_images_per_s']:.1f} | "
              f"{r['onnxruntime_images_per_s']:.1f} | {r['ort_over_eager']:.2f} | "
              f"{r['ort_over_eager_channels_last']:.2f} | {r['channels_last_over_plain']:.2f} |")
    path = write("onnx", {"size": args.size, "threads": args.threads, "torch": torch.__version__,
                          "onnxruntime": __import__("onnxruntime").__version__, "export_seconds": export_s,
                          "onnx_mib": onnx_mb, "wall_seconds": time.perf_counter() - start, "results": rows})
    print(f"written {path}")


if __name__ == "__main__":
    main()
