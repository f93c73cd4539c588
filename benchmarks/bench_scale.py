"""Full-size DeepFashion annotation sets: read, split, sample P x K batches, load images and start training.

Writes the three benchmarks at their published row counts (``../shared/DEEPFASHION_FORMATS.md``), in the
exact layouts the readers expect:

* Category and Attribute Prediction: 289,222 images (train 209,222 / val 40,000 / test 40,000), 50
  categories (46 with images, Zipf-shaped counts), 1,000 attributes (~3.3 positives per image), boxes,
  landmarks (6/4/8 triplets by clothes type) and the partition;
* In-shop Clothes Retrieval: 52,712 images of 7,982 items (train 3,997 items / 25,882 images; query
  14,218 and gallery 12,612 images of the other 3,985 items), boxes with pose_type, landmarks with
  variation_type, the item list;
* Consumer-to-shop: 195,540 pair rows over 239,557 distinct images (195,540 consumer + 44,017 shop photos)
  of 33,881 items, boxes with source_type, landmarks, the item list.

Every image folder (a product folder of up to 50 images, an item folder) is a symlink to one of 8 pool
folders of small real JPEGs (256 x 256), so every row names a real file that the readers check and the
loaders decode, at one directory entry per folder (a hard link per row made writing and removing
the 581,491 names take about a minute).  Then it measures, each part in a fresh interpreter (its own peak RSS):

1. reading each benchmark through ``fashionlens.data.readers.read(spec)``: seconds and peak RSS above the
   interpreter's; a second pass under tracemalloc (peak and retained bytes, against the annotation files'
   size) and a third with ``deepfashion.BULK_PARSING = False``, the row-by-row reader, as the reference;
2. ``split_train_val`` (in-shop has no val split: ~10% of its training items are held out) and ``PKSampler``
   (construction + one epoch of batch indices, P x K by item and by category, every batch checked);
3. the data path: GarmentDataset + the eval and train transforms at ``--size`` px over ``--batches`` batches
   of the category training split with 0, 1, 2 DataLoader workers (times include worker start-up; the
   main process uses one torch thread, as bench_loading.py does): images/s, per worker, ratio to 0 workers;
4. memory of the data path over ``--memory-batches`` batches (2,000 of 16, eval transform at 64 px, 2 workers):
   RSS of the main process, RSS of the workers (summed; it counts pages shared with the main process) and
   the PSS of all of them (shared pages split), sampled every ``--every`` batches: start, end, max; then the
   workers read every training sample once without decoding (the copy-on-write ceiling of a whole epoch);
5. starting training: ``fashionlens.training.fit.fit`` on the full category set, tiny_cnn, 64 px, batch 32,
   one torch thread, no validation (``val_split: ""``: the category val split has 40,000 images) and
   ``max_minutes`` 1 (fit has no step limit): seconds to the first optimiser step, steps, RSS.

    python benchmarks/bench_scale.py [--quick] [--work DIR]

A full run takes about 8 minutes on a 2-core machine.  ``--quick`` writes a tenth of every benchmark and
measures less (about 2 minutes).  ``--work DIR`` keeps the generated files there and reuses them when the
same sizes were written before (their write times are those of the first run).  Writes
benchmarks/results/scale.json (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fashionlens.data.readers.deepfashion import CATEGORIES_BY_TYPE

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
IMAGE_SIDE = 256  # pool images are IMAGE_SIDE x IMAGE_SIDE; every coordinate lies inside

# ---------------------------------------------------------------------------------------------- sizes
#: The published row counts (DEEPFASHION_FORMATS.md).
CATEGORY_SPLITS = {"train": 209_222, "val": 40_000, "test": 40_000}  # 289,222 images
CATEGORY_ATTRIBUTES = 1000
INSHOP = {"train_items": 3_997, "train": 25_882, "test_items": 3_985, "query": 14_218, "gallery": 12_612}  # 52,712
C2S = {"items": 33_881, "pairs": 195_540, "images": 239_557}  # one consumer photo per pair: 44,017 shop photos
C2S_SPLIT_SHARES = {"train": 0.5, "val": 0.25, "test": 0.25}  # of the items (the published split is by item too)


@dataclass
class Sizes:
    """Row counts of the three benchmarks (``scaled`` keeps their proportions)."""

    category: dict
    attributes: int
    inshop: dict
    c2s: dict

    @classmethod
    def full(cls) -> Sizes:
        return cls(dict(CATEGORY_SPLITS), CATEGORY_ATTRIBUTES, dict(INSHOP), dict(C2S))

    def scaled(self, fraction: float) -> Sizes:
        def part(d: dict, floor: int = 4) -> dict:
            return {k: max(floor, round(v * fraction)) for k, v in d.items()}

        inshop = part(self.inshop)
        inshop["query"], inshop["gallery"] = (max(inshop["query"], inshop["test_items"]),
                                              max(inshop["gallery"], inshop["test_items"]))
        inshop["train"] = max(inshop["train"], 2 * inshop["train_items"])
        c2s = part(self.c2s)
        c2s["pairs"] = max(c2s["pairs"], 2 * c2s["items"])
        c2s["images"] = min(max(c2s["images"], c2s["pairs"] + c2s["items"]), 2 * c2s["pairs"])
        return Sizes(part(self.category), self.attributes, inshop, c2s)


# ---------------------------------------------------------------------------------------------- names
#: list_category_cloth.txt as published: 20 upper, 16 lower, 14 full-body categories, in file order.
CATEGORIES = [(name, kind) for kind, names in CATEGORIES_BY_TYPE.items() for name in names.split()]
EMPTY_CATEGORIES = ("Cape", "Nightdress", "Shirtdress", "Sundress")  # no images in the real benchmark
#: Most frequent first (Dress 72,083 images in the real set ... Halter 17); counts follow a geometric decay.
FREQUENCY_ORDER = (
    "Dress", "Tee", "Blouse", "Shorts", "Tank", "Skirt", "Cardigan", "Sweater", "Jacket", "Top", "Blazer", "Romper",
    "Jeans", "Jumpsuit", "Leggings", "Joggers", "Hoodie", "Sweatpants", "Kimono", "Coat", "Cutoffs", "Sweatshorts",
    "Poncho", "Jersey", "Henley", "Jeggings", "Anorak", "Button-Down", "Turtleneck", "Chinos", "Caftan", "Parka",
    "Bomber", "Flannel", "Culottes", "Trunks", "Robe", "Peacoat", "Capris", "Kaftan", "Coverup", "Gauchos", "Jodhpurs",
    "Onesie", "Sarong", "Halter",
)
SLOTS = {1: 6, 2: 4, 3: 8}  # landmarks per clothes type
ADJECTIVES = ("Sheer_Pleated-Front", "Classic", "Striped_Knit", "Floral_Print", "Faux_Leather", "Cropped", "Longline",
              "Boxy", "Lace-Trimmed", "Marled", "Abstract_Print", "Denim", "Ribbed", "Embroidered", "Chiffon")
INSHOP_FOLDERS = {  # folder -> clothes type
    "WOMEN/Dresses": 3, "WOMEN/Blouses_Shirts": 1, "WOMEN/Tees_Tanks": 1, "WOMEN/Shorts": 2, "WOMEN/Skirts": 2,
    "WOMEN/Pants": 2, "WOMEN/Sweaters": 1, "WOMEN/Jackets_Coats": 1, "WOMEN/Rompers_Jumpsuits": 3,
    "WOMEN/Cardigans": 1, "WOMEN/Graphic_Tees": 1, "WOMEN/Leggings": 2, "WOMEN/Denim": 2,
    "WOMEN/Sweatshirts_Hoodies": 1, "MEN/Tees_Tanks": 1, "MEN/Shirts_Polos": 1, "MEN/Pants": 2, "MEN/Denim": 2,
    "MEN/Jackets_Vests": 1, "MEN/Shorts": 2, "MEN/Sweaters": 1, "MEN/Sweatshirts_Hoodies": 1, "MEN/Suiting": 3,
}
INSHOP_VIEWS = ("1_front", "2_side", "3_back", "4_full")
C2S_FOLDERS = {"CLOTHING/Dress": 3, "CLOTHING/Coat": 1, "TOPS/T_Shirt": 1, "TOPS/Blouse": 1, "TOPS/Lace_Shirt": 1,
               "TROUSERS/Pants": 2, "TROUSERS/Leggings": 2, "DRESSES/Skirt": 2, "DRESSES/Dress": 3}


def category_counts(total: int) -> dict[str, int]:
    """Images per category summing to ``total``: geometric decay from Dress down to Halter, 4 empty ones."""
    n = len(FREQUENCY_ORDER)
    weights = (17 / 72_083) ** (np.arange(n) / (n - 1))  # the real extremes' ratio
    counts = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(np.int64)
    counts[0] += total - counts.sum()
    return dict(zip(FREQUENCY_ORDER, counts.tolist()))


# ---------------------------------------------------------------------------------------------- writing
POOL_VARIANTS = 8  # distinct image folders per benchmark that the annotated folders link to


def _jpeg(path: str, rng: np.random.Generator) -> None:
    """A small real JPEG: a garment-like rectangle on a plain background."""
    img = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), tuple(int(v) for v in rng.integers(170, 256, 3)))
    x1, y1 = int(rng.integers(10, 70)), int(rng.integers(10, 60))
    x2, y2 = IMAGE_SIDE - int(rng.integers(10, 70)), IMAGE_SIDE - int(rng.integers(10, 40))
    ImageDraw.Draw(img).rectangle((x1, y1, x2, y2), fill=tuple(int(v) for v in rng.integers(0, 170, 3)))
    img.save(path, quality=85)


def _pool(work: str, kind: str, files: list[str], seed: int = 0) -> list[str]:
    """``POOL_VARIANTS`` folders ``work/_pool/KIND_v`` holding one real JPEG per name in ``files``."""
    rng = np.random.default_rng([seed, len(kind)])
    folders = []
    for v in range(POOL_VARIANTS):
        folder = os.path.join(work, "_pool", f"{kind}_{v}")
        os.makedirs(folder, exist_ok=True)
        for name in files:
            if not os.path.isfile(os.path.join(folder, name)):
                _jpeg(os.path.join(folder, name), rng)
        folders.append(folder)
    return folders


def _link_folders(root: str, folders: list[str], pool: list[str]) -> None:
    """Make every image folder (``img/...`` relative to ``root``) a relative symlink to a pool folder: the
    annotated names are then real files, at one directory entry per folder instead of one per image."""
    made: set[str] = set()
    for i, folder in enumerate(folders):
        path = os.path.join(root, folder)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.symlink(os.path.relpath(pool[i % len(pool)], parent), path)


def _write_list(path: str, header: str, rows: list[str]) -> None:
    """Count line, header, rows: a DeepFashion ``list_*.txt``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(rows)}\n{header}\n")
        f.write("\n".join(rows))
        f.write("\n")


