"""Ensemble catalogs (``catalog build --model A --model B``): the items hold the members' normalised embeddings
concatenated, the catalog records every member in order, and ``Catalog.open``, ``catalog add``, ``search`` and
``serve`` on it rebuild the same ensemble; another model, or the same members in another order, is refused."""

import json
import os
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
from test_onnx_serving import LABELS, pictures, run_cli, tiny_run, write_photos

from fashionlens.catalog import Catalog
from fashionlens.cli import main
from fashionlens.export import load_predictor
from fashionlens.inference import EnsemblePredictor

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_catalog")
    files = write_photos(str(root / "photos"), per_class=4)  # train: 12 images, val: 12
    a = tiny_run(root / "a", files, seed=0, dim=32)
    b = tiny_run(root / "b", files, seed=1, dim=16)
    catalog = str(root / "catalog")
    return {"root": root, "files": files, "a": a, "b": b, "catalog": catalog, "train": str(root / "photos" / "train")}


@pytest.fixture(scope="module")
def built(world):
    """The ensemble catalog of a + b over the train images, built through the CLI (its summary, its output)."""
    out = StringIO()  # capsys is function-scoped: the module's build is captured by hand
    with redirect_stdout(out):
        code = main(["catalog", "build", "--model", world["a"], "--model", world["b"], "--images", world["train"],
                     "--out", world["catalog"], "--quiet"])
    assert code == 0
    return json.loads(out.getvalue())


def stored_embeddings(directory: str) -> dict[str, np.ndarray]:
    """source path -> stored embedding of every item of the catalog at ``directory``."""
    with Catalog.open(directory) as catalog:
        vectors = {int(i): v for ids, vecs in catalog.store.embeddings() for i, v in zip(ids, vecs)}
        return {catalog.get(i)["source"]: v for i, v in vectors.items()}


def test_build_cli_records_every_member_and_stores_the_concatenated_embeddings(world, built):
    assert built["added"] == 12 and built["items"] == 12
    with open(os.path.join(world["catalog"], "catalog.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["model_run"] == [os.path.abspath(world["a"]), os.path.abspath(world["b"])] and config["dim"] == 48
    stored = stored_embeddings(world["catalog"])
    sources = sorted(stored)
    want = load_predictor([world["a"], world["b"]]).embed(pictures(sources))
    np.testing.assert_allclose(np.stack([stored[s] for s in sources]), want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-6)
    with Catalog.open(world["catalog"]) as catalog:  # open rebuilds the ensemble from the recorded members
        assert isinstance(catalog.predictor, EnsemblePredictor)
        assert catalog.predictor.run == config["model_run"] and catalog.dim == 48


def test_add_and_search_cli_use_the_catalogs_ensemble(world, built, capsys):
    query = world["files"][-1]  # a val image: not in the catalog until added
    code, out, _ = run_cli(["catalog", "add", world["catalog"], query], capsys)
    assert code == 0
    added = json.loads(out)
    assert added["source"] == os.path.abspath(query) and added["category"] in LABELS["categories"]
    want = load_predictor([world["a"], world["b"]]).predict(pictures([query]))[0]
    assert added["category"] == want["category"]  # the ensemble's answer, not one member's
    np.testing.assert_allclose(stored_embeddings(world["catalog"])[os.path.abspath(query)], want["embedding"], atol=1e-6)
    code, out, _ = run_cli(["search", "--catalog", world["catalog"], query, "--json", "-k", "3"], capsys)
    assert code == 0
    hits = json.loads(out)
    assert hits[0]["source"] == os.path.abspath(query) and hits[0]["score"] > 0.999
    code, out, _ = run_cli(["catalog", "build", "--model", world["a"], "--model", world["b"], "--images",
                            world["train"], "--out", world["catalog"], "--quiet"], capsys)
    assert code == 0 and json.loads(out)["added"] == 0  # resuming with the same ensemble: nothing new


def test_another_model_or_order_is_refused_clearly(world, built, capsys):
    a, b = os.path.abspath(world["a"]), os.path.abspath(world["b"])
    for models, extra in (([world["a"]], ""), ([world["b"], world["a"]], "another order"),
                          ([world["a"], world["b"], world["a"]], "")):
        argv = ["catalog", "build", "--images", world["train"], "--out", world["catalog"], "--quiet"]
        code, out, err = run_cli(argv + [x for m in models for x in ("--model", m)], capsys)
        assert code == 2 and out == ""
        assert f"was built with model {a} + {b}, not " in err and "would not be comparable" in err and extra in err
    code, _, err = run_cli(["catalog", "build", "--images", world["train"], "--out", world["catalog"], "--quiet",
                            "--model", world["b"], "--model", world["a"]], capsys)
    assert f"give them as --model {a} --model {b}" in err


def test_serve_rebuilds_the_catalogs_ensemble_and_refuses_another_order(world, built):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    query = world["files"][0]
    with TestClient(create_app(ServeSettings(catalog_dir=world["catalog"]))) as client:  # no model: the catalog's
        with open(query, "rb") as f:
            r = client.post("/v1/search", files={"image": ("q.jpg", f.read(), "image/jpeg")}, data={"k": "2"})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["score"] > 0.999  # the query itself, found by the ensemble's embedding
    with pytest.raises(ValueError, match="was built with model"):  # same members, same dim, other order
        create_app(ServeSettings(model_run=[world["b"], world["a"]], catalog_dir=world["catalog"]))
