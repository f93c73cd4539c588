"""The catalog: add / search / update / list / remove, filters, build + resume, bad input, CLI, backends."""

import contextlib
import glob
import io
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
from PIL import Image

from fashionlens.catalog import Catalog, build, crop_box, crop_garments
from fashionlens.cli import main
from fashionlens.config import IndexConfig

LABELS = {
    "categories": ["Tee", "Shorts", "Dress"],
    "category_paths": ["upper.tops.tee", "lower.shorts.shorts", "full.dresses.dress"],
    "category_types": [1, 2, 3], "attributes": ["solid", "striped", "dotted"], "attribute_groups": [1, 1, 1],
    "group_names": {"1": "texture"}, "single_choice_groups": True, "items": [],
}
DIM = 32


def make_run(out, images, dim=DIM, use_bbox=True, *, seed=0, tta_flip=False, labels=None, jitter=0.0,
             backbone="tiny_cnn", image_size=48):
    """A tiny random-weight FashionNet checkpoint (a run directory) in a second or two (``use_bbox=False``:
    a model without the box head; ``seed`` another model; ``jitter`` adds that much Gaussian noise to every
    weight, so answers differ more between images; ``labels`` another label set; ``backbone`` / ``image_size``:
    another random-weight network).

    Its BatchNorm statistics are measured on ``images`` so that eval-mode embeddings differ between images
    (with untouched running statistics a random network maps every image to nearly the same vector)."""
    import torch

    from fashionlens.config import RunConfig, to_dict
    from fashionlens.data.decode import load_image
    from fashionlens.inference import Predictor
    from fashionlens.models import build_model
    from fashionlens.training.checkpoint import save_checkpoint

    cfg = RunConfig()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.embedding_dim, cfg.model.hidden_dim = backbone, False, dim, 32
    cfg.model.use_bbox, cfg.model.tta_flip, cfg.data.image_size = use_bbox, tta_flip, image_size
    labels = labels or LABELS
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_categories=len(labels["categories"]), num_attributes=len(labels["attributes"]))
    if jitter:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * jitter)
    batch = torch.stack([Predictor(model, cfg, labels).preprocess(load_image(f))[0] for f in images])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(batch)
    os.makedirs(out, exist_ok=True)
    save_checkpoint(os.path.join(out, "best.pt"), {"model": model.eval().state_dict(), "config": to_dict(cfg),
                                                  "labels": labels})
    return str(out)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog") / "garments"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(out), "--items", "20", "--views", "4", "--size", "64", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def images(render):
    files = sorted(glob.glob(str(render / "category" / "img" / "**" / "*.jpg"), recursive=True))
    assert len(files) == 80
    return files


@pytest.fixture(scope="module")
def run(images, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("catalog") / "run", images[::3][:24])


@pytest.fixture(scope="module")
def predictor(run):
    from fashionlens.inference import Predictor

    return Predictor.load(run)


def db_state(directory):
    """(ids of every row in any status, statuses) read straight from items.db."""
    with sqlite3.connect(os.path.join(directory, "items.db")) as db:
        rows = db.execute("SELECT id, status FROM items ORDER BY id").fetchall()
    return [r[0] for r in rows], {r[1] for r in rows}


def image_files(directory):
    return sorted(os.listdir(os.path.join(directory, "images")))


def assert_consistent(catalog):
    """Database and index hold the same ids; every row has its image file and no file is an orphan."""
    ids = catalog.ids()
    np.testing.assert_array_equal(catalog.index_ids(), ids)
    stored = {os.path.basename(catalog.get(int(i))["image"]) for i in ids if catalog.get(int(i))["image"]}
    assert set(image_files(catalog.directory)) == stored
    assert db_state(catalog.directory)[1] <= {"ready"}


