"""The open-world guide: "not a garment I know" / "shoes: not among this model's categories" (openworld)."""

import contextlib
import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from fashionlens.openworld import (
    KINDS,
    Familiarity,
    ImageNetGuide,
    covered_kinds,
    kind_masses,
    scope_answer,
    scope_verdict,
)

DEMO_CATEGORIES = ["Tee", "Tank", "Button-Down", "Sweater", "Hoodie", "Jacket", "Trousers", "Leggings", "Shorts",
                   "Skirt", "Dress", "Jumpsuit", "Romper", "Coat"]
PHOTOS = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def test_kind_masses_sum_each_kinds_classes():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(1000), size=5)
    got = kind_masses(p)
    for kind, classes in KINDS.items():
        want = [sum(p[n, i] for i in classes) for n in range(5)]  # plain loop reference
        np.testing.assert_allclose(got[kind], want, rtol=1e-12)
    assert sum(got.values()).max() < 1.0
    with pytest.raises(ValueError, match="1000"):
        kind_masses(np.ones((2, 10)) / 10)


def test_no_imagenet_class_is_in_two_kinds():
    seen = [i for classes in KINDS.values() for i in classes]
    assert len(seen) == len(set(seen)) and all(0 <= i < 1000 for i in seen)


def test_covered_kinds_follow_the_category_names():
    assert covered_kinds(DEMO_CATEGORIES, ["upper.tops.tee"]) == {"garment"}
    assert covered_kinds(PHOTOS) == {"garment", "footwear", "headwear"}
    assert covered_kinds(["Sneakers", "Handbag"]) == {"footwear", "bag"}
    assert covered_kinds([]) == set()


def masses(**kw):
    return {"garment": 0.0, "footwear": 0.0, "headwear": 0.0, "bag": 0.0, "accessory": 0.0, **kw}


def test_scope_verdict_rules():
    garments = {"garment"}
    assert scope_verdict(masses(footwear=0.7, garment=0.1), garments) == ("outside", "footwear")
    assert scope_verdict(masses(footwear=0.7), garments | {"footwear"}) == ("known", "footwear")
    # an uncovered kind below the bar, or below a covered one, does not overrule the model
    assert scope_verdict(masses(footwear=0.35, garment=0.1), garments) == ("known", None)
    assert scope_verdict(masses(footwear=0.45, garment=0.5), garments) == ("known", "garment")
    assert scope_verdict(masses(garment=0.05, bag=0.05), garments) == ("unknown", None)
    assert scope_verdict(masses(garment=0.2), garments) == ("known", "garment")
    # familiar photos stay known whatever ImageNet says; the thresholds are parameters
    assert scope_verdict(masses(accessory=0.9), garments, True) == ("known", None)
    assert scope_verdict(masses(), garments, True)[0] == "known"
    assert scope_verdict(masses(footwear=0.35), garments, outside_min=0.3) == ("outside", "footwear")
    assert scope_verdict(masses(garment=0.2), garments, unknown_max=0.3) == ("unknown", None)


def test_scope_answer_messages():
    seen = {"masses": masses(footwear=0.8), "looks_like": "sandal"}
    assert scope_answer("outside", "footwear", seen)["message"] == "shoes (sandal): not among this model's categories"
    assert scope_answer("unknown", None, {**seen, "looks_like": "palace"})["message"] == \
        "not a garment I know (looks like: palace)"
    assert scope_answer("known", "garment", seen)["message"] == ""


def test_familiarity_scores_match_brute_force_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 8)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    fam = Familiarity(ref, 0.5)
    want = [max(float(np.dot(v, r)) for r in ref) for v in q]
    np.testing.assert_allclose(fam.scores(q), want, rtol=1e-5)
    assert fam.familiar(ref[:3]).all()  # a training photo is as familiar as it gets
    path = fam.save(str(tmp_path / "familiarity.npz"))
    back = Familiarity.load(path)
    assert back.threshold == 0.5
    np.testing.assert_allclose(back.scores(q), want, atol=2e-3)  # stored as float16
    with pytest.raises(ValueError, match="dimension 4"):
        back.scores(np.ones((2, 4), np.float32))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        Familiarity.load(str(bad))
    with pytest.raises(ValueError, match="non-empty"):
        Familiarity(np.zeros((0, 8)), 0.5)


@pytest.fixture(scope="module")
def guide():
    import torch

    torch.set_num_threads(1)
    return ImageNetGuide()


