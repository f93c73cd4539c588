"""Writers of small DeepFashion benchmarks in the exact published layouts, for tests.

Each ``write_*_benchmark(root, ...)`` creates the annotation files with the real quirks (count line,
header, names padded to a fixed column, zero-padded coordinates, trailing spaces, variable-length
landmark rows, attribute names with spaces, the "comsumer" spelling, highres file names) plus tiny
real JPEG images, and returns the ground truth it wrote: ``{relative image name: Truth}`` in file order.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

IMAGE_SIZE = 64  # fixture images are IMAGE_SIZE x IMAGE_SIZE pixels; every coordinate lies inside

#: list_category_cloth.txt as published: 20 upper, 16 lower, 14 full-body categories.
CATEGORIES = (
    [(n, 1) for n in "Anorak Blazer Blouse Bomber Button-Down Cardigan Flannel Halter Henley Hoodie Jacket Jersey "
                     "Parka Peacoat Poncho Sweater Tank Tee Top Turtleneck".split()]
    + [(n, 2) for n in "Capris Chinos Culottes Cutoffs Gauchos Jeans Jeggings Jodhpurs Joggers Leggings Sarong "
                       "Shorts Skirt Sweatpants Sweatshorts Trunks".split()]
    + [(n, 3) for n in "Caftan Cape Coat Coverup Dress Jumpsuit Kaftan Kimono Nightdress Onesie Robe Romper "
                       "Shirtdress Sundress".split()]
)
#: A few attributes of list_attr_cloth.txt, with the spaces inside names that the real file has.
ATTRIBUTES = [
    ("a-line", 3), ("abstract", 1), ("abstract chevron", 1), ("abstract chevron print", 1), ("cotton", 2),
    ("zip-up", 4), ("boho", 5), ("paisley print", 1), ("denim", 2), ("maxi", 3),
]
FINE_ATTRIBUTES = [
    (name, group) for group, names in enumerate([
        "floral graphic striped embroidered pleated solid lattice", "long_sleeve short_sleeve sleeveless",
        "maxi_length mini_length no_dress", "crew_neckline v_neckline square_neckline no_neckline",
        "denim chiffon cotton leather faux knit", "tight loose conventional"], 1)
    for name in names.split()
]
SLOTS_BY_TYPE = {1: (0, 1, 2, 3, 6, 7), 2: (4, 5, 6, 7), 3: (0, 1, 2, 3, 4, 5, 6, 7)}


@dataclass
class Truth:
    """What a fixture wrote for one image (0-based category; pixels; attributes 1/-1/0)."""

    line: int  # line of the primary annotation row
    category: int | None = None
    clothes_type: int | None = None
    attributes: np.ndarray | None = None
    landmarks: np.ndarray | None = None  # (K, 2)
    visibility: np.ndarray | None = None  # (K,)
    bbox: tuple[int, int, int, int] | None = None
    split: str | None = None
    item_id: str | None = None
    domain: str | None = None
    variation: int | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- writing
def write_image(path: str, seed: int = 0) -> None:
    """A tiny real JPEG (IMAGE_SIZE square, a coloured rectangle on a plain background)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), rng.integers(150, 255, 3), np.uint8)
    pixels[12:52, 16:48] = rng.integers(0, 120, 3)
    Image.fromarray(pixels).save(path, quality=85)


