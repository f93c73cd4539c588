"""Real clothing photos (../shared/data/clothing-small): transfer-learning strategies side by side.

    python benchmarks/bench_photos.py probe                   # linear probes on cached frozen features
    python benchmarks/bench_photos.py finetune [NAME ...]     # fine-tuning variants of the photos recipe
    python benchmarks/bench_photos.py shifted [NAME ...]      # fine-tuned runs on shifted validation photos
    python benchmarks/bench_photos.py ensemble NAME NAME ...  # their averaged probabilities, validation + shifted
    python benchmarks/bench_photos.py eval-scale [NAME ...] [--scales 1,1.2]  # runs tested at larger input sizes
    python benchmarks/bench_photos.py table                   # print what results/photos.json holds

``probe``: frozen ImageNet EfficientNet-Lite0/1/2 features (global-average-pooled last feature map, the
photo padded to a square) at several input sizes, with and without mirror test-time augmentation, cached
as .npz (``FASHIONLENS_CACHE`` or ~/.cache/fashionlens/photos-features), then a multinomial logistic
regression whose C is chosen by 5-fold cross-validation on the TRAIN split only; scored once on validation.

``finetune``: the ``photos`` recipe and variants of it (strategy, size, ingredients), each trained with
the same wall-clock budget on this CPU and scored on validation (plain and with mirror TTA).

``shifted``: the validation photos under four named distribution shifts
(``fashionlens.evaluation.distortions.shift``: zoomed out on a plain background, low resolution + JPEG,
dull warm lighting, centre crop), written once as image folders, and every fine-tuned run (``finetune``
also does this at its end) scored on each: a proxy for photos from other senders, which this split lacks.

``eval-scale``: trained runs tested (validation and its shifted copies) with the input side at
``image_size`` x 1.0 ... 1.267 (``data.eval_scale``, FixRes): random-resized-crop training shows garments
larger than the whole-photo eval transform does, and testing at a higher resolution closes that gap.

Results are merged into benchmarks/results/photos.json (one entry per variant), so the sections can be
run separately.  Validation (341 photos) is used to choose between variants; its standard error at 0.9
accuracy is about 0.016, so differences below ~0.02 are not a ranking.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PHOTOS, RESULTS, load, write  # noqa: E402

DATA = PHOTOS
RESULT = "photos"
PROBES = [  # (backbone, input size, mirror TTA)
    ("tf_efficientnet_lite0", 160, False), ("tf_efficientnet_lite0", 224, False), ("tf_efficientnet_lite0", 224, True),
    ("tf_efficientnet_lite0", 260, True), ("tf_efficientnet_lite1", 240, True), ("tf_efficientnet_lite2", 260, True),
]


def _load() -> dict:
    return load(RESULT, {"rows": {}})


def _save(rows: dict) -> str:
    return write(RESULT, {"data": os.path.abspath(DATA), "rows": rows})


def _data():
    from fashionlens.data.readers import read

    if not os.path.isdir(DATA):
        sys.exit(f"skipped: {DATA} not found (set FASHIONLENS_PHOTOS to the clothing-small folder)")
    data = read(f"folder:{DATA}")
    train = [s for s in data if s.split == "train"]
    val = [s for s in data if s.split == "val"]
    return data.info, train, val


def _scores(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    per_class = {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes) if (y == k).any()}
    return {"val_accuracy": float((pred == y).mean()), "val_mean_class_accuracy": float(np.mean(list(per_class.values()))),
            "per_class": per_class}


def probe() -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fashionlens.audit.features import compute_features

    info, train, val = _data()
    cache = os.path.join(os.environ.get("FASHIONLENS_CACHE", os.path.expanduser("~/.cache/fashionlens")),
                         "photos-features")
    rows = _load()["rows"]
    for backbone, size, flip in PROBES:
        name = f"probe {backbone.replace('tf_efficientnet_', '')} {size}px" + (" +flip" if flip else "")
        start = time.perf_counter()
        xs = {}
        for split, samples in (("train", train), ("val", val)):
            vectors, kept = compute_features(samples, f"imagenet:{backbone}", image_size=size, flip=flip,
                                             cache_dir=cache)
            xs[split] = (vectors, np.array([samples[i].category for i in kept]))
        feat_s = time.perf_counter() - start
        start = time.perf_counter()
        clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.003, 0.01, 0.03, 0.1, 0.3], cv=5,
                                                                   l1_ratios=(0.0,), scoring="accuracy",
                                                                   use_legacy_attributes=True, max_iter=2000,
                                                                   n_jobs=1))
        clf.fit(*xs["train"])
        fit_s = time.perf_counter() - start
        pred = clf.predict(xs["val"][0])
        rows[name] = {"strategy": "linear probe (frozen features, logistic regression)", "backbone": backbone,
                      "image_size": size, "tta_flip": flip, "C": float(clf[-1].C_[0]),
                      "feature_seconds": feat_s, "fit_seconds": fit_s, **_scores(xs["val"][1], pred, info.categories)}
        print(f"{name}: val acc {rows[name]['val_accuracy']:.4f}  mean-class {rows[name]['val_mean_class_accuracy']:.4f}"
              f"  (C={rows[name]['C']}, features {feat_s:.0f} s, fit {fit_s:.0f} s)", flush=True)
        _save(rows)
    return rows


# name -> (--set style overrides of the photos recipe, minutes of training budget)
LITE0 = ["model.backbone=tf_efficientnet_lite0", "data.image_size=224", "data.eval_scale=1.0"]  # the first recipe
FINETUNE = {
    "head + last 4 stages (recipe), 12 min": ([*LITE0], 12),
    "full fine-tuning, layer-wise LR, 12 min": ([*LITE0, "model.frozen_stages=0", "train.layer_decay=0.7"], 12),
    "full fine-tuning, layer-wise LR, 30 min": ([*LITE0, "model.frozen_stages=0", "train.layer_decay=0.7"], 30),
    "head + last 2 stages, 12 min": ([*LITE0, "model.frozen_stages=5"], 12),
    # Ingredient variants: the same 5 epochs as the 12-minute recipe row (same cost per step, so same time).
    "recipe + class-balanced sampling (sqrt), 12 min": ([*LITE0, "train.balance=0.5", "train.epochs=5"], 12),
    "recipe with light augmentation (flip + mild crops only), 12 min": (
        [*LITE0, "data.rrc_scale=[0.8,1.0]", "data.rotation_degrees=0", "data.color_jitter=0", "data.random_erasing=0",
         "train.epochs=5"], 12),
    "recipe without label smoothing, 12 min": ([*LITE0, "loss.label_smoothing=0.0", "train.epochs=5"], 12),
    "self-supervised pre-training 5 min, then recipe 12 min": ([*LITE0, "train.epochs=5"], 12),
    # Second seed of the pair above (and its control: the recipe for the same 5 epochs with the same seed).
    "recipe 5 epochs, seed 1": ([*LITE0, "train.epochs=5", "seed=1"], 12),
    "self-supervised pre-training 5 min, then recipe 12 min, seed 1": ([*LITE0, "train.epochs=5", "seed=1"], 12),
    "Lite0 224 recipe (session 2), 30 min": ([*LITE0, "train.epochs=14"], 30),
    "recipe, 30 min": ([], 30),
    "recipe, 30 min, seed 1": (["seed=1"], 30),
    "recipe without label smoothing, 30 min": (["loss.label_smoothing=0.0", "train.epochs=8"], 30),
    # Open-set search (bench_openset): feature distillation to the frozen backbone + search with its pooled features
    # too; does ten-class accuracy hold, inside the same 30 minutes (the frozen teacher's forward costs time)?
    "recipe + feature distillation (weight 10), search_pooled 2, 30 min": (
        ["loss.distill=10.0", "model.search_pooled=2.0", "train.epochs=8"], 30),
    # Knowledge distillation (train.teachers + loss.kd): two 15-minute teachers, then a recipe student that
    # learns their averaged probabilities on its own augmented batches (the teachers' cost is in its 30 min).
    # (epochs fixed: the 6-step rate probe measured 11 images/s for the recipe, which trains at ~19)
    "teacher: Lite1 240 recipe, 15 min": (["train.epochs=5"], 15),
    "teacher: Lite2 260, 3 frozen, 15 min": (["model.backbone=tf_efficientnet_lite2", "data.image_size=260",
                                               "train.epochs=4"], 15),
}
TEACHERS = ("teacher: Lite1 240 recipe, 15 min", "teacher: Lite2 260, 3 frozen, 15 min")


def run_dir_of(name: str) -> str:
    root = os.environ.get("FASHIONLENS_RUNS", "/tmp/fashionlens-photos-runs")
    return os.path.join(root, name.replace(" ", "_").replace(",", "").replace("+", "p").replace(":", ""))


FINETUNE["recipe distilled from the two 15-min teachers (kd 1, T 2), 30 min"] = (
    [f"train.teachers=[{run_dir_of(TEACHERS[0])!r}, {run_dir_of(TEACHERS[1])!r}]", "loss.kd=1.0", "train.epochs=6"], 30)
# Variants that first pre-train on the training images without their labels (instance discrimination:
# each photo is its own identity, two augmented views per batch, NT-Xent), then fine-tune from that backbone.
PRETRAIN = {
    "self-supervised pre-training 5 min, then recipe 12 min": (
        [*LITE0, "train.instance_views=2", "train.pk_items=16", "train.pk_images=2", "loss.metric_loss=ntxent",
         "loss.metric=1.0", "loss.category=0.0", "train.select_metric=train_loss", "train.ema_decay=0.0",
         "model.tta_flip=false", "data.color_jitter=0.4", "data.rrc_scale=[0.2,1.0]"], 5),
}
PRETRAIN["self-supervised pre-training 5 min, then recipe 12 min, seed 1"] = (
    [*PRETRAIN["self-supervised pre-training 5 min, then recipe 12 min"][0], "seed=1"], 5)


def measure_rate(cfg, steps: int = 6) -> float:
    """Training images/s of ``cfg`` on this machine with its real data pipeline (after one warm-up step)."""
    from fashionlens.training.fit import Trainer

    probe = Trainer(cfg, os.path.join("/tmp", "fashionlens-rate-probe"), progress=False, log=lambda *_: None)
    try:
        from fashionlens.training.fit import epoch_batches, make_loader
        from fashionlens.training.loop import train_one_epoch

        batches = list(epoch_batches(probe.train_ds, probe.cfg, 0))[: steps + 1]
        rates = []
        for part in (batches[:1], batches[1:]):  # warm-up batch (worker start, first allocations), then timed
            metrics, _ = train_one_epoch(probe.train_module, make_loader(probe.train_ds, probe.cfg, part, device=probe.device),
                                         probe.optimizer, step=0, lr_fn=lambda _s: 1e-5, device=probe.device,
                                         precision=probe.precision, channels_last=probe.cfg.train.channels_last,
                                         progress=False)
            rates.append(metrics["train_images_per_s"])
        return rates[-1]
    finally:
        probe.close()


def budget_epochs(cfg, minutes: float, n_train: int, n_val: int) -> tuple[int, float]:
    """Epochs that fit ``minutes`` at the measured rate, leaving time for one validation pass per epoch."""
    rate = measure_rate(cfg)
    val_s = n_val * (2 if cfg.model.tta_flip else 1) / (rate * 2.5)  # inference ~2.5x a training step
    epoch_s = n_train / rate + val_s
    return max(1, int(minutes * 60 * 0.92 / epoch_s)), rate


def evaluate_without_averaging(run_dir: str, spec: str) -> float | None:
    """Validation accuracy of the run's last *optimised* weights (``train_model``), i.e. without EMA."""
    from fashionlens.runs import evaluate_run
    from fashionlens.training.checkpoint import load_checkpoint, save_checkpoint

    last = load_checkpoint(os.path.join(run_dir, "last.pt"))
    if "train_model" not in last:
        return None
    raw_dir = os.path.join(run_dir, "without-ema")
    os.makedirs(raw_dir, exist_ok=True)
    save_checkpoint(os.path.join(raw_dir, "last.pt"), {**last, "model": last["train_model"]})
    return evaluate_run(raw_dir, spec, split="val", progress=False)["category_top1"]


