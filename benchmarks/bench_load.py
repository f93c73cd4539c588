"""Load test of the HTTP service on loopback: N concurrent clients mix classify, search and add for a fixed time.

Starts `fashionlens serve` on 127.0.0.1 (a free port) for a model run and a COPY of a catalog, then runs
`--clients` asyncio clients for `--seconds` (bounded in time and count), each request picked at random
(classify / search / add, weights `--mix`). Reports p50 / p95 / p99 latency per kind, throughput and errors
(must be 0), then checks that every acknowledged add is in the catalog and found by a search with its own
image. Only loopback traffic.

    python benchmarks/bench_load.py --model RUN_DIR --catalog CATALOG --images DIR [--clients 8] [--seconds 30]
        [--runtimes eager onnx int8] [--out load]

``--runtimes``: the same load against the server running the run in eager PyTorch, its ONNX export (ONNX
Runtime) and its static INT8 quantisation (``--int8-flags``: e.g. ``--float-depthwise``; calibrated on 32 of
``--images``), one after the other in the same process: each gets its own copy of the catalog, re-embedded with
that model through ``fashionlens catalog reindex`` (a catalog never mixes two models' vectors).  Throughput is
also given as a ratio to the first runtime's, measured in the same run.

Writes benchmarks/results/load.json (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
from _common import write

KEY = "bench-load-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, catalog: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "FASHIONLENS_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fashionlens", "serve", "--model", model, "--catalog", catalog,
                             "--port", str(port), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up")
    proc.kill()
    raise RuntimeError("the server did not answer /healthz within 120 s")


async def client(base: str, images: list[str], mix: dict[str, float], stop: float, max_requests: int,
                 log: list, added: list, rng: random.Random) -> None:
    kinds, weights = list(mix), list(mix.values())
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while time.time() < stop and len(log) < max_requests:
            kind, path = rng.choices(kinds, weights)[0], rng.choice(images)
            with open(path, "rb") as f:
                files = {"image": (os.path.basename(path), f.read(), "image/jpeg")}
            start = time.perf_counter()
            if kind == "classify":
                r = await http.post("/v1/classify", files=files)
            elif kind == "search":
                r = await http.post("/v1/search", files=files, data={"k": "10"})
            else:
                r = await http.post("/v1/items", files=files, data={"title": f"load {len(log)}"},
                                    headers={"X-API-Key": KEY})
                if r.status_code == 201:
                    added.append((r.json()["item_id"], path))
            log.append((kind, time.perf_counter() - start, r.status_code))


async def run_load(base: str, images: list[str], clients: int, seconds: float, mix: dict[str, float],
                   max_requests: int) -> tuple[list, list, float]:
    log: list = []
    added: list = []
    stop = time.time() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(client(base, images, mix, stop, max_requests, log, added, random.Random(i))
                           for i in range(clients)))
    return log, added, time.perf_counter() - start


def verify_adds(base: str, added: list) -> dict:
    """Every acknowledged add exists and a search with its own image finds it among the top 10."""
    missing, not_found = 0, 0
    with httpx.Client(base_url=base, timeout=60) as http:
        for item_id, path in added:
            if http.get(f"/v1/items/{item_id}").status_code != 200:
                missing += 1
                continue
            with open(path, "rb") as f:
                hits = http.post("/v1/search", files={"image": ("q.jpg", f.read(), "image/jpeg")},
                                 data={"k": "10"}).json()["results"]
            # the same image may be stored several times (added again, or in the catalog already): top 10
            if item_id not in [h["item_id"] for h in hits] and not any(h["score"] > 0.9999 for h in hits):
                not_found += 1
    return {"acknowledged_adds": len(added), "missing": missing, "not_found_by_search": not_found}


def summarise(log: list, wall: float) -> dict:
    out = {"requests": len(log), "seconds": wall, "throughput_rps": len(log) / wall,
           "errors": sum(1 for _, _, status in log if status >= 400)}
    for kind in sorted({k for k, _, _ in log}):
        lat = np.array([t for k, t, _ in log if k == kind]) * 1000
        out[kind] = {"count": int(lat.size), "p50_ms": float(np.percentile(lat, 50)),
                     "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99))}
    return out


def prepare(runtime: str, run: str, catalog: str, images: list[str], work: str, int8_flags: list[str]) -> str:
    """The model file of ``runtime`` (the run itself, its ONNX export, or its INT8 quantisation), with ``catalog``
    re-embedded by it when it is not the catalog's own model (``catalog reindex``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if runtime == "eager":
        return run
    model = os.path.join(work, f"{runtime}.onnx")
    cmd = [sys.executable, "-m", "fashionlens", "export-onnx", "--model", run, "--out", model]
    if runtime == "int8":
        folder = os.path.join(work, "calibration")
        os.makedirs(folder, exist_ok=True)
        for i, path in enumerate(images[:: max(1, len(images) // 32)][:32]):
            os.symlink(os.path.abspath(path), os.path.join(folder, f"{i:03d}.jpg"))
        cmd += ["--int8", "--data", f"images:{folder}", "--calibration-images", "32", "--eval-images", "0",
                "--seconds", "0.2", *int8_flags]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "fashionlens", "catalog", "reindex", catalog, "--model", model],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return model


def load_one(model: str, catalog: str, images: list[str], args: argparse.Namespace, mix: dict[str, float]) -> dict:
    """One server for ``model`` on ``catalog``, the load, the verification of every acknowledged add."""
    port = free_port()
    server = start_server(model, catalog, port)
    base = f"http://127.0.0.1:{port}"
    try:
        log, added, wall = asyncio.run(run_load(base, images, args.clients, args.seconds, mix, args.max_requests))
        summary = summarise(log, wall)
        summary["verification"] = verify_adds(base, added)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--catalog", required=True, help="copied first: the benchmark never writes to it")
    parser.add_argument("--images", required=True, help="folder of JPEG query/upload images (recursive)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--mix", default="classify=0.4,search=0.4,add=0.2")
    parser.add_argument("--runtimes", nargs="+", default=["eager"], choices=("eager", "onnx", "int8"))
    parser.add_argument("--int8-flags", default="", help="extra export-onnx flags for int8, e.g. '--float-depthwise'")
    parser.add_argument("--out", default="load", help="result name under benchmarks/results/")
    args = parser.parse_args()
    mix = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    images = sorted(glob.glob(os.path.join(args.images, "**", "*.jpg"), recursive=True))[:500]
    if not images:
        raise SystemExit(f"no .jpg images under {args.images}")
    work = tempfile.mkdtemp(prefix="fl-load-")
    results: dict[str, dict] = {}
    try:
        for runtime in args.runtimes:
            catalog = shutil.copytree(args.catalog, os.path.join(work, f"catalog-{runtime}"))
            model = prepare(runtime, args.model, catalog, images, work, args.int8_flags.split())
            results[runtime] = load_one(model, catalog, images, args, mix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = results[args.runtimes[0]]["throughput_rps"]
    print(f"{args.clients} clients, {args.seconds:g} s per runtime, mix {args.mix}")
    print("| runtime | requests/s | x " + args.runtimes[0] + " | errors | " +
          " | ".join(f"{k} p50 / p95 / p99 ms" for k in mix) + " |")
    print("|---|---|---|---|" + "---|" * len(mix))
    for runtime, summary in results.items():
        summary["throughput_over_first"] = summary["throughput_rps"] / first
        cells = [f"{summary[k]['p50_ms']:.0f} / {summary[k]['p95_ms']:.0f} / {summary[k]['p99_ms']:.0f}"
                 if k in summary else "-" for k in mix]
        print(f"| {runtime} | {summary['throughput_rps']:.1f} | {summary['throughput_over_first']:.2f} | "
              f"{summary['errors']} | " + " | ".join(cells) + " |")
        print(f"  {runtime} verification: {summary['verification']}")
    payload = {"clients": args.clients, "mix": mix, "seconds_per_runtime": args.seconds, "model": args.model,
               "int8_flags": args.int8_flags, "runtimes": results}
    if len(results) == 1:  # the single-runtime layout of earlier runs
        payload.update(next(iter(results.values())))
    path = write(args.out, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