def write_list(path: str, header: str, rows: list[str], *, count: int | None = None) -> None:
    """A list file: count line, header, rows (each ending with the trailing space the real files have)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{len(rows) if count is None else count}\n{header}\n")
        f.writelines(row + "\n" for row in rows)


def write_plain(path: str, rows: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(row + "\n" for row in rows)


def replace_line(path: str, lineno: int, text: str) -> None:
    """Replace 1-based line ``lineno`` of a file (to make a malformed fixture)."""
    with open(path) as f:
        lines = f.read().split("\n")
    lines[lineno - 1] = text
    with open(path, "w") as f:
        f.write("\n".join(lines))


def pad(name: str, width: int = 72) -> str:
    """The image name padded to a fixed column, as the published files do."""
    return name.ljust(width)


def coord(v: int) -> str:
    return f"{v:03d}"


def random_landmarks(rng: random.Random, clothes_type: int) -> tuple[np.ndarray, np.ndarray]:
    k = len(SLOTS_BY_TYPE[clothes_type])
    xy = np.array([[rng.randrange(1, IMAGE_SIZE), rng.randrange(1, IMAGE_SIZE)] for _ in range(k)], np.float32)
    vis = np.array([rng.choice([0, 0, 0, 1, 2]) for _ in range(k)], np.int8)
    return xy, vis


def landmark_columns(xy: np.ndarray, vis: np.ndarray) -> str:
    return "  ".join(f"{v} {coord(int(x))} {coord(int(y))}" for (x, y), v in zip(xy, vis))


def random_bbox(rng: random.Random) -> tuple[int, int, int, int]:
    x1, y1 = rng.randrange(0, 20), rng.randrange(0, 20)
    return x1, y1, rng.randrange(40, IMAGE_SIZE), rng.randrange(40, IMAGE_SIZE)


def bbox_columns(box: tuple[int, int, int, int]) -> str:
    return " ".join(coord(v) for v in box)


# ---------------------------------------------------------------------------------------------- category
def write_category_benchmark(root: str, n_images: int = 12, *, seed: int = 0, landmarks: bool = True,
                             attributes: bool = True, images: bool = True) -> dict[str, Truth]:
    """Category and Attribute Prediction benchmark (Anno/ + Eval/ + img/), ``n_images`` images."""
    rng = random.Random(seed)
    anno = os.path.join(root, "Anno")
    write_list(os.path.join(anno, "list_category_cloth.txt"), "category_name  category_type",
               [f"{n.ljust(29)}{t}" for n, t in CATEGORIES])
    # the real file pads names to column 29, and at least one line has a single space before the type
    attr_rows = [f"{n.ljust(29)}{t}" if i != 7 else f"{n} {t}" for i, (n, t) in enumerate(ATTRIBUTES)]
    truth: dict[str, Truth] = {}
    splits = ["train", "val", "test"]
    for i in range(n_images):
        cat = rng.choice([c for c, (n, _) in enumerate(CATEGORIES) if n not in ("Cape", "Sundress")])
        name = f"img/Sheer_Pleated-Front_{CATEGORIES[cat][0]}/img_{i + 1:08d}.jpg"
        ct = CATEGORIES[cat][1]
        attrs = np.array([rng.choice([-1, -1, -1, 1, 0]) for _ in ATTRIBUTES], np.int8)
        xy, vis = random_landmarks(rng, ct)
        truth[name] = Truth(line=i + 3, category=cat, clothes_type=ct, attributes=attrs, landmarks=xy,
                            visibility=vis, bbox=random_bbox(rng), split=splits[i % 3] if i >= 3 else splits[i])
    rows = list(truth.items())
    write_list(os.path.join(anno, "list_category_img.txt"), "image_name  category_label",
               [f"{pad(n)}{t.category + 1}" for n, t in rows])
    if attributes:
        write_list(os.path.join(anno, "list_attr_cloth.txt"), "attribute_name  attribute_type", attr_rows)
        write_list(os.path.join(anno, "list_attr_img.txt"), "image_name  attribute_labels",
                   [f"{pad(n)}{' '.join(f'{v:>2}' for v in t.attributes)} " for n, t in rows])
    else:
        for t in truth.values():
            t.attributes = None
    write_list(os.path.join(anno, "list_bbox.txt"), "image_name  x_1  y_1  x_2  y_2",
               [f"{pad(n)}{bbox_columns(t.bbox)}" for n, t in rows])
    if landmarks:
        write_list(os.path.join(anno, "list_landmarks.txt"),
                   "image_name  clothes_type  landmark_visibility_1  landmark_location_x_1  landmark_location_y_1",
                   [f"{pad(n)}{t.clothes_type}  {landmark_columns(t.landmarks, t.visibility)} " for n, t in rows])
    else:
        for t in truth.values():
            t.landmarks = t.visibility = None
    write_list(os.path.join(root, "Eval", "list_eval_partition.txt"), "image_name  evaluation_status",
               [f"{pad(n)}{t.split}" for n, t in rows])
    if images:
        for i, n in enumerate(truth):
            write_image(os.path.join(root, n), seed + i)
    return truth


# ---------------------------------------------------------------------------------------------- fine
def write_fine_benchmark(root: str, n_per_split: tuple[int, int, int] = (4, 2, 2), *, seed: int = 0,
                         highres: bool = True) -> dict[str, Truth]:
    """Fine-grained variant: Anno_fine/ with {split}.txt and line-aligned {split}_cate/attr/bbox/landmarks.txt.

    With ``highres``, every other image is listed as ``img_highres_subset/Folder-img_N.jpg``; half of those
    exist under that name, the others only as ``img/Folder/img_N.jpg`` (``Truth.extra["file"]``).
    Keys are the names as listed.
    """
    rng = random.Random(seed)
    anno = os.path.join(root, "Anno_fine")
    write_list(os.path.join(anno, "list_category_cloth.txt"), "category_name  category_type",
               [f"{n.ljust(29)}{t}" for n, t in CATEGORIES])
    write_list(os.path.join(anno, "list_attr_cloth.txt"), "attribute_name  attribute_type",
               [f"{n.ljust(29)}{g}" for n, g in FINE_ATTRIBUTES])
    truth: dict[str, Truth] = {}
    k = 0
    for split, n in zip(("train", "val", "test"), n_per_split):
        rows: dict[str, list[str]] = {key: [] for key in ("", "_cate", "_attr", "_bbox", "_landmarks")}
        for line in range(1, n + 1):
            k += 1
            cat = rng.randrange(len(CATEGORIES))
            folder = f"Striped_Denim-Hem_{CATEGORIES[cat][0]}"
            real = f"img/{folder}/img_{k:08d}.jpg"
            name = f"img_highres_subset/{folder}-img_{k:08d}.jpg" if highres and k % 2 == 0 else real
            file = name if highres and k % 4 == 0 else real
            ct = CATEGORIES[cat][1]
            attrs = np.full(len(FINE_ATTRIBUTES), -1, np.int8)
            for g in range(1, 7):
                attrs[rng.choice([i for i, (_, gg) in enumerate(FINE_ATTRIBUTES) if gg == g])] = 1
            xy, _ = random_landmarks(rng, ct)
            vis = np.zeros(len(xy), np.int8)
            xy[0], vis[0] = 0, 2  # the first landmark absent: written as 0 0
            full = np.zeros((8, 2), int)
            full[list(SLOTS_BY_TYPE[ct])] = xy
            t = Truth(line=line, category=cat, clothes_type=ct, attributes=attrs, landmarks=xy, visibility=vis,
                      bbox=random_bbox(rng), split=split, extra={"file": file})
            truth[name] = t
            rows[""].append(name)
            rows["_cate"].append(str(cat + 1))
            rows["_attr"].append(" ".join(str((v + 1) // 2) for v in attrs) + " ")
            rows["_bbox"].append(" ".join(str(v) for v in t.bbox))
            rows["_landmarks"].append(" ".join(str(v) for v in full.reshape(-1)))
            write_image(os.path.join(root, file), k)
        for suffix, lines in rows.items():
            write_plain(os.path.join(anno, f"{split}{suffix}.txt"), lines)
    return truth


# ---------------------------------------------------------------------------------------------- retrieval
INSHOP_FOLDERS = ["WOMEN/Dresses", "WOMEN/Blouses_Shirts", "MEN/Denim", "MEN/Pants"]
INSHOP_TYPES = {"WOMEN/Dresses": 3, "WOMEN/Blouses_Shirts": 1, "MEN/Denim": 2, "MEN/Pants": 2}


def write_inshop_benchmark(root: str, n_items: int = 6, *, seed: int = 0, landmarks: bool = True,
                           description: bool = True) -> dict[str, Truth]:
    """In-shop benchmark: items of 3 images; the first half of the items train, the rest query/gallery."""
    rng = random.Random(seed)
    truth: dict[str, Truth] = {}
    for i in range(n_items):
        folder = INSHOP_FOLDERS[i % len(INSHOP_FOLDERS)]
        item = f"id_{i * 7 + 2:08d}"
        for j, view in enumerate(["1_front", "2_side", "3_back"]):
            name = f"img/{folder}/{item}/{i + 1:02d}_{view}.jpg"
            split = "train" if i < n_items // 2 else ("query" if j == 0 else "gallery")
            ct = INSHOP_TYPES[folder]
            xy, vis = random_landmarks(rng, ct)
            truth[name] = Truth(line=len(truth) + 3, clothes_type=ct, landmarks=xy, visibility=vis,
                                bbox=random_bbox(rng), split=split, item_id=item, domain="shop",
                                variation=j + 1, extra={"folder": folder, "landmark_variation": rng.randrange(1, 6)})
    rows = list(truth.items())
    write_list(os.path.join(root, "Eval", "list_eval_partition.txt"), "image_name item_id evaluation_status",
               [f"{pad(n)}{t.item_id} {t.split}" for n, t in rows])
    write_list(os.path.join(root, "Anno", "list_bbox_inshop.txt"),
               "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
               [f"{pad(n)}{t.clothes_type}  {t.variation}  {'  '.join(coord(v) for v in t.bbox)} " for n, t in rows])
    if landmarks:
        write_list(os.path.join(root, "Anno", "list_landmarks_inshop.txt"),
                   "image_name  clothes_type  variation_type  landmark_visibility_1  landmark_location_x_1 ...",
                   [f"{pad(n)}{t.clothes_type}  {t.extra['landmark_variation']}  "
                    f"{landmark_columns(t.landmarks, t.visibility)} " for n, t in rows])
    else:
        for t in truth.values():
            t.landmarks = t.visibility = None
    items = sorted({t.item_id for t in truth.values()})
    with open(os.path.join(root, "Anno", "list_item_inshop.txt"), "w") as f:
        f.write(f"{len(items)}\n" + "".join(f"{item}\n" for item in items))
    if description:
        with open(os.path.join(root, "Anno", "list_description_inshop.json"), "w") as f:
            json.dump([{"item": item, "color": "Red", "description": ["a garment"]} for item in items], f)
    for i, n in enumerate(truth):
        write_image(os.path.join(root, n), seed + i)
    return truth


C2S_FOLDERS = {"TOPS/T_Shirt": 1, "TROUSERS/Pants": 2, "CLOTHING/Dress": 3}


def write_c2s_benchmark(root: str, n_items: int = 6, *, seed: int = 0) -> tuple[dict[str, Truth], int]:
    """Consumer-to-shop benchmark: each item has 2 consumer ("comsumer_NN.jpg") and 2 shop photos, and the
    pair list pairs every consumer photo with every shop photo (shop photos repeat).

    One consumer photo per item is named ``photo_NN.jpg`` so that only the bbox file's source_type tells its
    domain.  Returns ``(truth, number of pair rows)``.
    """
    rng = random.Random(seed)
    truth: dict[str, Truth] = {}
    pairs: list[str] = []
    folders = list(C2S_FOLDERS)
    for i in range(n_items):
        folder, item = folders[i % len(folders)], f"id_{i * 3 + 218:08d}"
        split = ("train", "val", "test")[i % 3]
        ct = C2S_FOLDERS[folder]
        names = {f"img/{folder}/{item}/comsumer_01.jpg": "consumer", f"img/{folder}/{item}/photo_02.jpg": "consumer",
                 f"img/{folder}/{item}/shop_01.jpg": "shop", f"img/{folder}/{item}/shop_02.jpg": "shop"}
        for name, domain in names.items():
            xy, vis = random_landmarks(rng, ct)
            truth[name] = Truth(line=0, clothes_type=ct, landmarks=xy, visibility=vis, bbox=random_bbox(rng),
                                split=split, item_id=item, domain=domain, variation=rng.randrange(1, 6),
                                extra={"folder": folder})
        consumers = [n for n, d in names.items() if d == "consumer"]
        shops = [n for n, d in names.items() if d == "shop"]
        for c in consumers:
            for s in shops:
                pairs.append(f"{c}  {s}  {item}  {split}")
                for n in (c, s):
                    truth[n].line = truth[n].line or len(pairs) + 2
    write_list(os.path.join(root, "Eval", "list_eval_partition.txt"),
               "image_pair_name_1  image_pair_name_2  item_id  evaluation_status", pairs)
    rows = list(truth.items())
    write_list(os.path.join(root, "Anno", "list_bbox_consumer2shop.txt"),
               "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2",
               [f"{pad(n)}{t.clothes_type}  {1 if t.domain == 'shop' else 2}  {bbox_columns(t.bbox)} "
                for n, t in rows])
    write_list(os.path.join(root, "Anno", "list_landmarks_consumer2shop.txt"),
               "image_name  clothes_type  variation_type  landmark_visibility_1  landmark_location_x_1 ...",
               [f"{pad(n)}{t.clothes_type}  {t.variation}  {landmark_columns(t.landmarks, t.visibility)} "
                for n, t in rows])
    items = sorted({t.item_id for t in truth.values()})
    with open(os.path.join(root, "Anno", "list_item_consumer2shop.txt"), "w") as f:
        f.write(f"{len(items)}\n" + "".join(f"{item}\n" for item in items))
    for i, n in enumerate(truth):
        write_image(os.path.join(root, n), seed + i)
    return truth, len(pairs)
