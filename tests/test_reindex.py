"""``Catalog.reindex(model)`` / ``fashionlens catalog reindex``: re-embed a catalog with a second tiny model (another
seed, another embedding size) while the old one serves, then switch at once.

The reference for every stored vector is plain ``Predictor.embed`` of the stored image with the new model.  A
reindex is staged (searches keep the old results), killed with SIGKILL after some batches (resumed: the same
vectors as an uninterrupted one; aborted: vectors, model_run, catalog.json and index byte-identical to before), and
switched while other Catalog objects, another process and the HTTP service have the catalog open.
"""

import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from test_catalog import make_run  # the tiny random-weight run of the catalog tests

from fashionlens.catalog import Catalog, ModelChangedError
from fashionlens.cli import main
from fashionlens.data.decode import load_image
from fashionlens.index import open_index

OLD_DIM, NEW_DIM, ITEMS = 32, 24, 10
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


def make_other_run(out, images, dim, seed):
    """:func:`test_catalog.make_run` with another seed (its weights start from ``torch.manual_seed(0)``)."""
    import torch

    real = torch.manual_seed
    with mock.patch.object(torch, "manual_seed", lambda _: real(seed)):
        return make_run(out, images, dim=dim)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Twelve small, different images, the old run (seed 0, dim 32), the new run (seed 1, dim 24) and a catalog of
    the first ten images built with the old run (copied by each test)."""
    from fashionlens.inference import Predictor

    root = tmp_path_factory.mktemp("reindex")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = np.full((56, 48, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(3):
            y, x, h, w = *rng.integers(0, 30, 2), *rng.integers(8, 26, 2)
            pixels[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(root / "images" / f"im{i:02d}.png")
    files = sorted(str(p) for p in (root / "images").iterdir())
    old = make_run(root / "old", files, dim=OLD_DIM)
    new = make_other_run(root / "new", files, NEW_DIM, seed=1)
    with Catalog.create(str(root / "base"), dim=OLD_DIM, model_run=old) as cat:
        cat.add(files[:ITEMS], [{"sku": f"S{i}"} for i in range(ITEMS)], Predictor.load(old))
    return {"root": root, "files": files, "old": old, "new": new, "base": str(root / "base"),
            "new_predictor": Predictor.load(new)}


def copy_catalog(world, tmp_path, name="cat"):
    return shutil.copytree(world["base"], str(tmp_path / name))


def copy_live(source, target):
    """A copy of a catalog other processes have open: files as they are, the database through SQLite's backup."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("items.db*", "*.lock"))
    with sqlite3.connect(os.path.join(source, "items.db")) as src, sqlite3.connect(os.path.join(target, "items.db")) as dst:
        src.backup(dst)
    return target


def stored(directory):
    """{id: (embedding bytes, image name)} straight from items.db."""
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        return {i: (e, name) for i, e, name in db.execute("SELECT id, embedding, image FROM items ORDER BY id")}


def tables(directory):
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def assert_new_model_vectors(world, directory):
    """Every stored vector is the new model's embedding of the stored image (plain Predictor.embed)."""
    rows = stored(directory)
    assert rows
    for item_id, (blob, name) in rows.items():
        vector = np.frombuffer(blob, np.float32)
        reference = world["new_predictor"].embed([load_image(os.path.join(directory, "images", name))])[0]
        assert vector.shape == (NEW_DIM,), item_id
        np.testing.assert_allclose(vector, reference, atol=1e-5, err_msg=f"item {item_id}")


def assert_new_model_hits(world, directory, query, hits, k=5):
    """``hits`` are the top k by cosine between the new model's query embedding and the stored new vectors."""
    q = world["new_predictor"].embed([load_image(query)])[0]
    scores = {i: float(np.frombuffer(blob, np.float32) @ q) for i, (blob, _) in stored(directory).items()}
    for hit in hits:
        assert hit["score"] == pytest.approx(scores[hit["item_id"]], abs=1e-5)
    np.testing.assert_allclose([h["score"] for h in hits], sorted(scores.values(), reverse=True)[:k], atol=1e-5)