def finetune(names: list[str]) -> dict:
    from fashionlens.config import apply_overrides
    from fashionlens.recipes import load_recipe
    from fashionlens.runs import evaluate_run
    from fashionlens.training.fit import fit

    info, train, val = _data()
    rows = _load()["rows"]
    for name in names or list(FINETUNE):
        overrides, minutes = FINETUNE[name]
        run_dir = run_dir_of(name)
        pre_minutes = 0.0
        if name in PRETRAIN:
            pre_set, pre_budget = PRETRAIN[name]
            pre = load_recipe("photos")
            pre.data.spec = f"folder:{DATA}"
            apply_overrides(pre, pre_set)
            pre.train.epochs, _ = budget_epochs(pre, pre_budget, len(train), len(val))
            pre.train.max_minutes = float(pre_budget)
            start = time.perf_counter()
            fit(pre, run_dir + "-pretrain", resume=False, progress=False, log=lambda m: print("   ", m, flush=True))
            pre_minutes = (time.perf_counter() - start) / 60
            overrides = [*overrides, f"train.init_from={run_dir}-pretrain"]
        cfg = load_recipe("photos")
        cfg.data.spec = f"folder:{DATA}"
        apply_overrides(cfg, overrides)
        fixed = any(a.startswith("train.epochs=") for a in overrides)
        if not fixed and (minutes != 30 or [a for a in overrides if not a.startswith("seed=")]):  # the recipe's epochs fit 30 min; else measure and fit
            cfg.train.epochs, rate = budget_epochs(cfg, minutes, len(train), len(val))
            print(f"{name}: {rate:.1f} img/s measured -> {cfg.train.epochs} epochs in {minutes} min", flush=True)
        cfg.train.max_minutes = float(minutes)
        start = time.perf_counter()
        summary = fit(cfg, run_dir, resume=False, progress=False, log=lambda m: print("   ", m, flush=True))
        train_min = (time.perf_counter() - start) / 60
        row = {"strategy": name, "overrides": overrides, "budget_minutes": minutes, "train_minutes": train_min,
               "eval_scale": cfg.data.eval_scale,
               "pretrain_minutes": pre_minutes,
               "epochs": summary["epochs"], "stopped": summary["stopped"], "run_dir": run_dir}
        for tta in (False, True):
            m = evaluate_run(run_dir, cfg.data.spec, split="val", progress=False, tta=tta)
            key = "val_accuracy_tta" if tta else "val_accuracy_plain"
            row[key] = m["category_top1"]
            if tta == cfg.model.tta_flip:
                per_class = dict(zip(info.categories, m["category_per_class"]))
                row.update(val_accuracy=m["category_top1"], per_class=per_class,
                           val_mean_class_accuracy=float(np.nanmean([v for v in per_class.values() if v is not None])))
        row["val_accuracy_last_without_ema"] = evaluate_without_averaging(run_dir, cfg.data.spec)
        rows[name] = row
        print(f"{name}: val acc {row['val_accuracy']:.4f} (plain {row['val_accuracy_plain']:.4f}, "
              f"mirror TTA {row['val_accuracy_tta']:.4f}), {train_min:.1f} min, {row['epochs']} epochs", flush=True)
        _save(rows)
    return rows


