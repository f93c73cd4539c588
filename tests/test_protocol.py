"""The DeepFashion evaluation protocol, exactly: the split each benchmark evaluates, landmark error in the
original image's frame, and any model evaluated on any benchmark's retrieval (``fashionlens evaluate``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fashionlens.cli import main
from fashionlens.config import DataConfig
from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.readers import read
from fashionlens.data.samples import UPPER, DatasetInfo, Sample, SampleSet
from fashionlens.data.transforms import build_transforms, original_to_unit
from fashionlens.evaluation.protocol import evaluation_protocol
from fashionlens.evaluation.report import compute_metrics
from fashionlens.runs.outputs import compare_labels

from deepfashion_fixtures import write_c2s_benchmark, write_category_benchmark, write_inshop_benchmark

# ---------------------------------------------------------------- which split each benchmark evaluates


def test_auto_split_follows_each_benchmark(tmp_path):
    write_category_benchmark(str(tmp_path / "cat"), n_images=9)
    write_inshop_benchmark(str(tmp_path / "inshop"))
    write_c2s_benchmark(str(tmp_path / "c2s"))
    inshop = evaluation_protocol(read(f"deepfashion-inshop:{tmp_path / 'inshop'}"))
    assert inshop.split == "query,gallery" and "query images -> gallery images" in inshop.description
    c2s = evaluation_protocol(read(f"deepfashion-c2s:{tmp_path / 'c2s'}"))
    assert c2s.split == "test" and "consumer photos -> shop photos" in c2s.description
    assert evaluation_protocol(read(f"deepfashion-category:{tmp_path / 'cat'}")).split == "test"
    # a given split is taken as is, and must exist
    assert evaluation_protocol(read(f"deepfashion-c2s:{tmp_path / 'c2s'}"), "val").split == "val"
    with pytest.raises(ValueError, match=r"no samples in split 'test' of .*inshop.*'query': 3"):
        evaluation_protocol(read(f"deepfashion-inshop:{tmp_path / 'inshop'}"), "test")


def sample_set(splits: list[str | None], name: str = "folder") -> SampleSet:
    return SampleSet([Sample(image=f"{i}.jpg", split=s) for i, s in enumerate(splits)],
                     DatasetInfo(name, root=f"/data/{name}"))


def test_auto_split_of_other_data_and_clear_errors():
    assert evaluation_protocol(sample_set(["train", "val", "test"])).split == "test"
    photos = evaluation_protocol(sample_set(["train", "val", "val"]))
    assert photos.split == "val" and "no test split" in photos.description
    assert evaluation_protocol(sample_set(["train", "query", "gallery"], "manifest")).split == "query,gallery"
    with pytest.raises(ValueError, match=r"/data/folder: no test, query/gallery or val split .*'train': 2"):
        evaluation_protocol(sample_set(["train", "train"]))
    with pytest.raises(ValueError, match=r"'unsplit': 2"):
        evaluation_protocol(sample_set([None, None], "images"))
    with pytest.raises(ValueError, match=r"deepfashion-c2s protocol evaluates split\(s\) 'test'.*'val': 1"):
        evaluation_protocol(sample_set(["train", "val"], "deepfashion-c2s"))


def test_compare_labels_notes():
    model = {"categories": ["Tee", "Dress"], "attributes": ["red", "blue", "green"]}
    same = compare_labels(DatasetInfo("x", categories=["Tee", "Dress"], attributes=["red", "blue", "green"]), model)
    assert same.categories and same.attributes and same.notes == [] and same.conflicts == []
    other = compare_labels(DatasetInfo("x", categories=["WOMEN/Dresses"]), model)
    assert not other.categories and not other.attributes
    assert other.notes == [("category metrics skipped: the data's 1 categories differ from the model's 2 "
                            "(first difference: data 'WOMEN/Dresses', model 'Tee')"),
                           "attribute metrics skipped: the data has no attribute labels"]
    assert len(other.conflicts) == 1  # only two different lists are a conflict (what calibration refuses)
    reordered = compare_labels(DatasetInfo("x", categories=["Dress", "Tee"], attributes=["red", "blue"]), model)
    assert not reordered.categories and "first difference: data 'Dress', model 'Tee'" in reordered.notes[0]
    assert "first difference: data none, model 'green'" in reordered.notes[1]


# ---------------------------------------------------------------- landmark error in the original image's frame

W, H = 90, 60  # a non-square photo
XY = np.array([[30, 12], [60, 12], [20, 25], [70, 25], [35, 50], [55, 50]], np.float32)  # upper body, pixel indices


@pytest.fixture()
def photo_set(tmp_path) -> SampleSet:
    path = tmp_path / "photo.png"
    Image.new("RGB", (W, H), (90, 120, 200)).save(path)
    sample = Sample(image=str(path), source="list_landmarks.txt:3", category=0, clothes_type=UPPER, landmarks=XY,
                    visibility=np.zeros(6, np.int8), bbox=(18.0, 8.0, 75.0, 56.0))
    return SampleSet([sample, sample], DatasetInfo("photo", categories=["Tee"]))


def targets_of(photo_set: SampleSet, mode: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The collated targets of the eval pipeline (crop to the box, resize, pad/stretch) and the visible mask."""
    cfg = DataConfig(image_size=40, resize_mode=mode, crop_to_bbox=True, bbox_margin=0.05)
    batch = next(iter(DataLoader(GarmentDataset(photo_set, build_transforms(cfg, train=False)), batch_size=2)))
    targets = {k: v.numpy() for k, v in batch.items() if k != "image"}
    return targets, targets["landmark_mask"] & (targets["visibility"] == 0)


