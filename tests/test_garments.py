"""Procedural garment renderer: layouts, determinism, exact annotation, visible attributes, readback."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import cv2
import numpy as np
import pytest

import fashionlens
from fashionlens.data.garments.scenes import pixel, render_view, sample_view
from fashionlens.data.garments.shapes import ATTRIBUTE_GROUPS, CATEGORIES, build_shape
from fashionlens.data.garments.textures import render_canonical
from fashionlens.data.garments import ATTRIBUTES, plan_items, render_dataset
from fashionlens.data.samples import OCCLUDED, TRUNCATED, VISIBLE

ITEMS, VIEWS, SIZE, SEED = 24, 3, 96, 7
LIST_FILES = [
    "category/Anno/list_category_cloth.txt", "category/Anno/list_category_img.txt", "category/Anno/list_attr_cloth.txt",
    "category/Anno/list_attr_img.txt", "category/Anno/list_bbox.txt", "category/Anno/list_landmarks.txt",
    "category/Eval/list_eval_partition.txt", "inshop/Eval/list_eval_partition.txt", "inshop/Anno/list_bbox_inshop.txt",
    "inshop/Anno/list_landmarks_inshop.txt", "inshop/Anno/list_item_inshop.txt", "c2s/Eval/list_eval_partition.txt",
    "c2s/Anno/list_bbox_consumer2shop.txt", "c2s/Anno/list_landmarks_consumer2shop.txt",
    "c2s/Anno/list_item_consumer2shop.txt", "ground_truth.jsonl", "garments.json", "README.txt",
]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("garments") / "out")
    summary = render_dataset(root, items=ITEMS, views=VIEWS, size=SIZE, seed=SEED, progress=False)
    with open(os.path.join(root, "ground_truth.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return root, summary, records


def _rows(root: str, rel: str) -> list[list[str]]:
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert int(lines[0]) == len(lines) - 2, rel
    return [line.split() for line in lines[2:]]


def _image(root: str, name: str) -> np.ndarray:
    return cv2.imread(os.path.join(root, "category", name))[..., ::-1]


def test_layout_and_counts_per_split(render):
    root, summary, records = render
    assert summary["images"] == ITEMS * VIEWS == len(records)
    for rel in LIST_FILES:
        assert os.path.isfile(os.path.join(root, rel)), rel
    for bench in ("inshop", "c2s"):  # images are written once and linked
        assert os.path.samefile(os.path.join(root, bench, "img"), os.path.join(root, "category", "img"))
    split_of_item = {r["item_id"]: r["split"] for r in records}
    assert all(split_of_item[r["item_id"]] == r["split"] for r in records)
    n_items = {s: sum(1 for v in split_of_item.values() if v == s) for s in ("train", "val", "test")}
    assert sum(n_items.values()) == ITEMS and min(n_items.values()) >= 1 and n_items["train"] > n_items["test"]
    assert summary["item_splits"] == n_items
    partition = _rows(root, "category/Eval/list_eval_partition.txt")
    assert [row for row in partition] == [[r["image"], r["split"]] for r in records]
    inshop = _rows(root, "inshop/Eval/list_eval_partition.txt")
    train_items = {item for _, item, status in inshop if status == "train"}
    test_items = {item for _, item, status in inshop if status in ("query", "gallery")}
    assert train_items and test_items and not train_items & test_items
    assert test_items == {i for i, s in split_of_item.items() if s == "test"}
    n_shop = (VIEWS + 1) // 2
    assert len(_rows(root, "c2s/Eval/list_eval_partition.txt")) == ITEMS * n_shop * (VIEWS - n_shop)
    for c, s, item, split in _rows(root, "c2s/Eval/list_eval_partition.txt"):
        assert "/comsumer_" in c and "/shop_" in s and f"/{item}/" in c and split == split_of_item[item]


def test_categories_attributes_and_taxonomy(render):
    root, _, records = render
    assert {r["category"] for r in records} == {c.name for c in CATEGORIES} and len(CATEGORIES) >= 12
    assert {c.path.split(".")[0] for c in CATEGORIES} == {"upper", "lower", "full"}
    types = [int(row[-1]) for row in _rows(root, "category/Anno/list_attr_cloth.txt")]
    assert types == [t for t, _, _ in ATTRIBUTES]
    for row in _rows(root, "category/Anno/list_attr_img.txt"):
        labels = np.array(row[1:], int)
        assert set(labels.tolist()) <= {1, -1}
        for group in set(types):  # single choice: exactly one positive per group
            assert (labels[np.array(types) == group] == 1).sum() == 1
    # look-alike distractors: same category and colour, different design, in the same split
    keys = {}
    for r in records:
        keys.setdefault((r["category"], r["attributes"]["colour"], r["split"]), set()).add(r["item_id"])
    assert any(len(items) > 1 for items in keys.values())


def test_landmark_rows_and_visibility_codes(render):
    root, _, records = render
    rows = _rows(root, "category/Anno/list_landmarks.txt")
    counts = {VISIBLE: 0, OCCLUDED: 0, TRUNCATED: 0}
    for row, r in zip(rows, records):
        k = {1: 6, 2: 4, 3: 8}[r["clothes_type"]]
        assert len(row) == 2 + 3 * k and all(len(v) == 3 for v in row[3::3] + row[4::3])
        exact = np.array(r["landmarks"])
        for v, (x, y), (ex, ey) in zip(r["visibility"], r["landmarks_written"], exact):
            counts[v] += 1
            if v == TRUNCATED:
                assert (x, y) == (0, 0) and not (-0.5 <= ex < SIZE - 0.5 and -0.5 <= ey < SIZE - 0.5)
            else:
                assert 0 <= x < SIZE and 0 <= y < SIZE and (x, y) == tuple(pixel(np.array([ex, ey])))
        x1, y1, x2, y2 = r["bbox"]
        assert 0 <= x1 < x2 < SIZE and 0 <= y1 < y2 < SIZE
    assert min(counts.values()) > 0, counts


def test_readback_through_deepfashion_readers(render):
    root, _, records = render
    truth = {r["image"]: r for r in records}
    for spec in ("deepfashion-category", "deepfashion-inshop", "deepfashion-c2s"):
        bench = spec.split("-")[1]
        data = fashionlens.read(f"{spec}:{root}/{bench}")
        inshop_rows = len(_rows(root, "inshop/Eval/list_eval_partition.txt"))
        assert len(data) == (len(records) if bench != "inshop" else inshop_rows)
        for s in data:
            t = truth[os.path.relpath(s.image, os.path.join(root, bench)).replace(os.sep, "/")]
            np.testing.assert_array_equal(s.landmarks, np.array(t["landmarks_written"], np.float32))
            np.testing.assert_array_equal(s.visibility, np.array(t["visibility"], np.int8))
            assert s.bbox == tuple(float(v) for v in t["bbox"]) and s.clothes_type == t["clothes_type"]
            if bench != "category":
                assert s.item_id == t["item_id"] and s.domain == t["domain"]
                assert s.category_name.endswith("/" + t["category"])
    data = fashionlens.read(f"garments:{root}")
    assert len(data) == len(records) and data.info.single_choice_groups
    assert data.info.category_paths == [c.path for c in CATEGORIES]
    assert data.info.group_names == {t: g for t, g, _ in ATTRIBUTE_GROUPS}
    for s in data:
        t = truth[os.path.relpath(s.image, os.path.join(root, "category")).replace(os.sep, "/")]
        assert os.path.isfile(s.image) and "/category/img/" in s.image
        assert (s.category_name, s.category + 1, s.split) == (t["category"], t["category_label"], t["split"])
        assert (s.item_id, s.domain, s.variation) == (t["item_id"], t["domain"], t["variation"])
        np.testing.assert_array_equal(s.attributes, np.array(t["attribute_labels"], np.int8))
        np.testing.assert_array_equal(s.landmarks, np.array(t["landmarks_written"], np.float32))
        np.testing.assert_array_equal(s.visibility, np.array(t["visibility"], np.int8))
        assert s.bbox == tuple(float(v) for v in t["bbox"])


def test_deterministic_and_independent_of_workers(render, tmp_path):
    root, _, records = render
    again = str(tmp_path / "again")
    render_dataset(again, items=ITEMS, views=VIEWS, size=SIZE, seed=SEED, workers=2, progress=False)
    for rel in LIST_FILES:
        with open(os.path.join(root, rel), "rb") as a, open(os.path.join(again, rel), "rb") as b:
            assert a.read() == b.read(), rel
    for r in records:
        np.testing.assert_array_equal(_image(root, r["image"]), _image(again, r["image"]))
    other = str(tmp_path / "other")
    render_dataset(other, items=ITEMS, views=VIEWS, size=SIZE, seed=SEED + 1, progress=False)
    assert not np.array_equal(_image(root, records[0]["image"]), _image(other, records[0]["image"]))


def _item(category: str, **changes):
    """Design, canonical painting and a shop view of the first planned item of ``category``."""
    design = next(d for _, d, _ in plan_items(28, 3) if d.category == category)
    design = replace(design, **changes)
    canon = render_canonical(design, build_shape(design), int(SIZE * 1.25))
    vp = sample_view(canon, "shop", 0, SIZE, np.random.default_rng(0))
    return design, canon, vp


def test_landmarks_lie_on_the_drawn_outline():
    for cat in CATEGORIES:
        design, canon, vp = _item(cat.name, fabric="cotton")
        view = render_view(canon, vp, SIZE)
        for k, (x, y) in enumerate(pixel(view.landmarks)):
            patch = view.garment_mask[y - 2:y + 3, x - 2:x + 3]
            assert patch.max() > 0.5, (cat.name, k)  # on or in the garment
            if not (design.neckline == "hooded" and k < 2):  # a hood surrounds the collar points
                assert patch.min() < 0.1, (cat.name, k)  # ... at its edge
        x1, y1, x2, y2 = view.bbox
        ys, xs = np.nonzero(view.garment_mask >= 0.5)
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_occluded_landmark_is_1_and_cut_off_is_2():
    design, canon, vp = _item("Tee")
    clear = render_view(canon, replace(vp, occluders=()), SIZE)
    assert (clear.visibility == VISIBLE).all()
    x, y = clear.landmarks[4]  # left hem
    bag = {"kind": "bag", "centre": [x, y], "size": 14.0, "angle": 0.0, "colour": (20.0, 200.0, 20.0), "aspect": 1.0}
    covered = render_view(canon, replace(vp, occluders=(bag,)), SIZE)
    assert covered.visibility[4] == OCCLUDED and (np.delete(covered.visibility, 4) == VISIBLE).all()
    px, py = pixel(clear.landmarks[4])
    assert np.abs(covered.image[py, px].astype(int) - clear.image[py, px]).sum() > 60  # really drawn over
    shift = np.array([[1, 0, 0], [0, 1, -clear.landmarks[0, 1] - 3], [0, 0, 1]]) @ vp.H  # collar above the frame
    cut = render_view(canon, replace(vp, H=shift, occluders=()), SIZE)
    assert (cut.visibility[:2] == TRUNCATED).all() and (cut.landmarks[:2, 1] < -0.5).all()
    assert cut.bbox[1] == 0  # the box is clipped to the frame


def test_shop_and_consumer_backgrounds_differ(render):
    root, _, records = render
    stats = {"shop": [], "consumer": []}
    for r in records:
        img = _image(root, r["image"]).astype(np.float32)
        border = np.concatenate([img[:3].reshape(-1, 3), img[-3:].reshape(-1, 3), img[:, :3].reshape(-1, 3)])
        stats[r["domain"]].append((border.mean(), border.std(0).mean()))
    shop, cons = np.array(stats["shop"]), np.array(stats["consumer"])
    assert np.median(shop[:, 0]) > 200 and np.median(shop[:, 1]) < 12
    assert np.median(cons[:, 1]) > 2 * np.median(shop[:, 1]) and np.median(cons[:, 0]) < np.median(shop[:, 0]) - 40


def _garment_pixels(texture: str, **extra) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels (H, W) and the inner garment mask of a front view of a Sweater body."""
    design, canon, vp = _item("Sweater", texture=texture, fabric="cotton", **extra)
    view = render_view(canon, vp, SIZE)
    grey = view.image.astype(np.float32).mean(2)
    inner = cv2.erode((view.garment_mask > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return grey, inner


def test_textures_are_really_drawn():
    design = next(d for _, d, _ in plan_items(28, 3) if d.category == "Sweater")
    pattern = dict(design.pattern, angle=0.0, period=0.08, duty=0.4)  # horizontal stripes, about 7 px in the view
    grey, inner = _garment_pixels("striped", pattern=pattern)
    rows = np.array([grey[y][inner[y]].mean() for y in range(SIZE) if inner[y].sum() > 8])
    power = np.abs(np.fft.rfft(rows - rows.mean())) ** 2
    freq = np.fft.rfftfreq(len(rows))
    near = np.abs(freq - 0.9 / (0.08 * 0.82 * SIZE)) < 0.03  # canonical period x view scale 0.82 S / 0.9 C
    assert power[near].sum() > 0.4 * power.sum()  # a strong periodic component at the stripe frequency
    solid, solid_inner = _garment_pixels("solid", pattern=pattern)
    assert solid[solid_inner].std() < 0.35 * grey[inner].std()


def test_sleeve_length_is_drawn():
    reach = {}
    for sleeve in ("long_sleeve", "short_sleeve"):
        design, canon, vp = _item("Button-Down", sleeve=sleeve)
        design = replace(design, geom=dict(design.geom, sl=1.05 if sleeve == "long_sleeve" else 0.3, sa=30.0))
        canon = render_canonical(design, build_shape(design), int(SIZE * 1.25))
        collar, cuff = canon.landmarks[0], canon.landmarks[2]
        inward = cuff + (collar - cuff) * 0.05
        assert canon.rgba[int(round(inward[1])), int(round(inward[0])), 3] > 0.5  # the sleeve reaches its cuff
        reach[sleeve] = np.linalg.norm(cuff - collar) / np.linalg.norm(canon.landmarks[1] - collar)  # in neck widths
    assert reach["long_sleeve"] > 1.5 * reach["short_sleeve"]


def test_bad_arguments_and_foreign_directory(tmp_path):
    with pytest.raises(ValueError, match="items"):
        render_dataset(str(tmp_path / "a"), items=5, progress=False)
    with pytest.raises(ValueError, match="views"):
        render_dataset(str(tmp_path / "a"), views=2, progress=False)
    with pytest.raises(ValueError, match="size"):
        render_dataset(str(tmp_path / "a"), size=1200, progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="garments.json"):
        render_dataset(str(tmp_path / "b"), items=14, views=3, size=48, progress=False)
    with pytest.raises(FileNotFoundError, match="garments.json"):
        fashionlens.read(f"garments:{tmp_path / 'b'}")


def test_without_symlinks_and_with_a_missing_image(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    root = str(tmp_path / "out")
    summary = render_dataset(root, items=14, views=3, size=48, progress=False)
    shop = os.path.join("img", "UPPER", "Tee", "id_00000001", "shop_01.jpg")
    assert not os.path.islink(os.path.join(root, "inshop", "img"))
    assert os.path.samefile(os.path.join(root, "inshop", shop), os.path.join(root, "category", shop))
    assert len(fashionlens.read(f"deepfashion-inshop:{root}/inshop")) > 0
    for bench in ("category", "inshop", "c2s"):  # the image is gone from every root
        os.remove(os.path.join(root, bench, shop))
    with pytest.raises(FileNotFoundError, match="shop_01.jpg"):
        fashionlens.read(f"garments:{root}")
    data = fashionlens.read(f"garments:{root}", missing="skip")
    assert len(data) == summary["images"] - 1 and data.skipped_missing == 1