def sample_photo(name):
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def test_guide_rejects_a_building_and_names_shoes(guide, clothing_small_or_none):
    palace = guide.scope([sample_photo("china.jpg")], DEMO_CATEGORIES)[0]
    assert palace["verdict"] == "unknown" and palace["message"].startswith("not a garment I know")
    assert sum(palace["masses"].values()) < 0.15
    if clothing_small_or_none is None:
        pytest.skip("no clothing-small photos (../shared/data): the shoe half of this test needs real photos")
    shoes = sorted(glob.glob(str(clothing_small_or_none / "validation" / "shoes" / "*.jpg")))[:8]
    scopes = guide.scope([Image.open(f) for f in shoes], DEMO_CATEGORIES)
    assert sum(s["verdict"] == "outside" and s["kind"] == "footwear" for s in scopes) >= 6
    # a model that has a shoes category keeps its own answer
    own = guide.scope([Image.open(f) for f in shoes[:2]], PHOTOS)
    assert all(s["verdict"] == "known" for s in own)
    assert all(s["category_mass"].argmax() == PHOTOS.index("shoes") for s in own)  # ImageNet reads them as shoes


def test_guide_letterboxes_without_cropping(guide):
    tall = Image.new("RGB", (40, 160), (0, 0, 0))
    x = guide.tensor(tall)
    assert x.shape == (3, 224, 224)
    assert x[:, 112, 2].max() > 0.9 and x[:, 112, 112].max() < -0.9  # white margins, the black photo centred


