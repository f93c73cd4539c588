"""Ensembles (``--model A --model B``): the mean of the members' calibrated probabilities, the normalised
concatenation of their embeddings, one Predictor interface for the CLI, the server and the catalog, and a
clear error for runs whose labels differ."""

import json
import os

import numpy as np
import pytest
from test_onnx_serving import LABELS, calibrate, pictures, run_cli, tiny_run, write_photos

from fashionlens.catalog import Catalog, build
from fashionlens.export import export_onnx, load_predictor
from fashionlens.inference import EnsemblePredictor, Predictor
from fashionlens.runs.ensemble import concat_embeddings, ensemble_outputs, mean_probabilities
from fashionlens.runs.outputs import collect_run
from fashionlens.utils import softmax

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    files = write_photos(str(root / "photos"), per_class=6)
    a = tiny_run(root / "a", files, seed=0, dim=32)
    b = tiny_run(root / "b", files, seed=1, dim=16)  # another seed, another embedding size
    state = calibrate(a, files)  # a is calibrated (temperature != 1), b is not
    other = dict(LABELS, categories=["Gown", "Shorts", "Tee"])
    c = tiny_run(root / "c", files, seed=2, labels=other)
    return {"root": root, "files": files, "a": a, "b": b, "c": c, "temperature": state["temperature"],
            "data": f"folder:{root / 'photos'}"}


def reference(world, images):
    """The ensemble by hand, from the members' raw outputs: (mean calibrated probabilities, embeddings, boxes)."""
    outs = [(Predictor.load(world[k]), *Predictor.load(world[k]).forward(images)) for k in ("a", "b")]
    probs = [softmax(out["category"], t) for (_, out, _), t in zip(outs, (world["temperature"], 1.0))]
    embeddings = [out["embedding"] / np.linalg.norm(out["embedding"], axis=1, keepdims=True) for _, out, _ in outs]
    joined = np.concatenate(embeddings, axis=1)
    boxes = np.mean([[p._to_original(out["bbox"][i].reshape(2, 2).astype(np.float64), aff[i]).reshape(4)
                      for i in range(len(images))] for p, out, aff in outs], axis=0)
    return np.mean(probs, axis=0), joined / np.linalg.norm(joined, axis=1, keepdims=True), boxes


def test_ensemble_probabilities_are_the_mean_of_the_calibrated_members(world):
    images = pictures(world["files"][::3])
    ensemble = load_predictor([world["a"], world["b"]])
    assert isinstance(ensemble, EnsemblePredictor) and ensemble.run == [world["a"], world["b"]]
    assert ensemble.temperatures == [pytest.approx(world["temperature"]), 1.0]
    assert abs(world["temperature"] - 1) > 0.01  # member a's calibration changes its probabilities
    want, _, boxes = reference(world, images)
    answers = ensemble.predict(images)
    got = np.stack([a["probabilities"] for a in answers])
    np.testing.assert_allclose(got, want, atol=1e-9)
    plain = np.mean([softmax(Predictor.load(world[k]).forward(images)[0]["category"]) for k in "ab"], axis=0)
    assert np.abs(plain - want).max() > 1e-3  # the uncalibrated mean would be another answer
    assert [a["category"] for a in answers] == [LABELS["categories"][i] for i in want.argmax(1)]
    assert [a["category_scores"][0]["score"] for a in answers] == pytest.approx(want.max(1), abs=1e-5)
    for answer, box, image in zip(answers, boxes, images):  # the box: the members' mean in original pixels
        clipped = np.clip(box, 0, [image.width, image.height] * 2)
        np.testing.assert_allclose(answer["bbox"], clipped, atol=0.06)


def test_ensemble_embedding_is_the_normalised_concatenation(world):
    images = pictures(world["files"][1::4])
    ensemble = load_predictor([world["a"], world["b"]])
    _, want, _ = reference(world, images)
    got = ensemble.embed(images)
    assert got.shape == (len(images), 48) and ensemble.cfg.model.embedding_dim == 48
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    analysed = ensemble.analyse(images[:2], crop=[False, True])  # the server's and the catalog's call
    np.testing.assert_allclose(analysed[0]["embedding"], want[0], atol=1e-6)
    assert analysed[1]["crop"] is not None and analysed[1]["embedding"].shape == (48,)
    a, b = (Predictor.load(world[k]).embed(images) for k in "ab")  # cosine of the ensemble = mean of the members'
    cos = lambda x: x[0] @ x[1]
    assert cos(got) == pytest.approx((cos(a) + cos(b)) / 2, abs=1e-5)


