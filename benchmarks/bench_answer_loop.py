"""The learning loop from people's answers, on real photos: how far do answers carry a model trained on a seed?

    python benchmarks/bench_answer_loop.py [--photos DIR] [--seed-share 0.1] [--rounds 4] [--wrong-share 0.1]
        [--backbone tf_efficientnet_lite0] [--image-size 160] [--frozen-stages 5] [--seed-epochs 6]
        [--round-epochs 2] [--reference-epochs 0] [--eval-scale 1.0] [--tta] [--threads 1] [--workers 0]
        [--set KEY=VALUE ...] [--seed 0] [--work DIR] [--figure PATH] [--quick | --plot-only]

Data: ../shared/data/clothing-small (train/ and validation/ class folders; FASHIONLENS_PHOTOS or ``--photos``
overrides; skipped with a message when absent).  Everything goes through the product's own code paths:

  round 0     a stratified ``--seed-share`` of the train photos (the hand-checked seed), written as a CSV
              manifest, trained with ``fashionlens.training.fit.fit`` on the ``photos`` recipe; the seed then
              goes into a catalog (``Catalog.create`` with that model, ``Catalog.add(..., label="confirmed")``)
  round r     the next 1/R of the other train photos is added to the catalog (``Catalog.add``: the catalog's
              model predicts and stores each label), a simulated person answers every new item
              (``Catalog.answer``: confirms a right prediction, corrects a wrong one to the true class; a
              ``--wrong-share`` of the answers are wrong: see :func:`simulated_answer`), the answered labels
              are exported (``fashionlens.catalog.manifest.export_manifest``, confirmed + corrected: seed and
              every answer so far) and the ``finetune`` recipe trains on them with ``train.init_from`` = the
              previous round's run; the catalog then switches to the new model (``Catalog.reindex``), so the
              next round's items are predicted by it
  reference   the ``photos`` recipe on ALL train photos with their published labels, for about as many
              training images in all as the whole loop (``--reference-epochs 0``: matched)

Every run uses the same CPU-budget overrides (Lite0 at 160 px, the stem and first 5 stages frozen, tested at
160 px without mirror TTA — every catalog add, reindex and evaluation is then one forward pass of 160 px instead
of two of 192 px —; one torch thread and no loader worker, which a shared 2-core machine keeps at speed;
``train.val_split=""``, so no per-epoch validation) and is scored once on the 341 validation photos
(``fashionlens.runs.evaluate_run``, category top-1).  Per round: labelled images, answers (and the share that
were corrections and that were wrong), the label noise actually in the exported training manifest (rows whose
category is not the photo's published class), validation top-1 and minutes.  Prints a Markdown table, writes
benchmarks/results/answer_loop.json and answer_loop.svg (validation accuracy per round against the reference;
``--figure PATH`` elsewhere, ``--plot-only`` redraws it from the JSON without training).
Validation has 341 photos: at 0.85 accuracy one standard error is ~0.019, so steps below ~0.04 are not a ranking.

``--quick``: ~40 seed photos (1-10 per class), 2 rounds of 40 photos, 96 px, one epoch per run (about a minute):
a smoke test of the whole path, its JSON and figure written to the ``--work`` folder, not benchmarks/results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PHOTOS, RESULTS, write

from fashionlens.audit.cleaning import seed_fraction
from fashionlens.catalog import Catalog
from fashionlens.catalog.manifest import export_manifest
from fashionlens.config import apply_overrides, load_yaml
from fashionlens.data.readers import read
from fashionlens.recipes import load_recipe
from fashionlens.runs import evaluate_run
from fashionlens.training.fit import fit

RESULT = "answer_loop"
ADD_BATCH = 64  # images per Catalog.add call (each call decodes and holds its images)


# -- the simulated person --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What a simulated person answers about one item: ``verdict`` "yes" (the stored label is right) or "no"
    with ``category``; ``label`` is the category the item holds afterwards, ``wrong`` whether that is not the
    photo's true class."""

    verdict: str
    category: str | None
    label: str
    wrong: bool


