"""Label provenance (predicted / given / confirmed / corrected, with time and model), people's answers, the
review queue, the training-manifest export read back by the ``manifest:`` reader, the ``finetune`` recipe
trained on it, and the ``catalog export|review|answer`` commands."""

import contextlib
import csv
import glob
import io
import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from test_catalog import DIM, LABELS, make_run  # the tiny random-weight run of the catalog tests

from fashionlens.catalog import Catalog, export_manifest
from fashionlens.cli import main
from fashionlens.data.readers import read

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "garments"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(out), "--items", "14", "--views", "3", "--size", "64", "--quiet"]) == 0
    files = sorted(glob.glob(str(out / "category" / "img" / "**" / "*.jpg"), recursive=True))
    assert len(files) == 42
    return files


@pytest.fixture(scope="module")
def run(images, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("labels") / "run", images[::2][:16])


@pytest.fixture(scope="module")
def predictor(run):
    from fashionlens.inference import Predictor

    return Predictor.load(run)


@pytest.fixture
def cat(tmp_path, run):
    with Catalog.create(tmp_path / "cat", dim=DIM, model_run=run) as c:
        yield c


def label_rows(directory):
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        return db.execute("SELECT item_id, category, provenance FROM labels ORDER BY id").fetchall()


def margin_of(item):
    scores = [s["score"] for s in item["extra"]["prediction"]["category_scores"]]
    return scores[0] - (scores[1] if len(scores) > 1 else 0.0)


# -- provenance --------------------------------------------------------------------------------------------------
def test_every_new_item_gets_a_label_with_provenance_time_and_model(cat, images, predictor, run):
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    predicted, given = cat.add(images[:2], [{}, {"category": "Shorts"}], predictor)
    label = cat.get(predicted)["label"]
    item = cat.get(predicted)
    assert label["provenance"] == "predicted" and label["model"] == os.path.abspath(run)
    assert (label["category"], label["attributes"]) == (item["category"], item["attributes"])
    assert label["category"] == item["extra"]["prediction"]["category"]  # the model's answer, as stored
    at = datetime.fromisoformat(label["at"])
    assert at.utcoffset() == timedelta(0) and before <= at <= datetime.now(timezone.utc)
    given_label = cat.get(given)["label"]
    assert given_label["provenance"] == "given" and given_label["category"] == "Shorts"
    assert given_label["model"] is None and given_label["category_path"] == "lower.shorts.shorts"

    confirmed = cat.add(images[2:3], None, predictor, label="confirmed")[0]
    corrected, unsure = cat.add(images[3:5], [{"category": "Dress", "attributes": ["striped"]}, {}], predictor,
                                label=["corrected", None])
    assert cat.get(confirmed)["label"]["provenance"] == "confirmed"
    fixed = cat.get(corrected)
    assert fixed["label"]["provenance"] == "corrected" and fixed["label"]["model"] == os.path.abspath(run)
    assert (fixed["category"], fixed["attributes"], fixed["label"]["attributes"]) == ("Dress", ["striped"], ["striped"])
    assert cat.get(unsure)["label"]["provenance"] == "predicted"
    assert [i["label"]["provenance"] for i in cat.list()] == ["predicted", "given", "confirmed", "corrected",
                                                               "predicted"]


def test_bad_labels_on_add_are_refused_before_anything_is_written(cat, images, predictor):
    with pytest.raises(ValueError, match="corrected.*category or attributes"):
        cat.add(images[:1], None, predictor, label="corrected")
    with pytest.raises(ValueError, match="confirmed or corrected"):
        cat.add(images[:1], None, predictor, label="predicted")
    with pytest.raises(ValueError, match="2 labels for 1 items"):
        cat.add(images[:1], None, predictor, label=["confirmed", "confirmed"])
    assert len(cat) == 0 and label_rows(cat.directory) == []
    assert os.listdir(os.path.join(cat.directory, "images")) == []


