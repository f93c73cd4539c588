"""Procedural garments: the embedded default data set, written in the DeepFashion layouts.

``render_dataset(out)`` draws items (one item = one fixed design: category, silhouette, colours,
pattern, fabric) in several views and writes::

    OUT/category/   Category and Attribute Prediction layout (Anno/list_*.txt, Eval/list_eval_partition.txt)
    OUT/inshop/     In-shop Clothes Retrieval layout (shop views only)
    OUT/c2s/        Consumer-to-shop layout (every consumer view paired with every shop view of its item)
    OUT/garments.json, OUT/README.txt, OUT/ground_truth.jsonl (the renderer's exact annotation)

Images are written once, under ``OUT/category/img/<TYPE>/<Category>/id_XXXXXXXX/{shop,comsumer}_NN.jpg``
(``comsumer`` is DeepFashion's own spelling); ``OUT/inshop/img`` and ``OUT/c2s/img`` are relative
symlinks to ``../category/img`` (hard links or copies where symlinks are unavailable), so every root
reads on its own and an image has the same ``img/...`` name in all three.

Conventions: coordinates are pixels with pixel centres at integers; the landmark files hold the exact
position rounded half up (``000 000`` where truncated, visibility 2); the wearer's LEFT is image RIGHT
in a frontal view.  Items are split by design family (an item and its look-alike distractors share a
split) into train/val/test (about 70/10/20); every protocol's test items are unseen in training.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import replace

import cv2
import numpy as np
from tqdm import tqdm

from fashionlens.data.garments.scenes import POSE_OF_VARIATION, encode_jpeg, pixel, render_view, sample_view
from fashionlens.data.garments.shapes import (
    ATTRIBUTE_GROUPS,
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOURS,
    Category,
    Design,
    build_shape,
    sample_geometry,
)
from fashionlens.data.garments.textures import render_canonical
from fashionlens.data.samples import TRUNCATED

VERSION = 1
ATTRIBUTES: tuple[tuple[int, str, str], ...] = tuple((t, g, v) for t, g, vals in ATTRIBUTE_GROUPS for v in vals)
_SPLIT_CYCLE = ("train", "train", "test", "train", "val", "train", "train", "test", "train", "train")
_SIBLING_P = 0.35  # chance that an item is a look-alike (same category and colour) of an earlier one
_COLOURS_FOR = {"denim": ("blue", "blue", "navy", "black", "grey", "white"),
                "leather": ("black", "black", "brown", "beige", "red")}
_TYPE_FOLDERS = {1: "UPPER", 2: "LOWER", 3: "FULL"}
_OUTPUTS = ("category", "inshop", "c2s", "garments.json", "README.txt", "ground_truth.jsonl")


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return str(options[int(rng.integers(len(options)))])


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(v + rng.uniform(-amount, amount), 0, 255)) for v in rgb)


def _second_colour(colour: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """A pattern colour that contrasts with the base colour."""
    lum = {k: 0.3 * r + 0.59 * g + 0.11 * b for k, (r, g, b) in COLOURS.items()}
    options = tuple(k for k in COLOURS if abs(lum[k] - lum[colour]) > 55) or ("white",)
    return _jitter(COLOURS[_pick(options, rng)], rng, 10)


def _pattern_params(d: Design, rng: np.random.Generator) -> dict[str, float]:
    folds = (rng.uniform(0.03, 0.07) * (1.5 if d.fit == "loose" else 1.0), rng.uniform(0.18, 0.35),
             rng.uniform(-0.3, 0.3), rng.uniform(0, 2 * np.pi))
    return {"period": float(rng.uniform(0.055, 0.095)), "angle": float(rng.choice((0.0, 0.0, 90.0, 45.0))),
            "duty": float(rng.uniform(0.3, 0.45) if d.texture != "dotted" else rng.uniform(0.5, 0.8)),
            "kind": float(rng.integers(0, 4)), "folds": tuple(float(v) for v in folds),
            "sheen": float(rng.uniform(0.3, 0.8)), "opacity": float(rng.uniform(0.62, 0.8))}


def sample_design(cat: Category, rng: np.random.Generator, parent: Design | None = None) -> Design:
    """A random design of category ``cat``; with ``parent``, a look-alike: same colour, other details."""
    fabric = parent.fabric if parent is not None and rng.random() < 0.7 else _pick(cat.fabrics, rng)
    colour = parent.colour if parent is not None else _pick(_COLOURS_FOR.get(fabric, tuple(COLOURS)), rng)
    rgb = _jitter(parent.rgb, rng, 6) if parent is not None else _jitter(COLOURS[colour], rng, 14)
    d = Design(cat.name, _pick(cat.textures, rng), _pick(cat.sleeves, rng), _pick(cat.lengths, rng),
               _pick(cat.necklines, rng), fabric, _pick(cat.fits, rng), colour, rgb, _second_colour(colour, rng),
               seed=int(rng.integers(0, 2**31)))
    if parent is not None and rng.random() < 0.5:
        d = replace(d, texture=parent.texture, rgb2=_jitter(parent.rgb2, rng, 8))
    d.geom = sample_geometry(cat, d, rng)
    d.pattern = _pattern_params(d, rng)
    return d


def plan_items(items: int, seed: int) -> list[tuple[str, Design, str]]:
    """``(item_id, design, split)`` for every item; categories cycle so all are equally represented."""
    n = len(CATEGORIES)
    rng = np.random.default_rng([seed, 0])
    designs: list[Design] = []
    family: list[int] = []
    for i in range(items):
        cat = CATEGORIES[i % n]
        sibling = i >= n and rng.random() < _SIBLING_P
        family.append(family[i - n] if sibling else i)
        designs.append(sample_design(cat, rng, designs[i - n] if sibling else None))
    roots = sorted(set(family), key=lambda r: (r % n, r))
    split_of = {r: _SPLIT_CYCLE[k % len(_SPLIT_CYCLE)] for k, r in enumerate(roots)}
    return [(f"id_{i + 1:08d}", designs[i], split_of[family[i]]) for i in range(items)]


def image_name(category: str, item_id: str, stem: str, view: int) -> str:
    """``img/<TYPE>/<Category>/<item_id>/<stem>_NN.jpg``: two folder levels, as DeepFashion's ``img/WOMEN/Dresses``."""
    ctype = CATEGORY_BY_NAME[category].ctype
    return f"img/{_TYPE_FOLDERS[ctype]}/{category}/{item_id}/{stem}_{view:02d}.jpg"


