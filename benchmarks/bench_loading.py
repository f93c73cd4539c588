"""Data-loading throughput: images/s decoded + transformed, for 0, 1 and 2 DataLoader workers.

Reads ``../shared/data/clothing-small`` (real ~400x533 JPEGs) when present, else generates JPEGs of
the same size in a temporary folder.  Every configuration loads the same ``--images`` images (files
are read once beforehand so all runs see a warm page cache); times include worker start-up, as an
epoch would.  Ratios are against the 0-worker figure of the same pipeline in the same run.  The main
process uses ``--threads`` torch threads (default 1, as DataLoader workers do): with 2 intra-op threads
on a busy 2-core machine, collating one batch of 32 took ~35 ms instead of ~1.3 ms, which would make
the 0-worker baseline measure thread contention rather than loading.

    python benchmarks/bench_loading.py [--images 256] [--size 128] [--workers 0 1 2]

Writes benchmarks/results/loading.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from fashionlens.config import DataConfig
from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.samples import Sample
from fashionlens.data.transforms import build_transforms

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "clothing-small"))


def real_samples(root: str, n: int) -> list[Sample]:
    """``n`` samples spread evenly over the folder data set (the folder reader, else a plain glob)."""
    try:
        from fashionlens.data.readers.folder import read_folder

        samples = read_folder(root).samples
    except ImportError:
        paths = sorted(glob.glob(os.path.join(root, "*", "*", "*.jpg")))
        samples = [Sample(image=p, source=os.path.relpath(p, root)) for p in paths]
    if not samples:
        raise ValueError(f"{root}: no images found")
    picks = np.linspace(0, len(samples) - 1, num=min(n, len(samples))).round().astype(int)
    return [samples[i] for i in picks]


def generated_samples(folder: str, n: int, size: tuple[int, int] = (400, 533)) -> list[Sample]:
    """``n`` synthetic garment-like JPEGs (a coloured shape on a light background) with a box."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
        x1, y1 = int(rng.integers(20, 120)), int(rng.integers(20, 150))
        box = (x1, y1, size[0] - int(rng.integers(20, 120)), size[1] - int(rng.integers(20, 150)))
        ImageDraw.Draw(img).rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
        path = os.path.join(folder, f"gen_{i:04d}.jpg")
        img.save(path, quality=90)
        samples.append(Sample(image=path, source=f"generated:{i}", bbox=tuple(float(v) for v in box)))
    return samples


def time_loader(
    samples: list[Sample], cfg: DataConfig, train: bool, workers: int, batch_size: int
) -> tuple[float, float]:
    """(total seconds, seconds to the first batch) to load every sample once through a fresh DataLoader."""
    dataset = GarmentDataset(samples, build_transforms(cfg, train=train))
    for i in range(min(4, len(dataset))):  # warm-up in this process: lazy imports and first-call costs
        dataset[i]
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    torch.manual_seed(0)
    start = time.perf_counter()
    first, count = None, 0
    for batch in loader:
        first = time.perf_counter() - start if first is None else first
        count += batch["image"].shape[0]
    elapsed = time.perf_counter() - start
    assert count == len(samples)
    return elapsed, first or 0.0


def run(samples: list[Sample], size: int, workers: list[int], batch_size: int) -> list[dict]:
    """Time every (pipeline, workers) pair; print a table row per pair and return the rows."""
    cfg = DataConfig(image_size=size)
    rows = []
    for pipeline in ("train", "eval"):
        base = None
        for w in workers:
            seconds, first = time_loader(samples, cfg, pipeline == "train", w, batch_size)
            rate = len(samples) / seconds
            steady = (len(samples) - min(batch_size, len(samples))) / max(seconds - first, 1e-9)
            base = rate if w == 0 else base
            row = {
                "pipeline": pipeline,
                "workers": w,
                "seconds": round(seconds, 3),
                "first_batch_s": round(first, 3),
                "images_per_s": round(rate, 1),
                "steady_images_per_s": round(steady, 1),
                "ratio_vs_0_workers": round(rate / base, 2) if base else None,
            }
            rows.append(row)
            ratio = row["ratio_vs_0_workers"] or ""
            print(f"{pipeline:>6} {w:>8} {seconds:>8.2f} {first:>9.2f} {rate:>9.1f} {steady:>9.1f} {ratio:>7}")
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per configuration")
    parser.add_argument("--size", type=int, default=128, help="network input side, pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process (0: default)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="image-folder data set (generated images if absent)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "loading.json"))
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.isdir(args.data):
            samples, source = real_samples(args.data, args.images), args.data
        else:
            samples, source = generated_samples(tmp, args.images), "generated 400x533 JPEGs"
        for s in samples:  # warm the page cache so every configuration reads from memory
            with open(s.image, "rb") as f:
                f.read()
        print(f"{len(samples)} images from {source}, {args.size} px, batch {args.batch_size}")
        header = ('pipe', 'workers', 'seconds', '1st batch', 'images/s', 'steady/s', 'ratio')
        print("{:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7}".format(*header))
        rows = run(samples, args.size, sorted(set(args.workers)), args.batch_size)
    report = {
        "benchmark": "loading",
        "source": source,
        "images": len(samples),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "results": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