def shifted_folders() -> dict[str, str]:
    """kind -> image-folder root whose validation/ holds the shifted validation photos (train/ links to the
    real training folder, so class names and order are the same); written once under FASHIONLENS_CACHE."""
    from PIL import Image

    from fashionlens.evaluation.distortions import SHIFTS, shift

    _data()
    cache = os.environ.get("FASHIONLENS_CACHE", os.path.expanduser("~/.cache/fashionlens"))
    roots = {}
    for kind in SHIFTS:
        root = os.path.join(cache, "photos-shifted", kind)
        done = os.path.join(root, ".complete")
        if not os.path.isfile(done):
            os.makedirs(root, exist_ok=True)
            if not os.path.islink(os.path.join(root, "train")):
                os.symlink(os.path.abspath(os.path.join(DATA, "train")), os.path.join(root, "train"))
            src = os.path.join(DATA, "validation")
            for cls in sorted(os.listdir(src)):
                os.makedirs(os.path.join(root, "validation", cls), exist_ok=True)
                for i, name in enumerate(sorted(os.listdir(os.path.join(src, cls)))):
                    with Image.open(os.path.join(src, cls, name)) as im:
                        out = shift(im, kind, 1000 + i)
                    out.save(os.path.join(root, "validation", cls, os.path.splitext(name)[0] + ".png"))
            open(done, "w").close()
        roots[kind] = root
    return roots


