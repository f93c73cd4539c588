"""Procedural garment renderer throughput: images/s written (JPEG files + all list files) per size and workers.

Each configuration renders ``--items`` x ``--views`` images into a temporary folder with
``fashionlens.data.garments.render_dataset``; the time is the whole call (planning, painting, views,
JPEG encoding, file writes, list files, and process start-up when ``workers > 1``).  Because the machine
is shared and noisy, every figure is also given as a ratio to references measured in the same run on
images of the same size: encoding one JPEG with OpenCV (quality 85) and decoding one with Pillow.
``render_per_image / jpeg_encode`` says how many JPEG encodes one rendered image costs.  A one-worker
stage breakdown (painting per item, view per image, JPEG per image) comes with it.

    python benchmarks/bench_synth.py [--items 56] [--views 6] [--sizes 128 256] [--workers 1 2]

Writes benchmarks/results/synth.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

from fashionlens.data.garments.scenes import encode_jpeg, render_view, sample_view
from fashionlens.data.garments.shapes import build_shape
from fashionlens.data.garments.textures import render_canonical
from fashionlens.data.garments import plan_items, render_dataset

HERE = os.path.dirname(os.path.abspath(__file__))


def _best_per_call(fn, repeats: int) -> float:
    """Seconds per call: the best of 3 rounds of ``repeats`` calls (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def references(image: np.ndarray) -> dict[str, float]:
    """Seconds to JPEG-encode (OpenCV, q85) and to decode (Pillow) one image like ``image``."""
    data = encode_jpeg(image, 85)
    encode = _best_per_call(lambda: cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85]), 200)
    decode = _best_per_call(lambda: Image.open(io.BytesIO(data)).convert("RGB").load(), 200)
    return {"jpeg_encode_s": encode, "pil_decode_s": decode}


def stages(size: int, items: int = 14, views: int = 6) -> dict[str, float]:
    """One-process breakdown in milliseconds: painting per item, one view, one JPEG encode."""
    plan = plan_items(items, 0)
    t0 = time.perf_counter()
    canons = [render_canonical(d, build_shape(d), int(round(size * 1.25))) for _, d, _ in plan]
    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    vps = [(c, sample_view(c, dom, k, size, rng)) for c in canons for dom in ("shop", "consumer")
           for k in range(views // 2)]
    rendered = [(render_view(c, vp, size).image, vp.jpeg) for c, vp in vps]
    t2 = time.perf_counter()
    for img, q in rendered:
        encode_jpeg(img, q)
    t3 = time.perf_counter()
    return {"paint_item_ms": (t1 - t0) / len(plan) * 1e3, "view_ms": (t2 - t1) / len(vps) * 1e3,
            "jpeg_ms": (t3 - t2) / len(vps) * 1e3}


def run(items: int, views: int, size: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        out = os.path.join(tmp, "garments")
        start = time.perf_counter()
        summary = render_dataset(out, items=items, views=views, size=size, seed=0, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        sample = cv2.imread(os.path.join(out, "category", "img", "UPPER", "Tee", "id_00000001", "comsumer_01.jpg"))
    return {"size": size, "workers": workers, "images": summary["images"], "seconds": seconds,
            "images_per_s": summary["images"] / seconds, "sample": sample}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=56, help="items per configuration (>= 14)")
    ap.add_argument("--views", type=int, default=6, help="views per item (>= 3)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sides in pixels")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes to try")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "synth.json"))
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        breakdown = stages(size)
        for workers in args.workers:
            r = run(args.items, args.views, size, workers)
            ref = references(r.pop("sample"))
            per_image = r["seconds"] / r["images"]
            r.update(jpeg_encode_ms=ref["jpeg_encode_s"] * 1e3, pil_decode_ms=ref["pil_decode_s"] * 1e3, **breakdown)
            r["render_over_jpeg_encode"] = per_image / ref["jpeg_encode_s"]
            r["render_over_pil_decode"] = per_image / ref["pil_decode_s"]
            rows.append(r)
    print(f"{'size':>5} {'workers':>7} {'images':>6} {'img/s':>8} {'paint/item ms':>13} {'view ms':>8} "
          f"{'jpeg ms':>8} {'x jpeg-encode':>13} {'x pil-decode':>12}")
    for r in rows:
        print(f"{r['size']:>5} {r['workers']:>7} {r['images']:>6} {r['images_per_s']:>8.1f} "
              f"{r['paint_item_ms']:>13.2f} "
              f"{r['view_ms']:>8.2f} {r['jpeg_ms']:>8.3f} {r['render_over_jpeg_encode']:>13.1f} "
              f"{r['render_over_pil_decode']:>12.1f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    result = {"benchmark": "procedural garment rendering (render_dataset, files included)",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "opencv": cv2.__version__},
              "items": args.items, "views": args.views,
              "note": "render_over_* = seconds per rendered image / seconds per reference op (same size, same run)",
              "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