@pytest.mark.parametrize("mode", ["pad", "stretch"])
def test_dataset_landmarks_map_back_to_the_original_pixels(photo_set, mode):
    targets, visible = targets_of(photo_set, mode)
    assert visible.sum() >= 8  # most landmarks survive the crop: the check is not empty
    a = targets["landmark_affine"]
    back = targets["landmarks"] * a[:, None, 0] + a[:, None, 1]
    slots = photo_set.samples[0].unified_landmarks()[0]
    expected = np.broadcast_to((slots + 0.5) / [W, H], back.shape)  # (x + 0.5) / W: DeepFashion's frame
    np.testing.assert_allclose(back[visible], expected[visible], atol=1e-6)


@pytest.mark.parametrize("mode", ["pad", "stretch"])
@pytest.mark.parametrize("d", [1.0, 3.0])
def test_prediction_off_by_d_original_pixels_has_ne_d_over_w(photo_set, mode, d):
    targets, _ = targets_of(photo_set, mode)
    affine = torch.from_numpy(targets["landmark_affine"])
    slots = torch.from_numpy(photo_set.samples[0].unified_landmarks()[0])
    for shift, expected in (([d, 0.0], d / W), ([0.0, d], d / H)):
        moved = ((slots + 0.5 + torch.tensor(shift)) / torch.tensor([W, H])).expand(2, -1, -1)
        preds = {"landmarks": original_to_unit(moved, affine).numpy()}
        m = compute_metrics(preds, targets, photo_set.samples, photo_set.info)
        assert m["landmark_ne"] == pytest.approx(expected, rel=1e-5), shift
        assert m["landmark_ne_frame"] == "original"
        assert m["landmark_ne_input"] != pytest.approx(expected, rel=1e-3)  # the network input's frame differs


# ---------------------------------------------------------------- `fashionlens evaluate` end to end

TINY = ["--backbone", "tiny_cnn", "--no-pretrained", "--image-size", "32", "--batch-size", "16", "--quiet",
        "--set", "train.checkpoint_every=0"]


@pytest.fixture(scope="module")
def category_run(tmp_path_factory):
    """A garments render (14 items, 3 views) and a model trained 1 epoch on its CATEGORY benchmark only."""
    root = tmp_path_factory.mktemp("protocol")
    render = root / "garments"
    assert main(["synth", str(render), "--items", "14", "--views", "3", "--size", "48", "--quiet"]) == 0
    run = root / "run"
    assert main(["train", "--data", f"deepfashion-category:{render / 'category'}", "--out", str(run),
                 "--epochs", "1", *TINY]) == 0
    return render, run