# -- library ---------------------------------------------------------------------------------------------------
def test_staged_reindex_serves_the_old_model_then_switches_everything(world, tmp_path):
    directory = copy_catalog(world, tmp_path)
    query = world["files"][2]
    reader = Catalog.open(directory)  # another Catalog object: its own connection and index (as another process)
    before = reader.search(query, k=5)
    config_before, vectors_before = read_bytes(os.path.join(directory, "catalog.json")), stored(directory)

    writer = Catalog.open(directory)
    summary = writer.reindex(world["new"], batch_size=4, switch=False, progress=False)
    assert summary["switched"] is False and summary["reembedded"] == ITEMS and summary["epoch"] == 0
    status = writer.reindex_status()
    assert status["staged"] == ITEMS and status["dim"] == NEW_DIM and status["model_run"] == world["new"]
    # staged only: the catalog serves the old model, unchanged
    assert reader.search(query, k=5) == before
    assert (reader.model_run, reader.dim, reader.model_epoch) == (world["old"], OLD_DIM, 0)
    assert read_bytes(os.path.join(directory, "catalog.json")) == config_before and stored(directory) == vectors_before
    with pytest.raises(ValueError, match="under way"):  # another model while one is staged
        writer.reindex(world["old"], progress=False)

    added = writer.add([world["files"][10]])  # during the reindex: embedded by the old model, caught up before the switch
    assert np.frombuffer(stored(directory)[added[0]][0], np.float32).shape == (OLD_DIM,)
    old_answer = reader.predictor.analyse([load_image(world["files"][11])])[0]  # made before the switch ...

    summary = writer.reindex(world["new"], batch_size=4, progress=False)
    assert summary["switched"] and summary["resumed"] == ITEMS and summary["reembedded"] == 1  # only the added one
    assert (summary["dim"], summary["previous_dim"], summary["items"], summary["epoch"]) == (NEW_DIM, OLD_DIM, 11, 1)
    assert_new_model_vectors(world, directory)
    config = json.loads(read_bytes(os.path.join(directory, "catalog.json")))
    assert (config["dim"], config["model_run"], config["model_epoch"]) == (NEW_DIM, world["new"], 1)
    assert not {"embeddings_next", "reindex_job"} & tables(directory) and writer.reindex_status() is None
    index = open_index(os.path.join(directory, "vectors.1.index"))  # the new index, saved, with the new dim
    assert index.dim == NEW_DIM and sorted(index.ids().tolist()) == sorted(stored(directory))
    assert not os.path.exists(os.path.join(directory, "vectors.index"))  # the old model's index is gone

    # the reader opened before the switch follows it: model, dim, index and its own predictor
    assert (reader.model_epoch, reader.model_run, reader.dim) == (1, world["new"], NEW_DIM)
    hits = reader.search(query, k=5)
    assert reader.predictor.run == world["new"]
    assert_new_model_hits(world, directory, query, hits)
    # ... and used after it: refused, never compared with the new model's vectors
    with pytest.raises(ModelChangedError, match="switched"):
        reader.search(world["new_predictor"].embed([load_image(query)])[0], k=3, model_epoch=0)  # right dim, stale
    with pytest.raises(ModelChangedError):
        reader.add([world["files"][11]], answers=[old_answer], model_epoch=0)
    assert len(reader) == 11
    new_id = reader.add([world["files"][11]])[0]  # an add after the switch: the new model
    assert_new_model_vectors(world, directory)
    assert new_id in reader.index_ids() and new_id in writer.index_ids()
    reader.close()
    writer.close()


def test_bad_stored_images_are_named_or_skipped_and_removed(world, tmp_path):
    directory = copy_catalog(world, tmp_path)
    rows = stored(directory)
    os.remove(os.path.join(directory, "images", rows[3][1]))
    with open(os.path.join(directory, "images", rows[6][1]), "wb") as f:
        f.write(b"not an image")
    with Catalog.open(directory) as cat:
        with pytest.raises(FileNotFoundError, match=r"item 3: its stored image .*3\.png is missing"):
            cat.reindex(world["new"], batch_size=4, progress=False)
        assert cat.model_run == world["old"] and cat.reindex_status()["staged"] == 3  # items 1, 2, 4 kept staged
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["catalog", "reindex", directory, "--model", world["new"], "--skip-bad"]) == 0
    text = out.getvalue()
    assert "catalog reindex: 100%" in err.getvalue() and "7/7" in err.getvalue()  # the progress bar
    assert re.search(r"re-embedded 5 item\(s\) in [0-9.]+ s \(3 staged by an earlier run\), skipped 2", text), text
    assert "skipped item 3: its stored image" in text and "skipped item 6: its stored image can not be read" in text
    assert "removed 2 skipped item(s): 3, 6" in text and f"{NEW_DIM}-dimensional" in text
    assert sorted(stored(directory)) == [i for i in rows if i not in (3, 6)]
    assert rows[6][1] not in os.listdir(os.path.join(directory, "images"))
    assert_new_model_vectors(world, directory)