def test_ensemble_of_onnx_members_matches_the_runs(world, tmp_path):
    images = pictures(world["files"][:4])
    files = [export_onnx(world[k], str(tmp_path / f"{k}.onnx")) for k in "ab"]  # a's calibration travels along
    runs, exported = load_predictor([world["a"], world["b"]]), load_predictor(files)
    assert exported.temperatures == pytest.approx(runs.temperatures)
    np.testing.assert_allclose([a["probabilities"] for a in exported.predict(images)],
                               [a["probabilities"] for a in runs.predict(images)], atol=1e-4)
    np.testing.assert_allclose(exported.embed(images), runs.embed(images), atol=1e-4)


def test_mismatched_labels_are_a_clear_error_naming_the_runs(world, capsys):
    with pytest.raises(ValueError, match=f"share one label set, but {world['a']} and {world['c']} have different "
                                         "categories .*only in .*Dress.*only in .*Gown"):
        load_predictor([world["a"], world["c"]])
    code, out, err = run_cli(["predict", "--model", world["a"], "--model", world["c"], world["files"][0]], capsys)
    assert code == 2 and out == "" and "must share one label set" in err and world["c"] in err


def test_predict_cli_with_two_models(world, capsys):
    images = world["files"][:3]
    code, out, _ = run_cli(["predict", "--model", world["a"], "--model", world["b"], *images], capsys)
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    want, _, _ = reference(world, pictures(images))
    assert [a["image"] for a in answers] == images
    assert [a["category"] for a in answers] == [LABELS["categories"][i] for i in want.argmax(1)]
    assert [a["category_scores"][0]["score"] for a in answers] == pytest.approx(want.max(1), abs=1e-5)
    code, _, err = run_cli(["predict", "--model", world["a"], "--model", world["b"], images[0],
                            "--target-accuracy", "0.9"], capsys)
    assert code == 2 and "is not calibrated" in err  # no ensemble calibration yet (test_ensemble_calibration.py)
    assert f"fashionlens calibrate --model {world['a']} --model {world['b']} --data SPEC" in err


def test_evaluate_cli_with_two_models(world, capsys):
    code, out, _ = run_cli(["evaluate", "--model", world["a"], "--model", world["b"], "--data", world["data"],
                            "--split", "val", "--json"], capsys)
    assert code == 0
    metrics = json.loads(out)
    members = [collect_run(world[k], world["data"], split="val", progress=False) for k in "ab"]
    probs = mean_probabilities([m.preds["category"] for m in members], [world["temperature"], 1.0])
    accuracy = float(np.mean(probs.argmax(1) == members[0].targets["category"]))
    assert metrics["model"] == [world["a"], world["b"]] and metrics["num_images"] == 18
    assert metrics["category_top1"] == pytest.approx(accuracy)
    combined = ensemble_outputs([m.preds for m in members], [world["temperature"], 1.0], same_geometry=True)
    np.testing.assert_allclose(combined["embedding"], concat_embeddings([m.preds["embedding"] for m in members]))
    assert combined["embedding"].shape == (18, 48)


def test_serve_and_catalog_take_the_ensemble_unchanged(world, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    models = [world["a"], world["b"]]
    summary = build(str(tmp_path / "cat"), models, os.path.join(str(world["root"]), "photos", "train"), progress=False)
    assert summary["added"] == 18
    with Catalog.open(str(tmp_path / "cat")) as catalog:
        assert catalog.model_run == models and catalog.dim == 48
        assert isinstance(catalog.predictor, EnsemblePredictor)
    query = world["files"][2]
    with TestClient(create_app(ServeSettings(model_run=models, catalog_dir=str(tmp_path / "cat")))) as client:
        with open(query, "rb") as f:
            data = f.read()
        r = client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["score"] > 0.999  # the query itself, found by the ensemble's embedding
        r = client.post("/v1/classify", files={"image": ("q.jpg", data, "image/jpeg")})
        want, _, _ = reference(world, pictures([query]))
        assert r.status_code == 200 and r.json()["category"]["name"] == LABELS["categories"][int(want.argmax())]
        assert r.json()["category"]["score"] == pytest.approx(want.max(), abs=1e-5)
        r = client.post("/v1/classify", files={"image": ("q.jpg", data, "image/jpeg")}, data={"target_accuracy": "0.9"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_calibrated"  # the ensemble is not
    with pytest.raises(ValueError, match="embeds into 32 dimensions but catalog .* holds 48"):
        create_app(ServeSettings(model_run=world["a"], catalog_dir=str(tmp_path / "cat")))
