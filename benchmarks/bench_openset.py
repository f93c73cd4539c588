"""Open-set retrieval on real photos: search quality on garment classes the model never trained on.

    python benchmarks/bench_openset.py [--splits 3] [--variants NAME ...] [--epochs 4] [--image-size 192]
    python benchmarks/bench_openset.py wise [--alpha 0.5]   # weight-space ensembles of the trained runs
    python benchmarks/bench_openset.py concat [--weights 0.5 1]  # frozen features + trained embedding, side by side
    python benchmarks/bench_openset.py pooled --variant NAME [--weights 0.5 1]  # one run searching with model.search_pooled
    python benchmarks/bench_openset.py table

The deep-metric-learning protocol (Musgrave et al., "A Metric Learning Reality Check", 2020) on
clothing-small: its ten classes are split into five training classes and five test classes, disjoint
(``--splits`` seeded random splits).  Every variant of the ``photos`` recipe trains (through the product's
own trainer, ``fashionlens.training.fit``) on the training classes' train photos only; then every photo of
the five test classes (train and validation folders; at most ``--per-class`` of each class, evenly spaced,
so that t-shirts do not make up a third of the queries) is embedded and each one queries all the others: Recall@1/2/4/8 (a same-class photo among the K nearest) and MAP@R from pytorch-metric-learning's
``AccuracyCalculator`` (``fashionlens.evaluation.recall_at_k_and_map_at_r``).

The reference is the frozen ImageNet backbone of the same recipe (EfficientNet-Lite1, global-average-pooled
last feature map, same input size, mirror averaged): what search gives before any training.  Seen-class
search (validation photos of the training classes) is reported next to it, so an open-set gain that costs
the training classes shows.

``wise``: WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022) without any training: each
trained run of the shipped variant with its backbone weights interpolated towards the ImageNet ones,
``(1 - alpha) * pretrained + alpha * fine-tuned``, scored the same way.

Runs go to FASHIONLENS_RUNS (default /tmp/fashionlens-openset-runs); results are merged into
benchmarks/results/openset.json (per split and the mean over splits).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PHOTOS, load, write  # noqa: E402

RESULT = "openset"
KS = (1, 2, 4, 8)
BACKBONE = "tf_efficientnet_lite1"
# name -> --set overrides of the photos recipe (the recipe itself trains classification only)
VARIANTS: dict[str, list[str]] = {
    "photos recipe (multi-similarity on categories, embedding from pooled features)": [],
    "classification only (the recipe before)": ["loss.metric=0", "model.embedding_from=fused"],
    "recipe + mined multi-similarity (epsilon 0.1)": ["loss.ms_epsilon=0.1"],
    "recipe with supcon + feature distillation": ["loss.metric_loss=supcon", "loss.temperature=0.1",
                                                   "loss.distill=2.0"],
    "recipe with 5 of 7 stages frozen (only the last two and the heads train)": ["model.frozen_stages=5"],
    "recipe with LP-FT (1 epoch heads only, then all)": ["train.head_epochs=1"],
    "recipe with a 512-d embedding": ["model.embedding_dim=512"],
    "recipe with the backbone at 0.1x the learning rate": ["train.backbone_lr_scale=0.1"],
    "recipe + feature distillation to the frozen backbone (weight 2)": ["loss.distill=2.0"],
    "recipe + feature distillation to the frozen backbone (weight 10)": ["loss.distill=10.0"],
    "recipe + feature distillation to the frozen backbone (weight 30)": ["loss.distill=30.0"],
}
SHIPPED = next(iter(VARIANTS))


def class_splits(classes: list[str], n: int) -> list[tuple[list[str], list[str]]]:
    """``n`` seeded splits of ``classes`` into disjoint (train, test) halves; no split repeats."""
    out, seen = [], set()
    rng = random.Random(0)
    while len(out) < n:
        order = sorted(classes)
        rng.shuffle(order)
        train = tuple(sorted(order[: len(order) // 2]))
        if train in seen:
            continue
        seen.add(train)
        out.append((list(train), sorted(set(classes) - set(train))))
    return out


def link_folders(root: str, classes: list[str], dest: str) -> str:
    """An image folder at ``dest`` holding only ``classes`` (symlinks to root/<split>/<class>)."""
    for split in ("train", "validation"):
        os.makedirs(os.path.join(dest, split), exist_ok=True)
        for cls in classes:
            link = os.path.join(dest, split, cls)
            if not os.path.islink(link):
                os.symlink(os.path.abspath(os.path.join(root, split, cls)), link)
    return dest


def scores(vectors: np.ndarray, labels: np.ndarray) -> dict:
    from fashionlens.evaluation.retrieval import recall_at_k_and_map_at_r

    m = recall_at_k_and_map_at_r(vectors, labels, ks=KS)
    return {**{f"R@{k}": float(v) for k, v in m["recall_at_k"].items()}, "MAP@R": float(m["map_at_r"])}


def embed(samples, model: str, image_size: int, kind: str, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    from fashionlens.audit.features import compute_features

    vectors, rows = compute_features(samples, model, image_size=image_size, kind=kind, flip=flip, batch_size=32)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors, np.array([samples[i].category_name for i in rows])


def per_class(samples: list, limit: int) -> list:
    """At most ``limit`` samples of each class, evenly spaced over its sorted list (0 = all)."""
    out = []
    for cls in sorted({s.category_name for s in samples}):
        group = [s for s in samples if s.category_name == cls]
        if 0 < limit < len(group):
            group = [group[i] for i in np.linspace(0, len(group) - 1, limit).round().astype(int)]
        out += group
    return out


def run(n_splits: int, variants: list[str], epochs: int, image_size: int, work: str, per_class_limit: int) -> dict:
    from fashionlens.config import apply_overrides
    from fashionlens.data.readers import read
    from fashionlens.recipes import load_recipe
    from fashionlens.training.fit import fit

    if not os.path.isdir(PHOTOS):
        sys.exit(f"skipped: {PHOTOS} not found (set FASHIONLENS_PHOTOS to the clothing-small folder)")
    classes = read(f"folder:{PHOTOS}").info.categories
    results = _load()
    eval_size = round(image_size * load_recipe("photos").data.eval_scale)
    for s, (train_classes, test_classes) in enumerate(class_splits(classes, n_splits)):
        key = f"split {s}"
        split_rows = results["splits"].setdefault(key, {"train_classes": train_classes,
                                                        "test_classes": test_classes, "rows": {}})["rows"]
        train_root = link_folders(PHOTOS, train_classes, os.path.join(work, f"split{s}", "train-classes"))
        test_root = link_folders(PHOTOS, test_classes, os.path.join(work, f"split{s}", "test-classes"))
        test = per_class(list(read(f"folder:{test_root}")), per_class_limit)
        seen = list(read(f"folder:{train_root}").split("val"))
        print(f"{key}: train on {', '.join(train_classes)}; test on {', '.join(test_classes)} "
              f"({len(test)} photos)", flush=True)
        name = f"frozen ImageNet {BACKBONE.replace('tf_efficientnet_', '')} (no training)"
        if name not in split_rows:
            start = time.perf_counter()
            row = {"unseen": scores(*embed(test, f"imagenet:{BACKBONE}", eval_size, "features", True)),
                   "seen": scores(*embed(seen, f"imagenet:{BACKBONE}", eval_size, "features", True)),
                   "embed_seconds": time.perf_counter() - start}
            split_rows[name] = row
            _report(name, row)
            _save(results)
        for variant in variants:
            run_dir = os.path.join(work, f"split{s}", _run_name(variant))
            if variant in split_rows:
                if "seen_top1" not in split_rows[variant] and os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
                    split_rows[variant]["seen_top1"] = _val_top1(run_dir)  # rows recorded before it was kept
                    _save(results)
                continue
            cfg = load_recipe("photos")
            cfg.data.spec = f"folder:{train_root}"
            apply_overrides(cfg, [*VARIANTS[variant], f"train.epochs={epochs}", f"data.image_size={image_size}",
                                  "train.max_minutes=0"])
            start = time.perf_counter()
            fit(cfg, run_dir, resume=False, progress=False, log=lambda m: None)
            train_min = (time.perf_counter() - start) / 60
            row = {"overrides": VARIANTS[variant], "epochs": epochs, "image_size": image_size,
                   "train_minutes": train_min, "unseen": scores(*embed(test, run_dir, 0, "embedding", False)),
                   "seen": scores(*embed(seen, run_dir, 0, "embedding", False)), "seen_top1": _val_top1(run_dir)}
            split_rows[variant] = row
            _report(variant, row)
            _save(results)
    results["mean"] = _means(results["splits"])
    _save(results)
    return results


def wise(alpha: float, work: str, per_class_limit: int, variant: str = SHIPPED) -> dict:
    """Score the weight-space ensemble of every split's trained ``variant`` run with the pretrained backbone."""
    from fashionlens.models.backbones import create_backbone
    from fashionlens.training.checkpoint import load_checkpoint

    results = _load()
    for s, (key, split) in enumerate(sorted(results["splits"].items())):
        run_dir = os.path.join(work, f"split{s}", _run_name(variant))
        name = f"{variant}, WiSE-FT alpha {alpha:g}"
        if variant not in split["rows"] or name in split["rows"] or not os.path.isfile(os.path.join(run_dir, "best.pt")):
            continue
        ckpt = load_checkpoint(os.path.join(run_dir, "best.pt"))
        pretrained = create_backbone(ckpt["config"]["model"]["backbone"], pretrained=True).state_dict()
        model = dict(ckpt["model"])
        for k, v in pretrained.items():
            if f"backbone.{k}" in model and v.dtype.is_floating_point:
                model[f"backbone.{k}"] = (1 - alpha) * v + alpha * model[f"backbone.{k}"]
        averaged = {k: v for k, v in ckpt.items() if k != "train_model"} | {"model": model}
        row = {"alpha": alpha, **_score_copy(averaged, run_dir + f"-wise{alpha:g}", _query_sets(work, s, per_class_limit))}
        split["rows"][name] = row
        _report(name, row)
        _save(results)
    results["mean"] = _means(results["splits"])
    _save(results)
    return results


