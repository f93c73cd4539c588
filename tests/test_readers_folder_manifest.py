"""Image-folder and manifest (CSV / JSONL) readers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from deepfashion_fixtures import write_image

import fashionlens
from fashionlens.data.readers.folder import read_folder
from fashionlens.data.readers.manifest import read_manifest
from fashionlens.data.samples import DataFormatError

CLOTHING_SMALL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "clothing-small")


def _touch_images(root, names):
    for name in names:
        write_image(os.path.join(root, name))


# ---------------------------------------------------------------------------------------------- folder
def test_folder_flat_layout_sorted_and_filtered(tmp_path):
    _touch_images(tmp_path, ["skirt/b.jpg", "skirt/a.PNG", "dress/z.webp", "dress/y.jpeg", "coat/x.bmp"])
    (tmp_path / "skirt" / "notes.txt").write_text("not an image")
    (tmp_path / "skirt" / ".hidden.jpg").write_bytes(b"")
    _touch_images(tmp_path, [".cache/q.jpg"])
    data = read_folder(str(tmp_path))
    assert data.info.categories == ["coat", "dress", "skirt"]
    assert [s.source for s in data] == ["coat/x.bmp", "dress/y.jpeg", "dress/z.webp", "skirt/a.PNG", "skirt/b.jpg"]
    assert [s.category for s in data] == [0, 1, 1, 2, 2]
    assert all(s.split is None and os.path.isabs(s.image) and os.path.isfile(s.image) for s in data)


def test_folder_split_layout(tmp_path):
    _touch_images(tmp_path, ["train/hat/1.jpg", "train/shoes/2.jpg", "validation/hat/3.jpg", "test/pants/4.jpg"])
    data = read_folder(str(tmp_path))
    assert data.info.categories == ["hat", "pants", "shoes"]  # union over splits
    assert data.splits() == {"train": 2, "val": 1, "test": 1}
    assert {(s.split, s.category_name) for s in data} == {("train", "hat"), ("train", "shoes"), ("val", "hat"),
                                                        ("test", "pants")}


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_folder(str(tmp_path / "nope"))
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        read_folder(str(tmp_path / "file.jpg"))
    (tmp_path / "empty" / "dress").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        read_folder(str(tmp_path / "empty"))
    _touch_images(tmp_path / "mixed", ["train/hat/1.jpg", "shirt/2.jpg"])
    with pytest.raises(ValueError, match="mixes split folders"):
        read_folder(str(tmp_path / "mixed"))


@pytest.mark.skipif(not os.path.isdir(CLOTHING_SMALL), reason="../shared/data/clothing-small is not available")
def test_folder_on_clothing_small():
    data = fashionlens.read(f"folder:{CLOTHING_SMALL}")
    assert len(data) == 3409
    assert data.info.categories == ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts",
                                    "skirt", "t-shirt"]
    assert set(data.splits()) == {"train", "val"}
    counts = np.bincount([s.category for s in data])
    assert counts.max() == counts[data.info.categories.index("t-shirt")]


# ---------------------------------------------------------------------------------------------- manifest
CSV = """image,category,category_path,attributes,item_id,domain,split,bbox,clothes_type,landmarks,sku,title
imgs/a.jpg,tee,upper.tops.tee,striped;cotton,item1,shop,train,1 2 30 40,upper,1 1 0 2 2 0 3 3 1 4 4 2 5 5 0 6 6 0,,A tee
imgs/b.jpg,jeans,lower.jeans,denim|cotton,,consumer,validation,"1,2,30,40",2,1 1 0 2 2 0 3 3 0 4 4 0,sku9,"Jeans, blue"
imgs/c.jpg,tee,,,item1,,test,,,,,