def _trained_runs(rows: dict, names: list[str]):
    """(name, run directory) of each named row (default: every row with a run) whose run is on disk."""
    for name in names or [n for n, r in rows.items() if r.get("run_dir")]:
        run_dir = rows.get(name, {}).get("run_dir", "")
        if os.path.isfile(os.path.join(run_dir, "last.pt")):
            yield name, run_dir
        else:
            print(f"{name}: no run at {run_dir!r}, skipped", flush=True)


def score_shifted(names: list[str]) -> dict:
    """Validation accuracy of each fine-tuned run (its own TTA setting) on every shifted copy of validation."""
    from fashionlens.runs import evaluate_run

    rows = _load()["rows"]
    roots = shifted_folders()
    for name, run_dir in _trained_runs(rows, names):
        acc = {kind: evaluate_run(run_dir, f"folder:{root}", split="val", progress=False)["category_top1"]
               for kind, root in roots.items()}
        rows[name]["val_shifted"] = acc
        rows[name]["val_shifted_mean"] = float(np.mean(list(acc.values())))
        print(f"{name}: shifted validation " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
              + f"; mean {rows[name]['val_shifted_mean']:.3f}", flush=True)
        _save(rows)
    return rows


EVAL_SCALES = (1.0, 1.133, 1.2, 1.267)  # 240 px training -> 240, 272, 288, 304 px testing