def _label_vector(d: Design) -> list[int]:
    attrs = d.attributes()
    return [1 if attrs[g] == v else -1 for _, g, v in ATTRIBUTES]


def _render_item(job: tuple) -> list[dict]:
    """Render and write every view of one item; returns one ground-truth record per image."""
    index, item_id, d, split, n_shop, n_cons, size, root, seed = job
    shape = build_shape(d)
    canon = render_canonical(d, shape, int(round(size * 1.25)))
    rng = np.random.default_rng([seed, index, 1])
    cat = CATEGORY_BY_NAME[d.category]
    records = []
    for domain, count, stem in (("shop", n_shop, "shop"), ("consumer", n_cons, "comsumer")):
        for k in range(count):
            vp = sample_view(canon, domain, k, size, rng)
            view = render_view(canon, vp, size)
            name = image_name(d.category, item_id, stem, k + 1)
            with open(os.path.join(root, "category", name), "wb") as f:
                f.write(encode_jpeg(view.image, vp.jpeg))
            written = np.where((view.visibility == TRUNCATED)[:, None], 0, pixel(view.landmarks))
            records.append({
                "image": name, "item_id": item_id, "domain": domain, "view": k + 1, "split": split,
                "category": d.category, "category_label": CATEGORIES.index(cat) + 1, "category_path": cat.path,
                "clothes_type": cat.ctype, "attributes": d.attributes(), "attribute_labels": _label_vector(d),
                "landmarks": view.landmarks.round(4).tolist(), "landmarks_written": written.tolist(),
                "visibility": view.visibility.tolist(), "bbox": list(view.bbox), "variation": vp.variation,
                "jpeg_quality": vp.jpeg, "homography": vp.H.round(8).tolist()})
    return records