def simulated_answer(predicted: str, truth: str, classes: Sequence[str], wrong_share: float,
                     rng: np.random.Generator) -> Answer:
    """A person's answer to the model's ``predicted`` class of a photo of class ``truth``.

    With probability 1 - ``wrong_share`` the answer is right: a right prediction is confirmed ("yes"), a wrong one
    corrected to ``truth`` ("no", truth).  Otherwise it is wrong: a wrong prediction is confirmed (the person
    agrees with the model's mistake), a right one is "corrected" to a class drawn uniformly from the other
    ``classes``.  Exactly one ``rng.random()`` is drawn per answer, plus one ``rng.integers`` for a wrong
    correction."""
    if truth not in classes or predicted not in classes:
        raise ValueError(f"predicted {predicted!r} and truth {truth!r} must be among the classes {list(classes)}")
    if not 0.0 <= wrong_share <= 1.0:
        raise ValueError(f"wrong_share must be in [0, 1], got {wrong_share}")
    honest = rng.random() >= wrong_share
    if honest:
        label = truth
    elif predicted != truth:
        label = predicted  # confirms the model's mistake
    else:
        others = [c for c in classes if c != truth]
        label = others[int(rng.integers(len(others)))]
    if label == predicted:
        return Answer("yes", None, label, label != truth)
    return Answer("no", label, label, label != truth)


