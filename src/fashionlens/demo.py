"""The main job on the embedded default data: render garments, train a model, evaluate it.

Each step reuses what an earlier run left in ``workdir`` (a finished render, a finished training
run), so running the demo again is quick; ``fresh=True`` starts over.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable

from fashionlens.catalog import build
from fashionlens.config import RunConfig
from fashionlens.data.garments import render_dataset
from fashionlens.data.readers import read
from fashionlens.data.show import contact_sheet
from fashionlens.data.stats import dataset_stats, format_stats
from fashionlens.recipes import load_recipe
from fashionlens.runs import calibrate_run, calibration_path, evaluate_run
from fashionlens.runs.familiarity import familiarity_path, fit_familiarity
from fashionlens.training.fit import fit


@dataclass
class DemoSettings:
    workdir: str = "out/demo"  # where the render, the run and the reports go
    items: int = 300  # garment items rendered
    views: int = 6  # views per item
    size: int = 128  # rendered image side, pixels
    seed: int = 0  # render and training seed
    minutes: float = 5.0  # training time budget
    epochs: int = 12  # training epochs (the time budget may stop earlier)
    quick: bool = False  # tiny everything (tests): tiny CNN, 48 px, 2 epochs
    fresh: bool = False  # ignore what earlier runs left


def demo_config(s: DemoSettings, spec: str) -> RunConfig:
    cfg = load_recipe("garments")
    cfg.data.spec, cfg.seed, cfg.train.epochs, cfg.train.max_minutes = spec, s.seed, s.epochs, s.minutes
    if s.quick:
        cfg.model.backbone, cfg.model.pretrained, cfg.data.image_size = "tiny_cnn", False, 48
        cfg.train.epochs, cfg.train.pk_items, cfg.train.checkpoint_every = 2, 4, 0
    return cfg


def run_demo(s: DemoSettings, log: Callable[[str], None] = print) -> dict:
    """Render (or reuse) the garment set, train (or reuse) a model, evaluate it; returns paths and metrics."""
    if s.quick:
        s.items, s.views, s.size = min(s.items, 20), min(s.views, 4), min(s.size, 64)
    root, run = os.path.join(s.workdir, "garments"), os.path.join(s.workdir, "run")
    if s.fresh:
        shutil.rmtree(s.workdir, ignore_errors=True)
    if os.path.isfile(os.path.join(root, "garments.json")):
        log(f"reusing the rendered garment set in {root}")
    else:
        log(f"rendering {s.items} garment items x {s.views} views into {root}")
        render_dataset(root, items=s.items, views=s.views, size=s.size, seed=s.seed, progress=not s.quick)
    spec = f"garments:{root}"
    log(format_stats(dataset_stats(read(spec))))
    sheet = contact_sheet(read(spec), os.path.join(s.workdir, "garments_sheet.png"), n=48)
    log(f"contact sheet: {os.path.abspath(sheet)}")
    if os.path.isfile(os.path.join(run, "DONE")):
        log(f"reusing the trained model in {run}")
    else:
        log(f"training the multi-task model for at most {s.minutes:g} minutes into {run}")
        fit(demo_config(s, spec), run, resume=True, progress=not s.quick, log=log)
        open(os.path.join(run, "DONE"), "w").close()
    prepare_answers(run, spec, log=log)
    metrics = evaluate_run(run, spec, split="test", out_dir=os.path.join(s.workdir, "report"), progress=False)
    log(metrics_table(metrics))
    catalog = build_demo_catalog(spec, run, os.path.join(s.workdir, "catalog"), quick=s.quick, log=log)
    return {"data": spec, "run": run, "sheet": sheet, "report": os.path.join(s.workdir, "report"), "metrics": metrics,
            "catalog": catalog}


def prepare_answers(run: str, spec: str, *, log: Callable[[str], None] = print) -> None:
    """Calibrate the run on the validation split (hedged answers: the page asks for 90% first) and write its
    familiarity file (what it was trained on, for "not a garment I know"); kept when already there."""
    if not os.path.isfile(calibration_path(run)):
        state = calibrate_run(run, spec, split="val", progress=False)
        log(f"calibrated the model on the validation split (temperature {state['temperature']:.2f}): "
            f"{calibration_path(run)}")
    if not os.path.isfile(familiarity_path(run)):
        fit = fit_familiarity(run, spec, progress=False)
        log(f"familiarity: {fit['reference']} training photos, threshold {fit['threshold']:.3f} "
            f"(95% of validation photos are this close): {fit['path']}")


def build_demo_catalog(spec: str, run: str, directory: str, *, quick: bool = False, log=print) -> str:
    """A shop catalog: the shop photos of every rendered item, embedded by the trained model (resumable)."""
    data = read(spec)
    shop = data.where([s.domain == "shop" for s in data.samples])
    log(f"building the shop catalog ({len(shop)} shop photos) in {directory}")
    summary = build(directory, run, shop, progress=not quick)
    log(f"catalog: {summary['items']} items ({summary['added']} added now)")
    return directory


def metrics_table(metrics: dict) -> str:
    """The headline metrics as a small aligned table."""
    rows = [("category top-1 / top-3 / top-5", ("category_top1", "category_top3", "category_top5")),
            ("attribute recall top-3 / top-5", ("attribute_recall_top3", "attribute_recall_top5")),
            ("landmark normalized error", ("landmark_ne",)),
            ("in-shop retrieval top-1 / top-20", ("inshop_top1", "inshop_top20")),
            ("consumer-to-shop top-1 / top-20", ("c2s_top1", "c2s_top20"))]
    lines = [f"evaluation on the test split ({metrics.get('num_images')} images, DeepFashion metrics)"]
    for label, keys in rows:
        values = [metrics.get(k) for k in keys]
        shown = " / ".join("n/a" if v is None else f"{v:.3f}" for v in values)
        lines.append(f"  {label:<34} {shown}")
    return "\n".join(lines)
