"""Crash safety and concurrency of the catalog, with real processes.

A child process adds items in a loop and prints each acknowledged id; the test SIGKILLs it (at a random
moment, or parked at a chosen step of the write path), reopens the catalog and checks that every
acknowledged item is present and searchable, that database and index hold the same ids (in memory and
on disk), and that no pending row or orphan image file is left.  Then: one reader searching while two
writer processes add.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from fashionlens.catalog import Catalog
from fashionlens.index import open_index

DIM = 16

CHILD = r"""
import os, sys, time
import numpy as np
from fashionlens.catalog import Catalog

directory, images_dir, mode, phase, arm_after, first = sys.argv[1:7]
arm_after, first = int(arm_after), int(first)
files = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir))
acks = 0

def park(what):
    def hook(*args, **kw):
        if acks >= arm_after:
            print("PARKED", what, flush=True)
            time.sleep(120)  # the parent kills us here
        return hook.real(*args, **kw)
    return hook

if phase == "pending":  # rows inserted as pending, image files written, not yet ready
    from fashionlens.catalog.store import ItemStore
    park_fn = park(phase); park_fn.real = ItemStore.mark_ready; ItemStore.mark_ready = park_fn
elif phase == "unsaved":  # rows ready (committed), index not yet saved
    from fashionlens.catalog.index_cache import IndexCache
    park_fn = park(phase); park_fn.real = IndexCache.save; IndexCache.save = park_fn
elif phase == "torn":  # index file replaced, its description (sidecar) not yet: a torn pair on disk
    import fashionlens.index.faiss_index as fi
    park_fn = park(phase); park_fn.real = fi.write_sidecar; fi.write_sidecar = park_fn

catalog = Catalog.open(directory)
predictor = None
if mode == "predict":
    import torch
    torch.set_num_threads(1)
    predictor = catalog.predictor
rng = np.random.default_rng(first)
for i in range(first, first + 1000):
    batch = [files[(i + j) % len(files)] for j in range(2)]
    if mode == "predict":
        ids = catalog.add(batch, [{"sku": f"child-{i}"}, {}], predictor)
    else:
        vectors = rng.normal(size=(2, catalog.dim)).astype(np.float32)
        ids = catalog.add_embeddings(vectors, [{"sku": f"child-{i}"}, {"category": "Tee"}], images=batch)
    acks += 1
    print("ACK", *ids, flush=True)
    if mode == "count" and acks >= arm_after:
        break
"""


def start_child(directory, images_dir, mode, phase="none", arm_after=3, first=0):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(images_dir), mode, phase,
                             str(arm_after), str(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc, done, timeout=60.0):
    """Read the child's lines until ``done(acked, line)``; returns the acknowledged ids."""
    acked: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child exited early (rc {proc.wait()}): {proc.stderr.read()[-2000:]}")
        if line.startswith("ACK"):
            acked += [int(x) for x in line.split()[1:]]
        if done(acked, line):
            return acked
    proc.kill()
    raise AssertionError("child too slow")


def kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """Twelve small, different PNG images."""
    folder = tmp_path_factory.mktemp("crash") / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = np.full((56, 48, 3), rng.integers(0, 256, 3), np.uint8)
        y, x = rng.integers(0, 30, 2)
        pixels[y:y + 20, x:x + 16] = rng.integers(0, 256, (20, 16, 3))
        Image.fromarray(pixels).save(folder / f"im{i:02d}.png")
    return folder


def check_recovered(directory, acked):
    """The catalog after a crash: acknowledged items present and searchable, database == index (memory
    and disk), no pending rows, no orphan or missing image files."""
    with Catalog.open(directory) as cat:
        ids = cat.ids().tolist()
        assert set(acked) <= set(ids), f"acknowledged ids lost: {sorted(set(acked) - set(ids))}"
        assert cat.index_ids().tolist() == ids
        assert open_index(os.path.join(directory, "vectors.index")).ids().tolist() == ids  # saved repaired
        with sqlite3.connect(os.path.join(directory, "items.db")) as db:
            assert db.execute("SELECT COUNT(*) FROM items WHERE status != 'ready'").fetchone()[0] == 0
            rows = dict(db.execute("SELECT id, embedding FROM items").fetchall())
        stored = {os.path.basename(cat.get(i)["image"]) for i in ids}
        assert set(os.listdir(os.path.join(directory, "images"))) == stored  # no orphans, none missing
        for item_id in acked:  # found first (the same image may be in the catalog twice: ties)
            hits = cat.search(np.frombuffer(rows[item_id], np.float32), k=5)
            assert item_id in {h["item_id"] for h in hits if h["score"] >= hits[0]["score"] - 1e-5}
        return ids


