"""Hedged answers of an ensemble: ``calibrate --model A --model B`` fits the hedging calibration on the ensemble's
averaged calibrated probabilities (the members' own files untouched) into a file keyed by the member set, which
``predict``, ``evaluate`` and ``serve`` of the same members (in any order) use, and no other member set does."""

import json
import os
import shutil
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
from test_onnx_serving import calibrate, pictures, run_cli, tiny_run, write_photos

from fashionlens.cli import main
from fashionlens.export import load_predictor
from fashionlens.hierarchy.calibration import fit_temperature
from fashionlens.hierarchy.hedging import HedgedClassifier
from fashionlens.runs.calibrate import (
    ensemble_calibration_path,
    ensemble_key,
    find_ensemble_calibration,
    load_ensemble_hedger,
)
from fashionlens.runs.ensemble import as_logits, mean_probabilities
from fashionlens.runs.outputs import collect_run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_calibration")
    files = write_photos(str(root / "photos"), per_class=6)  # train: 18 images, val: 18
    a, b, c = (tiny_run(root / name, files, seed=seed, dim=dim) for name, seed, dim in (("a", 0, 32), ("b", 1, 16),
                                                                                          ("c", 2, 16)))
    temperature = calibrate(a, files)["temperature"]  # a's own calibration (T != 1); b and c have none
    with open(os.path.join(a, "calibration.json"), "rb") as f:
        member_file = f.read()
    out = StringIO()  # capsys is function-scoped: the module's calibration is captured by hand
    with redirect_stdout(out):
        code = main(["calibrate", "--model", a, "--model", b, "--data", f"folder:{root / 'photos'}", "--json", "--quiet"])
    assert code == 0
    return {"root": root, "files": files, "a": a, "b": b, "c": c, "temperature": temperature,
            "member_file": member_file, "summary": json.loads(out.getvalue()), "data": f"folder:{root / 'photos'}"}


def by_hand(world, images):
    """The ensemble's hedged answers at 0.9 from the members' raw outputs and the stored file."""
    with open(world["summary"]["path"], encoding="utf-8") as f:
        hedger = HedgedClassifier.from_dict(json.load(f))
    members = [load_predictor(world[k]) for k in "ab"]
    probs = mean_probabilities([m.forward(images)[0]["category"] for m in members], [world["temperature"], 1.0])
    return hedger.answers(hedger.calibrate(np.log(probs)), 0.9)


def test_calibrate_fits_the_ensembles_averaged_probabilities_and_leaves_the_members_alone(world):
    summary = world["summary"]
    assert summary["path"] == ensemble_calibration_path([world["a"], world["b"]])
    assert os.path.dirname(summary["path"]) == world["a"]  # the first member's run directory
    assert os.path.basename(summary["path"]) == f"calibration.ensemble-{ensemble_key([world['a'], world['b']])}.json"
    with open(os.path.join(world["a"], "calibration.json"), "rb") as f:
        assert f.read() == world["member_file"]  # a's own calibration is untouched
    assert not os.path.exists(os.path.join(world["b"], "calibration.json"))
    members = [collect_run(world[k], world["data"], split="val", progress=False) for k in "ab"]
    averaged = mean_probabilities([m.preds["category"] for m in members], [world["temperature"], 1.0])
    assert summary["num_images"] == 18
    assert summary["temperature"] == pytest.approx(fit_temperature(as_logits(averaged), members[0].targets["category"]),
                                                   rel=1e-4)
    with open(summary["path"], encoding="utf-8") as f:
        state = json.load(f)
    assert [m["temperature"] for m in state["members"]] == pytest.approx([world["temperature"], 1.0])
    assert sorted(m["checkpoint"] for m in state["members"]) == sorted(
        os.path.realpath(os.path.join(world[k], "best.pt")) for k in "ab")