def evaluate_json(capsys, run, spec: str, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", spec, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def check_unit_interval(metrics: dict, prefix: str) -> None:
    for k in (1, 5, 10, 20, 30, 40, 50):
        assert 0 <= metrics[f"{prefix}_top{k}"] <= 1, k
    assert metrics[f"{prefix}_top1"] <= metrics[f"{prefix}_top20"] <= metrics[f"{prefix}_top40"]


def check_localisation(metrics: dict) -> None:
    assert metrics["landmark_ne"] > 0 and metrics["landmark_ne_frame"] == "original"
    assert isinstance(metrics["landmark_ne_input"], float)
    assert 0 <= metrics["bbox_iou_mean"] <= 1 and 0 <= metrics["bbox_acc_iou50"] <= 1 and metrics["bbox_images"] > 0


def test_category_model_on_inshop_runs_query_to_gallery(category_run, capsys):
    render, run = category_run
    m = evaluate_json(capsys, run, f"deepfashion-inshop:{render / 'inshop'}", "--device", "cpu")
    assert m["split"] == "query,gallery" and m["retrieval_protocol"] == "inshop"
    assert "query images -> gallery images" in m["protocol"]
    check_unit_interval(m, "inshop")
    splits = read(f"deepfashion-inshop:{render / 'inshop'}").splits()
    assert m["inshop_queries"] == splits["query"] and m["num_images"] == splits["query"] + splits["gallery"]
    assert m["category_top1"] is None and m["attribute_recall_top3"] is None and "category_confusion" not in m
    n_folders = read(f"deepfashion-inshop:{render / 'inshop'}").info.num_categories  # folders such as FULL/Coat
    assert (f"category metrics skipped: the data's {n_folders} categories differ from the model's 14 "
            "(first difference: data 'FULL/Coat'") in m["notes"][0], m["notes"]
    assert "attribute metrics skipped: the data has no attribute labels" in m["notes"]
    check_localisation(m)


def test_category_model_on_c2s_runs_consumer_to_shop(category_run, capsys):
    render, run = category_run
    m = evaluate_json(capsys, run, f"deepfashion-c2s:{render / 'c2s'}")
    assert m["split"] == "test" and m["retrieval_protocol"] == "c2s" and "consumer photos" in m["protocol"]
    check_unit_interval(m, "c2s")
    assert m["retrieval_top40"] == m["c2s_top40"]
    assert m["category_top1"] is None and any(n.startswith("category metrics skipped") for n in m["notes"])
    check_localisation(m)


def test_category_model_on_its_own_benchmark_and_the_text_output(category_run, capsys):
    render, run = category_run
    m = evaluate_json(capsys, run, f"deepfashion-category:{render / 'category'}")
    assert m["split"] == "test" and m["retrieval_protocol"] is None
    assert 0 <= m["category_top1"] <= m["category_top5"] <= 1 and m["attribute_recall_top3"] is not None
    assert m["notes"] == ["retrieval metrics skipped: the images of split test have no item ids"]
    check_localisation(m)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", f"deepfashion-inshop:{render / 'inshop'}"]) == 0
    text = capsys.readouterr().out
    assert "query,gallery" in text and "note: category metrics skipped" in text and "inshop_top40" in text


def test_evaluate_refuses_clearly(category_run, capsys, tmp_path):
    render, run = category_run
    assert main(["evaluate", "--model", str(run), "--data", f"deepfashion-inshop:{render / 'inshop'}",
                 "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "no samples in split 'test'" in err and "'query'" in err and "'gallery'" in err
    if not torch.cuda.is_available():
        assert main(["evaluate", "--model", str(run), "--data", f"deepfashion-c2s:{render / 'c2s'}",
                     "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    # nothing at all to measure: other categories, no attributes, no items, landmarks or boxes
    bare = tmp_path / "bare"
    for split in ("train", "test"):
        os.makedirs(bare / split / "Gown")
        Image.new("RGB", (20, 20)).save(bare / split / "Gown" / "a.png")
    assert main(["evaluate", "--model", str(run), "--data", f"folder:{bare}"]) == 2
    err = capsys.readouterr().err
    assert "nothing to measure" in err and "category metrics skipped" in err