def concat(weights: list[float], work: str, per_class_limit: int, image_size: int, variant: str = SHIPPED) -> dict:
    """Search with the frozen ImageNet features and the trained embedding side by side, no training:
    ``normalize([frozen, w * trained])`` for each weight ``w``, per split with a trained ``variant`` run."""
    from fashionlens.recipes import load_recipe

    results = _load()
    eval_size = round(image_size * load_recipe("photos").data.eval_scale)
    for s, (key, split) in enumerate(sorted(results["splits"].items())):
        run_dir = os.path.join(work, f"split{s}", _run_name(variant))
        if variant not in split["rows"] or not os.path.isfile(os.path.join(run_dir, "best.pt")):
            continue
        sets = _query_sets(work, s, per_class_limit)
        frozen = {part: embed(v, f"imagenet:{BACKBONE}", eval_size, "features", True) for part, v in sets.items()}
        trained = {part: embed(v, run_dir, 0, "embedding", False)[0] for part, v in sets.items()}
        for w in weights:
            row: dict = {"weight": w}
            for part in sets:
                both = np.concatenate([frozen[part][0], w * trained[part]], 1)
                row[part] = scores(both / np.linalg.norm(both, axis=1, keepdims=True), frozen[part][1])
            name = f"frozen ImageNet features + {w:g} x trained embedding (concatenated)"
            split["rows"][name] = row
            _report(name, row)
    results["mean"] = _means(results["splits"])
    _save(results)
    return results


