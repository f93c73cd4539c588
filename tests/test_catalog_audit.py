"""The label audit of a catalog (``Catalog.audit``, ``catalog audit``): suspects go first in the review queue
(library, CLI and ``GET /v1/review``), a person's answer takes an item out, a new audit replaces the old one."""

import contextlib
import glob
import io
import json

import numpy as np
import pytest
from test_catalog import DIM, make_run  # the tiny random-weight run of the catalog tests

from fashionlens.catalog import Catalog
from fashionlens.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["Tee", "Shorts", "Dress"]
PER_CLASS = 12
SWAPPED = {3: "Shorts", 16: "Dress", 30: "Tee"}  # row -> the wrong category it is given


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A catalog of 36 items whose embeddings form one tight cluster per true category (answers passed in, so
    the tiny random model's own embeddings do not matter), three of them given a wrong category."""
    from fashionlens.data.decode import load_image
    from fashionlens.inference import Predictor

    root = tmp_path_factory.mktemp("audit")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(root / "g"), "--items", "14", "--views", "3", "--size", "64", "--quiet"]) == 0
    files = sorted(glob.glob(str(root / "g" / "category" / "img" / "**" / "*.jpg"), recursive=True))[:36]
    run = make_run(root / "run", files[::3])
    predictor = Predictor.load(run)
    rng = np.random.default_rng(0)
    centres = np.eye(DIM, dtype=np.float32)[:3]
    truth = [NAMES[i // PER_CLASS] for i in range(36)]
    answers = predictor.analyse([load_image(f) for f in files])
    for i, answer in enumerate(answers):
        v = centres[i // PER_CLASS] + rng.normal(scale=0.05, size=DIM).astype(np.float32)
        answer["embedding"] = v / np.linalg.norm(v)
    given = [SWAPPED.get(i, truth[i]) for i in range(36)]
    with Catalog.create(str(root / "cat"), dim=DIM, model_run=run) as cat:
        ids = cat.add(files, [{"category": c, "sku": f"S{i}"} for i, c in enumerate(given)], predictor,
                      answers=answers)
        unsure = cat.add(files[:2], None, predictor)  # the model's own answers: "unsure" entries
    return {"dir": str(root / "cat"), "ids": ids, "unsure": unsure, "run": run, "files": files}


def test_audit_flags_the_wrong_labels_and_queues_them_first(world):
    with Catalog.open(world["dir"]) as cat:
        summary = cat.audit(folds=4)
        flagged = {row["item_id"]: row for row in summary["suspects"]}
        wrong = {world["ids"][i]: truth for i, truth in ((3, "Tee"), (16, "Shorts"), (30, "Dress"))}
        assert set(wrong) <= set(flagged)  # every swapped label is found
        assert len(flagged) <= 5  # and few right ones with them
        for item_id, truth in wrong.items():
            assert flagged[item_id]["suggested"] == truth and flagged[item_id]["category"] == SWAPPED[
                world["ids"].index(item_id)]
        assert summary["audited"] == 38 and summary["categories"] == sorted(NAMES)  # given + predicted
        queue = cat.review_queue(limit=100)
        reasons = [e["reason"] for e in queue]
        assert reasons[:len(flagged)] == ["suspect"] * len(flagged) and set(reasons[len(flagged):]) <= {"unsure"}
        confidences = [e["suspect"]["confidence"] for e in queue if e["suspect"]]
        assert confidences == sorted(confidences, reverse=True)  # most certainly wrong first
        first = queue[0]
        assert first["suspect"]["model_category"] == flagged[first["item"]["item_id"]]["suggested"]
        assert 0 <= first["suspect"]["score"] < 0.5
        assert cat.review_count() == len(queue) == len(flagged) + len(world["unsure"])


def test_an_answer_takes_a_suspect_out_and_a_new_audit_replaces_the_old(world):
    with Catalog.open(world["dir"]) as cat:
        cat.audit(folds=4)
        before = cat.review_count()
        wrong = world["ids"][3]
        cat.answer(wrong, "no", category="Tee")  # a person corrects it
        assert wrong not in [e["item"]["item_id"] for e in cat.review_queue(limit=100)]
        assert cat.review_count() == before - 1
        with pytest.raises(ValueError):  # a bad answer changes nothing, the suspect stays
            cat.answer(world["ids"][16], "maybe")
        assert world["ids"][16] in [e["item"]["item_id"] for e in cat.review_queue(limit=100)]
        again = cat.audit(folds=4)  # the corrected item is no longer audited (a person's answer)
        assert wrong not in {r["item_id"] for r in again["suspects"]} and again["audited"] == 37
        assert cat.review_count() == len(again["suspects"]) + len(world["unsure"])
        with pytest.raises(ValueError, match="at least two categories"):
            cat.audit(folds=40)
        assert cat.review_count() == len(again["suspects"]) + len(world["unsure"])  # a failed audit keeps them
        with pytest.raises(ValueError, match="labels must be"):
            cat.audit(labels=["guessed"])


def test_cli_audit_and_review_and_the_api(world, capsys):
    assert main(["catalog", "audit", world["dir"], "--folds", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["suspects"] and summary["audited"] > 30
    assert main(["catalog", "review", world["dir"], "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "suspect" in out and "audit:" in out and "more likely" in out
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    app = create_app(ServeSettings(catalog_dir=world["dir"], api_key="k"))
    with TestClient(app) as client:
        body = client.get("/v1/review", params={"limit": 100}).json()
    app.state.service.close()
    first = body["items"][0]
    assert first["reason"] == "suspect" and first["suspect"]["model_category"] in NAMES
    assert first["item"]["item_id"] == summary["suspects"][0]["item_id"]
    assert body["items"][-1]["reason"] == "unsure" and body["items"][-1]["suspect"] is None
    assert body["total"] == len(body["items"])