def _table(path: str, header: str, rows: list[str]) -> None:
    """A DeepFashion list file: row count, header, rows."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{len(rows)}\n{header}\n")
        f.writelines(row + "\n" for row in rows)


def _landmark_header(variation: bool) -> str:
    cols = ["image_name", "clothes_type"] + (["variation_type"] if variation else [])
    for k in range(1, 9):
        cols += [f"landmark_visibility_{k}", f"landmark_location_x_{k}", f"landmark_location_y_{k}"]
    return "  ".join(cols)


def _triplets(r: dict) -> str:
    return "".join(f"  {v} {x:03d} {y:03d}" for v, (x, y) in zip(r["visibility"], r["landmarks_written"])) + " "


def _box(r: dict, sep: str = " ") -> str:
    return sep.join(f"{v:03d}" for v in r["bbox"])


def _write_category(out: str, records: list[dict]) -> None:
    """OUT/category: Anno/list_{category_cloth,category_img,attr_cloth,attr_img,bbox,landmarks}.txt + Eval."""
    anno, w = os.path.join(out, "category", "Anno"), max(len(r["image"]) for r in records) + 4
    _table(os.path.join(anno, "list_category_cloth.txt"), "category_name  category_type",
           [f"{c.name:<29}{c.ctype}" for c in CATEGORIES])
    _table(os.path.join(anno, "list_attr_cloth.txt"), "attribute_name  attribute_type",
           [f"{v:<29}{t}" for t, _, v in ATTRIBUTES])
    _table(os.path.join(anno, "list_category_img.txt"), "image_name  category_label",
           [f"{r['image']:<{w}}{r['category_label']:>4}" for r in records])
    _table(os.path.join(anno, "list_attr_img.txt"), "image_name  attribute_labels",
           [f"{r['image']:<{w}}" + " ".join(f"{v:>2}" for v in r["attribute_labels"]) for r in records])
    _table(os.path.join(anno, "list_bbox.txt"), "image_name  x_1  y_1  x_2  y_2",
           [f"{r['image']:<{w}}{_box(r)}" for r in records])
    _table(os.path.join(anno, "list_landmarks.txt"), _landmark_header(False),
           [f"{r['image']:<{w}}{r['clothes_type']:>2}{_triplets(r)}" for r in records])
    _table(os.path.join(out, "category", "Eval", "list_eval_partition.txt"), "image_name  evaluation_status",
           [f"{r['image']:<{w}}{r['split']:>7}" for r in records])


def _write_retrieval(out: str, records: list[dict]) -> None:
    """OUT/inshop (shop views of train and test items) and OUT/c2s (consumer x shop pairs of all items)."""
    w = max(len(r["image"]) for r in records) + 4
    shop = [r for r in records if r["domain"] == "shop" and r["split"] != "val"]
    status = {id(r): r["split"] if r["split"] == "train" else ("gallery" if r["view"] == 1 else "query") for r in shop}
    root = os.path.join(out, "inshop")
    _table(os.path.join(root, "Eval", "list_eval_partition.txt"), "image_name item_id evaluation_status",
           [f"{r['image']:<{w}}{r['item_id']} {status[id(r)]}" for r in shop])
    _table(os.path.join(root, "Anno", "list_bbox_inshop.txt"),
           "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
           [f"{r['image']:<{w}}{r['clothes_type']}  {POSE_OF_VARIATION[r['variation']]}  {_box(r, '  ')}"
            for r in shop])
    _table(os.path.join(root, "Anno", "list_landmarks_inshop.txt"), _landmark_header(True),
           [f"{r['image']:<{w}}{r['clothes_type']:>2}{r['variation']:>3}{_triplets(r)}" for r in shop])
    _items(os.path.join(root, "Anno", "list_item_inshop.txt"), shop)
    root = os.path.join(out, "c2s")
    by_item: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_item.setdefault(r["item_id"], {"shop": [], "consumer": []})[r["domain"]].append(r)
    pairs = [f"{c['image']:<{w}}{s['image']:<{w}}{c['item_id']}  {c['split']}"
             for views in by_item.values() for c in views["consumer"] for s in views["shop"]]
    _table(os.path.join(root, "Eval", "list_eval_partition.txt"),
           "image_pair_name_1  image_pair_name_2  item_id  evaluation_status", pairs)
    _table(os.path.join(root, "Anno", "list_bbox_consumer2shop.txt"),
           "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2",
           [f"{r['image']:<{w}}{r['clothes_type']}  {1 if r['domain'] == 'shop' else 2}  {_box(r, '  ')}"
            for r in records])
    _table(os.path.join(root, "Anno", "list_landmarks_consumer2shop.txt"), _landmark_header(True),
           [f"{r['image']:<{w}}{r['clothes_type']:>2}{r['variation']:>3}{_triplets(r)}" for r in records])
    _items(os.path.join(root, "Anno", "list_item_consumer2shop.txt"), records)


def _items(path: str, records: list[dict]) -> None:
    ids = list(dict.fromkeys(r["item_id"] for r in records))
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{len(ids)}\n" + "".join(i + "\n" for i in ids))


def _write_meta(out: str, records: list[dict], params: dict) -> None:
    """OUT/garments.json (parameters, taxonomy, attribute groups), README.txt and ground_truth.jsonl."""
    meta = {
        "generator": "fashionlens.data.garments", "version": VERSION, "params": params,
        "categories": [{"name": c.name, "path": c.path, "clothes_type": c.ctype} for c in CATEGORIES],
        "attribute_groups": [{"type": t, "name": g, "values": list(v)} for t, g, v in ATTRIBUTE_GROUPS],
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "conventions": {"pixels": "pixel centres at integer coordinates; written landmarks round half up",
                        "left_right": "wearer's left = image right in a frontal view",
                        "truncated_landmarks": "written as 000 000 with visibility 2",
                        "bbox": "inclusive x1 y1 x2 y2 of the garment mask (alpha >= 0.5, occluders ignored)"},
        "images": len(records), "items": len({r["item_id"] for r in records}),
    }
    with open(os.path.join(out, "garments.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(out, "ground_truth.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    with open(os.path.join(out, "README.txt"), "w", encoding="utf-8") as f:
        f.write(_README.format(version=VERSION, images=len(records), **params))


_README = """Procedural garments rendered by fashionlens.data.garments (version {version}).
items={items} views={views} size={size} seed={seed}: {images} images, {size}x{size} pixels.

