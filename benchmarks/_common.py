"""Shared helpers of the training benchmarks: run a config, evaluate it, print a table, write JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
#: The real photos of ../shared/data (clothing-small: train/ and validation/ class folders); FASHIONLENS_PHOTOS overrides.
PHOTOS = os.environ.get("FASHIONLENS_PHOTOS",
                        os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "clothing-small")))


def train_and_evaluate(cfg: Any, run_dir: str, spec: str, split: str = "test") -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (from scratch), evaluate its best checkpoint on ``spec``'s ``split``."""
    from fashionlens.runs import evaluate_run
    from fashionlens.training.fit import fit

    start = time.perf_counter()
    summary = fit(cfg, run_dir, resume=False, progress=False, log=lambda m: print("   ", m, flush=True))
    minutes = (time.perf_counter() - start) / 60
    metrics = evaluate_run(run_dir, spec, split=split, progress=False)
    return {"train_minutes": minutes, "epochs": summary["epochs"], "stopped": summary["stopped"], **metrics}


def table(rows: dict[str, dict], columns: Sequence[str]) -> str:
    """Markdown table: one row per named result, the given metric columns ("-" where a row lacks one)."""
    head = "| run | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, r in rows.items():
        cells = [(f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load(name: str, empty: dict) -> dict:
    """benchmarks/results/NAME.json as written by :func:`write` (results merged run after run), else ``empty``."""
    path = os.path.join(RESULTS, f"{name}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return empty


def write(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    payload = {"machine": platform.machine(), "cpus": os.cpu_count(), **payload}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def rate(step: Callable[[], object], batch: int, seconds: float) -> float:
    """Images/s of ``step()`` (one batch) after one warm-up call, over at least ``seconds`` and 3 calls."""
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        step()
        done += 1
    return done * batch / (time.perf_counter() - start)