@pytest.mark.parametrize("phase", ["pending", "unsaved", "torn"])
def test_kill_at_each_step_of_an_add(tmp_path, images_dir, phase):
    directory = tmp_path / "cat"
    Catalog.create(directory, dim=DIM).close()
    proc = start_child(directory, images_dir, "embed", phase, arm_after=3)
    acked = read_until(proc, lambda acked, line: line.startswith("PARKED"))
    kill(proc)
    assert len(acked) == 6
    with sqlite3.connect(directory / "items.db") as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM items ORDER BY id")]
    if phase == "pending":  # the killed batch is on disk as pending rows with image files
        assert statuses[-2:] == ["pending", "pending"] and len(os.listdir(directory / "images")) == 8
    else:  # committed but never acknowledged: it must survive too, and reach the index
        assert statuses == ["ready"] * 8
    ids = check_recovered(str(directory), acked)
    assert len(ids) == (6 if phase == "pending" else 8)
    with Catalog.open(directory) as cat:  # the catalog keeps working after the repair
        new = cat.add_embeddings(np.eye(DIM, dtype=np.float32)[:1], images=[str(images_dir / "im00.png")])
        assert new[0] > max(ids) and cat.search(np.eye(DIM, dtype=np.float32)[0], k=1)[0]["item_id"] == new[0]


def test_kill_at_random_moments_of_real_adds(tmp_path, images_dir):
    from test_catalog import make_run

    run = make_run(tmp_path / "run", sorted(images_dir.iterdir()), dim=DIM)
    directory = tmp_path / "cat"
    Catalog.create(directory, dim=DIM, model_run=run).close()
    acked_all: list[int] = []
    rounds = [("predict", 0.011), ("embed", 0.0), ("embed", 0.003), ("embed", 0.007), ("embed", 0.015)]
    for round_, (mode, delay) in enumerate(rounds):  # kill points spread over the write path
        proc = start_child(directory, images_dir, mode, first=100 * round_)
        acked = read_until(proc, lambda acked, line: len(acked) >= 4)
        time.sleep(delay)
        kill(proc)
        acked_all += acked
        check_recovered(str(directory), acked_all)


def test_reader_searches_while_two_writers_add(tmp_path, images_dir):
    directory = tmp_path / "cat"
    Catalog.create(directory, dim=DIM).close()
    reader = Catalog.open(directory)
    writers = [start_child(directory, images_dir, "count", arm_after=8, first=1000 * k) for k in range(2)]
    counts, errors, query = [], [], np.ones(DIM, np.float32)

    def read_loop():
        try:
            while any(w.poll() is None for w in writers) or len(counts) < 3:
                counts.append(len(reader))
                hits = reader.search(query, k=5)
                assert min(5, counts[-1]) <= len(hits) <= 5  # never fewer items than counted before
                assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
                assert all(os.path.exists(h["image"]) for h in hits)
                time.sleep(0.005)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=read_loop)
    thread.start()
    outputs = [w.communicate(timeout=60) for w in writers]
    thread.join(timeout=60)
    assert [w.returncode for w in writers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert not errors, errors
    assert counts == sorted(counts) and counts[-1] == 32 and len(set(counts)) > 1  # only ever grew
    acked = [int(x) for out, _ in outputs for line in out.splitlines() for x in line.split()[1:]]
    assert len(set(acked)) == 32
    np.testing.assert_array_equal(reader.index_ids(), np.sort(acked))  # the reader caught up in memory
    reader.close()
    assert len(check_recovered(str(directory), acked)) == 32
