"""Geometric re-ranking: ratio-test matches against a numpy reference, RANSAC inliers, the order rule, and
``Catalog.search(rerank=)`` / ``search --rerank`` / the API's ``rerank`` field on a tiny catalog."""

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from fashionlens.evaluation.distortions import distort
from fashionlens.rerank import GeometricReranker, LocalFeatures, rerank_hits, rerank_order


@pytest.fixture(scope="module")
def photos():
    return Image.fromarray(load_sample_image("china.jpg")), Image.fromarray(load_sample_image("flower.jpg"))


def test_matches_equal_a_numpy_ratio_test():
    rng = np.random.default_rng(0)
    q = LocalFeatures(rng.random((40, 2), np.float32), rng.random((40, 128), np.float32))
    g = LocalFeatures(rng.random((60, 2), np.float32), rng.random((60, 128), np.float32))
    # plant near-copies so that some pass the test
    g.descriptors[:10] = q.descriptors[:10] + 0.001 * rng.random((10, 128), np.float32)
    r = GeometricReranker(ratio=0.8)
    got = {tuple(p) for p in r.matches(q, g)}
    d = np.linalg.norm(q.descriptors[:, None] - g.descriptors[None], axis=2)
    want = set()
    for i in range(len(d)):
        first, second = np.argsort(d[i])[:2]
        if d[i, first] < 0.8 * d[i, second]:
            want.add((i, int(first)))
    assert got == want
    assert {(i, i) for i in range(10)} <= got


def test_distorted_copy_verified_unrelated_photo_not(photos):
    china, flower = photos
    r = GeometricReranker()
    query = distort(china, 3)  # cropped, rescaled, rotated, recoloured, blurred, JPEG
    assert r.inliers(r.features(query), r.features(china)) >= 3 * r.min_inliers
    assert r.inliers(r.features(query), r.features(flower)) < r.min_inliers
    order, counts = r.rerank(query, [flower, flower.rotate(90, expand=True), china])
    assert order[0] == 2 and counts[2] >= r.min_inliers
    assert order[1:] == [0, 1]  # unverified ones keep the index's order


def test_blank_images_have_no_keypoints_and_zero_inliers():
    r = GeometricReranker()
    blank = r.features(Image.new("RGB", (64, 64), "white"))
    assert len(blank) == 0
    assert r.inliers(blank, blank) == 0


def test_rerank_order_rule():
    assert rerank_order([0, 30, 5, 30, 50], 12) == [4, 1, 3, 0, 2]
    assert rerank_order([], 12) == []
    assert rerank_order([3, 2, 1], 12) == [0, 1, 2]


def test_feature_cache_is_bounded_and_keyed(photos):
    china, flower = photos
    r = GeometricReranker(cache_size=1)
    a = r.features(china, key="a")
    assert r.features(flower, key="a") is a  # same key: cached, the image is not looked at again
    r.features(flower, key="b")
    assert list(r._cache) == ["b"]


def test_rerank_hits_tolerates_missing_images(photos, tmp_path):
    china, flower = photos
    china.save(tmp_path / "china.jpg")
    flower.save(tmp_path / "flower.jpg")
    hits = [{"item_id": 1, "image": str(tmp_path / "flower.jpg")}, {"item_id": 2, "image": str(tmp_path / "gone.jpg")},
            {"item_id": 3, "image": str(tmp_path / "china.jpg")}]
    out = rerank_hits(GeometricReranker(), distort(china, 1), hits)
    assert [h["item_id"] for h in out] == [3, 1, 2]
    assert out[0]["verified"] and not out[1]["verified"] and out[2]["inliers"] == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        GeometricReranker(ratio=1.5)
    with pytest.raises(ValueError, match="min_inliers"):
        GeometricReranker(min_inliers=2)
    with pytest.raises(ValueError, match="keys"):
        GeometricReranker().rerank(Image.new("RGB", (8, 8)), [Image.new("RGB", (8, 8))], keys=[])


def test_catalog_search_rerank(photos, tmp_path, capsys):
    """A catalog of unrelated photos and one near-duplicate's original: re-ranking puts the original first."""
    from test_catalog import DIM, make_run

    from fashionlens.catalog import Catalog
    from fashionlens.cli import main

    china, flower = photos
    files = []
    for i, im in enumerate([flower, flower.transpose(Image.FLIP_LEFT_RIGHT), flower.rotate(180), china]):
        path = tmp_path / f"p{i}.jpg"
        im.resize((320, 240)).save(path)
        files.append(str(path))
    run = make_run(tmp_path / "run", files)
    query = tmp_path / "query.jpg"
    distort(Image.open(files[3]), 5).save(query)
    with Catalog.create(str(tmp_path / "cat"), dim=DIM, model_run=run) as cat:
        cat.add(files)
        plain = cat.search(str(query), k=4)
        assert all("inliers" not in h for h in plain)
        hits = cat.search(str(query), k=2, rerank=4)
        assert len(hits) == 2 and hits[0]["item_id"] == 4 and hits[0]["verified"]
        assert not hits[1]["verified"]
        vector = cat.predictor.embed([Image.open(query)])[0]
        assert cat.search(vector, k=1, rerank=4, image=str(query))[0]["item_id"] == 4
        with pytest.raises(ValueError, match="query image"):
            cat.search(vector, k=1, rerank=4)
        with pytest.raises(ValueError, match="rerank"):
            cat.search(str(query), k=1, rerank=-1)
    capsys.readouterr()
    assert main(["search", "--catalog", str(tmp_path / "cat"), str(query), "-k", "1", "--rerank"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("  1") and "inliers *" in out and "id 4" in out
    assert main(["search", "--catalog", str(tmp_path / "cat"), str(query), "-k", "2", "--category", "auto",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("searched ") and len(__import__("json").loads(captured.out)) == 2