def score_ensemble(names: list[str]) -> dict:
    """The ensemble of the named runs (``evaluate_run`` with a list: mean probabilities, each member with its own
    input size and TTA), on validation and on every shifted copy, as one more row."""
    from fashionlens.runs import evaluate_run

    rows = _load()["rows"]
    members = list(_trained_runs(rows, names))
    if len(members) < 2:
        raise SystemExit("ensemble: name at least two trained rows")
    runs = [run_dir for _, run_dir in members]
    name = "ensemble of " + " + ".join(n for n, _ in members)
    val = evaluate_run(runs, f"folder:{DATA}", split="val", progress=False)
    acc = {kind: evaluate_run(runs, f"folder:{root}", split="val", progress=False)["category_top1"]
           for kind, root in shifted_folders().items()}
    rows[name] = {"strategy": name, "members": [n for n, _ in members], "val_accuracy": val["category_top1"],
                  "train_minutes": float(sum(rows[n].get("train_minutes", 0.0) for n, _ in members)),
                  "val_shifted": acc, "val_shifted_mean": float(np.mean(list(acc.values())))}
    print(f"{name}: val acc {val['category_top1']:.4f}; shifted mean {rows[name]['val_shifted_mean']:.3f}", flush=True)
    _save(rows)
    return rows


def score_eval_scales(names: list[str], scales: tuple[float, ...] = EVAL_SCALES) -> dict:
    """Each run's validation and shifted-validation accuracy (its own TTA setting) at several eval scales."""
    from fashionlens.runs import evaluate_run

    rows, n_val = _load()["rows"], len(_data()[2])
    specs = {"val": f"folder:{DATA}", **{k: f"folder:{v}" for k, v in shifted_folders().items()}}
    for name, run_dir in _trained_runs(rows, names):
        table = rows[name].setdefault("eval_scales", {})
        for scale in scales:
            start = time.perf_counter()
            acc = {kind: evaluate_run(run_dir, spec, split="val", progress=False, eval_scale=scale)["category_top1"]
                   for kind, spec in specs.items()}
            shifted = float(np.mean([v for k, v in acc.items() if k != "val"]))
            table[f"{scale:g}"] = {**acc, "shifted_mean": shifted,
                                   "seconds_per_image": (time.perf_counter() - start) / (len(specs) * n_val)}
            print(f"{name} @ eval_scale {scale:g}: val {acc['val']:.3f}, shifted mean {shifted:.3f} ("
                  + ", ".join(f"{k} {v:.3f}" for k, v in acc.items() if k != "val") + ")", flush=True)
            _save(rows)
    return rows


def show(rows: dict) -> None:
    cols = ("val_accuracy", "val_mean_class_accuracy", "val_shifted_mean", "train_minutes", "epochs")
    print("| variant | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for name, r in rows.items():
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    scaled = {name: r["eval_scales"] for name, r in rows.items() if r.get("eval_scales")}
    if scaled:
        print("\n| run | eval_scale | val | zoomout | lowres | lighting | crop | shifted mean | s/image (x5 sets) |")
        print("|" + "---|" * 9)
        for name, table in scaled.items():
            for scale, m in sorted(table.items(), key=lambda t: float(t[0])):
                cells = [f"{m.get(k, float('nan')):.4f}" for k in
                         ("val", "zoomout", "lowres", "lighting", "crop", "shifted_mean", "seconds_per_image")]
                print(f"| {name} | {scale} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("section", choices=("probe", "finetune", "shifted", "ensemble", "eval-scale", "table"))
    ap.add_argument("names", nargs="*")
    ap.add_argument("--scales", default=",".join(f"{s:g}" for s in EVAL_SCALES),
                    help="eval-scale: comma-separated eval_scale values (default %(default)s)")
    args = ap.parse_args()
    if args.section == "probe":
        probe()
    elif args.section == "finetune":
        finetune(args.names)
        score_shifted(args.names or list(FINETUNE))
    elif args.section == "shifted":
        score_shifted(args.names)
    elif args.section == "ensemble":
        score_ensemble(args.names)
    elif args.section == "eval-scale":
        score_eval_scales(args.names, tuple(float(v) for v in args.scales.split(",")))
    show(_load()["rows"])
    print(f"wrote {os.path.join(RESULTS, RESULT + '.json')}")


if __name__ == "__main__":
    main()