def test_the_key_is_the_member_set_in_any_order(world):
    a, b, c = world["a"], world["b"], world["c"]
    assert ensemble_key([a, b]) == ensemble_key([b, a]) == ensemble_key([os.path.join(b, "best.pt"), a])
    assert len({ensemble_key([a, b]), ensemble_key([a, c]), ensemble_key([a, b, c])}) == 3
    assert find_ensemble_calibration([b, a]) == world["summary"]["path"]  # found in a's directory, b given first
    assert find_ensemble_calibration([a, c]) is None and find_ensemble_calibration([a, b, c]) is None


def test_predict_cli_answers_hedged_nodes_in_any_order(world, capsys):
    images = world["files"][18:24]  # val images
    want = by_hand(world, pictures(images))
    for order in (("a", "b"), ("b", "a")):
        argv = ["predict", *[x for k in order for x in ("--model", world[k])], *images, "--target-accuracy", "0.9"]
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        answers = [json.loads(line) for line in out.splitlines()]
        assert [a["hedged"]["name"] for a in answers] == [w["name"] for w in want]
        assert [a["hedged"]["probability"] for a in answers] == pytest.approx([w["probability"] for w in want], abs=1e-6)
    ensemble = load_predictor([world["a"], world["b"]])
    assert ensemble.calibration()["ensemble_key"] == ensemble_key([world["a"], world["b"]])
    assert ensemble.temperature == 1.0  # the averaged probabilities are the members' calibrated ones


def test_another_member_set_is_not_calibrated(world, capsys, tmp_path):
    a, b, c = world["a"], world["b"], world["c"]
    for models in ([a, c], [a, b, c]):
        argv = ["predict", *[x for m in models for x in ("--model", m)], world["files"][0], "--target-accuracy", "0.9"]
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "" and "is not calibrated" in err
        assert f"fashionlens calibrate {' '.join(f'--model {m}' for m in models)} --data SPEC" in err
        assert load_predictor(models).calibration() is None
    # the file of a + b copied under the name of a + c: its recorded members are not a + c
    copied = os.path.join(c, os.path.basename(ensemble_calibration_path([a, c])))
    shutil.copy(world["summary"]["path"], copied)
    try:
        with pytest.raises(ValueError, match="fitted for the ensemble of .* not of"):
            load_predictor([a, c]).predict(pictures(world["files"][:1]), target_accuracy=0.9)
    finally:
        os.remove(copied)


def test_a_member_calibrated_again_warns(world):
    with pytest.warns(UserWarning, match="calibration of .* changed after .* rerun `fashionlens calibrate --model"):
        load_ensemble_hedger([world["a"], world["b"]], temperatures=[world["temperature"] * 2, 1.0])


def test_evaluate_cli_reports_the_ensembles_hedged_metrics(world, capsys):
    argv = ["evaluate", "--model", world["a"], "--model", world["b"], "--data", world["data"], "--split", "val",
            "--json", "--target-accuracy", "0.9"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["target_accuracy"] == 0.9 and 0 <= metrics["hedged_accuracy"] <= 1
    assert metrics["hedged_curve"]["lambda"]  # the trade-off curve of the ensemble's hedger
    code, _, err = run_cli([*argv[:3], "--model", world["c"], *argv[5:]], capsys)
    assert code == 2 and "is not calibrated" in err


def test_serve_offers_and_gives_the_ensembles_hedged_answers(world):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    query = world["files"][20]
    with open(query, "rb") as f:
        data = f.read()
    with TestClient(create_app(ServeSettings(model_run=[world["b"], world["a"]]))) as client:
        hedging = client.get("/v1/labels").json()["hedging"]
        assert hedging["calibrated"] is True and hedging["targets"]
        r = client.post("/v1/classify", files={"image": ("q.jpg", data, "image/jpeg")}, data={"target_accuracy": "0.9"})
        assert r.status_code == 200, r.text
        assert r.json()["hedged"]["name"] == by_hand(world, pictures([query]))[0]["name"]
    with TestClient(create_app(ServeSettings(model_run=[world["a"], world["c"]]))) as client:
        assert client.get("/v1/labels").json()["hedging"]["calibrated"] is False
        r = client.post("/v1/classify", files={"image": ("q.jpg", data, "image/jpeg")}, data={"target_accuracy": "0.9"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_calibrated"
