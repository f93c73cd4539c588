"""fashionlens.baselines.sift: SIFT bag-of-visual-words retrieval on real photos and their transformed copies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from fashionlens.baselines.sift import SiftBoVW, assign_words, extract_descriptors

VOCAB = 200  # small vocabularies (~50 words) confuse the mirrored distractors with the originals


def _gallery() -> list[Image.Image]:
    """Four photos: china, flower and the two halves of a scene built from both mirrored (hard distractors)."""
    china = Image.fromarray(load_sample_image("china.jpg")).resize((320, 214))
    flower = Image.fromarray(load_sample_image("flower.jpg")).resize((320, 214))
    mixed = Image.fromarray(np.concatenate([np.asarray(china)[:, ::-1], np.asarray(flower)[::-1]], axis=1))
    return [china, flower, mixed.crop((0, 0, 320, 214)), mixed.crop((320, 0, 640, 214))]


def _transformed(img: Image.Image, kind: int) -> Image.Image:
    if kind == 0:
        return img.rotate(25, Image.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    if kind == 1:
        return img.resize((img.width * 2 // 3, img.height * 2 // 3), Image.BICUBIC)
    return img.crop((img.width // 8, img.height // 10, img.width * 7 // 8, img.height * 9 // 10))


@pytest.fixture(scope="module")
def gallery() -> list[Image.Image]:
    return _gallery()


@pytest.fixture(scope="module")
def model(gallery) -> SiftBoVW:
    return SiftBoVW(vocab_size=VOCAB, max_features=300, image_size=256, seed=0).fit(gallery)


def test_transformed_copy_retrieves_its_original_first(model, gallery):
    g = model.transform(gallery)
    for kind in range(3):
        queries = [_transformed(img, kind) for img in gallery]
        sim = model.transform(queries) @ g.T  # cosine similarity
        assert list(sim.argmax(axis=1)) == [0, 1, 2, 3], (kind, np.round(sim, 3))


def test_shapes_and_vocabulary_size(model, gallery):
    assert model.vocabulary.shape == (VOCAB, 128) and model.vocabulary.dtype == np.float32
    assert model.idf.shape == (VOCAB,) and (model.idf >= 1).all()
    x = model.transform(gallery[:3])
    assert x.shape == (3, VOCAB) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5) and (x >= 0).all()


def test_rootsift_descriptors_and_feature_cap(gallery):
    root = extract_descriptors(gallery[0], max_features=50, rootsift=True)
    raw = extract_descriptors(gallery[0], max_features=50, rootsift=False)
    assert root.shape == raw.shape and 0 < len(root) <= 50
    assert np.allclose(np.linalg.norm(root, axis=1), 1.0, atol=1e-4)  # sqrt of an L1-normalised vector
    assert np.allclose(root, np.sqrt(raw / raw.sum(axis=1, keepdims=True)), atol=1e-5)
    assert len(extract_descriptors(gallery[0], max_features=500)) > 50


def test_paths_and_arrays_equal_pil(gallery, tmp_path):
    path = tmp_path / "china.png"
    gallery[0].save(path)
    a = extract_descriptors(gallery[0])
    assert np.array_equal(a, extract_descriptors(str(path)))
    assert np.array_equal(a, extract_descriptors(np.asarray(gallery[0])))


def test_same_seed_same_model_other_seed_differs(model, gallery):
    again = SiftBoVW(vocab_size=VOCAB, max_features=300, image_size=256, seed=0).fit(gallery)
    assert np.array_equal(again.vocabulary, model.vocabulary) and np.array_equal(again.idf, model.idf)
    other = SiftBoVW(vocab_size=VOCAB, max_features=300, image_size=256, seed=1).fit(gallery)
    assert not np.array_equal(other.vocabulary, model.vocabulary)


def test_threads_do_not_change_descriptors(gallery):
    one = SiftBoVW(workers=1).describe(gallery)
    two = SiftBoVW(workers=2).describe(gallery)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_blank_image_gives_zero_vector(model, gallery):
    blank = Image.new("RGB", (200, 150), (255, 255, 255))
    x = model.transform([blank, gallery[1], Image.new("L", (3, 2))])
    assert not x[0].any() and not x[2].any()
    assert np.linalg.norm(x[1]) == pytest.approx(1.0, abs=1e-5)


def test_assign_words_matches_brute_force():
    rng = np.random.default_rng(0)
    desc, vocab = rng.random((300, 128), dtype=np.float32), rng.random((17, 128), dtype=np.float32)
    ref = np.array([np.argmin(((vocab - d) ** 2).sum(axis=1)) for d in desc])
    assert np.array_equal(assign_words(desc, vocab, chunk=64), ref)


def test_save_load_round_trip(model, gallery, tmp_path):
    path = str(tmp_path / "bovw.npz")
    model.save(path)
    loaded = SiftBoVW.load(path)
    assert loaded.config() == model.config()
    assert np.array_equal(loaded.transform(gallery), model.transform(gallery))


def test_errors(gallery, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        SiftBoVW().transform(gallery[:1])
    with pytest.raises(ValueError, match="fewer than vocab_size"):
        SiftBoVW(vocab_size=10_000, max_features=20).fit(gallery[:1])
    with pytest.raises(ValueError, match="vocab_size"):
        SiftBoVW(vocab_size=1)
    with pytest.raises(FileNotFoundError):
        SiftBoVW.load(str(tmp_path / "absent.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, vocabulary=np.zeros((3, 128), np.float32))
    with pytest.raises(ValueError, match="bad.npz"):
        SiftBoVW.load(str(bad))