@pytest.fixture
def clothing_small_or_none():
    from conftest import require_clothing_small

    try:
        return require_clothing_small()
    except pytest.skip.Exception:
        return None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random run (test_catalog.make_run) on a tiny rendered set, with its familiarity file."""
    import torch
    from test_catalog import make_run

    from fashionlens.cli import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openworld")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", str(root / "g"), "--items", "16", "--views", "3", "--size", "64", "--quiet"]) == 0
    images = sorted(glob.glob(str(root / "g" / "category" / "img" / "**" / "*.jpg"), recursive=True))
    run = make_run(root / "run", images[::2][:24], jitter=0.05)
    return root, run, images


def test_category_matrix_names_categories_by_the_first_word_that_fits():
    from fashionlens.openworld import category_matrix

    demo = category_matrix(DEMO_CATEGORIES, [])
    assert demo.shape == (1000, len(DEMO_CATEGORIES))
    for cls, name in {610: "Tee", 869: "Coat", 608: "Trousers", 578: "Dress", 842: "Shorts",
                      655: "Skirt", 841: "Hoodie"}.items():
        assert demo[cls].argmax() == DEMO_CATEGORIES.index(name) and demo[cls].sum() == 1, cls
    assert demo[770].sum() == 0 and demo[515].sum() == 0  # the demo model has no shoes, no hats
    photos = category_matrix(PHOTOS)
    for cls, name in {610: "t-shirt", 869: "outwear", 841: "longsleeve", 770: "shoes", 515: "hat", 608: "pants"}.items():
        assert photos[cls].argmax() == PHOTOS.index(name), cls
    levels = category_matrix(["J1", "C1", "T1"], ["upper.outerwear.j1", "full.outerwear.c1", "upper.tops.t1"])
    np.testing.assert_allclose(levels[869], [0.5, 0.5, 0.0])  # "outerwear" names a taxonomy level: split evenly
    assert set(np.unique(demo.sum(1))) <= {0.0, 1.0}


def test_fuse_mixes_by_imagenets_confidence():
    from fashionlens.openworld import fuse

    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.0, 0.45, 0.15])
    fused, w = fuse(p, q)
    np.testing.assert_allclose(fused, 0.4 * p + q)  # w = 0.6: (1 - w) p + w q / sum(q)
    assert w == pytest.approx(0.6) and fused.sum() == pytest.approx(1.0) and fused.argmax() == 1
    same, w0 = fuse(p, np.zeros(3))
    assert w0 == 0.0 and (same == p).all()


def test_predictor_answers_carry_a_scope_and_use_the_familiarity_file(tiny):
    from fashionlens.data.decode import load_image
    from fashionlens.inference import Predictor
    from fashionlens.runs.familiarity import familiarity_path, fit_familiarity

    root, run, images = tiny
    plain = Predictor.load(run)
    assert "scope" not in plain.predict([load_image(images[0])])[0]
    guided = Predictor.load(run, guide="imagenet")
    assert guided.familiarity() is None
    photo = sample_photo("china.jpg")
    before = guided.predict([photo, load_image(images[0])])
    assert before[0]["scope"]["verdict"] == "unknown" and before[0]["scope"]["familiar"] is False
    fit = fit_familiarity(run, f"garments:{root / 'g'}", progress=False)
    assert os.path.isfile(familiarity_path(run)) and fit["reference"] > 0 and -1 <= fit["threshold"] <= 1
    assert fit["space"] == "imagenet:tf_efficientnet_lite0@224"
    fresh = Predictor.load(run, guide="imagenet")
    answers = fresh.predict([load_image(images[0]), photo])  # a training photo: familiar, so the model's own answer
    assert answers[0]["scope"]["familiar"] is True and answers[0]["scope"]["verdict"] == "known"
    assert answers[0]["scope"]["fused"] == 0.0 and answers[0]["category"] == answers[0]["scope"]["model_category"]
    assert answers[1]["scope"]["familiar"] is False and answers[1]["scope"]["verdict"] == "unknown"
    with pytest.raises(ValueError, match="unknown guide"):
        plain.attach_guide("clip")
    assert plain.attach_guide(None).guide is None


def test_cli_predict_with_guide(tiny, capsys):
    from fashionlens.cli import main

    root, run, images = tiny
    photo = root / "palace.jpg"
    sample_photo("china.jpg").save(photo)
    assert main(["predict", "--model", str(run), "--guide", "imagenet", str(photo)]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scope = answer["scope"]
    assert scope["verdict"] == "unknown" and scope["masses"]["garment"] < 0.15
    assert scope["message"] == f"not a garment I know (looks like: {scope['looks_like']})"


def test_api_scope_trained_on_and_default_target(tiny):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_onnx_serving import calibrate  # a calibration.json fitted on the tiny run's own answers

    from fashionlens.serving import ServeSettings, create_app

    root, run, images = tiny
    calibrate(str(run), images[:40])
    buf = io.BytesIO()
    sample_photo("china.jpg").save(buf, "JPEG")
    settings = ServeSettings(str(run), guide="imagenet", target_accuracy=0.9, api_key="k")
    app = create_app(settings)
    with TestClient(app) as client:
        labels = client.get("/v1/labels").json()
        assert labels["trained_on"] == {"data": "unknown data", "categories": 3, "kinds": ["garment"], "guide": True}
        answer = client.post("/v1/classify", files={"image": ("p.jpg", buf.getvalue(), "image/jpeg")}).json()
        assert answer["scope"]["verdict"] == "unknown" and answer["scope"]["familiar"] is False
        assert answer["scope"]["masses"]["garment"] < 0.15
        assert 0.9 in labels["hedging"]["targets"] and labels["hedging"]["default"] == 0.9
    app.state.service.close()
    with TestClient(create_app(ServeSettings(str(run), api_key="k"))) as client:  # no guide: no scope
        answer = client.post("/v1/classify", files={"image": ("p.jpg", buf.getvalue(), "image/jpeg")}).json()
        assert answer["scope"] is None
        labels = client.get("/v1/labels").json()
        assert labels["trained_on"]["guide"] is False and labels["hedging"]["default"] is None
    with pytest.raises(ValueError, match="guide"):
        ServeSettings(str(run), guide="clip").validate()
    with pytest.raises(ValueError, match="target_accuracy"):
        ServeSettings(str(run), target_accuracy=1.5).validate()


def test_an_ensemble_is_guided_with_its_first_members_familiarity(tiny, tmp_path):
    from test_catalog import make_run

    from fashionlens.data.decode import load_image
    from fashionlens.inference import EnsemblePredictor, Predictor
    from fashionlens.runs.familiarity import fit_familiarity

    root, run, images = tiny
    other = make_run(tmp_path / "other", images[1::2][:24], seed=1, jitter=0.05)
    fit_familiarity(str(run), f"garments:{root / 'g'}", progress=False)
    ensemble = EnsemblePredictor([Predictor.load(other), Predictor.load(run)]).attach_guide("imagenet")
    assert ensemble.familiarity() is not None
    rendered, palace = ensemble.predict([load_image(images[0]), sample_photo("china.jpg")])
    assert rendered["scope"]["familiar"] is True and rendered["scope"]["verdict"] == "known"
    assert palace["scope"]["familiar"] is False and palace["scope"]["verdict"] == "unknown"


def test_an_unfamiliar_garment_photo_mixes_in_imagenets_reading(tiny, clothing_small_or_none):
    if clothing_small_or_none is None:
        pytest.skip("no clothing-small photos (../shared/data): this test needs real photos")
    from fashionlens.inference import Predictor
    from fashionlens.runs.familiarity import fit_familiarity

    root, run, images = tiny
    fit_familiarity(str(run), f"garments:{root / 'g'}", progress=False)
    tees = sorted(glob.glob(str(clothing_small_or_none / "validation" / "t-shirt" / "*.jpg")))[:6]
    plain = Predictor.load(run).predict([Image.open(f) for f in tees])
    guided = Predictor.load(run, guide="imagenet").predict([Image.open(f) for f in tees])
    for before, after in zip(plain, guided):
        scope = after["scope"]
        assert scope["familiar"] is False and scope["model_category"] == before["category"]
        if scope["verdict"] == "known":
            assert 0 < scope["fused"] <= 1 and after["probabilities"].sum() == pytest.approx(1.0)
            want = (1 - scope["fused"]) * before["probabilities"]
            assert (after["probabilities"] >= want - 1e-9).all()  # the model's share, plus ImageNet's
    assert sum(a["category"] == "Tee" for a in guided) >= 4  # ImageNet knows a T-shirt (a random model does not)