# -- library -------------------------------------------------------------------------------------------------
def test_add_search_update_list_remove(tmp_path, images, predictor, run):
    cat = Catalog.create(tmp_path / "cat", dim=DIM, model_run=run)
    chosen = images[:8]
    meta = [{"sku": f"SKU-{i}", "title": f"garment {i}", "price": 10 + i} for i in range(8)]
    ids = cat.add(chosen, meta, predictor)
    assert ids == sorted(ids) and len(set(ids)) == 8 and len(cat) == 8
    item = cat.get(ids[3])
    assert item["sku"] == "SKU-3" and item["title"] == "garment 3" and item["extra"]["price"] == 13
    assert item["source"] == os.path.abspath(chosen[3])
    assert item["category"] in LABELS["categories"]
    assert item["category_path"] == LABELS["category_paths"][LABELS["categories"].index(item["category"])]
    assert len(item["extra"]["prediction"]["bbox"]) == 4
    assert os.path.basename(item["image"]) == f"{ids[3]}.jpg"  # a name the catalog chose
    with open(item["image"], "rb") as a, open(chosen[3], "rb") as b:
        assert a.read() == b.read()  # the original JPEG bytes, not a re-encoding

    for item_id, path in zip(ids, chosen):  # every image finds itself first
        hits = cat.search(path, k=3)
        assert hits[0]["item_id"] == item_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert hits[0]["score"] > hits[1]["score"] and hits[0]["source"] == os.path.abspath(path)
        assert {"item_id", "score", "category", "attributes", "image", "source", "sku", "title"} <= set(hits[0])

    updated = cat.update(ids[0], title="renamed", category="Shorts", attributes=["striped"], colour="red")
    assert updated["title"] == "renamed" and updated["category"] == "Shorts"
    assert updated["category_path"] == "lower.shorts.shorts" and updated["attributes"] == ["striped"]
    assert updated["extra"]["colour"] == "red" and updated["extra"]["price"] == 10  # extra is merged
    with pytest.raises(KeyError):
        cat.update(10_000, title="x")
    with pytest.raises(ValueError, match="set by the catalog"):
        cat.update(ids[0], image="x.jpg")

    assert [it["item_id"] for it in cat.list(2, 3)] == ids[2:5]
    assert cat.remove([ids[1], ids[2], 99_999]) == 2
    assert len(cat) == 6 and not os.path.exists(item["image"].replace(f"{ids[3]}.", f"{ids[1]}."))
    assert all(h["item_id"] not in (ids[1], ids[2]) for h in cat.search(chosen[1], k=8))
    with pytest.raises(KeyError):
        cat.get(ids[1])
    assert_consistent(cat)
    cat.close()

    with Catalog.open(tmp_path / "cat") as again:  # everything persisted; ids never reused
        assert len(again) == 6 and again.get(ids[0])["title"] == "renamed"
        assert again.search(chosen[5], k=1)[0]["item_id"] == ids[5]
        assert again.add(images[8:9], None, predictor)[0] > ids[-1]
        assert_consistent(again)


def test_search_groups_by_sku_and_uses_the_get_key(tmp_path, images, predictor, run):
    from fashionlens.catalog.catalog import group_by_sku

    cat = Catalog.create(tmp_path / "cat", dim=DIM, model_run=run)
    meta = [{"sku": "A"}, {"sku": "A"}, {"sku": "B"}, {}, {"sku": "A"}, {}]
    ids = cat.add(images[:6], meta, predictor)
    plain = cat.search(images[0], k=6)
    assert cat.get(plain[0]["item_id"])["item_id"] == plain[0]["item_id"] == ids[0]  # one key for get and search
    grouped = cat.search(images[0], k=6, group_sku=True)
    skus = [h["sku"] for h in grouped]
    assert skus.count("A") == 1 and skus.count("B") == 1 and skus.count(None) == 2 and len(grouped) == 4
    first_a = next(h for h in plain if h["sku"] == "A")
    a = next(h for h in grouped if h["sku"] == "A")
    assert a["item_id"] == first_a["item_id"]  # the SKU's best-ranked item stands for it
    assert sorted([a["item_id"], *a["same_sku"]]) == [ids[0], ids[1], ids[4]]
    assert [h["item_id"] for h in grouped] == [h["item_id"] for h in plain if h["item_id"] not in a["same_sku"]]
    assert group_by_sku([]) == []
    cat.close()


def test_scope_chain_walks_up_the_taxonomy():
    from fashionlens.catalog.catalog import scope_chain

    cats, paths = ["tee", "blouse", "shorts"], ["upper.tops.tee", "upper.tops.blouse", "lower.shorts"]
    chain = scope_chain(np.array([0.5, 0.3, 0.2]), cats, paths)
    assert [c for c, _ in chain] == ["tee", "upper.tops", "upper", None]
    assert [round(p, 6) for _, p in chain] == [0.5, 0.8, 0.8, 1.0]
    assert scope_chain(np.array([0.1, 0.9]), ["a", "b"], []) == [("b", 0.9), (None, 1.0)]  # flat labels