def test_a_switch_cut_short_after_its_commit_is_finished_by_the_next_open(world, tmp_path):
    """Death between the switch's commit and catalog.json (no handler runs after the commit, so an exception there
    leaves the disk as a SIGKILL would): the database wins, the next open rewrites catalog.json and the index."""
    directory = copy_catalog(world, tmp_path)
    config_before = read_bytes(os.path.join(directory, "catalog.json"))
    killed = mock.patch("fashionlens.catalog.reindex.write_config", side_effect=RuntimeError("killed"))
    with Catalog.open(directory) as cat, killed, pytest.raises(RuntimeError, match="killed"):
        cat.reindex(world["new"], batch_size=4, progress=False)
    assert read_bytes(os.path.join(directory, "catalog.json")) == config_before  # behind the database
    assert not [n for n in os.listdir(directory) if n.startswith("vectors.")]  # no index saved for either model
    with Catalog.open(directory) as cat:
        assert (cat.model_run, cat.dim, cat.model_epoch) == (world["new"], NEW_DIM, 1)
        config = json.loads(read_bytes(os.path.join(directory, "catalog.json")))
        assert (config["dim"], config["model_run"], config["model_epoch"]) == (NEW_DIM, world["new"], 1)
        index = open_index(os.path.join(directory, "vectors.1.index"))
        assert index.dim == NEW_DIM and sorted(index.ids().tolist()) == sorted(stored(directory))
        assert_new_model_hits(world, directory, world["files"][4], cat.search(world["files"][4], k=5))
    assert_new_model_vectors(world, directory)


# -- a killed reindex, resume and abort, and another process watching --------------------------------------------
REINDEX_CHILD = r"""
import sys, time
from fashionlens.catalog.store import ItemStore
real, batches = ItemStore.stage_embeddings, [0]

def staged(self, *args, **kw):
    real(self, *args, **kw)
    batches[0] += 1
    print("STAGED", batches[0], flush=True)
    if batches[0] >= int(sys.argv[3]):
        time.sleep(120)  # the parent kills us here

ItemStore.stage_embeddings = staged
from fashionlens.cli import main
sys.exit(main(["catalog", "reindex", sys.argv[1], "--model", sys.argv[2], "--batch-size", "2", "--quiet"]))
"""

READER_CHILD = r"""
import json, sys
import torch
torch.set_num_threads(1)
from fashionlens.catalog import Catalog
catalog = Catalog.open(sys.argv[1])
print("READY", flush=True)
for line in sys.stdin:  # one query image per line: searched with the catalog's own model
    hits = catalog.search(line.strip(), k=5)
    print(json.dumps({"model_run": catalog.model_run, "dim": catalog.dim, "epoch": catalog.model_epoch,
                      "hits": [[h["item_id"], h["score"]] for h in hits]}), flush=True)
"""


def wait_for(proc, prefix, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child exited early (rc {proc.wait()}): {proc.stderr.read()[-2000:]}")
        if line.startswith(prefix):
            return line
    proc.kill()
    raise AssertionError(f"child too slow waiting for {prefix}")


def ask(reader, query):
    reader.stdin.write(query + "\n")
    reader.stdin.flush()
    return json.loads(wait_for(reader, "{"))


def cli_json(*args):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["catalog", "reindex", *args, "--json", "--quiet"]) == 0
    return json.loads(out.getvalue())


