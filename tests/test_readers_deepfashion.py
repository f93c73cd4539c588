"""DeepFashion readers on fixtures written in the published layouts (quirks included)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from deepfashion_fixtures import (
    ATTRIBUTES, CATEGORIES, FINE_ATTRIBUTES, landmark_columns, pad, replace_line, write_c2s_benchmark,
    write_category_benchmark, write_fine_benchmark, write_inshop_benchmark, write_list,
)

import fashionlens
from fashionlens.data.readers.listfile import folder_category
from fashionlens.data.readers.deepfashion import read_c2s, read_category, read_fine, read_inshop
from fashionlens.data.samples import DataFormatError


def _by_name(samples, root):
    return {os.path.relpath(s.image, root).replace(os.sep, "/"): s for s in samples}


def _check_geometry(sample, truth):
    assert sample.clothes_type == truth.clothes_type
    assert sample.bbox == tuple(float(v) for v in truth.bbox)
    if truth.landmarks is None:
        assert sample.landmarks is None and sample.visibility is None
    else:
        assert sample.landmarks.dtype == np.float32 and sample.visibility.dtype == np.int8
        np.testing.assert_array_equal(sample.landmarks, truth.landmarks)
        np.testing.assert_array_equal(sample.visibility, truth.visibility)


# ---------------------------------------------------------------------------------------------- category
def test_category_reads_every_field(tmp_path):
    truth = write_category_benchmark(str(tmp_path), n_images=12)
    data = read_category(str(tmp_path))
    assert len(data) == 12 and data.skipped_missing == 0
    assert data.splits() == {"train": 4, "val": 4, "test": 4}
    for sample, (name, t) in zip(data, truth.items()):
        assert sample.image == os.path.join(str(tmp_path), name) and os.path.isabs(sample.image)
        assert sample.source == f"Anno/list_category_img.txt:{t.line}"
        assert sample.category == t.category and sample.category_name == CATEGORIES[t.category][0]
        assert sample.attributes.dtype == np.int8
        np.testing.assert_array_equal(sample.attributes, t.attributes)
        assert sample.split == t.split
        _check_geometry(sample, t)
        xy, vis, present = sample.unified_landmarks()
        assert present.sum() == len(t.landmarks)


def test_category_info(tmp_path):
    write_category_benchmark(str(tmp_path), n_images=3)
    info = read_category(str(tmp_path)).info
    assert info.categories[:3] == ["Anorak", "Blazer", "Blouse"] and len(info.categories) == 50
    assert info.category_types[:20] == [1] * 20 and info.category_types[20:36] == [2] * 16
    assert info.category_paths[2] == "upper-body.Blouse" and info.category_paths[-1] == "full-body.Sundress"
    assert info.attributes == [name for name, _ in ATTRIBUTES]  # "abstract chevron print", "paisley print" 1-space
    assert info.attribute_groups == [group for _, group in ATTRIBUTES]
    assert info.group_names == {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}
    assert info.root == str(tmp_path)


def test_category_attribute_rows_share_one_int8_matrix(tmp_path):
    write_category_benchmark(str(tmp_path), n_images=4)
    data = read_category(str(tmp_path))
    bases = {id(s.attributes.base) for s in data}
    assert len(bases) == 1 and data.samples[0].attributes.base.shape == (4, len(ATTRIBUTES))


def test_category_optional_files_absent(tmp_path):
    write_category_benchmark(str(tmp_path), n_images=4, landmarks=False, attributes=False)
    os.remove(tmp_path / "Anno" / "list_bbox.txt")
    data = read_category(str(tmp_path))
    assert all(s.attributes is None and s.landmarks is None and s.bbox is None for s in data)
    assert data.info.attributes == [] and all(s.clothes_type in (1, 2, 3) for s in data)  # from the category type


def test_category_trailing_blank_lines_and_crlf(tmp_path):
    truth = write_category_benchmark(str(tmp_path), n_images=5)
    path = tmp_path / "Anno" / "list_landmarks.txt"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n   \n\n")
    data = read_category(str(tmp_path))
    for sample, t in zip(data, truth.values()):
        np.testing.assert_array_equal(sample.landmarks, t.landmarks)


def test_landmark_rows_padded_to_eight_triplets(tmp_path):
    truth = write_category_benchmark(str(tmp_path), n_images=6)
    name, t = next((n, t) for n, t in truth.items() if t.clothes_type != 3)
    padded = landmark_columns(t.landmarks, t.visibility) + "  0 000 000" * (8 - len(t.landmarks))
    replace_line(str(tmp_path / "Anno/list_landmarks.txt"), t.line, f"{pad(name)}{t.clothes_type}  {padded} ")
    sample = _by_name(read_category(str(tmp_path)), str(tmp_path))[name]
    np.testing.assert_array_equal(sample.landmarks, t.landmarks)
    np.testing.assert_array_equal(sample.visibility, t.visibility)


@pytest.mark.parametrize("file, line, text, message", [
    ("Anno/list_category_img.txt", 5, "img/a/img_1.jpg   3   4", "expected 2 columns"),
    ("Anno/list_category_img.txt", 4, "img/a/img_1.jpg   51", "unknown category label 51"),
    ("Anno/list_category_img.txt", 4, "img/a/img_1.jpg   0", "unknown category label 0"),
    ("Anno/list_category_img.txt", 6, "img/a/img_1.jpg   three", "category_label is 'three'"),
    ("Anno/list_attr_img.txt", 4, pad("img/Sheer_Pleated-Front_Top/img_00000002.jpg") + " 1 -1 1 -1 0 1 -1 1 ",
     "expected 10 attribute values, got 8"),
    ("Anno/list_attr_img.txt", 3, pad("x.jpg") + " 1 -1 2 -1 0 1 -1 1 1 1", "attribute label 2"),
    ("Anno/list_attr_img.txt", 3, pad("x.jpg") + " 1 -1 y -1 0 1 -1 1 1 1", "attribute value 3 is 'y'"),
    ("Anno/list_bbox.txt", 4, pad("x.jpg") + "072 07a 232 273", "column 2 is '07a'"),
    ("Anno/list_bbox.txt", 4, pad("x.jpg") + "072 079 232", "expected 5 columns"),
    ("Anno/list_landmarks.txt", 3, pad("x.jpg") + "1  0 146 102  0 173 095", "expected 6 (visibility x y) triplets"),
    ("Anno/list_landmarks.txt", 3, pad("x.jpg") + "4  0 146 102  0 173 095", "clothes_type is 4"),
    ("Anno/list_landmarks.txt", 3, pad("x.jpg") + "2  0 146 102  0 173 095  3 1 1  0 1 1", "visibility"),
    ("Anno/list_landmarks.txt", 4, pad("x.jpg") + "2  0 146 1.5  0 173 095  0 1 1  0 1 1", "'1.5'"),
    ("Eval/list_eval_partition.txt", 5, pad("x.jpg") + "trian", "unknown split 'trian'"),
    ("Anno/list_category_cloth.txt", 4, "Blazer                       7", "category_type is 7"),
    ("Anno/list_attr_cloth.txt", 3, "a-line", "expected a name and its attribute_type"),
    ("Anno/list_category_img.txt", 1, "13", "line 1 announces 13 rows but the file has 12"),
    ("Anno/list_bbox.txt", 1, "11", "more rows than the 11 announced on line 1"),  # raised on line 14
    ("Anno/list_bbox.txt", 1, "twelve", "expected the number of rows"),
])
def test_category_malformed_line(tmp_path, file, line, text, message):
    truth = write_category_benchmark(str(tmp_path), n_images=12, images=False)
    if "x.jpg" in text:  # keep the row's own image name so that only the malformed part is wrong
        name = list(truth)[line - 3]
        text = text.replace(pad("x.jpg"), pad(name))
    replace_line(str(tmp_path / file), line, text)
    with pytest.raises(DataFormatError) as err:
        read_category(str(tmp_path), missing="skip")
    where = f"{file}:{14 if 'more rows' in message else line}: "
    assert where in str(err.value) and message in str(err.value)
    assert err.value.path.endswith(file)


def test_category_unknown_and_duplicate_images(tmp_path):
    truth = write_category_benchmark(str(tmp_path), n_images=4, images=False)
    replace_line(str(tmp_path / "Anno/list_bbox.txt"), 4, pad("img/Nope/img_1.jpg") + "001 002 003 004")
    with pytest.raises(DataFormatError, match=r"list_bbox.txt:4: image img/Nope/img_1.jpg is not listed in "):
        read_category(str(tmp_path), missing="skip")
    replace_line(str(tmp_path / "Anno/list_category_img.txt"), 5, pad(list(truth)[0]) + "3")
    with pytest.raises(DataFormatError, match=r"list_category_img.txt:5: .* listed twice .*:3\)"):
        read_category(str(tmp_path), missing="skip")


def test_category_blank_line_between_rows(tmp_path):
    write_category_benchmark(str(tmp_path), n_images=4, images=False)
    path = tmp_path / "Eval" / "list_eval_partition.txt"
    lines = path.read_text().split("\n")
    path.write_text("\n".join(lines[:4] + [""] + lines[4:]))
    with pytest.raises(DataFormatError, match=r"list_eval_partition.txt:5: blank line between rows"):
        read_category(str(tmp_path), missing="skip")


def test_missing_image_error_and_skip(tmp_path):
    truth = write_category_benchmark(str(tmp_path), n_images=6)
    gone = list(truth)[2]
    os.remove(tmp_path / gone)
    with pytest.raises(FileNotFoundError) as err:
        read_category(str(tmp_path))
    assert gone in str(err.value) and "Anno/list_category_img.txt:5" in str(err.value)
    data = read_category(str(tmp_path), missing="skip")
    assert len(data) == 5 and data.skipped_missing == 1
    assert gone not in {os.path.relpath(s.image, tmp_path) for s in data}


def test_missing_files_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark root not found"):
        read_category(str(tmp_path / "nowhere"))
    write_category_benchmark(str(tmp_path), n_images=2, images=False)
    os.remove(tmp_path / "Anno" / "list_category_img.txt")
    with pytest.raises(FileNotFoundError, match="list_category_img.txt: annotation file not found"):
        read_category(str(tmp_path))
    with pytest.raises(ValueError, match="missing must be"):
        read_category(str(tmp_path), missing="ignore")


def test_category_speed_at_scale(tmp_path):
    """5,000 rows with 1,000 attributes each (1/58 of the real benchmark) read in well under the bound
    (about 0.2 s here; the full-size 289k-row benchmark reads in about 14 s on this 2-core machine, bench_scale.py)."""
    n, a = 5000, 1000
    write_list(str(tmp_path / "Anno/list_category_cloth.txt"), "category_name  category_type",
               [f"{name.ljust(29)}{t}" for name, t in CATEGORIES])
    write_list(str(tmp_path / "Anno/list_attr_cloth.txt"), "attribute_name  attribute_type",
               [f"attr number {i}".ljust(29) + str(i % 5 + 1) for i in range(a)])
    names = [f"img/Sheer_Pleated-Front_Blouse/img_{i:08d}.jpg" for i in range(n)]
    labels = np.random.default_rng(0).choice(np.array([-1, 0, 1], np.int8), (50, a), p=[0.9, 0.05, 0.05])
    rows = [" ".join(f"{v:>2}" for v in row) + " " for row in labels.tolist()]  # 50 distinct rows, reused
    write_list(str(tmp_path / "Anno/list_category_img.txt"), "image_name  category_label",
               [pad(m) + "3" for m in names])
    write_list(str(tmp_path / "Anno/list_attr_img.txt"), "image_name  attribute_labels",
               [pad(m) + rows[i % 50] for i, m in enumerate(names)])
    os.makedirs(tmp_path / "img/Sheer_Pleated-Front_Blouse")
    for m in names:  # empty stand-ins: the reader only checks that image files exist
        open(tmp_path / m, "wb").close()
    start = time.perf_counter()
    data = read_category(str(tmp_path))
    elapsed = time.perf_counter() - start
    assert len(data) == n
    for i in (0, 1, 2345, n - 1):
        np.testing.assert_array_equal(data.samples[i].attributes, labels[i % 50])
    assert elapsed < 5.0, f"reading {n} rows took {elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------- fine
def test_fine_variant(tmp_path):
    truth = write_fine_benchmark(str(tmp_path), (4, 2, 2))
    data = read_fine(str(tmp_path))
    assert data.splits() == {"train": 4, "val": 2, "test": 2}
    info = data.info
    assert info.attributes == [n for n, _ in FINE_ATTRIBUTES] and info.single_choice_groups
    assert info.group_names == {1: "texture", 2: "sleeve", 3: "length", 4: "neckline", 5: "fabric", 6: "fit"}
    for sample, (name, t) in zip(data, truth.items()):
        assert sample.image == os.path.join(str(tmp_path), t.extra["file"])
        assert sample.source == f"Anno_fine/{t.split}.txt:{t.line}"
        assert sample.category == t.category and sample.clothes_type == t.clothes_type
        np.testing.assert_array_equal(sample.attributes, t.attributes)  # 0/1 stored as -1/1
        assert sample.attributes.dtype == np.int8
        for g in range(1, 7):  # single choice: one positive per group
            assert (sample.attributes[np.array(info.attribute_groups) == g] == 1).sum() == 1
        _check_geometry(sample, t)
        assert sample.visibility[0] == 2  # the (0, 0) point is absent
    # a highres name whose file exists only under img/Folder/ (split on the LAST "-img_")
    assert any(n.startswith("img_highres_subset/") and t.extra["file"].startswith("img/") for n, t in truth.items())


def test_fine_without_list_files_uses_published_tables(tmp_path):
    truth = write_fine_benchmark(str(tmp_path), (2, 1, 1))
    os.remove(tmp_path / "Anno_fine" / "list_attr_cloth.txt")
    os.remove(tmp_path / "Anno_fine" / "list_category_cloth.txt")
    data = read_fine(str(tmp_path))
    assert data.info.categories == [n for n, _ in CATEGORIES]
    assert data.info.attributes == [n for n, _ in FINE_ATTRIBUTES]
    assert [s.category for s in data] == [t.category for t in truth.values()]


def test_fine_malformed(tmp_path):
    write_fine_benchmark(str(tmp_path), (3, 1, 1))
    attr = tmp_path / "Anno_fine" / "train_attr.txt"
    replace_line(str(attr), 2, " ".join(["0"] * 25 + ["2"]))
    with pytest.raises(DataFormatError, match=r"train_attr.txt:2: attribute labels must be 0 or 1"):
        read_fine(str(tmp_path))
    replace_line(str(attr), 2, " ".join(["0"] * 25))
    with pytest.raises(DataFormatError, match=r"train_attr.txt:2: expected 26 integers, got 25"):
        read_fine(str(tmp_path))
    write_fine_benchmark(str(tmp_path), (3, 1, 1))
    cate = tmp_path / "Anno_fine" / "val_cate.txt"
    cate.write_text("51\n")
    with pytest.raises(DataFormatError, match=r"val_cate.txt:1: unknown category label 51"):
        read_fine(str(tmp_path))
    cate.write_text("")
    with pytest.raises(DataFormatError, match=r"val_cate.txt: has 0 rows but val.txt has 1"):
        read_fine(str(tmp_path))


# ---------------------------------------------------------------------------------------------- in-shop
def test_inshop(tmp_path):
    truth = write_inshop_benchmark(str(tmp_path), n_items=6)
    data = read_inshop(str(tmp_path))
    assert data.splits() == {"train": 9, "query": 3, "gallery": 6}
    assert data.info.categories == ["MEN/Denim", "MEN/Pants", "WOMEN/Blouses_Shirts", "WOMEN/Dresses"]
    assert data.info.category_paths == ["MEN.Denim", "MEN.Pants", "WOMEN.Blouses_Shirts", "WOMEN.Dresses"]
    assert data.info.category_types == [2, 2, 1, 3]
    for sample, (name, t) in zip(data, truth.items()):
        assert sample.source == f"Eval/list_eval_partition.txt:{t.line}"
        assert (sample.item_id, sample.split, sample.domain) == (t.item_id, t.split, "shop")
        assert sample.variation == t.variation  # pose_type of the bbox file
        assert data.info.categories[sample.category] == sample.category_name == t.extra["folder"]
        _check_geometry(sample, t)
    train_items = {s.item_id for s in data.split("train")}
    assert not train_items & {s.item_id for s in data.split("query", "gallery")}


def test_inshop_optional_files_and_errors(tmp_path):
    write_inshop_benchmark(str(tmp_path), n_items=2, landmarks=False, description=False)
    data = read_inshop(str(tmp_path))
    assert all(s.landmarks is None and s.bbox is not None for s in data)
    replace_line(str(tmp_path / "Eval/list_eval_partition.txt"), 4,
                 "img/WOMEN/Dresses/id_00000002/01_2_side.jpg  id_00000002  val")
    with pytest.raises(DataFormatError, match=r"list_eval_partition.txt:4: unknown split 'val': expected train, "
                                              r"query, gallery"):
        read_inshop(str(tmp_path))


def test_inshop_clothes_type_mismatch(tmp_path):
    truth = write_inshop_benchmark(str(tmp_path), n_items=2)
    name = list(truth)[0]  # a full-body dress: the bbox file says 3
    replace_line(str(tmp_path / "Anno/list_landmarks_inshop.txt"), 3,
                 pad(name) + "2  1  0 010 010  0 020 020  0 030 030  0 040 040 ")
    with pytest.raises(DataFormatError, match=r"list_landmarks_inshop.txt:3: clothes_type 2 differs from 3"):
        read_inshop(str(tmp_path))
    replace_line(str(tmp_path / "Anno/list_bbox_inshop.txt"), 3, pad(name) + "3  9  001 002 030 040")
    with pytest.raises(DataFormatError, match=r"list_bbox_inshop.txt:3: pose_type is 9"):
        read_inshop(str(tmp_path))


def test_folder_category_names():
    assert folder_category("img/WOMEN/Dresses/id_00000002/02_1_front.jpg") == "WOMEN/Dresses"
    assert folder_category("img/Dress/id_00000011/shop_01.jpg") == "Dress"  # one level (rendered garments)
    assert folder_category("img/id_00000011/shop_01.jpg") is None
    assert folder_category("photos/WOMEN/Dresses/id_1/a.jpg") is None


# ---------------------------------------------------------------------------------------------- consumer-to-shop
def test_c2s_one_sample_per_distinct_image(tmp_path):
    truth, n_pairs = write_c2s_benchmark(str(tmp_path), n_items=6)
    data = read_c2s(str(tmp_path))
    assert n_pairs == 24 and len(data) == len(truth) == 24  # 4 images per item, shop photos shared by pairs
    samples = _by_name(data, str(tmp_path))
    assert set(samples) == set(truth)
    for name, t in truth.items():
        s = samples[name]
        assert s.source == f"Eval/list_eval_partition.txt:{t.line}"
        assert (s.item_id, s.split, s.domain, s.variation) == (t.item_id, t.split, t.domain, t.variation)
        assert s.category_name == t.extra["folder"]
        _check_geometry(s, t)
    assert data.info.category_paths == ["CLOTHING.Dress", "TOPS.T_Shirt", "TROUSERS.Pants"]
    test = data.split("test")
    assert {s.domain for s in test} == {"shop", "consumer"}


def test_c2s_domain_without_bbox_file_and_conflicts(tmp_path):
    write_c2s_benchmark(str(tmp_path), n_items=3)
    os.remove(tmp_path / "Anno" / "list_bbox_consumer2shop.txt")
    data = read_c2s(str(tmp_path))
    photos = [s for s in data if os.path.basename(s.image).startswith("photo")]
    assert photos and all(s.domain == "consumer" for s in photos)  # from the pair column
    assert all(s.bbox is None for s in data)
    replace_line(str(tmp_path / "Eval/list_eval_partition.txt"), 4,
                 "img/TOPS/T_Shirt/id_00000218/comsumer_01.jpg  img/TOPS/T_Shirt/id_00000218/shop_02.jpg  "
                 "id_00000999  train")
    with pytest.raises(DataFormatError, match=r"list_eval_partition.txt:4: image .* is in item id_00000999"):
        read_c2s(str(tmp_path))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_reads_every_deepfashion_kind(tmp_path):
    write_category_benchmark(str(tmp_path / "category"), n_images=3)
    write_fine_benchmark(str(tmp_path / "fine"), (1, 1, 1))
    write_inshop_benchmark(str(tmp_path / "inshop"), n_items=2)
    write_c2s_benchmark(str(tmp_path / "c2s"), n_items=3)
    sizes = {kind: len(fashionlens.read(f"deepfashion-{kind}:{tmp_path / kind}"))
             for kind in ("category", "fine", "inshop", "c2s")}
    assert sizes == {"category": 3, "fine": 3, "inshop": 6, "c2s": 12}
    os.remove(next((tmp_path / "inshop").glob("img/*/*/*/*.jpg")))
    data = fashionlens.read(f"deepfashion-inshop:{tmp_path / 'inshop'}", missing="skip")
    assert len(data) == 5 and data.skipped_missing == 1
