"""DeepFashion at its published sizes: the generator of benchmarks/bench_scale.py, the readers' bulk parsing
(same result as row by row), and full-size reads with their split sizes, P x K epochs and memory.

The full-size category test writes all 289,222 rows of every annotation file but 50 attributes per image
instead of 1,000: list_attr_img.txt at 1,000 labels is 0.9 GB and writing it alone takes 10-30 s on the
2-core test machine (``python benchmarks/bench_scale.py`` reads that size; see benchmarks/results/scale.json).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from deepfashion_fixtures import (
    landmark_columns,
    pad,
    replace_line,
    write_c2s_benchmark,
    write_category_benchmark,
    write_inshop_benchmark,
)

import fashionlens
from fashionlens.config import DataConfig
from fashionlens.data.dataset import GarmentDataset, PKSampler
from fashionlens.data.decode import load_image
from fashionlens.data.readers import deepfashion
from fashionlens.data.readers.listfile import ListFile
from fashionlens.data.samples import DataFormatError
from fashionlens.data.splits import split_train_val
from fashionlens.data.transforms import build_transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_scale

FIELDS = ("image", "source", "category", "category_name", "clothes_type", "bbox", "item_id", "domain", "split",
          "variation")
ARRAYS = ("attributes", "landmarks", "visibility")
SMALL = bench_scale.Sizes.full().scaled(0.002)  # 578 category images, 105 in-shop, 479 consumer-to-shop


def _assert_same(a, b) -> None:
    """Two reads of one benchmark agree field by field (values, types, dtypes)."""
    assert a.info == b.info and len(a) == len(b) and a.skipped_missing == b.skipped_missing
    for x, y in zip(a.samples, b.samples):
        for f in FIELDS:
            assert getattr(x, f) == getattr(y, f) and type(getattr(x, f)) is type(getattr(y, f)), (x.source, f)
        for f in ARRAYS:
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), (x.source, f)
            if u is not None:
                assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v), (x.source, f)


def _both_ways(spec: str, monkeypatch) -> tuple:
    bulk = fashionlens.read(spec)
    with monkeypatch.context() as m:
        m.setattr(deepfashion, "BULK_PARSING", False)
        rows = fashionlens.read(spec)
    return bulk, rows


def _row_by_row_files(spec: str, monkeypatch) -> set[str]:
    """The annotation files a read goes through row by row (ListFile.rows), by file name."""
    seen: set[str] = set()
    rows = ListFile.rows

    def logged(self, *args, **kw):
        seen.add(os.path.basename(self.path))
        return rows(self, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(ListFile, "rows", logged)
        fashionlens.read(spec)
    return seen


# ---------------------------------------------------------------------------------------------- the generator
def test_published_sizes():
    full = bench_scale.Sizes.full()
    assert full.category == {"train": 209_222, "val": 40_000, "test": 40_000} and full.attributes == 1000
    assert sum(full.category.values()) == 289_222
    assert full.inshop["train"] + full.inshop["query"] + full.inshop["gallery"] == 52_712
    assert full.inshop["train_items"] + full.inshop["test_items"] == 7_982
    assert full.c2s == {"items": 33_881, "pairs": 195_540, "images": 239_557}
    assert sum(bench_scale.category_counts(289_222).values()) == 289_222


def test_generator_writes_what_the_readers_read(tmp_path):
    written = bench_scale.write_all(str(tmp_path), SMALL)
    cat = fashionlens.read(f"deepfashion-category:{written['category']['root']}")
    assert len(cat) == sum(SMALL.category.values()) and cat.splits() == SMALL.category
    assert cat.info.num_categories == 50 and cat.info.num_attributes == 1000
    assert sum(n == 1 for n in cat.info.attribute_groups) > 0 and set(cat.info.attribute_groups) == {1, 2, 3, 4, 5}
    assert {cat.info.categories[s.category] for s in cat}.isdisjoint(bench_scale.EMPTY_CATEGORIES)
    positives = np.array([(s.attributes == 1).sum() for s in cat])
    assert 2.0 < positives.mean() < 4.5 and all(s.attributes.shape == (1000,) for s in cat)
    for s in cat:
        assert s.clothes_type == cat.info.category_types[s.category]
        assert s.landmarks.shape == (bench_scale.SLOTS[s.clothes_type], 2)
        x1, y1, x2, y2 = s.bbox
        assert 0 <= x1 < x2 < bench_scale.IMAGE_SIDE and 0 <= y1 < y2 < bench_scale.IMAGE_SIDE
    image = load_image(cat.samples[0])
    assert image.size == (bench_scale.IMAGE_SIDE, bench_scale.IMAGE_SIDE)

    inshop = fashionlens.read(f"deepfashion-inshop:{written['inshop']['root']}")
    assert inshop.splits() == {k: SMALL.inshop[k] for k in ("train", "query", "gallery")}
    train_items = {s.item_id for s in inshop.split("train")}
    test_items = {s.item_id for s in inshop.split("query", "gallery")}
    assert (len(train_items), len(test_items)) == (SMALL.inshop["train_items"], SMALL.inshop["test_items"])
    assert not train_items & test_items and {s.domain for s in inshop} == {"shop"}
    assert all(s.variation in range(1, 7) and s.landmarks is not None for s in inshop)

    c2s = fashionlens.read(f"deepfashion-c2s:{written['c2s']['root']}")
    with open(os.path.join(written["c2s"]["root"], "Eval", "list_eval_partition.txt")) as f:
        assert int(f.readline()) == SMALL.c2s["pairs"] == len(f.read().splitlines()) - 1
    assert len(c2s) == SMALL.c2s["images"] and len({s.item_id for s in c2s}) == SMALL.c2s["items"]
    domains = [s.domain for s in c2s]
    assert domains.count("consumer") == SMALL.c2s["pairs"] and domains.count("shop") == SMALL.c2s["images"] - SMALL.c2s["pairs"]
    for name, info in written.items():
        assert info["images"] == len({"category": cat, "inshop": inshop, "c2s": c2s}[name])


def test_generator_reuses_an_identical_write(tmp_path):
    first = bench_scale.write_all(str(tmp_path), SMALL, only=("inshop",))
    again = bench_scale.write_all(str(tmp_path), SMALL, only=("inshop",))
    assert not first["inshop"]["reused"] and again["inshop"]["reused"]
    other = bench_scale.write_all(str(tmp_path), SMALL.scaled(2.0), only=("inshop",))
    assert not other["inshop"]["reused"] and other["inshop"]["images"] > first["inshop"]["images"]


# ---------------------------------------------------------------------------------------------- bulk = row by row
def test_bulk_parsing_agrees_with_row_by_row_on_generated_sets(tmp_path, monkeypatch):
    written = bench_scale.write_all(str(tmp_path), SMALL)
    expected_row_by_row = {  # small name tables, and the retrieval primaries (one Python step per row anyway)
        "category": {"list_category_cloth.txt", "list_attr_cloth.txt"},
        "inshop": {"list_eval_partition.txt"}, "c2s": {"list_eval_partition.txt"},
    }
    for name, kind in bench_scale.BENCHMARKS.items():
        spec = f"{kind}:{written[name]['root']}"
        _assert_same(*_both_ways(spec, monkeypatch))
        assert _row_by_row_files(spec, monkeypatch) == expected_row_by_row[name], name  # the bulk pass did not decline


def test_bulk_parsing_agrees_with_row_by_row_on_the_quirks(tmp_path, monkeypatch):
    """The fixtures' quirks (padded names, trailing spaces, single-space attribute names, rows padded to 8
    landmark triplets, CRLF, trailing blank lines, tabs, shuffled secondary files) read the same both ways."""
    truth = write_category_benchmark(str(tmp_path / "category"), n_images=30)
    name, t = next((n, t) for n, t in truth.items() if t.clothes_type != 3)
    padded = landmark_columns(t.landmarks, t.visibility) + "  0 000 000" * (8 - len(t.landmarks))
    replace_line(str(tmp_path / "category/Anno/list_landmarks.txt"), t.line, f"{pad(name)}{t.clothes_type}  {padded} ")
    bbox = tmp_path / "category/Anno/list_bbox.txt"
    lines = bbox.read_text().split("\n")
    bbox.write_text("\r\n".join(lines[:2] + lines[2:-1][::-1]) + "\r\n\r\n\n")  # reversed rows, CRLF, blank tail
    attrs = tmp_path / "category/Anno/list_attr_img.txt"
    attrs.write_text(attrs.read_text().replace("  ", "\t ", 5))
    write_inshop_benchmark(str(tmp_path / "inshop"), n_items=8)
    write_c2s_benchmark(str(tmp_path / "c2s"), n_items=6)
    for kind in ("category", "inshop", "c2s"):
        _assert_same(*_both_ways(f"deepfashion-{kind}:{tmp_path / kind}", monkeypatch))


@pytest.mark.parametrize("file, line, text, message", [
    ("Anno/list_attr_img.txt", 300, " 1 -1 x", "attribute value 3 is 'x'"),
    ("Anno/list_attr_img.txt", 301, " 1 -1  2" + " -1" * 997, "attribute label 2"),
    ("Anno/list_bbox.txt", 400, "072 079 1.5 273", "column 3 is '1.5'"),
    ("Anno/list_landmarks.txt", 500, "4  0 146 102", "clothes_type is 4"),
    ("Eval/list_eval_partition.txt", 555, "trian", "unknown split 'trian'"),
    ("Anno/list_category_img.txt", 560, "51", "unknown category label 51"),
])
def test_errors_still_name_file_and_line_in_large_files(tmp_path, file, line, text, message):
    """A bad row deep in a generated file: the bulk pass declines, the row-by-row reader names file:line."""
    written = bench_scale.write_all(str(tmp_path), SMALL, only=("category",))
    root = written["category"]["root"]
    path = os.path.join(root, file)
    with open(path) as f:
        rows = f.read().split("\n")
    name = rows[line - 1].split()[0]
    rows[line - 1] = pad(name) + text
    with open(path, "w") as f:
        f.write("\n".join(rows))
    with pytest.raises(DataFormatError) as err:
        deepfashion.read_category(root)
    assert f"{file}:{line}: " in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------------------------------------- full size
def _rss() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_category_benchmark_at_its_published_row_count(tmp_path):
    """289,222 rows in every annotation file (50 attributes each, see the module docstring): read, split
    sizes exactly as written, and the reader's peak RSS under 5x the annotation files' size (measured:
    ~3.2x, ~1.9 KB per image; the SampleSet keeps one Python object graph per image)."""
    start = time.perf_counter()
    written = bench_scale.write_category(str(tmp_path / "category"), str(tmp_path), dict(bench_scale.CATEGORY_SPLITS),
                                         50)
    files = bench_scale.annotation_bytes(str(tmp_path / "category"))
    write_s = time.perf_counter() - start
    measured = _reset_peak_rss()
    before = _rss()
    start = time.perf_counter()
    data = fashionlens.read(f"deepfashion-category:{tmp_path / 'category'}")
    read_s = time.perf_counter() - start
    peak = _rss()["VmHWM"] - before["VmRSS"]
    assert len(data) == written["images"] == 289_222
    assert data.splits() == {"train": 209_222, "val": 40_000, "test": 40_000}
    train, val = split_train_val(data, "train", "val", seed=0)
    assert (len(train), len(val)) == (209_222, 40_000)
    assert data.samples[-1].source == "Anno/list_category_img.txt:289224" and data.samples[-1].attributes.shape == (50,)
    if measured:
        assert peak < 5 * files, f"peak RSS +{peak / 2**20:.0f} MB for {files / 2**20:.0f} MB of annotations"
    print(f"\nwrite {write_s:.1f} s, read {read_s:.1f} s, peak +{peak / 2**20:.0f} MB ({peak / files:.2f}x files)")


def test_inshop_at_full_size_pk_epoch_and_bounded_reader(tmp_path):
    """52,712 in-shop images: the reader's peak RSS under 10x the annotation files' size (measured ~6.5x,
    ~2.1 KB per image: these files are small, per-image objects dominate), then an epoch of P x K batches
    over the training items in which every batch holds P distinct items x K of their images."""
    written = bench_scale.write_inshop(str(tmp_path / "inshop"), str(tmp_path), dict(bench_scale.INSHOP))
    files = bench_scale.annotation_bytes(str(tmp_path / "inshop"))
    measured = _reset_peak_rss()
    before = _rss()
    data = fashionlens.read(f"deepfashion-inshop:{tmp_path / 'inshop'}")
    peak = _rss()["VmHWM"] - before["VmRSS"]
    assert len(data) == written["images"] == 52_712
    assert data.splits() == {"train": 25_882, "query": 14_218, "gallery": 12_612}
    if measured:
        assert peak < 10 * files, f"peak RSS +{peak / 2**20:.0f} MB for {files / 2**20:.0f} MB of annotations"

    ds = GarmentDataset(data.split("train"), build_transforms(DataConfig(image_size=64), train=False))
    labels = ds.item_labels
    assert len(ds.items) == 3_997 and (labels >= 0).all()
    p, k = 8, 4
    sampler = PKSampler(labels, p, k, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3_997 // p
    per = labels[np.array(batches)].reshape(len(batches), p, k)
    assert (per == per[:, :, :1]).all()  # K images of one item in each group
    assert all(len(set(b[:, 0].tolist())) == p for b in per)  # P distinct items in each batch
    assert len(set(per[:, :, 0].ravel().tolist())) == len(batches) * p  # one pass: no item twice in the epoch
    sampler.set_epoch(1)
    assert [list(b) for b in sampler] != batches