def pooled(weights: list[float], work: str, per_class_limit: int, variant: str) -> dict:
    """One backbone, two vectors, through the product: a trained run searching with ``model.search_pooled``
    = 1 / ``w`` (normalised ``[pooled backbone features, w * embedding]``, each view, mirror averaged; see
    ``FashionNet``), its checkpoint copied with that setting.  With ``loss.distill`` the pooled features stay
    ImageNet-like, so this asks whether one pass of one network gives what the frozen + trained concatenation
    (``concat``) gives with two."""
    from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint

    results = _load()
    for s, (key, split) in enumerate(sorted(results["splits"].items())):
        run_dir = os.path.join(work, f"split{s}", _run_name(variant))
        if variant not in split["rows"] or not os.path.isfile(os.path.join(run_dir, "best.pt")):
            continue
        sets = _query_sets(work, s, per_class_limit)
        for w in weights:
            ckpt = load_checkpoint(find_checkpoint(run_dir))
            ckpt["config"]["model"]["search_pooled"] = 1 / w
            row = {"weight": w, "search_pooled": 1 / w,
                   **_score_copy(ckpt, f"{run_dir}-search_pooled{1 / w:g}", sets)}
            name = (f"{variant}, searching with model.search_pooled={1 / w:g} "
                    f"(its pooled features + {w:g} x its embedding)")
            split["rows"][name] = row
            _report(name, row)
            _save(results)
    results["mean"] = _means(results["splits"])
    _save(results)
    return results


def _score_copy(ckpt: dict, out: str, sets: dict) -> dict:
    """Scores on each query set of ``sets`` of a changed copy of a run's checkpoint, written to ``out``/best.pt."""
    from fashionlens.training.checkpoint import save_checkpoint

    os.makedirs(out, exist_ok=True)
    save_checkpoint(os.path.join(out, "best.pt"), ckpt)
    return {part: scores(*embed(samples, out, 0, "embedding", False)) for part, samples in sets.items()}