# -- data ------------------------------------------------------------------------------------------------------
def split_train(labels: np.ndarray, seed_share: float, rounds: int, seed: int,
                per_round: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(seed indices: a stratified ``seed_share`` of ``labels``, one index array per round): the rest shuffled
    and cut into ``rounds`` equal parts (or ``per_round`` images each)."""
    chosen = np.flatnonzero(seed_fraction(labels, seed_share, seed))
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    rest = np.random.default_rng(seed + 1).permutation(rest)
    if per_round:
        return chosen, [rest[i * per_round:(i + 1) * per_round] for i in range(rounds)]
    return chosen, [np.sort(part) for part in np.array_split(rest, rounds)]


def write_seed_manifest(path: str, samples: Sequence[Any]) -> str:
    """The seed photos as a CSV manifest (``image``, ``category``, ``split``) for the ``manifest:`` reader."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["image", "category", "split"])
        for s in samples:
            out.writerow([os.path.abspath(s.image), s.category_name, "train"])
    return path


def manifest_noise(path: str, truth: dict[int, str]) -> dict[str, Any]:
    """Rows of an exported manifest and the share whose category is not the photo's true class (rows are matched
    to catalog items by the export's ``catalog_item`` column)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wrong = sum(r["category"] != truth[int(r["catalog_item"])] for r in rows)
    return {"manifest_rows": len(rows), "manifest_wrong": wrong, "label_noise": wrong / max(len(rows), 1)}


# -- runs ------------------------------------------------------------------------------------------------------
def overrides(args: argparse.Namespace) -> list[str]:
    """The CPU-budget overrides every run of the benchmark shares."""
    out = [f"model.backbone={args.backbone}", f"data.image_size={args.image_size}",
           f"model.frozen_stages={args.frozen_stages}", f"data.eval_scale={args.eval_scale}",
           f"model.tta_flip={'true' if args.tta else 'false'}", 'train.val_split=""', f"threads={args.threads}",
           f"data.num_workers={args.workers}", f"seed={args.seed}"]
    return out + list(args.set)


def train(recipe: str, spec: str, run_dir: str, epochs: int, args: argparse.Namespace,
          init_from: str = "") -> dict[str, Any]:
    """Train ``recipe`` (with :func:`overrides`) on ``spec`` into ``run_dir`` (from scratch) and score it on the
    validation photos; returns the summary row."""
    cfg = load_recipe(recipe)
    cfg.data.spec = spec
    apply_overrides(cfg, [*overrides(args), f"train.epochs={epochs}"])
    cfg.train.init_from = init_from
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    summary = fit(cfg, run_dir, resume=False, progress=False, log=lambda m: print("    ", m, flush=True))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate_run(run_dir, f"folder:{args.photos}", split="val", progress=False)
    return {"run_dir": run_dir, "recipe": recipe, "epochs": summary["epochs"], "steps": summary["steps"],
            "stopped": summary["stopped"], "train_seconds": round(train_s, 1),
            "train_images_per_s": summary["last"].get("train_images_per_s"),
            "eval_seconds": round(time.perf_counter() - start, 1), "val_top1": metrics["category_top1"],
            "val_images": metrics["num_images"]}


def add_to_catalog(catalog: Catalog, samples: Sequence[Any], label: str | None = None) -> list[int]:
    """``Catalog.add`` in batches of :data:`ADD_BATCH`; with ``label="confirmed"`` the published class is stored
    as a person's confirmed label (the hand-checked seed), else the catalog's model predicts it."""
    ids: list[int] = []
    for start in range(0, len(samples), ADD_BATCH):
        part = samples[start:start + ADD_BATCH]
        meta = [{"category": s.category_name} if label else {} for s in part]
        ids += catalog.add([s.image for s in part], meta, label=label)
    return ids


def answer_round(catalog: Catalog, ids: Sequence[int], samples: Sequence[Any], classes: Sequence[str],
                 wrong_share: float, rng: np.random.Generator) -> dict[str, int]:
    """A simulated person answers every item of ``ids`` (``Catalog.answer``); returns the counts."""
    counts = {"answers": 0, "confirmed": 0, "corrected": 0, "answers_wrong": 0, "predictions_right": 0}
    for item_id, sample in zip(ids, samples):
        predicted = catalog.get(item_id)["category"]
        answer = simulated_answer(predicted, sample.category_name, classes, wrong_share, rng)
        catalog.answer(item_id, answer.verdict, category=answer.category)
        counts["answers"] += 1
        counts["confirmed" if answer.verdict == "yes" else "corrected"] += 1
        counts["answers_wrong"] += int(answer.wrong)
        counts["predictions_right"] += int(predicted == sample.category_name)
    return counts


def run_loop(args: argparse.Namespace) -> dict[str, Any]:
    data = read(f"folder:{args.photos}")
    classes = list(data.info.categories)
    train_samples = [s for s in data if s.split == "train"]
    labels = np.array([s.category for s in train_samples])
    seed_idx, parts = split_train(labels, args.seed_share, args.rounds, args.seed, args.per_round)
    used = np.concatenate([seed_idx, *parts])
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []

    print(f"round 0: {len(seed_idx)} seed photos ({args.seed_share:.0%} of {len(labels)}, stratified)", flush=True)
    start = time.perf_counter()
    seed_samples = [train_samples[i] for i in seed_idx]
    manifest = write_seed_manifest(os.path.join(work, "seed.csv"), seed_samples)
    run = train("photos", f"manifest:{manifest}", os.path.join(work, "round0"), args.seed_epochs, args)
    catalog_dir = os.path.join(work, "catalog")
    if os.path.isdir(catalog_dir):
        shutil.rmtree(catalog_dir)
    dim = load_yaml(os.path.join(run["run_dir"], "config.yaml")).model.embedding_dim
    catalog = Catalog.create(catalog_dir, dim=int(dim), model_run=run["run_dir"])
    truth: dict[int, str] = {}
    try:
        for item_id, s in zip(add_to_catalog(catalog, seed_samples, label="confirmed"), seed_samples):
            truth[item_id] = s.category_name
        rows.append({"round": 0, "labelled": len(seed_idx), "answers": 0, "label_noise": 0.0, **run,
                     "minutes": (time.perf_counter() - start) / 60})
        print(f"  round 0: val top-1 {run['val_top1']:.4f}, {rows[-1]['minutes']:.1f} min", flush=True)
        totals = {"answers": 0, "answers_wrong": 0, "corrected": 0}
        for r, part in enumerate(parts, 1):
            start = time.perf_counter()
            previous = rows[-1]["run_dir"]
            reindex_s = 0.0
            if r > 1:  # the catalog switches to the previous round's model: it predicts this round's items
                t = time.perf_counter()
                catalog.reindex(previous, progress=False)
                reindex_s = time.perf_counter() - t
            new = [train_samples[i] for i in part]
            t = time.perf_counter()
            ids = add_to_catalog(catalog, new)
            add_s = time.perf_counter() - t
            truth.update({i: s.category_name for i, s in zip(ids, new)})
            counts = answer_round(catalog, ids, new, classes, args.wrong_share, rng)
            for k in totals:
                totals[k] += counts[k]
            exported = export_manifest(catalog, os.path.join(work, f"round{r}", "answers.csv"),
                                       labels="confirmed,corrected")
            noise = manifest_noise(exported["manifest"], truth)
            print(f"round {r}: {counts['answers']} new answers ({counts['corrected']} corrections, "
                  f"{counts['answers_wrong']} wrong); manifest {noise['manifest_rows']} rows, "
                  f"label noise {noise['label_noise']:.3f}", flush=True)
            run = train("finetune", f"manifest:{exported['manifest']}", os.path.join(work, f"round{r}", "run"),
                        args.round_epochs, args, init_from=previous)
            rows.append({"round": r, "labelled": noise["manifest_rows"], **counts,
                         "model_accuracy_on_new": counts["predictions_right"] / max(counts["answers"], 1),
                         "correction_share": counts["corrected"] / max(counts["answers"], 1),
                         "answers_so_far": totals["answers"], "answers_wrong_so_far": totals["answers_wrong"],
                         **noise, "by_provenance": exported["by_provenance"], "catalog_add_seconds": round(add_s, 1),
                         "reindex_seconds": round(reindex_s, 1), **run, "minutes": (time.perf_counter() - start) / 60})
            print(f"  round {r}: val top-1 {run['val_top1']:.4f}, {rows[-1]['minutes']:.1f} min", flush=True)
    finally:
        catalog.close()

    loop_images = len(seed_idx) * args.seed_epochs + sum(r["manifest_rows"] for r in rows[1:]) * args.round_epochs
    reference_pool = [train_samples[i] for i in used] if args.quick else train_samples
    epochs = args.reference_epochs or max(1, round(loop_images / len(reference_pool)))
    print(f"reference: the photos recipe on all {len(reference_pool)} train photos with their published labels, "
          f"{epochs} epochs ({epochs * len(reference_pool)} training images; the loop trained on {loop_images})",
          flush=True)
    start = time.perf_counter()
    if args.quick:
        spec = f"manifest:{write_seed_manifest(os.path.join(work, 'reference.csv'), reference_pool)}"
    else:
        spec = f"folder:{args.photos}"
    reference = {"labelled": len(reference_pool), "label_noise": 0.0,
                 **train("photos", spec, os.path.join(work, "reference"), epochs, args),
                 "training_images": epochs * len(reference_pool)}
    reference["minutes"] = (time.perf_counter() - start) / 60
    print(f"  reference: val top-1 {reference['val_top1']:.4f}, {reference['minutes']:.1f} min", flush=True)
    return {"rows": rows, "reference": reference, "loop_training_images": loop_images, "classes": classes}


# -- output ----------------------------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> str:
    head = ("| round | labelled images | new answers | corrections | answers wrong | label noise in manifest "
            "| val top-1 | minutes |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        answers = r.get("answers", 0)
        lines.append(f"| {r['round']} | {r['labelled']} | {answers or '-'} | "
                     + (f"{r['corrected']} ({r['correction_share']:.0%})" if answers else "-") + " | "
                     + (f"{r['answers_wrong']} ({r['answers_wrong'] / answers:.1%})" if answers else "-")
                     + f" | {r['label_noise']:.3f} | {r['val_top1']:.4f} | {r['minutes']:.1f} |")
    ref = result["reference"]
    lines.append(f"| all labels (reference, {ref['epochs']} epochs) | {ref['labelled']} | - | - | - | 0.000 | "
                 f"{ref['val_top1']:.4f} | {ref['minutes']:.1f} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str, title: str) -> str:
    """Validation accuracy per round (x: labelled images) against the all-labels reference, as SVG."""
    import matplotlib  # lazy: only the plot needs it

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a small, diffable file
    matplotlib.rcParams["svg.hashsalt"] = "answer-loop"  # stable ids
    from matplotlib import pyplot as plt  # lazy: as above

    rows, ref = result["rows"], result["reference"]
    x = [r["labelled"] for r in rows]
    y = [r["val_top1"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(x, y, "o-", color="#1f77b4", label="answer loop (seed + people's answers)")
    for r in rows:
        ax.annotate(f"round {r['round']}", (r["labelled"], r["val_top1"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8)
    ax.axhline(ref["val_top1"], ls="--", color="#d62728",
               label=f"all {ref['labelled']} published labels, {ref['epochs']} epochs ({ref['val_top1']:.3f})")
    ax.plot([ref["labelled"]], [ref["val_top1"]], "s", color="#d62728")
    ax.margins(x=0.08, y=0.12)
    ax.set_xlabel("labelled training images (seed + answers)")
    ax.set_ylabel("validation top-1 (341 photos)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=PHOTOS, help="clothing-small root (train/ and validation/ class folders)")
    ap.add_argument("--seed-share", type=float, default=0.1, help="stratified share of train photos in the seed")
    ap.add_argument("--rounds", type=int, default=4, help="answer rounds (the other train photos in equal parts)")
    ap.add_argument("--per-round", type=int, default=0, help="photos per round (0: all the others, split evenly)")
    ap.add_argument("--wrong-share", type=float, default=0.1, help="share of the simulated answers that are wrong")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--frozen-stages", type=int, default=5, help="stem + first N stages frozen (recipes: 3)")
    ap.add_argument("--eval-scale", type=float, default=1.0, help="test input side / image size (recipes: 1.2)")
    ap.add_argument("--tta", action="store_true", help="mirror test-time augmentation, as the recipes (2x inference)")
    ap.add_argument("--seed-epochs", type=int, default=6, help="round 0: epochs of the photos recipe on the seed")
    ap.add_argument("--round-epochs", type=int, default=2, help="rounds 1..R: epochs of the finetune recipe")
    ap.add_argument("--reference-epochs", type=int, default=0,
                    help="all-labels reference epochs (0: as many training images as the whole loop)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (recipes: 2); 1 because with another busy process on a 2-core machine two "
                         "threads trained at 6.4 images/s and one at 36")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes (recipes: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides of every run")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "fashionlens-answer-loop"),
                    help="runs, manifests and the catalog (each replaced when run again)")
    ap.add_argument("--quick", action="store_true", help="a few photos, tiny settings, 2 rounds: < 2 minutes")
    ap.add_argument("--figure", default="", help="where the SVG goes (default: next to the JSON; benchmarks/results "
                                                 "figures are not committed: docs/answer-loop.svg for the README)")
    ap.add_argument("--plot-only", action="store_true",
                    help="no training: the table and figure from benchmarks/results/answer_loop.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.seed_share = 0.013  # ~40 photos: 1 (skirt) to 10 (t-shirt) per class
        args.rounds, args.per_round = 2, 40
        args.image_size, args.seed_epochs, args.round_epochs = 96, 1, 1
        args.reference_epochs = args.reference_epochs or 1
    return args


def title(settings: dict[str, Any]) -> str:
    return (f"answer loop: {settings['seed_share']:.0%} seed + {settings['rounds']} rounds, "
            f"{settings['wrong_share']:.0%} wrong answers ({settings['backbone'].replace('tf_efficientnet_', '')}, "
            f"{settings['image_size']} px)")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plot_only:  # the table and figure again from the JSON a full run wrote
        with open(os.path.join(RESULTS, RESULT + ".json"), encoding="utf-8") as f:
            result = json.load(f)
        print(table(result))
        print(f"wrote {plot(result, args.figure or os.path.join(RESULTS, RESULT + '.svg'), title(result['settings']))}")
        return
    if not os.path.isdir(os.path.join(args.photos, "train")):
        print(f"skipped: clothing-small not found at {args.photos} (set FASHIONLENS_PHOTOS or --photos; "
              "a fresh clone has no ../shared)")
        return
    start = time.perf_counter()
    result = run_loop(args)
    total = (time.perf_counter() - start) / 60
    print(table(result))
    settings = {k: v for k, v in vars(args).items() if k not in ("photos", "work", "figure", "plot_only")}
    payload = {"data": os.path.abspath(args.photos), "settings": settings, "overrides": overrides(args),
               "total_minutes": round(total, 1), **result}
    if args.quick:  # a smoke test: its numbers mean nothing, so they stay out of benchmarks/results
        folder = os.path.abspath(args.work)
        path = os.path.join(folder, RESULT + "_quick.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
    else:
        folder, path = RESULTS, write(RESULT, payload)
    default = os.path.join(folder, RESULT + ("_quick" if args.quick else "") + ".svg")
    figure = plot(result, args.figure or default, title(settings))
    print(f"wrote {path} and {figure} ({total:.1f} min in all)")


if __name__ == "__main__":
    main()
