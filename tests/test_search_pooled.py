"""Search vectors with the pooled backbone features (``model.search_pooled``): every consumer of search vectors
(predictor, catalog index, ONNX export, ensemble) reads their width from ``Predictor.embedding_dim``, which is
the model's ``search_dim`` (embedding + backbone channels), not ``cfg.model.embedding_dim``."""

import json
import os

import numpy as np
import pytest
import torch
from test_onnx_serving import pictures, tiny_run, write_photos

from fashionlens.catalog import Catalog
from fashionlens.cli import main
from fashionlens.export import OnnxEmbedder, export_onnx, load_predictor
from fashionlens.inference import Predictor
from fashionlens.training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread
DIM = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_pooled")
    files = write_photos(str(root / "photos"), per_class=3)
    plain = tiny_run(root / "plain", files, dim=DIM)
    wide = str(root / "wide")  # the same weights, searching with [2 * pooled, embedding]
    os.makedirs(wide)
    ckpt = load_checkpoint(os.path.join(plain, "best.pt"))
    ckpt["config"]["model"]["search_pooled"] = 2.0
    save_checkpoint(os.path.join(wide, "best.pt"), ckpt)
    return {"root": root, "files": files, "plain": plain, "wide": wide, "train": str(root / "photos" / "train")}


def test_the_predictor_reports_the_search_width_and_embeds_the_concatenation(world):
    plain, wide = Predictor.load(world["plain"]), Predictor.load(world["wide"])
    channels = wide.model.backbone.num_features
    assert plain.embedding_dim == DIM and wide.embedding_dim == DIM + channels
    images = pictures(world["files"][:4])
    a, b = plain.embed(images), wide.embed(images)
    assert a.shape == (4, DIM) and b.shape == (4, DIM + channels)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    tail = b[:, -DIM:] / np.linalg.norm(b[:, -DIM:], axis=1, keepdims=True)
    np.testing.assert_allclose(tail, a, atol=1e-5)  # the trained embedding's direction, last
    assert load_predictor([world["plain"], world["wide"]]).embedding_dim == 2 * DIM + channels


def test_a_catalog_indexes_and_searches_the_wider_vectors(world, tmp_path, capsys):
    out = str(tmp_path / "catalog")
    assert main(["catalog", "build", "--model", world["wide"], "--images", world["train"], "--out", out,
                 "--quiet"]) == 0
    capsys.readouterr()
    wide = Predictor.load(world["wide"])
    with open(os.path.join(out, "catalog.json"), encoding="utf-8") as f:
        assert json.load(f)["dim"] == wide.embedding_dim
    query = sorted(world["files"])[0]
    with Catalog.open(out) as catalog:
        assert catalog.dim == wide.embedding_dim
        hits = catalog.search(wide.embed(pictures([query]))[0], k=3)
    assert hits[0]["source"].endswith(os.path.basename(query)) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_the_onnx_export_carries_the_search_vector(world, tmp_path):
    path = export_onnx(world["wide"], str(tmp_path / "wide.onnx"))
    onnx_predictor, eager = OnnxEmbedder(path), Predictor.load(world["wide"])
    assert onnx_predictor.embedding_dim == eager.embedding_dim
    images = pictures(world["files"][:3])
    with torch.no_grad():
        np.testing.assert_allclose(onnx_predictor.embed(images), eager.embed(images), atol=1e-4)