def test_category_auto_narrows_when_sure_and_widens_when_not(tmp_path, images, predictor, run):
    cat = Catalog.create(tmp_path / "cat", dim=DIM, model_run=run)
    ids = cat.add(images[:12], [{"category": LABELS["categories"][i % 3]} for i in range(12)], predictor)
    answer = predictor.analyse([Image.open(images[0])])[0]
    best = answer["category"]
    sure = cat.auto_category(answer, k=2, target_accuracy=0.0)  # any probability is "sure enough"
    assert sure == {"category": best, "probability": pytest.approx(float(answer["probabilities"].max()), abs=1e-4),
                    "items": 4, "hedged": False}
    too_few = cat.auto_category(answer, k=5, target_accuracy=0.0)  # 4 items of that category < k
    assert too_few["category"] is None and too_few["items"] == 12
    unsure = cat.auto_category(answer, k=2, target_accuracy=1.01)  # never sure: the whole catalog
    assert unsure["category"] is None
    hits = cat.search(images[0], k=3, category="auto")
    assert len(hits) == 3 and hits[0]["item_id"] == ids[0]
    with pytest.raises(ValueError, match="auto"):
        cat.search(predictor.embed([Image.open(images[0])])[0], k=3, category="auto")
    cat.close()


def test_filters_use_sql_metadata(tmp_path, images, predictor, run):
    cat = Catalog.create(tmp_path / "cat", dim=DIM, model_run=run)
    meta = [{"category": "Tee", "attributes": ["solid"]}, {"category": "Tee", "attributes": "striped,dotted"},
            {"category": "Shorts", "attributes": ["striped"]}, {"category": "Dress", "attributes": []}]
    ids = cat.add(images[:4], meta, predictor)
    assert cat.get(ids[0])["category_path"] == "upper.tops.tee"  # filled from the model's label list
    assert {h["item_id"] for h in cat.search(images[2], k=10, category="Tee")} == {ids[0], ids[1]}
    assert {h["item_id"] for h in cat.search(images[0], k=10, category="upper")} == {ids[0], ids[1]}
    assert {h["item_id"] for h in cat.search(images[0], k=10, category="lower.shorts")} == {ids[2]}
    assert {h["item_id"] for h in cat.search(images[0], k=10, attribute="striped")} == {ids[1], ids[2]}
    assert [h["item_id"] for h in cat.search(images[0], k=10, category="Tee", attribute="striped")] == [ids[1]]
    assert cat.search(images[0], k=10, category="Coat") == []
    assert cat.search(images[0], k=10, category="upp") == []  # a path prefix ends at a dot
    vector = predictor.embed([Image.open(images[3]).convert("RGB")])[0]
    assert cat.search(vector, k=1)[0]["item_id"] == ids[3]  # query by embedding
    with pytest.raises(ValueError, match="query embedding"):
        cat.search(np.zeros(DIM, np.float32))


def test_bad_input_leaves_catalog_unchanged(tmp_path, images, predictor):
    cat = Catalog.create(tmp_path / "cat", dim=DIM)
    cat.add(images[:2], None, predictor)
    before = (db_state(cat.directory), image_files(cat.directory), cat.index_ids().tolist())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "noise.jpg").write_bytes(os.urandom(3000))
    with open(images[5], "rb") as f:
        (bad / "truncated.jpg").write_bytes(f.read()[:600])
    (bad / "notes.png").write_text("this is not an image")
    cases = {"noise.jpg": ValueError, "truncated.jpg": ValueError, "notes.png": ValueError,
             "missing.jpg": FileNotFoundError}
    for name, error in cases.items():
        with pytest.raises(error, match=name):
            cat.add([images[3], str(bad / name)], None, predictor)  # a good image first: still nothing written
        assert (db_state(cat.directory), image_files(cat.directory), cat.index_ids().tolist()) == before
    with pytest.raises(ValueError, match="attributes"):
        cat.add([images[3]], [{"attributes": 5}], predictor)
    with pytest.raises(ValueError, match="metadata entries"):
        cat.add([images[3]], [{}, {}], predictor)
    with pytest.raises(ValueError, match="shape"):
        cat.add_embeddings(np.ones((2, DIM + 1), np.float32))
    assert (db_state(cat.directory), image_files(cat.directory), cat.index_ids().tolist()) == before
    assert len(cat) == 2


