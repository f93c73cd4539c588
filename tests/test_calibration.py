"""Temperature scaling, the calibration.json of a run, and hedged answers through the CLI and the HTTP API."""

import contextlib
import glob
import io
import json
import math
import shutil

import numpy as np
import pytest

from fashionlens.cli import main
from fashionlens.hierarchy.calibration import DEFAULT_TARGETS, calibrate_outputs, calibration_summary, fit_temperature, nll
from fashionlens.runs import load_calibration
from fashionlens.utils import softmax

TINY = ["--backbone", "tiny_cnn", "--no-pretrained", "--image-size", "48", "--batch-size", "16", "--quiet",
        "--threads", "1", "--set", "train.pk_items=4", "--set", "train.checkpoint_every=0"]


def synthetic(n, classes, temperature, rng):
    """Labels drawn from softmax(z) (so z is calibrated) and the logits of a model off by ``temperature``."""
    z = rng.normal(0, 2.0, (n, classes))
    p = softmax(z)
    labels = np.minimum((rng.random((n, 1)) > p.cumsum(1)).sum(1), classes - 1)
    return z * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    logits, labels = synthetic(20000, 10, true_t, np.random.default_rng(0))  # logits = z * T: dividing undoes it
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    s = calibration_summary(logits, labels, t)
    assert s["ece_after"] < 0.02 < s["ece_before"] and s["nll_after"] < s["nll_before"]
    assert np.array_equal(softmax(logits, t).argmax(1), logits.argmax(1))  # accuracy untouched


def test_calibrated_logits_keep_a_temperature_near_one():
    logits, labels = synthetic(20000, 5, 1.0, np.random.default_rng(1))
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)
    assert nll(logits, labels, 1.0) <= nll(logits, labels, 1.5)


def test_temperature_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fit_temperature(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="no labelled"):
        fit_temperature(np.zeros((2, 3)), np.array([-1, -1]))
    assert fit_temperature(np.zeros((4, 3)), np.array([0, 1, 2, 0])) == 1.0  # flat objective: no scaling


def test_calibrate_outputs_is_plain_json():
    rng = np.random.default_rng(2)
    labels_ = {"categories": ["X", "Y", "V", "Z"], "category_paths": ["a.x", "a.y", "a.v", "b.z"],
               "hierarchy_levels": [["a", "b"]], "hierarchy_maps": [[0, 0, 0, 1]]}
    logits, y = synthetic(400, 4, 3.0, rng)
    levels = [np.stack([logits[:, :3].max(1), logits[:, 3]], 1)]
    state = calibrate_outputs(logits, y, labels_, levels, targets=(0.9, 0.99))
    state = json.loads(json.dumps(state, allow_nan=False))
    assert state["calibration"]["temperature"] == pytest.approx(3.0, rel=0.25)
    assert [row["target_accuracy"] for row in state["table"]] == [0.9, 0.99]
    assert all(row["val_accuracy"] >= row["target_accuracy"] for row in state["table"])
    assert set(state["fusion"]["accuracy"]) == {"flat", "summed", "heads", "stacked"}
    assert state["category_names"] == labels_["categories"] and state["num_images"] == 400