def test_answers_confirm_or_correct_and_keep_the_history(cat, images, predictor, run):
    a, b = cat.add(images[:2], None, predictor)
    old = cat.get(b)
    yes = cat.answer(a, "yes")
    assert yes["label"]["provenance"] == "confirmed" and yes["label"]["model"] == os.path.abspath(run)
    assert yes["category"] == cat.get(a)["category"]
    wrong = next(c for c in LABELS["categories"] if c != old["category"])
    no = cat.answer(b, "no", category=wrong)
    assert (no["category"], no["category_path"]) == (wrong, LABELS["category_paths"][LABELS["categories"].index(wrong)])
    assert no["attributes"] == old["attributes"]  # not given: kept
    assert no["label"] == {**no["label"], "provenance": "corrected", "category": wrong, "attributes": old["attributes"]}
    no_again = cat.answer(b, "no", attributes="dotted, striped")
    assert no_again["attributes"] == ["dotted", "striped"] and no_again["category"] == wrong
    history = cat.labels(b)
    assert [h["provenance"] for h in history] == ["predicted", "corrected", "corrected"]
    assert history[0]["category"] == old["category"] and history[-1] == no_again["label"]
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)

    rows = label_rows(cat.directory)
    for bad, match in [(dict(verdict="maybe"), "verdict must be 'yes'"),
                       (dict(verdict="no"), "needs the right category or attributes"),
                       (dict(verdict="yes", category=old["category"] if wrong != old["category"] else "Tee"),
                        "confirms the stored category"),
                       (dict(verdict="no", category=wrong), "corrects nothing"),
                       (dict(verdict="no", category="  "), "category must be a non-blank name"),
                       (dict(verdict="no", attributes=[1, 2]), "attributes must be a list of names")]:
        with pytest.raises(ValueError, match=match):
            cat.answer(b, bad.pop("verdict"), **bad)
    with pytest.raises(KeyError):
        cat.answer(10_000, "yes")
    assert label_rows(cat.directory) == rows and cat.get(b) == no_again  # nothing written by the refusals


def test_edits_are_given_labels_and_removal_drops_the_history(cat, images, predictor):
    item_id = cat.add(images[:1], None, predictor)[0]
    cat.update(item_id, title="renamed")  # no label change
    assert [h["provenance"] for h in cat.labels(item_id)] == ["predicted"]
    edited = cat.update(item_id, category="Tee")
    assert edited["label"]["provenance"] == "given" and edited["label"]["category"] == "Tee"
    assert edited["label"]["attributes"] == edited["attributes"]
    assert cat.remove([item_id]) == 1
    assert label_rows(cat.directory) == []
    with pytest.raises(KeyError):
        cat.labels(item_id)


def test_a_catalog_from_before_labels_opens_and_its_unreviewed_items_are_queued(tmp_path, images, predictor, run):
    with Catalog.create(tmp_path / "old", dim=DIM, model_run=run) as cat:
        ids = cat.add(images[:3], [{}, {}, {"category": "Tee", "attributes": ["solid"]}], predictor)
        before = cat.list()
    with sqlite3.connect(tmp_path / "old" / "items.db") as db:  # as a catalog written before the labels table
        db.execute("DROP TABLE labels")
    with Catalog.open(tmp_path / "old") as cat:
        assert [i["label"] for i in cat.list()] == [None, None, None]
        assert [{k: v for k, v in i.items() if k != "label"} for i in cat.list()] == \
            [{k: v for k, v in i.items() if k != "label"} for i in before]  # nothing else changed
        # the model's answers (category = stored prediction) wait for review; the given labels do not
        assert sorted(e["item"]["item_id"] for e in cat.review_queue()) == ids[:2]
        assert cat.answer(ids[0], "yes")["label"]["provenance"] == "confirmed"
        assert [e["item"]["item_id"] for e in cat.review_queue()] == [ids[1]]
        new = cat.add(images[3:4], None, predictor)[0]
        assert cat.get(new)["label"]["provenance"] == "predicted"