category/  DeepFashion Category and Attribute Prediction layout (all images; split train/val/test by item)
inshop/    DeepFashion In-shop Clothes Retrieval layout (shop views of train and test items)
c2s/       DeepFashion Consumer-to-shop layout (each consumer view paired with each shop view)
Images live once under category/img; inshop/img and c2s/img link to it.
Attributes: one positive per group (attribute_type = group: 1 texture, 2 sleeve, 3 length, 4 neckline,
5 fabric, 6 fit, 7 colour).  Landmarks: the wearer's left is image right in a frontal view; coordinates
are pixels (centres at integers), truncated landmarks are written 000 000 with visibility 2.
garments.json: generator parameters, taxonomy (category paths), attribute groups, conventions.
ground_truth.jsonl: one JSON record per image with the exact (unrounded) landmarks.
Read everything with fashionlens.read("garments:THIS_DIRECTORY").
"""


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _prepare(out: str) -> None:
    """Create OUT, replacing a previous render there; refuse to touch any other non-empty directory."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, "garments.json")):
            raise FileExistsError(f"{out}: directory is not empty and holds no garments render (no garments.json)")
        for name in _OUTPUTS:
            p = os.path.join(out, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)


def _link_images(out: str, bench: str) -> None:
    """OUT/bench/img -> ../category/img (symlink; else hard links; else copies)."""
    target = os.path.join(out, bench, "img")
    try:
        os.symlink(os.path.join("..", "category", "img"), target, target_is_directory=True)
    except OSError:
        shutil.copytree(os.path.join(out, "category", "img"), target, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def render_dataset(out: str, items: int = 300, views: int = 6, size: int = 128, seed: int = 0,
                   workers: int = 1, progress: bool = True) -> dict:
    """Render ``items`` garments x ``views`` photos of ``size`` x ``size`` pixels into ``out``.

    Each item gets ``(views + 1) // 2`` shop views and the rest consumer views.  The output depends
    only on ``(items, views, size, seed)``, never on ``workers``.  Returns a summary dict (counts per
    split, images, seconds, images_per_second).
    """
    if items < len(CATEGORIES):
        raise ValueError(f"items must be at least {len(CATEGORIES)} (one per category), got {items}")
    if views < 3:
        raise ValueError(f"views must be at least 3 (two shop views for in-shop query/gallery, one consumer), "
                         f"got {views}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not 32 <= size <= 999:
        raise ValueError(f"size must be 32..999 pixels (coordinates are written with 3 digits), got {size}")
    start = time.perf_counter()
    _prepare(out)
    plan = plan_items(items, seed)
    n_shop = (views + 1) // 2
    for item_id, d, _ in plan:
        os.makedirs(os.path.dirname(os.path.join(out, "category", image_name(d.category, item_id, "shop", 1))),
                    exist_ok=True)
    jobs = [(i, item_id, d, split, n_shop, views - n_shop, size, out, seed)
            for i, (item_id, d, split) in enumerate(plan)]
    records = [r for rs in _map(jobs, workers, progress) for r in rs]
    _write_category(out, records)
    _write_retrieval(out, records)
    _write_meta(out, records, {"items": items, "views": views, "size": size, "seed": seed})
    for bench in ("inshop", "c2s"):
        _link_images(out, bench)
    seconds = time.perf_counter() - start
    splits: dict[str, int] = {}
    for _, _, split in plan:
        splits[split] = splits.get(split, 0) + 1
    return {"root": os.path.abspath(out), "items": items, "images": len(records), "item_splits": splits,
            "categories": len(CATEGORIES), "seconds": round(seconds, 3),
            "images_per_second": round(len(records) / seconds, 1)}


def _map(jobs: list[tuple], workers: int, progress: bool) -> list[list[dict]]:
    """Run ``_render_item`` over jobs (results in job order), in ``workers`` processes when > 1."""
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init)
    else:
        pool = contextlib.nullcontext()
    with pool:
        if workers > 1:
            results = pool.imap(_render_item, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
        else:
            results = map(_render_item, jobs)
        return list(tqdm(results, total=len(jobs), desc="rendering garments", unit="item", disable=not progress))