def _query_sets(work: str, s: int, per_class_limit: int) -> dict:
    """Split ``s``'s query sets: test-class photos (at most ``per_class_limit`` per class), training-class val photos."""
    from fashionlens.data.readers import read

    split_dir = os.path.join(work, f"split{s}")
    return {"unseen": per_class(list(read(f"folder:{os.path.join(split_dir, 'test-classes')}")), per_class_limit),
            "seen": list(read(f"folder:{os.path.join(split_dir, 'train-classes')}").split("val"))}


def _val_top1(run_dir: str) -> float:
    """The run's classification accuracy on its training classes' validation photos (last epoch): what
    fine-tuning is for must not fall while open-set search improves."""
    import json

    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return float(json.loads(f.read().strip().splitlines()[-1])["val_category_top1"])


def _run_name(variant: str) -> str:
    return variant.replace(" ", "_").replace(",", "").replace("+", "p")


def _report(name: str, row: dict) -> None:
    u, s = row["unseen"], row["seen"]
    print(f"   {name}: unseen R@1 {u['R@1']:.3f} MAP@R {u['MAP@R']:.3f} | seen R@1 {s['R@1']:.3f} "
          f"MAP@R {s['MAP@R']:.3f}" + (f" ({row['train_minutes']:.1f} min)" if "train_minutes" in row else ""),
          flush=True)


def _means(splits: dict) -> dict:
    """Per variant: the mean (and spread) of every score over the splits that have it."""
    out: dict = {}
    names = {n for sp in splits.values() for n in sp["rows"]}
    for name in sorted(names):
        rows = [sp["rows"][name] for sp in splits.values() if name in sp["rows"]]
        entry: dict = {"splits": len(rows)}
        for part in ("unseen", "seen"):
            if all(part in r for r in rows):
                entry[part] = {m: float(np.mean([r[part][m] for r in rows])) for m in rows[0][part]}
                entry[part + "_std"] = {m: float(np.std([r[part][m] for r in rows])) for m in rows[0][part]}
        top1 = [r["seen_top1"] for r in rows if "seen_top1" in r]  # trained rows only (older rows lack it)
        if top1:
            entry["seen_top1"], entry["seen_top1_splits"] = float(np.mean(top1)), len(top1)
        out[name] = entry
    return out


def table(results: dict) -> str:
    lines = ["| variant | splits | unseen R@1 | R@2 | R@4 | R@8 | unseen MAP@R | seen R@1 | seen MAP@R | seen top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in results.get("mean", {}).items():
        u, s, sd = e["unseen"], e["seen"], e["unseen_std"]
        top1 = "–" if "seen_top1" not in e else f"{e['seen_top1']:.3f}" + (
            f" ({e['seen_top1_splits']} splits)" if e["seen_top1_splits"] != e["splits"] else "")
        lines.append(f"| {name} | {e['splits']} | {u['R@1']:.3f} ± {sd['R@1']:.3f} | {u['R@2']:.3f} | {u['R@4']:.3f}"
                     f" | {u['R@8']:.3f} | {u['MAP@R']:.3f} ± {sd['MAP@R']:.3f} | {s['R@1']:.3f} | {s['MAP@R']:.3f}"
                     f" | {top1} |")
    return "\n".join(lines)


def _load() -> dict:
    return load(RESULT, {"splits": {}})


def _save(results: dict) -> str:
    return write(RESULT, {k: v for k, v in results.items() if k not in ("machine", "cpus")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="run", choices=("run", "wise", "concat", "pooled", "table"))
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0], help="concat, pooled: trained embedding weights")
    ap.add_argument("--alpha", type=float, default=0.5, help="wise: weight of the fine-tuned backbone")
    ap.add_argument("--variant", default=SHIPPED, choices=list(VARIANTS), help="pooled: the trained variant")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--per-class", type=int, default=200, help="test photos per class (0 = all)")
    ap.add_argument("--work", default=os.environ.get("FASHIONLENS_RUNS", "/tmp/fashionlens-openset-runs"))
    args = ap.parse_args()
    if args.what == "wise":
        results = wise(args.alpha, args.work, args.per_class)
    elif args.what == "concat":
        results = concat(args.weights, args.work, args.per_class, args.image_size)
    elif args.what == "pooled":
        results = pooled(args.weights, args.work, args.per_class, args.variant)
    elif args.what == "table":
        results = _load()
    else:
        results = run(args.splits, args.variants, args.epochs, args.image_size, args.work, args.per_class)
    if args.what == "table":
        results["mean"] = _means(results["splits"])
    print(table(results))


if __name__ == "__main__":
    main()