# -- review queue ------------------------------------------------------------------------------------------------
def test_review_queue_lists_unreviewed_items_least_sure_first(cat, images, predictor):
    ids = cat.add(images[:10], None, predictor)
    given = cat.add(images[10:11], [{"category": "Tee"}], predictor)[0]
    margins = {i: margin_of(cat.get(i)) for i in ids}
    queue = cat.review_queue(limit=50)
    assert [e["item"]["item_id"] for e in queue] == sorted(ids, key=lambda i: (round(margins[i], 5), i))
    assert [e["margin"] for e in queue] == sorted(e["margin"] for e in queue)
    assert all(e["margin"] == pytest.approx(margins[e["item"]["item_id"]], abs=1e-5) for e in queue)
    first = queue[0]
    assert first["guesses"] == first["item"]["extra"]["prediction"]["category_scores"]
    assert first["guesses"][0]["score"] >= first["guesses"][1]["score"]
    assert cat.review_count() == 10 and given not in [e["item"]["item_id"] for e in queue]

    cat.answer(first["item"]["item_id"], "yes")
    wrong = next(c for c in LABELS["categories"] if c != queue[1]["item"]["category"])
    cat.answer(queue[1]["item"]["item_id"], "no", category=wrong)
    after = cat.review_queue(limit=50)
    assert [e["item"]["item_id"] for e in after] == [e["item"]["item_id"] for e in queue[2:]]
    assert cat.review_count() == 8
    assert [e["item"]["item_id"] for e in cat.review_queue(limit=3, offset=2)] == \
        [e["item"]["item_id"] for e in after[2:5]]
    for bad in (dict(limit=0), dict(limit=True), dict(offset=-1)):
        with pytest.raises(ValueError, match="limit|offset"):
            cat.review_queue(**bad)


# -- training manifest -------------------------------------------------------------------------------------------
def answered_catalog(cat, images, predictor, n=8):
    """``n`` items: even ones confirmed, odd ones corrected to a category other than the model's."""
    ids = cat.add(images[:n], [{"sku": f"S{i // 2}"} for i in range(n)], predictor)
    truth = {}
    for k, item_id in enumerate(ids):
        item = cat.get(item_id)
        if k % 2:
            wrong = next(c for c in LABELS["categories"] if c != item["category"])
            cat.answer(item_id, "no", category=wrong, attributes=["striped"])
            truth[item["image"]] = (wrong, ["striped"])
        else:
            cat.answer(item_id, "yes")
            truth[item["image"]] = (item["category"], item["attributes"])
    return ids, truth


@pytest.mark.parametrize("name", ["answers.csv", "answers.jsonl"])
def test_export_writes_a_manifest_the_reader_reads_back(cat, images, predictor, tmp_path, name):
    _, truth = answered_catalog(cat, images, predictor)
    cat.add(images[8:10], None, predictor)  # predicted: not exported by default
    vectors = np.random.default_rng(0).normal(size=(1, DIM)).astype(np.float32)
    cat.add_embeddings(vectors, [{"category": "Tee"}])  # a given label without a stored image
    out = tmp_path / "sub" / name
    summary = export_manifest(cat, out)
    sidecar = str(out.with_suffix(".labels.json"))
    assert summary == {"manifest": str(out), "rows": 8, "by_provenance": {"confirmed": 4, "corrected": 4},
                       "skipped": {"no_image": 0, "no_category": 0}, "label_space": sidecar}
    data = read(f"manifest:{out}")
    assert len(data) == 8 and data.splits() == {"train": 8}
    assert {s.image: s.category_name for s in data} == {img: c for img, (c, _) in truth.items()}
    for s in data:
        assert os.path.isabs(s.image) and os.path.isfile(s.image)
        positive = {data.info.attributes[j] for j in np.flatnonzero(np.asarray(s.attributes) > 0)}
        assert positive == set(truth[s.image][1])
    assert sorted({s.item_id for s in data}) == ["S0", "S1", "S2", "S3"]  # the SKU is the reader's item id
    # the served model's label space, in its order, whatever the answers name (the sidecar)
    assert data.info.categories == LABELS["categories"] and data.info.attributes == LABELS["attributes"]
    for name_, path in zip(data.info.categories, data.info.category_paths):
        assert path == LABELS["category_paths"][LABELS["categories"].index(name_)]

    os.remove(sidecar)  # without it: the answers' own vocabulary
    assert set(read(f"manifest:{out}").info.categories) == {c for c, _ in truth.values()}

    only = export_manifest(cat.directory, tmp_path / "given.csv", "given,predicted")  # a directory works too
    assert only["rows"] == 2 and only["by_provenance"] == {"given": 0, "predicted": 2}
    assert only["skipped"] == {"no_image": 1, "no_category": 0}