def test_killed_reindex_resumes_abort_restores_and_another_process_follows(world, tmp_path):
    directory, reference = copy_catalog(world, tmp_path), copy_catalog(world, tmp_path, "reference")
    query = world["files"][2]
    vectors_before = stored(directory)
    files_before = {n: read_bytes(os.path.join(directory, n)) for n in ("catalog.json", "vectors.index",
                                                                         "vectors.index.json")}
    here = Catalog.open(directory)
    before = here.search(query, k=5)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    reader = subprocess.Popen([sys.executable, "-c", READER_CHILD, directory], stdin=subprocess.PIPE, **pipes)
    child = subprocess.Popen([sys.executable, "-c", REINDEX_CHILD, directory, world["new"], "3"], **pipes)
    try:
        wait_for(child, "STAGED 3")  # parked after its third committed batch: 6 of 10 items staged
        wait_for(reader, "READY")
        seen = ask(reader, query)  # another process, during the reindex: the old model's results
        assert (seen["model_run"], seen["dim"], seen["epoch"]) == (world["old"], OLD_DIM, 0)
        np.testing.assert_allclose([s for _, s in seen["hits"]], [h["score"] for h in before], atol=1e-5)
        assert here.search(query, k=5) == before
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert stored(directory) == vectors_before  # killed mid-reindex: nothing served changed
        assert {n: read_bytes(os.path.join(directory, n)) for n in files_before} == files_before

        aborted = copy_live(directory, str(tmp_path / "aborted"))  # the killed state, aborted
        job = cli_json(aborted, "--abort")
        assert job["staged"] == 6 and job["model_run"] == world["new"]
        assert stored(aborted) == vectors_before and not {"embeddings_next", "reindex_job"} & tables(aborted)
        assert {n: read_bytes(os.path.join(aborted, n)) for n in files_before} == files_before
        with Catalog.open(aborted) as cat:  # (opening repairs nothing: there is nothing to repair)
            assert (cat.model_run, cat.dim, cat.reindex_status()) == (world["old"], OLD_DIM, None)
            assert cat.search(query, k=5) == [{**h, "image": h["image"].replace(directory, aborted)} for h in before]
        assert {n: read_bytes(os.path.join(aborted, n)) for n in files_before} == files_before

        resumed = cli_json(directory, "--model", world["new"], "--batch-size", "2")
        assert (resumed["resumed"], resumed["reembedded"], resumed["switched"]) == (6, 4, True)
        straight = cli_json(reference, "--model", world["new"], "--batch-size", "2")
        assert (straight["resumed"], straight["reembedded"]) == (0, ITEMS)
        after, uninterrupted = stored(directory), stored(reference)
        assert sorted(after) == sorted(uninterrupted)
        for item_id in after:
            np.testing.assert_allclose(np.frombuffer(after[item_id][0], np.float32),
                                       np.frombuffer(uninterrupted[item_id][0], np.float32), atol=1e-6)
        assert_new_model_vectors(world, directory)

        seen = ask(reader, query)  # the other process noticed the switch and searched with the new model
        assert (seen["model_run"], seen["dim"], seen["epoch"]) == (world["new"], NEW_DIM, 1)
        assert_new_model_hits(world, directory, query, [{"item_id": i, "score": s} for i, s in seen["hits"]])
        assert_new_model_hits(world, directory, query, here.search(query, k=5))  # and this one
    finally:
        for proc in (child, reader):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        here.close()


# -- the HTTP service ----------------------------------------------------------------------------------------------
def test_the_server_follows_the_switch_and_refuses_a_query_made_before_it(world, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    directory = copy_catalog(world, tmp_path)
    query = world["files"][2]
    with Catalog.open(directory) as cat:
        cat.reindex(world["new"], switch=False, progress=False)  # staged: the switch below is quick
    app = create_app(ServeSettings(world["old"], directory))
    body = {"image": ("q.png", read_bytes(query), "image/png")}
    try:
        with TestClient(app) as client:
            first = client.post("/v1/search", files=body, data={"k": "5"})
            assert first.status_code == 200, first.text
            service = app.state.service
            analyse = service.batcher.fn

            def switch_after_the_forward(requests):  # the query is embedded by the old model, then the switch
                answers = analyse(requests)
                with Catalog.open(directory) as other:
                    other.reindex(world["new"], progress=False)
                return answers

            service.batcher.fn = switch_after_the_forward
            raced = client.post("/v1/search", files=body, data={"k": "5"})
            service.batcher.fn = analyse
            assert raced.status_code == 503 and raced.json()["error"]["code"] == "model_changed", raced.text
            assert raced.headers["Retry-After"] == "1"

            again = client.post("/v1/search", files=body, data={"k": "5"})
            assert again.status_code == 200, again.text
            assert service.predictor.run == world["new"] and service.model_name == "new"
            hits = [{"item_id": h["item_id"], "score": h["score"]} for h in again.json()["results"]]
            assert_new_model_hits(world, directory, query, hits)
            assert [h["score"] for h in hits] != [h["score"] for h in first.json()["results"]]  # not the old model's
    finally:
        app.state.service.close()