def test_load_calibration_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `fashionlens calibrate --model"):
        load_calibration(str(tmp_path))
    (tmp_path / "calibration.json").write_text('{"format": "fashionlens-calibration",\n "temperature": }')
    with pytest.raises(ValueError, match=r"calibration\.json:2: invalid JSON"):
        load_calibration(str(tmp_path))
    (tmp_path / "calibration.json").write_text('{"temperature": 1.0}')
    with pytest.raises(ValueError, match="not a fashionlens calibration file"):
        load_calibration(str(tmp_path / "best.pt"))  # a checkpoint path: the file next to it


# -- a tiny trained run, calibrated through the CLI --------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calib")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(root / "g"), "--items", "20", "--views", "4", "--size", "64", "--quiet"]) == 0
        assert main(["train", "--data", f"garments:{root / 'g'}", "--out", str(root / "run"), "--epochs", "1",
                     *TINY]) == 0
    images = sorted(glob.glob(str(root / "g" / "category" / "img" / "**" / "*.jpg"), recursive=True))
    return {"root": root, "run": str(root / "run"), "data": f"garments:{root / 'g'}", "images": images}


@pytest.fixture(scope="module")
def calibrated(run, tmp_path_factory):
    uncalibrated = tmp_path_factory.mktemp("plain")
    shutil.copy(f"{run['run']}/best.pt", uncalibrated / "best.pt")  # the same model, never calibrated
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", "--model", run["run"], "--data", run["data"], "--json", "--quiet"]) == 0
    return {**run, "summary": json.loads(out.getvalue()), "plain": str(uncalibrated)}


def test_calibrate_writes_calibration_json(calibrated):
    summary = calibrated["summary"]
    state = load_calibration(calibrated["run"])
    assert summary["path"] == f"{calibrated['run']}/calibration.json" and summary["num_images"] == state["num_images"]
    assert state["split"] == "val" and state["checkpoint"] == "best.pt" and state["temperature"] > 0
    assert [row["target_accuracy"] for row in state["table"]] == list(DEFAULT_TARGETS)
    assert len(state["category_names"]) == 14 and state["category_paths"][0].count(".") == 2
    for row in state["table"]:  # every lambda meets its target on the calibration split
        assert row["val_accuracy"] >= row["target_accuracy"] - 1e-9
    assert {"level_0", "level_1", "leaf"} == set(state["fusion"]["accuracy"]["heads"])
    with open(summary["path"], encoding="utf-8") as f:
        json.load(f, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_predict_answers_hedged_nodes(calibrated, capsys):
    from fashionlens.hierarchy.hedging import CategoryTree
    from fashionlens.inference import Predictor

    assert main(["predict", "--model", calibrated["run"], "--target-accuracy", "0.9", *calibrated["images"][:3]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    state = load_calibration(calibrated["run"])
    tree = CategoryTree.from_paths(state["category_paths"], state["category_names"])
    nodes = {(n, tuple(p)) for n, p in zip(tree.names, tree.paths)}
    assert len(lines) == 3
    for line in lines:
        hedged = line["hedged"]
        assert (hedged["name"], tuple(hedged["path"])) in nodes and hedged["target_accuracy"] == 0.9
        assert 0 < hedged["probability"] <= 1
    predictor = Predictor.load(calibrated["run"])
    from PIL import Image

    image = [Image.open(calibrated["images"][0]).convert("RGB")]
    gains = [tree.rewards[tree.paths.index(predictor.predict(image, target_accuracy=t)[0]["hedged"]["path"])]
             for t in (0.8, 0.9, 0.99)]
    assert gains[0] >= gains[1] >= gains[2]  # more accuracy asked, no more specific an answer
    assert "hedged" not in predictor.predict(image)[0]


def test_evaluate_reports_hedged_metrics_and_the_curve(calibrated, tmp_path, capsys):
    assert main(["evaluate", "--model", calibrated["run"], "--data", calibrated["data"], "--json",
                 "--target-accuracy", "0.95", "--out", str(tmp_path / "rep")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["hedged_accuracy"] <= 1 and 0 <= metrics["hedged_specificity"] <= math.log2(14) + 1e-9
    assert metrics["target_accuracy"] == 0.95 and metrics["flat_accuracy"] == pytest.approx(metrics["category_top1"])
    curve = metrics["hedged_curve"]
    assert curve["lambda"][-1] is None and curve["accuracy"][-1] == 1.0 and curve["specificity"][-1] == 0.0
    assert (tmp_path / "rep" / "hedging.png").stat().st_size > 5000
    assert "hedging.png" in (tmp_path / "rep" / "report.md").read_text()


def test_hedging_without_calibration_is_a_clear_error(calibrated, capsys):
    for argv in (["predict", "--model", calibrated["plain"], "--target-accuracy", "0.9", calibrated["images"][0]],
                 ["evaluate", "--model", calibrated["plain"], "--data", calibrated["data"], "--target-accuracy", "0.9"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "calibration.json not found" in err and "fashionlens calibrate --model" in err
    assert main(["predict", "--model", calibrated["run"], "--target-accuracy", "0.999", calibrated["images"][0]]) == 2
    assert "no lambda fitted for target accuracy 0.999" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", calibrated["run"], "--target-accuracy", "1.5", calibrated["images"][0]])


def test_api_fills_hedged_when_a_target_is_given(calibrated):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    with open(calibrated["images"][1], "rb") as f:
        files = {"image": ("a.jpg", f.read(), "image/jpeg")}
    with TestClient(create_app(ServeSettings(calibrated["run"]))) as client:
        plain = client.post("/v1/classify", files=files).json()
        assert plain["hedged"] is None
        body = client.post("/v1/classify", files=files, data={"target_accuracy": "0.9"}).json()
        assert set(body["hedged"]) == {"name", "path", "probability", "target_accuracy"}
        assert body["hedged"]["target_accuracy"] == 0.9 and body["category"] == plain["category"]
        bad = client.post("/v1/classify", files=files, data={"target_accuracy": "0.999"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_target_accuracy"
        assert client.post("/v1/classify", files=files, data={"target_accuracy": "2"}).status_code == 422
    with TestClient(create_app(ServeSettings(calibrated["plain"]))) as client:
        r = client.post("/v1/classify", files=files, data={"target_accuracy": "0.9"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_calibrated"
        assert "fashionlens calibrate" in r.json()["error"]["message"] and "/tmp" not in r.text


def test_calibrate_familiarity_writes_what_the_model_was_trained_on(run, tmp_path):
    from fashionlens.data.decode import load_image
    from fashionlens.data.readers import read
    from fashionlens.openworld import Familiarity, ImageNetGuide

    copy = tmp_path / "run"
    shutil.copytree(run["run"], copy)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", "--model", str(copy), "--data", run["data"], "--familiarity", "--json",
                     "--quiet"]) == 0
    fam = json.loads(out.getvalue())["familiarity"][0]
    assert fam["path"] == f"{copy}/familiarity.npz" and fam["reference"] > 0 and fam["validation"] > 0
    loaded = Familiarity.load(fam["path"])
    assert abs(loaded.threshold - fam["threshold"]) < 1e-9 and len(loaded.reference) == fam["reference"]
    assert fam["space"] == "imagenet:tf_efficientnet_lite0@224"  # a tiny_cnn run: guided by Lite0's features
    train = [s for s in read(run["data"]).samples if s.split == "train"][:4]
    vectors = ImageNetGuide().look([load_image(s) for s in train])[0]
    assert (loaded.scores(vectors) >= 0.999).all()  # a training photo is found in the reference
    assert (loaded.scores(vectors) >= loaded.threshold - 1e-3).all()
    with pytest.raises(SystemExit):
        main(["calibrate", "--model", str(copy), "--data", run["data"], "--familiarity", "--train-split"])