"""


def _manifest(tmp_path, text, name="m.csv", images=("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg")):
    _touch_images(tmp_path, images)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_manifest_csv(tmp_path):
    data = read_manifest(_manifest(tmp_path, CSV))
    a, b, c = data.samples
    assert data.info.categories == ["jeans", "tee"] and data.info.category_paths == ["lower.jeans", "upper.tops.tee"]
    assert data.info.category_types == [2, 1]
    assert data.info.attributes == ["cotton", "denim", "striped"]
    np.testing.assert_array_equal(a.attributes, [1, -1, 1])
    np.testing.assert_array_equal(b.attributes, [1, 1, -1])
    np.testing.assert_array_equal(c.attributes, [-1, -1, -1])  # empty cell: no positive attribute
    assert a.image == str(tmp_path / "imgs/a.jpg") and a.source == f"{tmp_path / 'm.csv'}:2"
    assert (a.category_name, a.item_id, a.domain, a.split, a.bbox) == ("tee", "item1", "shop", "train", (1, 2, 30, 40))
    assert (b.item_id, b.domain, b.split, b.bbox, b.clothes_type) == ("sku9", "consumer", "val", (1, 2, 30, 40), 2)
    assert a.landmarks.shape == (6, 2) and a.landmarks.dtype == np.float32
    np.testing.assert_array_equal(a.visibility, [0, 0, 1, 2, 0, 0])
    assert b.landmarks.shape == (4, 2) and c.landmarks is None and c.bbox is None and c.domain is None


def test_manifest_jsonl_equals_csv(tmp_path):
    rows = [
        {"image": "imgs/a.jpg", "category": "tee", "category_path": "upper.tops.tee",
         "attributes": ["striped", "cotton"],
         "item_id": "item1", "domain": "shop", "split": "train", "bbox": [1, 2, 30, 40], "clothes_type": 1,
         "landmarks": [[1, 1, 0], [2, 2, 0], [3, 3, 1], [4, 4, 2], [5, 5, 0], [6, 6, 0]], "title": "A tee"},
        {"image": "imgs/b.jpg", "category": "jeans", "category_path": "lower.jeans", "attributes": "denim|cotton",
         "sku": "sku9", "domain": "consumer", "split": "validation", "bbox": "1 2 30 40", "clothes_type": "lower",
         "landmarks": [1, 1, 0, 2, 2, 0, 3, 3, 0, 4, 4, 0]},
        {"image": str(tmp_path / "imgs/c.jpg"), "category": "tee", "item_id": "item1", "split": "test",
         "attributes": []},
    ]
    jsonl = read_manifest(_manifest(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n\n", "m.jsonl"))
    csv = read_manifest(_manifest(tmp_path, CSV))
    assert jsonl.info.categories == csv.info.categories and jsonl.info.attributes == csv.info.attributes
    for j, c in zip(jsonl, csv):
        assert (j.image, j.category, j.item_id, j.domain, j.split, j.bbox, j.clothes_type) == \
               (c.image, c.category, c.item_id, c.domain, c.split, c.bbox, c.clothes_type)
        np.testing.assert_array_equal(j.attributes, c.attributes)
        if c.landmarks is not None:
            np.testing.assert_array_equal(j.landmarks, c.landmarks)
            np.testing.assert_array_equal(j.visibility, c.visibility)


def test_manifest_attributes_unknown_when_absent(tmp_path):
    path = _manifest(tmp_path, '{"image": "imgs/a.jpg", "attributes": ["x"]}\n{"image": "imgs/b.jpg"}\n',
                     "m.jsonl", images=("imgs/a.jpg", "imgs/b.jpg"))
    a, b = read_manifest(path)
    assert a.attributes.tolist() == [1] and b.attributes is None and a.category is None


HEADER = "image,category,bbox,clothes_type,landmarks,domain,split\n"


@pytest.mark.parametrize("row, message", [
    ("imgs/a.jpg,tee,1 2 3,,,,", "bbox must be 4 numbers"),
    ("imgs/a.jpg,tee,1 2 x 4,,,,", "bbox must be numbers"),
    ("imgs/a.jpg,tee,30 2 1 40,,,,", "empty or inverted"),
    ("imgs/a.jpg,tee,,1,1 1 0 2 2 0,,", "expected 18 numbers 'x y v ...', got 6"),
    ("imgs/a.jpg,tee,,,1 1 0 2 2 0 3 3 0 4 4 0,,", "landmarks need a clothes_type"),
    ("imgs/a.jpg,tee,,2,1 1 0 2 2 0 3 3 0 4 4 7,,", "landmark visibility"),
    ("imgs/a.jpg,tee,,sideways,,,", "clothes_type 'sideways'"),
    ("imgs/a.jpg,tee,,,,street,", "unknown domain 'street'"),
    ("imgs/a.jpg,tee,,,,,trian", "unknown split 'trian'"),
    (",tee,,,,,", "missing value in the required 'image' column"),
    ("imgs/a.jpg,tee,,,,shop", "expected 7 columns"),
])
def test_manifest_csv_malformed(tmp_path, row, message):
    path = _manifest(tmp_path, HEADER + "imgs/b.jpg,tee,,,,,\n" + row + "\n")
    with pytest.raises(DataFormatError) as err:
        read_manifest(path)
    assert "m.csv:3: " in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("line, message", [
    ('{"image": "imgs/a.jpg", "category": "tee"', "bad JSON"),
    ('["imgs/a.jpg"]', "expected a JSON object per line"),
    ('{"category": "tee"}', "required 'image' column"),
    ('{"image": "imgs/a.jpg", "bbox": [1, 2, 3]}', "bbox must be 4 numbers"),
    ('{"image": "imgs/a.jpg", "attributes": [1, 2]}', "attributes must be a list of names"),
    ('{"image": "imgs/a.jpg", "clothes_type": 3, "landmarks": [[1, 1, 0]]}', "expected 24 numbers"),
    ('{"image": "imgs/a.jpg", "domain": "comsumer"}', "unknown domain"),
])
def test_manifest_jsonl_malformed(tmp_path, line, message):
    path = _manifest(tmp_path, '{"image": "imgs/b.jpg"}\n\n' + line + "\n", "m.jsonl")
    with pytest.raises(DataFormatError) as err:
        read_manifest(path)
    assert "m.jsonl:3: " in str(err.value) and message in str(err.value)


def test_manifest_header_and_file_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"m.csv:1: the header needs an 'image' column"):
        read_manifest(_manifest(tmp_path, "path,category\nimgs/a.jpg,tee\n"))
    with pytest.raises(DataFormatError, match="no rows"):
        read_manifest(_manifest(tmp_path, "image,category\n"))
    with pytest.raises(DataFormatError, match=r"m.csv:3: category 'tee' has category_path 'b.tee' here but 'a.tee'"):
        read_manifest(_manifest(tmp_path, "image,category,category_path\nimgs/a.jpg,tee,a.tee\nimgs/b.jpg,tee,b.tee\n"))
    with pytest.raises(ValueError, match="unknown manifest type '.txt'"):
        read_manifest(_manifest(tmp_path, "image\nimgs/a.jpg\n", "m.txt"))
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(str(tmp_path / "none.csv"))


def test_manifest_missing_image(tmp_path):
    path = _manifest(tmp_path, "image,category\nimgs/a.jpg,tee\nimgs/gone.jpg,tee\nimgs/b.jpg,skirt\n")
    with pytest.raises(FileNotFoundError) as err:
        fashionlens.read(f"manifest:{path}")
    assert "imgs/gone.jpg" in str(err.value) and "m.csv:3" in str(err.value)
    data = fashionlens.read(f"manifest:{path}", missing="skip")
    assert len(data) == 2 and data.skipped_missing == 1
    assert data.info.categories == ["skirt", "tee"]  # the vocabulary still counts every row


# ---------------------------------------------------------------------------------------------- images
def test_images_spec_reads_a_plain_folder_recursively(tmp_path):
    from fashionlens.data.readers import read_source

    _touch_images(tmp_path, ["z.jpg", "a/b.png", "a/c/d.webp", ".hidden/e.jpg"])
    (tmp_path / "notes.txt").write_text("not an image")
    data = fashionlens.read(f"images:{tmp_path}")
    assert [s.source for s in data] == ["a/b.png", "a/c/d.webp", "z.jpg"]  # sorted paths, hidden skipped
    assert data.info.name == "images" and all(s.category is None for s in data)
    assert [s.image for s in read_source(str(tmp_path))] == [s.image for s in data]


def test_read_source_takes_a_spec_with_a_split_or_names_what_is_wrong(tmp_path):
    from fashionlens.data.readers import read_source

    _touch_images(tmp_path / "ds", ["train/cat/a.jpg", "val/cat/b.jpg", "val/dog/c.jpg"])
    assert len(read_source(f"folder:{tmp_path / 'ds'}", "val")) == 2
    with pytest.raises(ValueError, match="no samples in split 'test'"):
        read_source(f"folder:{tmp_path / 'ds'}", "test")
    with pytest.raises(ValueError, match="needs a data spec"):
        read_source(str(tmp_path / "ds"), "val")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        read_source(str(tmp_path / "file.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        fashionlens.read(f"images:{tmp_path / 'empty'}")