def test_export_keeps_data_set_splits(cat, images, predictor, tmp_path):
    ids = cat.add(images[:3], [{"split": "val"}, {"split": "gallery"}, {"split": "test"}], predictor, label="confirmed")
    export_manifest(cat, tmp_path / "m.csv")
    with open(tmp_path / "m.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["val", "train", "test"]
    assert [int(r["catalog_item"]) for r in rows] == ids and {r["provenance"] for r in rows} == {"confirmed"}


def test_export_refuses_bad_requests_and_leaves_the_file_alone(cat, images, predictor, tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("old contents\n")
    cat.add(images[:1], None, predictor)  # predicted only
    with pytest.raises(ValueError, match="no item with a confirmed or corrected label.*not written"):
        export_manifest(cat, out)
    with pytest.raises(ValueError, match="'guessed'.*choose among"):
        export_manifest(cat, out, "confirmed,guessed")
    with pytest.raises(ValueError, match="unknown manifest type '.txt'"):
        export_manifest(cat, tmp_path / "m.txt")
    cat.add(images[1:2], [{"category": "Tee", "attributes": ["a;b"]}], predictor, label="corrected")
    with pytest.raises(ValueError, match="'a;b'.*jsonl"):
        export_manifest(cat, out)
    assert out.read_text() == "old contents\n" and not (tmp_path / "m.txt").exists()
    assert export_manifest(cat, tmp_path / "m.jsonl")["rows"] == 1  # JSON Lines keeps such names whole
    assert read(f"manifest:{tmp_path / 'm.jsonl'}").info.attributes == ["a;b"]


def test_finetune_recipe_trains_the_served_model_on_exported_answers(cat, images, predictor, run, tmp_path):
    from fashionlens.config import apply_overrides
    from fashionlens.recipes import available, load_recipe
    from fashionlens.training.checkpoint import load_checkpoint
    from fashionlens.training.fit import fit

    assert "finetune" in available()
    tune, photos = load_recipe("finetune"), load_recipe("photos")
    assert tune.model == photos.model  # --init-from a served photos run: the same backbone and layout
    assert tune.data == photos.data and tune.loss == photos.loss
    assert tune.train.lr < photos.train.lr and tune.train.epochs < photos.train.epochs
    assert tune.train.max_minutes < photos.train.max_minutes

    answered_catalog(cat, images, predictor, n=10)
    manifest = export_manifest(cat, tmp_path / "answers.csv")["manifest"]
    cfg = tune
    cfg.data.spec = f"manifest:{manifest}"
    cfg.train.init_from = run
    apply_overrides(cfg, ["model.backbone=tiny_cnn", "model.pretrained=false", "model.frozen_stages=0",
                          f"model.embedding_dim={DIM}", "model.hidden_dim=32", "data.image_size=48",
                          "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "threads=1",
                          "model.tta_flip=false"])
    logs = []
    summary = fit(cfg, str(tmp_path / "tuned"), progress=False, log=logs.append)
    assert any(line.startswith("initialised") and run in line for line in logs)  # the served backbone
    assert summary["steps"] == 2  # 9 training images (one SKU held out for validation): 2 full batches of 4
    ckpt = load_checkpoint(str(tmp_path / "tuned" / "best.pt"))
    assert ckpt["labels"]["categories"] == read(f"manifest:{manifest}").info.categories


# -- command line ------------------------------------------------------------------------------------------------
def test_cli_add_review_answer_export(tmp_path, images, run, capsys):
    catalog = str(tmp_path / "cat")
    Catalog.create(catalog, dim=DIM, model_run=run).close()
    assert main(["catalog", "add", catalog, *images[:4]]) == 0
    assert main(["catalog", "add", catalog, images[4], "--label", "corrected", "--meta", "category=Tee"]) == 0
    added = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["label"] for a in added] == ["predicted"] * 4 + ["corrected"]

    assert main(["catalog", "review", catalog, "--json"]) == 0
    queue = json.loads(capsys.readouterr().out)
    assert len(queue) == 4 and [e["margin"] for e in queue] == sorted(e["margin"] for e in queue)
    assert main(["catalog", "review", catalog, "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert str(queue[0]["item"]["item_id"]) in text and "2 of 4 item(s) to review" in text

    first = queue[0]["item"]
    assert main(["catalog", "answer", catalog, str(first["item_id"]), "yes"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "confirmed"
    assert main(["catalog", "answer", catalog, "999", "yes"]) == 2
    assert "no item 999" in capsys.readouterr().err
    assert main(["catalog", "answer", catalog, str(queue[1]["item"]["item_id"]), "no"]) == 2
    assert "needs the right category" in capsys.readouterr().err

    out = tmp_path / "answers.csv"
    assert main(["catalog", "export", catalog, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 row(s)" in printed and "1 confirmed, 1 corrected" in printed
    assert "--init-from" in printed
    assert sorted(s.category_name for s in read(f"manifest:{out}")) == sorted([first["category"], "Tee"])
    assert main(["catalog", "export", catalog, "--out", str(out), "--labels", "predicted"]) == 0
    assert "3 predicted" in capsys.readouterr().out

    assert main(["catalog", "export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["catalog", "export", catalog, "--out", str(tmp_path / "x.csv"), "--labels", "sure"]) == 2
    assert "'sure'" in capsys.readouterr().err


def test_a_label_space_sidecar_is_checked_and_names_its_file(tmp_path, images):
    from fashionlens.data.samples import DataFormatError

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,category,attributes\n" + f"{images[0]},Tee,striped\n" + f"{images[1]},Dress,\n")
    space = tmp_path / "m.labels.json"
    space.write_text(json.dumps({"categories": ["Dress", "Shorts", "Tee"], "category_paths": [
        "full.dresses.dress", "lower.shorts.shorts", "upper.tops.tee"], "attributes": ["striped", "dotted"]}))
    data = read(f"manifest:{manifest}")
    assert data.info.categories == ["Dress", "Shorts", "Tee"] and data.info.attributes == ["striped", "dotted"]
    assert [s.category for s in data] == [2, 0] and data.info.category_paths[1] == "lower.shorts.shorts"
    space.write_text(json.dumps({"categories": ["Dress", "Shorts"], "attributes": ["striped"]}))
    with pytest.raises(DataFormatError, match=r"m.csv:2: category 'Tee' is not in the label space"):
        read(f"manifest:{manifest}")
    space.write_text(json.dumps({"categories": ["Dress", "Tee"], "attributes": []}))
    with pytest.raises(DataFormatError, match=r"m.csv:2: attribute 'striped' is not in the label space"):
        read(f"manifest:{manifest}")
    space.write_text("{not json")
    with pytest.raises(DataFormatError, match=r"m.labels.json:1"):
        read(f"manifest:{manifest}")
    space.write_text(json.dumps({"categories": ["Tee", "Tee"]}))
    with pytest.raises(DataFormatError, match=r"m.labels.json: expected"):
        read(f"manifest:{manifest}")


def test_answers_naming_a_category_the_model_lacks_get_no_label_space(cat, images, predictor, tmp_path):
    ids = cat.add(images[:2], None, predictor)
    cat.answer(ids[0], "yes")
    cat.answer(ids[1], "no", category="Jumpsuit")  # a person names a category the model does not have
    summary = export_manifest(cat, tmp_path / "a.csv")
    assert summary["label_space"] is None and not (tmp_path / "a.labels.json").exists()
    assert "Jumpsuit" in read(f"manifest:{tmp_path / 'a.csv'}").info.categories
