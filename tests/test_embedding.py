"""Batch embedding of data specs and image folders (PyTorch and ONNX Runtime), the .npz file, the `embed` command."""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fashionlens.data.readers import read_source
from fashionlens.data.readers.folder import list_images
from fashionlens.embedding import embed_spec, load_embeddings, save_embeddings
from fashionlens.export import OnnxEmbedder, export_onnx
from fashionlens.inference import Predictor

from test_export import make_run, run_cli

CLASSES = ("hat", "shirt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run, its ONNX export, a folder data set (train/val x 2 classes) and a nested image folder with a
    corrupt file and a non-image file."""
    root = tmp_path_factory.mktemp("embed")
    run = make_run(root)
    onnx_path = export_onnx(run, str(root / "m.onnx"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("validation", 2)):
        for cls in CLASSES:
            os.makedirs(root / "ds" / split / cls)
            for i in range(n):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
                    root / "ds" / split / cls / f"{i}.png")
    images = root / "photos"
    os.makedirs(images / "sub" / "deeper")
    for i, rel in enumerate(["a.jpg", "sub/b.PNG", "sub/deeper/c.png", "d.jpeg"]):
        Image.fromarray(rng.integers(0, 256, (50 + 10 * i, 60, 3), dtype=np.uint8)).save(images / rel)
    (images / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "notes.txt").write_text("not an image")
    return {"run": run, "onnx": onnx_path, "ds": str(root / "ds"), "images": str(images)}


def test_list_images_recursive_sorted(setup):
    names = [os.path.relpath(p, setup["images"]) for p in list_images(setup["images"])]
    assert names == ["a.jpg", "d.jpeg", "sub/b.PNG", "sub/broken.jpg", "sub/deeper/c.png"]


def test_embed_spec_matches_predictor_and_batch_size(setup):
    predictor = Predictor.load(setup["run"])
    ids, vectors = embed_spec(predictor, f"folder:{setup['ds']}", batch_size=3, progress=False)
    assert vectors.shape == (10, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert ids["categories"] == ["hat"] * 3 + ["shirt"] * 3 + ["hat"] * 2 + ["shirt"] * 2
    assert ids["splits"] == ["train"] * 6 + ["val"] * 4 and ids["item_ids"] == [None] * 10 and ids["skipped"] == []
    reference = predictor.embed([Image.open(p).convert("RGB") for p in ids["paths"]])
    np.testing.assert_allclose(vectors, reference, atol=1e-5)  # same rows, same order as one-by-one
    _, again = embed_spec(predictor, f"folder:{setup['ds']}", batch_size=32, progress=False)
    np.testing.assert_allclose(again, vectors, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # different images, different vectors


def test_split_filter_and_onnx_runtime(setup):
    ids, torch_vectors = embed_spec(setup["run"], f"folder:{setup['ds']}", split="val", progress=False)
    assert len(ids["paths"]) == 4 and set(ids["splits"]) == {"val"}
    onnx_ids, onnx_vectors = embed_spec(OnnxEmbedder(setup["onnx"], threads=1), f"folder:{setup['ds']}",
                                        split="val", batch_size=2, progress=False)
    assert onnx_ids["paths"] == ids["paths"]
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-4)
    with pytest.raises(ValueError, match="no samples in split 'test'"):
        embed_spec(setup["run"], f"folder:{setup['ds']}", split="test", progress=False)


def test_image_folder_skips_unreadable(setup):
    with pytest.warns(UserWarning, match=r"1 of 5 images could not be read.*broken\.jpg"):
        ids, vectors = embed_spec(setup["onnx"], setup["images"], batch_size=2, progress=False)
    assert vectors.shape == (4, 128)
    assert [os.path.basename(p) for p in ids["paths"]] == ["a.jpg", "d.jpeg", "b.PNG", "c.png"]
    assert len(ids["skipped"]) == 1 and ids["skipped"][0]["path"].endswith("broken.jpg")
    assert "broken.jpg" in ids["skipped"][0]["error"] and ids["categories"] == [None] * 4


def test_bad_sources(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an image folder nor a data spec"):
        read_source(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs a data spec"):
        read_source(setup["images"], split="train")
    with pytest.raises(ValueError, match="no images"):
        read_source(str(tmp_path))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        embed_spec(setup["onnx"], setup["images"], batch_size=0)


def test_save_load_round_trip(setup, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ids, vectors = embed_spec(setup["onnx"], setup["images"], progress=False)
    path = save_embeddings(str(tmp_path / "emb"), ids, vectors, model="m.onnx")
    assert path.endswith("emb.npz") and os.path.isfile(path)
    got_ids, got = load_embeddings(path)
    np.testing.assert_array_equal(got, vectors)
    for key in ("paths", "item_ids", "categories", "domains", "splits", "skipped"):
        assert got_ids[key] == ids[key], key
    assert got_ids["model"] == "m.onnx"
    with pytest.raises(ValueError, match="has 3 entries for 4 vectors"):
        save_embeddings(str(tmp_path / "bad.npz"), {"paths": ["a", "b", "c"]}, vectors)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a fashionlens embeddings file"):
        load_embeddings(str(tmp_path / "other.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_embeddings(str(tmp_path / "junk.npz"))
    with pytest.raises(FileNotFoundError):
        load_embeddings(str(tmp_path / "missing.npz"))


def test_cli_embed(setup, tmp_path, capsys):
    out = tmp_path / "emb.npz"
    assert run_cli(["embed", "--model", setup["onnx"], "--images", setup["images"], "--out", str(out), "--quiet",
                    "--threads", "1"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary == {"out": str(out), "num_images": 4, "dim": 128, "skipped": 1}
    assert "skipped " in captured.err and "broken.jpg" in captured.err
    assert load_embeddings(str(out))[1].shape == (4, 128)
    out2 = tmp_path / "train.npz"
    assert run_cli(["embed", "--model", setup["run"], "--data", f"folder:{setup['ds']}", "--split", "train",
                    "--out", str(out2), "--quiet"]) == 0
    ids, vectors = load_embeddings(str(out2))
    assert vectors.shape == (6, 128) and set(ids["splits"]) == {"train"}
    bad = tmp_path / "bad"
    os.makedirs(bad)
    (bad / "x.jpg").write_bytes(b"nope")
    assert run_cli(["embed", "--model", setup["onnx"], "--images", str(bad), "--out", str(tmp_path / "n.npz"),
                    "--quiet"]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err and not (tmp_path / "n.npz").exists()