def _pad(names: list[str], width: int) -> list[str]:
    return [n.ljust(width) for n in names]


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    x1, y1 = rng.integers(0, 70, n), rng.integers(0, 60, n)
    return np.stack([x1, y1, rng.integers(150, IMAGE_SIDE, n), rng.integers(170, IMAGE_SIDE, n)], axis=1)


def _box_columns(boxes: np.ndarray, sep: str = " ") -> list[str]:
    return [sep.join(f"{v:03d}" for v in row) for row in boxes.tolist()]


def _landmark_columns(rng: np.random.Generator, types: np.ndarray) -> list[str]:
    """``vis x y`` triplets (6, 4 or 8 by clothes type) joined by two spaces, zero-padded coordinates, a
    trailing space; built as fixed-width byte rows per clothes type."""
    n = len(types)
    xy = rng.integers(1, IMAGE_SIDE - 1, (n, 8, 2))
    vis = rng.choice(np.array([0, 0, 0, 0, 1, 2]), (n, 8))
    cell = np.full((n, 8, 11), ord(" "), np.uint8)  # "v xxx yyy  "
    cell[:, :, 0] = ord("0") + vis
    for j, col in ((2, 0), (6, 1)):
        for d, div in enumerate((100, 10, 1)):
            cell[:, :, j + d] = ord("0") + (xy[:, :, col] // div) % 10
    out: list[str] = [""] * n
    for t, k in SLOTS.items():
        rows = np.flatnonzero(types == t)
        width = 11 * k - 1  # the last triplet's two spaces become one trailing space
        text = cell[rows, :k].reshape(len(rows), 11 * k)[:, :width].tobytes().decode()
        for i, r in enumerate(rows.tolist()):
            out[r] = text[i * width:(i + 1) * width]
    return out


def _write_attributes(path: str, names: list[str], n_attributes: int, rng: np.random.Generator,
                      chunk: int = 8192) -> None:
    """list_attr_img.txt: name padded to 72 columns, then ``n_attributes`` labels as ``-1`` / `` 1`` / `` 0``
    separated by single spaces (about 3.3 positives and 0.5% unknowns per image, popular attributes first),
    built as bytes: an all-negative row template with the few other labels patched in."""
    negative = np.frombuffer(b"-1 " * n_attributes, np.uint8)
    with open(path, "wb") as f:
        f.write(f"{len(names)}\nimage_name  attribute_labels\n".encode())
        for start in range(0, len(names), chunk):
            part = names[start:start + chunk]
            n = len(part)
            body = np.tile(negative, (n, 1))
            unknown = rng.integers(0, n * n_attributes, int(0.005 * n * n_attributes))
            ranks = np.minimum(rng.zipf(1.3, (n, 6)) - 1, n_attributes - 1)
            keep = rng.random((n, 6)) < 3.3 / 6
            rows, cols = np.repeat(np.arange(n), 6)[keep.ravel()], ranks.ravel()[keep.ravel()]
            for r, c, digit in ((unknown // n_attributes, unknown % n_attributes, b"0"), (rows, cols, b"1")):
                body[r, 3 * c] = ord(" ")
                body[r, 3 * c + 1] = ord(digit)
            head = np.frombuffer("".join(_pad(part, 72)).encode(), np.uint8).reshape(n, 72)
            line = np.concatenate([head, body, np.full((n, 1), ord("\n"), np.uint8)], axis=1)
            f.write(line.tobytes())


def write_category(root: str, work: str, splits: dict[str, int], n_attributes: int, *, seed: int = 0,
                   images: bool = True) -> dict[str, Any]:
    """The Category and Attribute Prediction benchmark under ``root`` (Anno/, Eval/, img/): product folders
    of up to 50 images (``img/<Product>_<Category>/img_00000001.jpg``, numbered per folder as published),
    folders in a shuffled order, the partition drawn per image with the exact split sizes."""
    rng = np.random.default_rng(seed)
    n = sum(splits.values())
    anno = os.path.join(root, "Anno")
    _write_list(os.path.join(anno, "list_category_cloth.txt"), "category_name  category_type",
                [f"{name.ljust(29)}{t}" for name, t in CATEGORIES])
    attr_rows = [f"attribute {i} {'print' if i % 3 else 'knit'}".ljust(29) + str(i % 5 + 1) for i in range(n_attributes)]
    attr_rows[7] = attr_rows[7].split("  ")[0] + " " + attr_rows[7][-1]  # one line with a single space
    _write_list(os.path.join(anno, "list_attr_cloth.txt"), "attribute_name  attribute_type", attr_rows)
    index = {name: i for i, (name, _) in enumerate(CATEGORIES)}
    per_folder = 50  # the real set has ~5,600 product folders of ~50 images
    folders: list[tuple[str, int, int]] = []  # (folder, 0-based category, images)
    for cat, count in category_counts(n).items():
        for j in range(0, count, per_folder):
            folders.append((cat, index[cat], min(per_folder, count - j)))
    order = rng.permutation(len(folders)).tolist()
    folders = [(f"{ADJECTIVES[k % len(ADJECTIVES)]}_{k:05d}_{folders[i][0]}",) + folders[i][1:]
               for k, i in enumerate(order)]
    names = [f"img/{folder}/img_{j + 1:08d}.jpg" for folder, _, size in folders for j in range(size)]
    labels = np.repeat([c for _, c, _ in folders], [size for _, _, size in folders])
    types = np.array([t for _, t in CATEGORIES])[labels]
    padded = _pad(names, 72)
    _write_list(os.path.join(anno, "list_category_img.txt"), "image_name  category_label",
                [f"{p}{c + 1}" for p, c in zip(padded, labels.tolist())])
    _write_attributes(os.path.join(anno, "list_attr_img.txt"), names, n_attributes, rng)
    _write_list(os.path.join(anno, "list_bbox.txt"), "image_name  x_1  y_1  x_2  y_2",
                [p + b for p, b in zip(padded, _box_columns(_boxes(rng, n)))])
    _write_list(os.path.join(anno, "list_landmarks.txt"),
                "image_name  clothes_type  landmark_visibility_1  landmark_location_x_1  landmark_location_y_1",
                [f"{p}{t}  {lm}" for p, t, lm in zip(padded, types.tolist(), _landmark_columns(rng, types))])
    status = np.repeat(list(splits), list(splits.values()))[rng.permutation(n)]
    _write_list(os.path.join(root, "Eval", "list_eval_partition.txt"), "image_name  evaluation_status",
                [p + s for p, s in zip(padded, status.tolist())])
    if images:
        pool = _pool(work, "category", [f"img_{j + 1:08d}.jpg" for j in range(per_folder)], seed)
        _link_folders(root, [f"img/{folder}" for folder, _, _ in folders], pool)
    return {"images": n, "splits": {s: int((status == s).sum()) for s in splits}, "attributes": n_attributes,
            "folders": len(folders), "categories_with_images": len(set(labels.tolist()))}


def _spread(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` near-equal positive counts."""
    return np.full(parts, total // parts) + (np.arange(parts) < total % parts)


def _inshop_file(k: int) -> str:
    return f"{k // len(INSHOP_VIEWS) + 1:02d}_{INSHOP_VIEWS[k % len(INSHOP_VIEWS)]}.jpg"


def write_inshop(root: str, work: str, sizes: dict[str, int], *, seed: int = 0) -> dict[str, Any]:
    """The In-shop Clothes Retrieval benchmark: train items, then test items with query and gallery images
    (``img/WOMEN/Dresses/id_00000002/01_1_front.jpg``); item folders link to the pool."""
    rng = np.random.default_rng(seed + 1)
    folders = list(INSHOP_FOLDERS)
    names, items, status, types, item_dirs = [], [], [], [], []
    n_items = sizes["train_items"] + sizes["test_items"]
    train = _spread(sizes["train"], sizes["train_items"])
    query, gallery = _spread(sizes["query"], sizes["test_items"]), _spread(sizes["gallery"], sizes["test_items"])
    most = 0
    for i in range(n_items):
        folder = folders[i % len(folders)]
        item = f"id_{2 * i + 2:08d}"
        if i < sizes["train_items"]:
            labels = ["train"] * int(train[i])
        else:
            j = i - sizes["train_items"]
            labels = ["query"] * int(query[j]) + ["gallery"] * int(gallery[j])
        item_dirs.append(f"img/{folder}/{item}")
        most = max(most, len(labels))
        for k, split in enumerate(labels):
            names.append(f"img/{folder}/{item}/{_inshop_file(k)}")
            items.append(item)
            status.append(split)
            types.append(INSHOP_FOLDERS[folder])
    padded, types_a = _pad(names, 71), np.array(types)
    _write_list(os.path.join(root, "Eval", "list_eval_partition.txt"), "image_name item_id evaluation_status",
                [f"{p}{it} {s}" for p, it, s in zip(padded, items, status)])
    poses = rng.integers(1, 7, len(names)).tolist()
    _write_list(os.path.join(root, "Anno", "list_bbox_inshop.txt"),
                "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
                [f"{p}{t}  {v}  {b} " for p, t, v, b in
                 zip(padded, types, poses, _box_columns(_boxes(rng, len(names)), "  "))])
    variations = rng.integers(1, 6, len(names)).tolist()
    _write_list(os.path.join(root, "Anno", "list_landmarks_inshop.txt"),
                "image_name  clothes_type  variation_type  landmark_visibility_1  landmark_location_x_1 ...",
                [f"{p}{t}  {v}  {lm}" for p, t, v, lm in
                 zip(padded, types, variations, _landmark_columns(rng, types_a))])
    unique = sorted(set(items))
    with open(os.path.join(root, "Anno", "list_item_inshop.txt"), "w", encoding="utf-8") as f:
        f.write(f"{len(unique)}\n" + "".join(f"{it}\n" for it in unique))
    _link_folders(root, item_dirs, _pool(work, "inshop", [_inshop_file(k) for k in range(most)], seed))
    return {"images": len(names), "items": len(unique),
            "splits": {s: status.count(s) for s in ("train", "query", "gallery")}}


def write_c2s(root: str, work: str, sizes: dict[str, int], *, seed: int = 0) -> dict[str, Any]:
    """Consumer-to-shop: one pair row per consumer photo, each paired with one of its item's shop photos
    (shop photos repeat); items split train/val/test by ``C2S_SPLIT_SHARES``; item folders link to the pool."""
    rng = np.random.default_rng(seed + 2)
    n_items, n_pairs = sizes["items"], sizes["pairs"]
    consumers = _spread(n_pairs, n_items)  # consumer photos per item = its pair rows
    shops = np.minimum(_spread(sizes["images"] - n_pairs, n_items), consumers)
    cut = np.cumsum([round(share * n_items) for share in C2S_SPLIT_SHARES.values()])
    cut[-1] = n_items
    folders = list(C2S_FOLDERS)
    pairs, image_rows, item_dirs = [], [], []
    split_pairs = {s: 0 for s in C2S_SPLIT_SHARES}
    for i in range(n_items):
        folder = folders[i % len(folders)]
        item, kind = f"id_{i + 1:08d}", C2S_FOLDERS[folder]
        split = list(C2S_SPLIT_SHARES)[int(np.searchsorted(cut, i, side="right"))]
        item_dirs.append(f"img/{folder}/{item}")
        shop_names = [f"img/{folder}/{item}/shop_{k + 1:02d}.jpg" for k in range(int(shops[i]))]
        image_rows += [(s, kind, 1) for s in shop_names]
        for k in range(int(consumers[i])):
            consumer = f"img/{folder}/{item}/comsumer_{k + 1:02d}.jpg"  # the dataset's own spelling
            image_rows.append((consumer, kind, 2))
            pairs.append(f"{consumer}  {shop_names[k % len(shop_names)]}  {item}  {split}")
        split_pairs[split] += int(consumers[i])
    _write_list(os.path.join(root, "Eval", "list_eval_partition.txt"),
                "image_pair_name_1  image_pair_name_2  item_id  evaluation_status", pairs)
    names = [r[0] for r in image_rows]
    types = np.array([r[1] for r in image_rows])
    padded = _pad(names, 72)
    _write_list(os.path.join(root, "Anno", "list_bbox_consumer2shop.txt"),
                "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2",
                [f"{p}{t}  {s}  {b} " for p, (_, t, s), b in
                 zip(padded, image_rows, _box_columns(_boxes(rng, len(names))))])
    variations = rng.integers(1, 6, len(names)).tolist()
    _write_list(os.path.join(root, "Anno", "list_landmarks_consumer2shop.txt"),
                "image_name  clothes_type  variation_type  landmark_visibility_1  landmark_location_x_1 ...",
                [f"{p}{t}  {v}  {lm}" for p, t, v, lm in
                 zip(padded, types.tolist(), variations, _landmark_columns(rng, types))])
    with open(os.path.join(root, "Anno", "list_item_consumer2shop.txt"), "w", encoding="utf-8") as f:
        f.write(f"{n_items}\n" + "".join(f"id_{i + 1:08d}\n" for i in range(n_items)))
    files = ([f"shop_{k + 1:02d}.jpg" for k in range(int(shops.max()))]
             + [f"comsumer_{k + 1:02d}.jpg" for k in range(int(consumers.max()))])
    _link_folders(root, item_dirs, _pool(work, "c2s", files, seed))
    return {"images": len(names), "pairs": len(pairs), "items": n_items,
            "consumer": int(consumers.sum()), "shop": int(shops.sum()), "split_pairs": split_pairs}


BENCHMARKS = {"category": "deepfashion-category", "inshop": "deepfashion-inshop", "c2s": "deepfashion-c2s"}


def write_all(work: str, sizes: Sizes, *, seed: int = 0, only: tuple[str, ...] = tuple(BENCHMARKS)) -> dict[str, Any]:
    """Write the benchmarks under ``work/<name>`` (reusing a previous identical write); returns what was
    written per benchmark with its seconds and annotation bytes."""
    stamp_path = os.path.join(work, "written.json")
    wanted = {"sizes": asdict(sizes), "seed": seed, "version": 3}
    stamp: dict = {}
    if os.path.isfile(stamp_path):
        with open(stamp_path, encoding="utf-8") as f:
            stamp = json.load(f)
        if stamp.get("wanted") != wanted:
            stamp = {}
    written = stamp.get("written", {})
    os.makedirs(work, exist_ok=True)
    for name in only:
        root = os.path.join(work, name)
        if name in written and os.path.isdir(root):
            written[name]["reused"] = True
            continue
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        if name == "category":
            info = write_category(root, work, sizes.category, sizes.attributes, seed=seed)
        elif name == "inshop":
            info = write_inshop(root, work, sizes.inshop, seed=seed)
        else:
            info = write_c2s(root, work, sizes.c2s, seed=seed)
        info["write_s"] = round(time.perf_counter() - start, 2)
        info["annotation_bytes"] = annotation_bytes(root)
        info["root"], info["reused"] = root, False
        written[name] = info
        with open(stamp_path, "w", encoding="utf-8") as f:
            json.dump({"wanted": wanted, "written": written}, f, indent=2)
    return {k: written[k] for k in only}


def annotation_bytes(root: str) -> int:
    """Size of the annotation files (Anno/ and Eval/) of a benchmark root."""
    total = 0
    for sub in ("Anno", "Eval"):
        for base, _, files in os.walk(os.path.join(root, sub)):
            total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    return total
# ---------------------------------------------------------------------------------------------- memory
def _status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, bytes."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _pss(pid: int) -> int:
    """Proportional set size (shared pages split between the processes that map them), bytes; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def memory_now() -> dict[str, int]:
    """RSS of this process and of its child processes (DataLoader workers), and their summed PSS."""
    me = os.getpid()
    kids = _children(me)
    workers = 0
    for pid in kids:
        try:
            workers += _status(pid)["VmRSS"]
        except (OSError, KeyError):
            continue
    return {"main_rss": _status()["VmRSS"], "workers_rss": workers, "workers": len(kids),
            "total_pss": _pss(me) + sum(_pss(pid) for pid in kids)}


def mb(n: float | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# ---------------------------------------------------------------------------------------------- children
def child_read(spec: str, trace: bool, bulk: bool, pk: tuple[int, int] | None = None) -> dict[str, Any]:
    """Read ``spec`` in this fresh process: seconds, RSS (peak: the reader's), optionally tracemalloc; then
    (``pk``) split and P x K sampling on what was read."""
    from fashionlens.data.readers import deepfashion, read

    deepfashion.BULK_PARSING = bulk
    before = _status()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    data = read(spec)
    seconds = time.perf_counter() - start
    after = _status()
    out = {"seconds": round(seconds, 2), "rows": len(data), "splits": data.splits(),
           "rss_before": before["VmRSS"], "rss_after": after["VmRSS"], "rss_peak": after["VmHWM"]}
    if trace:
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.update(traced_peak=peak, traced_retained=retained)
    if pk:
        out["sampling"] = child_sampling(data, *pk)
    return out


def child_sampling(data: Any, p: int, k: int) -> dict[str, Any]:
    """split_train_val and PKSampler (construction + one epoch of batch indices) on a read SampleSet."""
    from fashionlens.config import DataConfig
    from fashionlens.data.dataset import GarmentDataset, PKSampler
    from fashionlens.data.splits import split_train_val
    from fashionlens.data.transforms import build_transforms

    start = time.perf_counter()
    train, val = split_train_val(data, "train", "val", seed=0)
    split_s = time.perf_counter() - start
    out: dict[str, Any] = {"split_s": round(split_s, 3), "train": len(train), "val": len(val),
                           "val_held_out": "val" not in data.splits()}
    ds = GarmentDataset(train, build_transforms(DataConfig(image_size=64), train=False))
    for labels_of in ("item", "category"):
        labels = ds.item_labels if labels_of == "item" else ds.category_labels
        if (labels < 0).all():
            continue
        start = time.perf_counter()
        sampler = PKSampler(labels, p, k, seed=0, length=None if labels_of == "item" else max(1, len(ds) // (p * k)))
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        batches = list(sampler)
        epoch_s = time.perf_counter() - start
        flat = np.array(batches)  # (batches, p * k)
        per_item = labels[flat].reshape(len(batches), p, k)
        ok = bool(flat.shape[1] == p * k and (per_item == per_item[:, :, :1]).all()
                  and all(len(set(row[:, 0].tolist())) == p for row in per_item))
        out[f"pk_{labels_of}"] = {"labels": len(set(labels.tolist()) - {-1}), "eligible": len(sampler.groups),
                                  "batches": len(batches), "build_s": round(build_s, 3),
                                  "epoch_s": round(epoch_s, 3), "p_distinct_by_k": ok}
    return out


def _batches(n: int, batch: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n, batch, replace=False).tolist() for _ in range(count)]


def child_data_path(spec: str, size: int, batches: int, workers: list[int], batch: int, memory_batches: int,
                    every: int, memory_workers: int, memory_size: int, memory_batch: int,
                    memory_pipeline: str) -> dict[str, Any]:
    """Images/s of GarmentDataset + transforms per DataLoader worker count, then memory over a long run."""
    import torch
    from torch.utils.data import DataLoader

    from fashionlens.config import DataConfig
    from fashionlens.data.dataset import GarmentDataset
    from fashionlens.data.readers import read
    from fashionlens.data.transforms import build_transforms

    torch.set_num_threads(1)  # as DataLoader workers do; 2 threads on a busy 2-core box measure contention
    train = read(spec).split("train")
    rows = []
    for pipeline in ("eval", "train"):
        ds = GarmentDataset(train, build_transforms(DataConfig(image_size=size), train=pipeline == "train"))
        for i in range(4):
            ds[i]  # warm-up: lazy imports, first-call costs
        base = None
        for w in workers:
            plan = _batches(len(ds), batch, batches, seed=w)
            loader = DataLoader(ds, batch_sampler=plan, num_workers=w)
            torch.manual_seed(0)
            start = time.perf_counter()
            first, images = None, 0
            for b in loader:
                first = time.perf_counter() - start if first is None else first
                images += b["image"].shape[0]
            seconds = time.perf_counter() - start
            rate = images / seconds
            base = rate if w == 0 else base
            rows.append({"pipeline": pipeline, "workers": w, "images": images, "seconds": round(seconds, 2),
                         "first_batch_s": round(first or 0.0, 2), "images_per_s": round(rate, 1),
                         "per_worker_images_per_s": round(rate / max(w, 1), 1),
                         "ratio_vs_0_workers": round(rate / base, 2) if base else None})
            del loader
    gc.collect()
    ds = GarmentDataset(train, build_transforms(DataConfig(image_size=memory_size), train=memory_pipeline == "train"))
    loader = DataLoader(ds, batch_sampler=_batches(len(ds), memory_batch, memory_batches, seed=99),
                        num_workers=memory_workers)
    samples_over: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, _ in enumerate(loader):
        if i % every == 0 or i == memory_batches - 1:
            samples_over.append({"batch": i, "seconds": round(time.perf_counter() - start, 1), **memory_now()})
    seconds = time.perf_counter() - start
    memory = {"batches": memory_batches, "batch_size": memory_batch, "workers": memory_workers,
              "image_size": memory_size, "pipeline": memory_pipeline, "every": every, "seconds": round(seconds, 1),
              "images_per_s": round(memory_batches * memory_batch / seconds, 1),
              "distinct_samples": len({i for b in loader.batch_sampler for i in b}), "samples": samples_over}
    for key in ("main_rss", "workers_rss", "total_pss"):
        series = [s[key] for s in samples_over]
        memory[key] = {"start": series[0], "end": series[-1], "max": max(series),
                       "growth": series[-1] - series[0]}
    del loader
    gc.collect()
    memory["every_sample"] = _touch_every_sample(ds, memory_workers)
    return {"throughput": rows, "memory": memory, "train_images": len(train)}


class _Touch:
    """What GarmentDataset.__getitem__ reads of a sample, without the image: one pass over every index
    shows how much of the parent's sample objects the workers' reads copy (copy-on-write after fork)."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> int:
        s = self.ds.samples[index]
        s.unified_landmarks()
        labels = (s.category, s.clothes_type, s.item_id, s.domain, s.bbox, s.image, s.source)
        positives = 0 if s.attributes is None else int((np.asarray(s.attributes) > 0).sum())
        return positives + len(labels)


def _touch_every_sample(ds: Any, workers: int) -> dict[str, Any]:
    """PSS before and after the workers read every sample once (no decoding): the ceiling a full epoch nears."""
    from torch.utils.data import DataLoader

    plan = [[0]] + [list(range(i, min(i + 1024, len(ds)))) for i in range(1, len(ds), 1024)]
    loader = DataLoader(_Touch(ds), batch_sampler=plan, num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=1 if workers else None)
    start, before = time.perf_counter(), None
    for i, _ in enumerate(loader):
        if i == 0:  # workers started, at most a batch each read
            before = memory_now()
    after = memory_now()  # persistent workers: still alive
    del loader
    return {"samples": len(ds), "workers": workers, "seconds": round(time.perf_counter() - start, 1),
            "pss_start": before["total_pss"] if before else None, "pss_end": after["total_pss"],
            "growth": after["total_pss"] - (before or after)["total_pss"]}


def child_train(spec: str, out_dir: str, minutes: float, size: int, batch: int) -> dict[str, Any]:
    """fit() on ``spec`` with a tiny config: seconds to the first optimiser step, steps, RSS."""
    from fashionlens.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from fashionlens.training import fit as fit_module

    marks: dict[str, Any] = {}
    begin = time.perf_counter()
    original = fit_module.train_one_epoch

    def timed_epoch(*args: Any, **kw: Any) -> Any:  # wraps on_step to time the first step and sample RSS
        marks.setdefault("setup_s", time.perf_counter() - begin)
        marks.setdefault("rss_setup", _status()["VmRSS"])
        inner = kw.get("on_step")

        def on_step(step: int, index: int) -> None:
            if "first_step_s" not in marks:
                marks["first_step_s"] = time.perf_counter() - begin
                marks["rss_first_step"] = _status()["VmRSS"]
            marks["steps"] = step
            if inner is not None:
                inner(step, index)

        kw["on_step"] = on_step
        return original(*args, **kw)

    fit_module.train_one_epoch = timed_epoch
    cfg = RunConfig(data=DataConfig(spec=spec, image_size=size, num_workers=0),
                    model=ModelConfig(backbone="tiny_cnn", pretrained=False),
                    train=TrainConfig(epochs=1, batch_size=batch, max_minutes=minutes, checkpoint_every=0,
                                      val_split=""), threads=1)
    logs: list[str] = []
    summary = fit_module.fit(cfg, out_dir, resume=False, progress=False, log=lambda m: logs.append(str(m)))
    total = time.perf_counter() - begin
    status = _status()
    last = summary.get("last") or {}
    train_s = total - marks.get("setup_s", 0.0)
    return {"max_minutes": minutes, "image_size": size, "batch_size": batch, "steps": summary["steps"],
            "stopped": summary["stopped"], "setup_s": round(marks.get("setup_s", 0.0), 1),
            "first_step_s": round(marks.get("first_step_s", float("nan")), 1), "total_s": round(total, 1),
            "steps_per_s": round(summary["steps"] / max(train_s, 1e-9), 2),
            "train_images_per_s": last.get("train_images_per_s"), "train_loss": last.get("train_loss"),
            "rss_setup": marks.get("rss_setup"), "rss_first_step": marks.get("rss_first_step"),
            "rss_end": status["VmRSS"], "rss_peak": status["VmHWM"], "log": logs[-3:]}


def _run_child(*args: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (its own peak RSS); returns its JSON."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "_child", *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_main(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "read":
        out = child_read(rest[0], rest[1] == "trace", rest[2] == "bulk",
                         (int(rest[3]), int(rest[4])) if len(rest) > 3 else None)
    elif kind == "data":
        out = child_data_path(rest[0], int(rest[1]), int(rest[2]), [int(w) for w in rest[3].split(",")],
                              int(rest[4]), int(rest[5]), int(rest[6]), int(rest[7]), int(rest[8]),
                              int(rest[9]), rest[10])
    else:
        out = child_train(rest[0], rest[1], float(rest[2]), int(rest[3]), int(rest[4]))
    print(json.dumps(out, default=str))


# ---------------------------------------------------------------------------------------------- report
def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in [head] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report_tables(r: dict[str, Any]) -> str:
    out = []
    rows = []
    for name, w in r["write"].items():
        rd, tr = r["read"].get(name, {}), r["read_traced"].get(name, {})
        ref = r["read_row_by_row"].get(name, {})
        files = w["annotation_bytes"]
        rows.append([name, f"{rd.get('rows', 0):,}", f"{mb(files):,.0f}",
                     f"{w['write_s']}" + (" (earlier)" if w["reused"] else ""),
                     rd.get("seconds"), ref.get("seconds", "-"),
                     f"{ref['seconds'] / rd['seconds']:.1f}x" if ref.get("seconds") and rd.get("seconds") else "-",
                     f"{mb(rd['rss_peak'] - rd['rss_before']):,.0f}" if rd else "-",
                     f"{mb(tr['traced_peak']):,.0f}" if tr else "-", f"{mb(tr['traced_retained']):,.0f}" if tr else "-",
                     f"{tr['traced_peak'] / files:.2f}" if tr else "-"])
    out.append(_table(["benchmark", "rows", "files MB", "write s", "read s", "row-by-row s", "speed-up",
                       "peak RSS +MB", "traced peak MB", "retained MB", "peak / files"], rows))
    rows = []
    for name, s in r["sampling"].items():
        for key in ("pk_item", "pk_category"):
            if key in s:
                pk = s[key]
                rows.append([name, f"{s['train']:,} / {s['val']:,}" + (" (held out)" if s["val_held_out"] else ""),
                             s["split_s"], key[3:], f"{pk['eligible']:,}", f"{pk['batches']:,}", pk["build_s"],
                             pk["epoch_s"], "yes" if pk["p_distinct_by_k"] else "NO"])
    out.append(_table(["benchmark", "train / val", "split s", "P x K by", "groups", "batches / epoch", "build s",
                       "epoch s", "P distinct x K"], rows))
    d = r["data_path"]
    out.append(_table(["pipeline", "workers", "images", "seconds", "1st batch s", "images/s", "per worker", "vs 0"],
                      [[t["pipeline"], t["workers"], t["images"], t["seconds"], t["first_batch_s"], t["images_per_s"],
                        t["per_worker_images_per_s"], t["ratio_vs_0_workers"]] for t in d["throughput"]]))
    m = d["memory"]
    out.append(f"memory over {m['batches']:,} batches of {m['batch_size']} ({m['distinct_samples']:,} distinct samples "
               f"of {d['train_images']:,}; {m['pipeline']} transform, {m['image_size']} px, {m['workers']} workers, "
               f"{m['images_per_s']} images/s), sampled every {m['every']} batches:")
    rows = [[k, mb(m[k]["start"]), mb(m[k]["end"]), mb(m[k]["max"]), mb(m[k]["growth"])]
            for k in ("main_rss", "workers_rss", "total_pss")]
    e = m.get("every_sample")
    if e:
        rows.append([f"total_pss, workers reading all {e['samples']:,} samples (no images)", mb(e["pss_start"]),
                     mb(e["pss_end"]), "-", mb(e["growth"])])
    out.append(_table(["MB", "start", "end", "max", "end - start"], rows))
    t = r["train"]
    out.append(_table(["fit (category, tiny_cnn)", "value"], [
        ["setup s (read + split + model)", t["setup_s"]], ["first step s", t["first_step_s"]],
        ["steps in max_minutes", f"{t['steps']} in {t['max_minutes']} min ({t['steps_per_s']}/s)"],
        ["RSS at first step MB", mb(t["rss_first_step"])], ["RSS end / peak MB", f"{mb(t['rss_end'])} / {mb(t['rss_peak'])}"],
    ]))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        _child_main(argv[1:])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of every benchmark, shorter runs")
    parser.add_argument("--work", default="", help="folder for the generated benchmarks (kept, reused)")
    parser.add_argument("--size", type=int, default=128, help="data path: network input side, pixels")
    parser.add_argument("--batches", type=int, default=0, help="data path: batches per worker count (0: 20, quick 6)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-batches", type=int, default=0, help="memory run length (0: 2000, quick 200)")
    parser.add_argument("--every", type=int, default=0, help="memory sampled every N batches (0: length / 20)")
    parser.add_argument("--memory-size", type=int, default=64, help="memory run: input side, pixels")
    parser.add_argument("--memory-batch-size", type=int, default=16)
    parser.add_argument("--memory-pipeline", choices=("eval", "train"), default="eval")
    parser.add_argument("--train-minutes", type=float, default=0.0, help="fit's max_minutes (0: 1, quick 0.25)")
    parser.add_argument("--p", type=int, default=8, help="P x K: items per batch")
    parser.add_argument("--k", type=int, default=4, help="P x K: images per item")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc reading pass")
    parser.add_argument("--no-reference", action="store_true", help="skip the row-by-row reading reference")
    parser.add_argument("--out", default=os.path.join(RESULTS, "scale.json"))
    args = parser.parse_args(argv)
    batches = args.batches or (6 if args.quick else 20)
    memory_batches = args.memory_batches or (200 if args.quick else 2000)
    every = args.every or max(1, memory_batches // 20)
    minutes = args.train_minutes or (0.25 if args.quick else 1.0)
    sizes = Sizes.full().scaled(0.1) if args.quick else Sizes.full()
    started = time.perf_counter()
    work = args.work or tempfile.mkdtemp(prefix="fl-scale-")
    try:
        print(f"writing {'a tenth of ' if args.quick else ''}the three benchmarks under {work} ...", flush=True)
        written = write_all(work, sizes)
        specs = {name: f"{kind}:{written[name]['root']}" for name, kind in BENCHMARKS.items()}
        result: dict[str, Any] = {"benchmark": "scale", "mode": "quick" if args.quick else "full",
                                  "sizes": asdict(sizes), "write": written, "read": {}, "read_traced": {},
                                  "read_row_by_row": {}, "sampling": {}}
        for name, spec in specs.items():
            print(f"reading {name} ...", flush=True)
            result["read"][name] = _run_child("read", spec, "plain", "bulk", str(args.p), str(args.k))
            result["sampling"][name] = result["read"][name].pop("sampling")
            if not args.no_trace:
                result["read_traced"][name] = _run_child("read", spec, "trace", "bulk")
            if not args.no_reference:
                result["read_row_by_row"][name] = _run_child("read", spec, "plain", "rows")
        for name, w in written.items():  # the reader returns what was written
            got = result["read"][name]
            want = w["splits"] if name != "c2s" else None
            assert got["rows"] == w["images"], (name, got["rows"], w["images"])
            assert want is None or got["splits"] == want, (name, got["splits"], want)
        print("data path ...", flush=True)
        result["data_path"] = _run_child("data", specs["category"], str(args.size), str(batches),
                                         ",".join(str(w) for w in args.workers), str(args.batch_size),
                                         str(memory_batches), str(every), str(max(args.workers)),
                                         str(args.memory_size), str(args.memory_batch_size), args.memory_pipeline)
        print("training ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="fl-scale-run-") as run_dir:
            result["train"] = _run_child("train", specs["category"], run_dir, str(minutes), "64",
                                         str(args.batch_size))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    import torch  # lazy: only for the version in the report

    result.update(seconds=round(time.perf_counter() - started, 1), cpus=os.cpu_count(),
                  load_average=list(os.getloadavg()), platform=platform.platform(), torch=torch.__version__,
                  machine=platform.machine())
    print()
    print(report_tables(result))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"\nwrote {args.out} ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