def test_stored_name_and_format_come_from_the_catalog(tmp_path, images, predictor, run):
    cat = Catalog.create(tmp_path / "cat", dim=DIM, model_run=run)
    weird = tmp_path / "up" / "..; rm -rf ~ .jpg"
    weird.parent.mkdir()
    Image.open(images[0]).save(weird, format="PNG")  # PNG bytes behind a .jpg name
    bmp = tmp_path / "pic.bmp"
    Image.open(images[1]).save(bmp)
    ids = cat.add([str(weird), str(bmp), Image.open(images[2])], None, predictor)
    assert [os.path.basename(cat.get(i)["image"]) for i in ids] == [f"{ids[0]}.png", f"{ids[1]}.png", f"{ids[2]}.png"]
    assert cat.get(ids[0])["source"] == str(weird) and cat.get(ids[2])["source"] is None
    assert cat.search(images[2], k=1)[0]["item_id"] == ids[2]
    assert_consistent(cat)


class _Interrupting:
    """A predictor that stops the build (KeyboardInterrupt) on its ``stop_after``-th embed call, and counts."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.stop_after, self.embedded = inner, stop_after, 0
        self.cfg, self.categories, self.paths = inner.cfg, inner.categories, inner.paths
        self.embedding_dim = inner.embedding_dim

    def predict(self, ims):
        return self.inner.predict(ims)

    def embed(self, ims):
        if self.stop_after is not None and self.stop_after <= 0:
            raise KeyboardInterrupt
        self.stop_after = None if self.stop_after is None else self.stop_after - 1
        self.embedded += len(ims)
        return self.inner.embed(ims)


def test_build_resumes_after_interruption(tmp_path, render, predictor, run):
    from fashionlens import read

    spec = f"garments:{render}"
    split = read(spec).split("train", "val")
    out = tmp_path / "cat"
    with pytest.raises(KeyboardInterrupt):
        build(out, _Interrupting(predictor, stop_after=3), spec, split="train,val", model_run=run, batch_size=8,
              progress=False)
    with Catalog.open(out) as cat:
        assert len(cat) == 24  # three committed batches survive
        assert_consistent(cat)
    counting = _Interrupting(predictor)
    summary = build(out, counting, spec, split="train,val", model_run=run, batch_size=8, progress=False)
    assert counting.embedded == len(split) - 24  # only the rest was embedded
    assert summary["added"] == len(split) - 24 and summary["already_present"] == 24 and summary["items"] == len(split)
    with Catalog.open(out) as cat:
        items = cat.list(0, 1000)
        assert sorted(it["source"] for it in items) == sorted(s.image for s in split)  # each image once
        truth = {s.image: s for s in split}
        for it in items[:10]:  # data-set labels are stored rather than predictions
            sample = truth[it["source"]]
            assert it["category"] == sample.category_name and it["sku"] == sample.item_id
            assert it["extra"]["split"] == sample.split
        assert_consistent(cat)
    with pytest.raises(ValueError, match="was built with model"):
        build(out, predictor, spec, model_run=str(tmp_path / "another_run"), progress=False)


def test_build_folder_with_crop_and_skip_bad(tmp_path, images, predictor, run):
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i, path in enumerate(images[:5]):
        shutil.copy(path, folder / f"p{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(100))
    with pytest.raises(ValueError, match="broken.jpg"):
        build(tmp_path / "strict", run, str(tmp_path / "photos"), batch_size=4, progress=False)
    summary = build(tmp_path / "cat", run, str(tmp_path / "photos"), batch_size=4, progress=False, crop=True,
                    skip_bad=True)
    assert summary["added"] == 5 and len(summary["bad"]) == 1 and "broken.jpg" in summary["bad"][0]
    with Catalog.open(tmp_path / "cat") as cat:
        assert cat.model_run == os.path.abspath(run)
        hit = cat.search(str(folder / "p2.jpg"), k=1, crop=True)[0]  # the catalog loads its own model
        assert hit["source"] == str(folder / "p2.jpg") and hit["score"] == pytest.approx(1.0, abs=1e-4)
        assert_consistent(cat)


def test_crop_box_and_crop_garments():
    image = Image.new("RGB", (100, 80))
    assert crop_box(image, [10, 20, 50, 60], margin=0.1).size == (48, 48)  # 40x40 box + 4 px each side
    assert crop_box(image, [0, 0, 100, 80], margin=0.2).size == (100, 80)  # clipped to the image
    assert crop_box(image, None) is image and crop_box(image, [5, 5, 6, 40]) is image  # no box / degenerate

    class Boxes:
        def predict(self, ims):
            return [{"bbox": [10.0, 10.0, 30.0, 50.0]} for _ in ims]

    crops, answers = crop_garments(Boxes(), [image, image], margin=0.0)
    assert [c.size for c in crops] == [(20, 40), (20, 40)] and answers[0]["bbox"][2] == 30.0


def test_analyse_is_one_call_for_answers_and_crop_embeddings(predictor, images):
    pictures = [Image.open(f).convert("RGB") for f in images[:3]]
    answers = predictor.analyse(pictures, crop=[False, True, True])
    whole = predictor.predict(pictures)
    for a, w in zip(answers, whole):  # the classification is of the whole image either way
        assert a["category"] == w["category"] and a["bbox"] == w["bbox"]
    assert answers[0]["crop"] is None and np.allclose(answers[0]["embedding"], whole[0]["embedding"], atol=1e-5)
    for picture, a in zip(pictures[1:], answers[1:]):
        region = crop_box(picture, a["bbox"])
        assert region is not picture  # the test model's boxes sit inside these renders (a central ~32 px)
        assert a["crop"] is not None and region.size == (a["crop"][2] - a["crop"][0], a["crop"][3] - a["crop"][1])
        assert np.allclose(a["embedding"], predictor.embed([region])[0], atol=1e-5)
    assert np.allclose(predictor.embed(pictures[1:], crop=True), np.stack([a["embedding"] for a in answers[1:]]),
                       atol=1e-5)
    with pytest.raises(ValueError, match="crop flags"):
        predictor.analyse(pictures, crop=[True])


def test_ivf_is_exact_until_trained_then_approximate(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(120, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cat = Catalog.create(tmp_path / "cat", dim=DIM, index=IndexConfig(kind="ivf", nlist=2, nprobe=2, min_train=78))
    ids = cat.add_embeddings(vectors[:50], [{"category": "Tee" if i % 2 else "Dress"} for i in range(50)])
    assert not cat.index.is_trained and not os.path.exists(tmp_path / "cat" / "vectors.index")

    for q in vectors[:5]:
        assert [h["item_id"] for h in cat.search(q, k=5)] == [ids[j] for j in np.argsort(-(vectors[:50] @ q))[:5]]
        tees = [j for j in range(50) if j % 2]
        assert [h["item_id"] for h in cat.search(q, k=3, category="Tee")] == \
            [ids[tees[j]] for j in np.argsort(-(vectors[tees] @ q))[:3]]
    ids += cat.add_embeddings(vectors[50:])
    assert cat.index.is_trained and len(cat.index) == 120
    for q in vectors[:5]:  # nprobe = nlist: every cluster scanned, so the IVF answer is exact
        assert [h["item_id"] for h in cat.search(q, k=5)] == [ids[j] for j in np.argsort(-(vectors @ q))[:5]]
    cat.close()
    with Catalog.open(tmp_path / "cat") as again:
        assert again.index.kind == "ivf" and again.index.is_trained
        assert_consistent(again)


def test_hnsw_catalog_searches_removes_and_reopens(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cat = Catalog.create(tmp_path / "cat", dim=DIM, index=IndexConfig(kind="hnsw", hnsw_m=8, ef_search=300))
    ids = cat.add_embeddings(vectors, [{"category": "Tee" if i % 2 else "Dress"} for i in range(300)])
    assert cat.index.kind == "hnsw" and cat.config["index"]["hnsw_m"] == 8
    for q in vectors[:5]:  # ef_search >= the catalog: the graph walk reaches every item
        assert [h["item_id"] for h in cat.search(q, k=5)] == [ids[j] for j in np.argsort(-(vectors @ q))[:5]]
    cat.remove(ids[:10])
    assert not {h["item_id"] for q in vectors[:10] for h in cat.search(q, k=5)} & set(ids[:10])
    cat.close()
    with Catalog.open(tmp_path / "cat") as again:
        assert again.index.kind == "hnsw" and len(again.index) == 290 and again.index.ef_search == 300
        assert_consistent(again)


def test_auto_index_follows_the_catalog_size(render, predictor, run, tmp_path, monkeypatch):
    import fashionlens.index as index_module

    spec = f"garments:{render}"
    small = build(tmp_path / "small", predictor, spec, split="test", model_run=run, progress=False,
                  index=IndexConfig(kind="auto"))
    assert small["index"] == "flat" and small["items"] < index_module.AUTO_FLAT_MAX
    monkeypatch.setattr(index_module, "AUTO_FLAT_MAX", 5)  # as if the catalog were large
    large = build(tmp_path / "large", predictor, spec, split="test", model_run=run, progress=False,
                  index=IndexConfig(kind="auto"))
    assert large["index"] == "ivfsq" and large["items"] == small["items"]
    with Catalog.open(tmp_path / "large") as cat:
        n = large["items"]
        nlist = round(2 * n ** 0.5)  # ~2 sqrt(N) clusters of float16 vectors (benchmarks/bench_index.py)
        assert cat.config["index"] == {**cat.config["index"], "kind": "ivfsq", "nlist": nlist, "nprobe": 0,
                                       "min_train": min(n, 256 * nlist), "sq_bits": 16}
        assert cat.index.is_trained and len(cat.index) == n  # every image stored: trained on all of them


def test_lost_or_torn_index_is_rebuilt_from_the_database(tmp_path):
    vectors = np.eye(DIM, dtype=np.float32)[:6]
    with Catalog.create(tmp_path / "cat", dim=DIM) as cat:
        ids = cat.add_embeddings(vectors)
    index = tmp_path / "cat" / "vectors.index"
    index.write_bytes(b"garbage")
    with Catalog.open(tmp_path / "cat") as cat:
        assert cat.search(vectors[4], k=1)[0]["item_id"] == ids[4]
        assert_consistent(cat)
    os.remove(index)
    os.remove(str(index) + ".json")
    with Catalog.open(tmp_path / "cat") as cat:
        assert cat.index_ids().tolist() == ids and os.path.exists(index)


def test_milvus_backend(tmp_path):
    pytest.importorskip("pymilvus")
    try:
        cat = Catalog.create(tmp_path / "cat", dim=DIM, index=IndexConfig(backend="milvus"))
    except Exception as exc:  # milvus-lite missing or unable to start its server here
        pytest.skip(f"milvus-lite cannot start: {exc.__class__.__name__}: {exc}")
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(10, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = cat.add_embeddings(vectors, [{"category": "Tee" if i < 5 else "Shorts"} for i in range(10)])
    assert [cat.search(v, k=1)[0]["item_id"] for v in vectors] == ids
    assert {h["item_id"] for h in cat.search(vectors[0], k=10, category="Shorts")} == set(ids[5:])
    assert cat.remove(ids[:2]) == 2
    cat.close()
    with Catalog.open(tmp_path / "cat") as again:
        assert again.index.backend == "milvus" and again.index_ids().tolist() == ids[2:]
        assert again.search(vectors[7], k=1)[0]["item_id"] == ids[7]


# -- command line --------------------------------------------------------------------------------------------
def cli(argv):
    return main(argv)


def test_cli_build_add_search_list_remove(tmp_path, render, images, run, capsys):
    out = str(tmp_path / "cat")
    assert cli(["catalog", "build", "--model", run, "--data", f"garments:{render}", "--out", out, "--quiet",
                "--batch-size", "16"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 80 and summary["items"] == 80 and summary["bad"] == []

    new = tmp_path / "new.png"
    Image.open(images[7]).transpose(Image.Transpose.ROTATE_90).save(new)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"title": "rotated", "brand": "acme"}))
    assert cli(["catalog", "add", out, str(new), "--meta", "sku=R-1", "--meta", "category=Tee",
                "--meta-json", str(meta)]) == 0
    added = json.loads(capsys.readouterr().out.strip())
    assert added["category"] == "Tee" and added["source"] == str(new)

    assert cli(["search", "--catalog", out, str(new), "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and hits[0]["item_id"] == added["item_id"]
    assert {"item_id", "score", "category", "image", "source"} <= set(hits[0])
    assert cli(["search", "--catalog", out, images[3], "--category", "Tee", "--json"]) == 0
    assert {h["category"] for h in json.loads(capsys.readouterr().out)} == {"Tee"}
    assert cli(["search", "--catalog", out, images[3], "-k", "2"]) == 0
    assert images[3] in capsys.readouterr().out.splitlines()[0]  # text output: the image itself ranks first

    assert cli(["catalog", "list", out, "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "3 of 81 item(s) shown" in text
    assert cli(["catalog", "remove", out, str(added["item_id"]), "99999"]) == 2
    assert "99999" in capsys.readouterr().err
    assert cli(["catalog", "remove", out, str(added["item_id"])]) == 0
    assert capsys.readouterr().out == "removed 1 item(s)\n"
    assert cli(["catalog", "list", out, "--json", "--limit", "1000"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 80

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert cli(["catalog", "add", out, images[0], str(broken)]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert cli(["search", "--catalog", str(tmp_path / "nowhere"), images[0]]) == 2
    assert "no catalog" in capsys.readouterr().err
    with Catalog.open(out) as cat:
        assert len(cat) == 80
        assert_consistent(cat)


@pytest.fixture
def milvus_server(tmp_path):
    """A real Milvus gRPC server (milvus-lite's `server` command over TCP on loopback), reached as a Milvus
    standalone or cluster would be: http://127.0.0.1:PORT."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("pymilvus")
    exe = shutil.which("milvus-lite") or os.path.join(os.path.dirname(sys.executable), "milvus-lite")
    if not os.path.exists(exe):
        pytest.skip("the milvus-lite command is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "server", "--data-dir", str(tmp_path / "milvus"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"milvus-lite server exited with {proc.returncode}")
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_catalog_on_a_milvus_server(milvus_server, tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(40, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Catalog.create(tmp_path / "cat", dim=DIM, index=IndexConfig(backend="milvus", uri=milvus_server)) as cat:
        assert cat.config["index"]["uri"] == milvus_server and cat.config["index"]["collection"].startswith("fashionlens_")
        ids = cat.add_embeddings(vectors, [{"category": "Tee" if i < 20 else "Shorts"} for i in range(40)])
        assert [cat.search(v, k=1)[0]["item_id"] for v in vectors] == ids
        assert {h["item_id"] for h in cat.search(vectors[0], k=40, category="Shorts")} == set(ids[20:])
        assert cat.remove(ids[:3]) == 3
    assert not os.path.exists(tmp_path / "cat" / "vectors.milvus.db")  # the vectors live on the server
    with Catalog.open(tmp_path / "cat") as again:
        assert again.index.uri == milvus_server and again.index_ids().tolist() == ids[3:]
        assert again.search(vectors[30], k=1)[0]["item_id"] == ids[30]
    for name in ("vectors.index", "vectors.index.json"):  # the derived cache lost: rebuilt from SQLite
        if os.path.exists(tmp_path / "cat" / name):
            os.remove(tmp_path / "cat" / name)
    with Catalog.open(tmp_path / "cat") as rebuilt:
        assert rebuilt.index_ids().tolist() == ids[3:] and rebuilt.search(vectors[5], k=1)[0]["item_id"] == ids[5]
    with pytest.raises(ValueError, match="needs the milvus backend"):
        Catalog.create(tmp_path / "bad", dim=DIM, index=IndexConfig(uri=milvus_server))


def test_cli_build_with_milvus_uri(milvus_server, render, run, tmp_path, capsys):
    out = str(tmp_path / "cat")
    assert cli(["catalog", "build", "--model", str(run), "--data", f"garments:{render}", "--split", "test",
                "--out", out, "--milvus-uri", milvus_server, "--index", "hnsw", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["index"] == "hnsw" and summary["items"] > 0
    with Catalog.open(out) as cat:
        assert cat.config["backend"] == "milvus" and cat.index.uri == milvus_server
        assert len(cat.index) == summary["items"]
