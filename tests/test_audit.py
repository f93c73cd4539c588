"""Label audit: noise injection, out-of-fold probabilities (no leakage), confident learning vs a plain-loop
reference, precision/recall on synthetic noisy labels, cleanlab on the same probabilities, CSV/HTML reports."""

import csv
import itertools
import re

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens.audit import label_audit
from fashionlens.audit.label_audit import (
    audit,
    audit_labels,
    calibrate_joint,
    confident_joint,
    flag_scores,
    make_classifier,
    out_of_fold_probabilities,
    stratified_folds,
)
from fashionlens.audit.noise import (
    confusable_noise,
    confusable_targets,
    inject_noise,
    uniform_noise,
)
from fashionlens.audit.report_html import (
    CSV_COLUMNS,
    write_suspects_csv,
    write_suspects_html,
)
from fashionlens.data.samples import Sample

torch.set_num_threads(1)


def clusters(k: int = 5, per_class: int = 80, dim: int = 16, spread: float = 4.0, seed: int = 0):
    """Separable Gaussian clusters: features (N, dim), labels (N,)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, dim)) * spread
    y = np.repeat(np.arange(k), per_class)
    return centers[y] + rng.normal(0, 1, (len(y), dim)), y


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.3])
def test_uniform_noise_exact_rate_and_determinism(rate):
    y = np.repeat(np.arange(4), 50)
    noisy, flipped = uniform_noise(y, rate, seed=3)
    assert flipped.sum() == round(rate * len(y))
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert set(np.unique(noisy)) <= set(range(4))
    again, flipped_again = uniform_noise(y, rate, seed=3)
    np.testing.assert_array_equal(again, noisy)
    np.testing.assert_array_equal(flipped_again, flipped)
    other, _ = uniform_noise(y, rate, seed=4)
    assert not np.array_equal(other, noisy)


def test_uniform_noise_reaches_every_other_class():
    y = np.zeros(3000, np.int64)
    noisy, flipped = uniform_noise(y, 0.3, num_classes=4, seed=0)
    counts = np.bincount(noisy[flipped], minlength=4)
    assert counts[0] == 0 and (np.abs(counts[1:] / flipped.sum() - 1 / 3) < 0.05).all()


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.3])
def test_confusable_noise_follows_the_confusion_matrix(rate):
    y = np.repeat(np.arange(3), 40)
    confusion = np.array([[30, 2, 8], [5, 33, 2], [1, 9, 30]])
    np.testing.assert_array_equal(confusable_targets(confusion), [2, 0, 1])
    noisy, flipped = confusable_noise(y, rate, confusion=confusion, seed=1)
    assert flipped.sum() == round(rate * len(y))
    np.testing.assert_array_equal(noisy[flipped], np.array([2, 0, 1])[y[flipped]])
    np.testing.assert_array_equal(inject_noise(y, rate, "confusable", confusion=confusion, seed=1)[0], noisy)


def test_confusable_pairs_and_errors():
    y = np.repeat(np.arange(3), 10)
    noisy, flipped = confusable_noise(y, 0.2, pairs={0: 1}, seed=0)
    assert flipped.sum() == 6 and (y[flipped] == 0).all() and (noisy[flipped] == 1).all()
    with pytest.raises(ValueError, match="only 10 samples"):
        confusable_noise(y, 0.5, pairs={0: 1})
    with pytest.raises(ValueError, match="exactly one"):
        confusable_noise(y, 0.1)
    with pytest.raises(ValueError, match="noise rate"):
        uniform_noise(y, 1.5)
    with pytest.raises(ValueError, match="unknown noise kind"):
        inject_noise(y, 0.1, "systematic")


def test_stratified_folds_balance_classes():
    y = np.repeat(np.arange(3), [20, 11, 7])
    folds = stratified_folds(y, 5, seed=0)
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for c in range(3):
        per_fold = np.bincount(folds[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(stratified_folds(y, 5, seed=0), folds)


def test_out_of_fold_row_does_not_depend_on_its_own_label():
    x, y = clusters(k=3, per_class=30, spread=1.0)
    folds = stratified_folds(y, 5, seed=0)
    i = 7
    flipped = y.copy()
    flipped[i] = (y[i] + 1) % 3
    p = out_of_fold_probabilities(x, y, folds=folds)
    q = out_of_fold_probabilities(x, flipped, folds=folds)
    np.testing.assert_array_equal(p[i], q[i])  # its own row comes from a model that never saw its label
    assert np.abs(p - q).max() > 0  # ... while rows of the other folds, trained with the flip, do move
    # the in-sample probability (a model fitted on the flipped label itself) does depend on it
    inside = make_classifier().fit(x, y).predict_proba(x[i:i + 1])
    inside_flipped = make_classifier().fit(x, flipped).predict_proba(x[i:i + 1])
    assert np.abs(inside - inside_flipped).max() > 1e-3


def test_out_of_fold_probabilities_shape_and_absent_class():
    x, y = clusters(k=3, per_class=20)
    p = out_of_fold_probabilities(x, y, folds=4, num_classes=4)
    assert p.shape == (60, 4) and (p[:, 3] == 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert (p.argmax(axis=1) == y).mean() > 0.95
    with pytest.raises(ValueError, match="labels has 59 entries"):
        out_of_fold_probabilities(x, y[:-1])
    with pytest.raises(ValueError, match="folds must be"):
        out_of_fold_probabilities(x, y, folds=1)


def _joint_reference(labels, probs):
    """Plain loops: thresholds = mean self-confidence; each sample counted under its most probable confident class."""
    k = probs.shape[1]
    t = [probs[labels == j, j].mean() for j in range(k)]
    joint = np.zeros((k, k), int)
    for i, g in enumerate(labels):
        confident = [j for j in range(k) if probs[i, j] >= t[j]]
        if confident:
            joint[g, max(confident, key=lambda j: probs[i, j])] += 1
    return np.array(t), joint


def test_confident_joint_matches_loop_reference():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4) * 0.7, size=200)
    labels = rng.integers(0, 4, 200)
    t, joint = confident_joint(labels, probs)
    t_ref, joint_ref = _joint_reference(labels, probs)
    np.testing.assert_allclose(t, t_ref)
    np.testing.assert_array_equal(joint, joint_ref)
    calibrated = calibrate_joint(joint, labels)
    np.testing.assert_allclose(calibrated.sum(axis=1), np.bincount(labels, minlength=4))


def test_audit_finds_uniform_noise_and_suggests_the_original_label():
    x, y = clusters()
    noisy, wrong = uniform_noise(y, 0.1, seed=2)
    result = audit_labels(x, noisy, folds=5, seed=0, class_names=list("abcde"))
    ours = flag_scores(result.flagged, wrong)
    assert ours["precision"] > 0.8 and ours["recall"] > 0.8, ours
    hits = result.flagged & wrong
    assert (result.suggested[hits] == y[hits]).mean() > 0.9
    theirs = flag_scores(result.cleanlab_flagged, wrong)
    assert theirs["precision"] > 0.8 and theirs["recall"] > 0.8, theirs
    summary = result.summary()
    assert abs(summary["estimated_noise_rate"] - 0.1) < 0.05
    assert summary["flagged"] == int(result.flagged.sum()) and summary["images"] == len(y)
    rows = result.suspects
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["confidence"] >= b["confidence"] for a, b in itertools.pairwise(rows))
    first = rows[0]
    assert first["given"] == "abcde"[noisy[first["index"]]] and first["suggested"] == "abcde"[y[first["index"]]]
    assert audit(x, noisy, compare_cleanlab=False)[0]["cleanlab"] is None


def test_clean_labels_flag_almost_nothing():
    x, y = clusters()
    result = audit_labels(x, y)
    assert result.flagged.sum() <= 2 and result.summary()["estimated_noise_rate"] < 0.02


def test_cleanlab_gets_the_same_probabilities(monkeypatch):
    import cleanlab.filter

    seen = {}
    original = cleanlab.filter.find_label_issues

    def spy(labels, pred_probs, **kw):
        seen["labels"], seen["pred_probs"] = np.array(labels), np.array(pred_probs)
        return original(labels, pred_probs, **kw)

    monkeypatch.setattr(cleanlab.filter, "find_label_issues", spy)
    x, y = clusters(k=4, per_class=40)
    noisy, _ = uniform_noise(y, 0.1, seed=0)
    result = audit_labels(x, noisy)
    np.testing.assert_array_equal(seen["labels"], noisy)
    np.testing.assert_allclose(seen["pred_probs"], result.pred_probs, atol=1e-12)
    assert result.cleanlab_flagged is not None and result.cleanlab_flagged.dtype == bool


def test_audit_with_given_probabilities_skips_the_classifier(monkeypatch):
    monkeypatch.setattr(label_audit, "out_of_fold_probabilities", lambda *a, **k: pytest.fail("refit"))
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05], [0.1, 0.9], [0.2, 0.8], [0.97, 0.03]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    result = audit_labels(None, labels, pred_probs=probs, compare_cleanlab=False)
    assert np.flatnonzero(result.flagged).tolist() == [5] and result.suspects[0]["suggested_index"] == 0


@pytest.fixture
def report(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 50, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(image=str(path)))
    suspects = [{"rank": 2, "index": 3, "given": "a<b", "suggested": "c", "confidence": 0.2, "p_given": 0.3,
                 "p_suggested": 0.5, "cleanlab": False},
                {"rank": 1, "index": 1, "given": "c", "suggested": "a<b", "confidence": 0.7, "p_given": 0.1,
                 "p_suggested": 0.8, "cleanlab": True}]
    return samples, suspects


def test_csv_report_sorted_by_confidence(tmp_path, report):
    samples, suspects = report
    path = write_suspects_csv(str(tmp_path / "s.csv"), suspects, [s.image for s in samples])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["image"] for r in rows] == [samples[1].image, samples[3].image]
    assert float(rows[0]["confidence"]) == 0.7 and rows[0]["cleanlab"] == "1" and rows[1]["given"] == "a<b"


def test_html_report_is_self_contained(tmp_path, report):
    samples, suspects = report
    path = write_suspects_html(str(tmp_path / "out" / "index.html"), suspects, samples,
                               summary={"flagged": 2, "rate": 0.25}, thumb=32)
    with open(path, encoding="utf-8") as f:
        page = f.read()
    assert page.count("data:image/jpeg;base64,") == 2 and page.count("<tr>") == 3
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page
    assert "a&lt;b" in page and "a<b" not in page
    assert page.index(samples[1].image) < page.index(samples[3].image)  # confidence order
    linked = write_suspects_html(str(tmp_path / "out" / "linked.html"), suspects, samples, embed_images=False)
    with open(linked, encoding="utf-8") as f:
        assert 'src="../imgs/1.png"' in f.read()
