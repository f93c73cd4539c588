"""Fusion of the per-level classifiers: flat vs summed vs heads vs stacked logistic regression."""

import json

import numpy as np
import pytest

from fashionlens.hierarchy.fusion import (
    StackedFusion,
    compare_fusion,
    level_probabilities,
    out_of_fold_probabilities,
    stacking_features,
)
from fashionlens.hierarchy.taxonomy import Hierarchy

# 2 top nodes x 2 middle nodes x 3 leaves = 12 categories; hierarchy levels: 2 tops, 4 middles.
PATHS = [f"t{t}.m{t}{m}.l{t}{m}{k}" for t in range(2) for m in range(2) for k in range(3)]
HIERARCHY = Hierarchy.from_paths(PATHS)


def outputs(n, level_signal, rng, leaf_signal=1.0):
    """Noisy leaf logits and level logits that know the true level node with strength ``level_signal``."""
    y = rng.integers(0, len(PATHS), n)
    leaf = leaf_signal * np.eye(len(PATHS))[y] + rng.normal(0, 1, (n, len(PATHS)))
    levels = [level_signal * np.eye(len(names))[np.asarray(m)[y]] + rng.normal(0, 1, (n, len(names)))
              for names, m in zip(HIERARCHY.levels, HIERARCHY.maps)]
    return leaf, levels, y


def test_level_probabilities_sum_leaves_into_levels():
    probs = np.random.default_rng(0).dirichlet(np.ones(12), size=5)
    coarse, middle = level_probabilities(probs, HIERARCHY)
    assert coarse.shape == (5, 2) and middle.shape == (5, 4)
    np.testing.assert_allclose(coarse[:, 0], probs[:, :6].sum(1))
    np.testing.assert_allclose(middle[:, 3], probs[:, 9:].sum(1))
    np.testing.assert_allclose(middle.sum(1), 1.0)


def test_stacking_beats_flat_when_levels_carry_signal():
    leaf, levels, y = outputs(1500, 2.5, np.random.default_rng(1))
    acc = compare_fusion(leaf, levels, y, HIERARCHY)
    assert set(acc) == {"flat", "summed", "heads", "stacked"}
    assert set(acc["flat"]) == {"level_0", "level_1", "leaf"}
    assert acc["stacked"]["leaf"] > acc["flat"]["leaf"] + 0.05, acc
    assert acc["heads"]["level_1"] > acc["summed"]["level_1"] + 0.1, acc  # the level heads know more
    assert acc["stacked"]["level_1"] >= acc["heads"]["level_1"] - 0.03, acc
    assert acc["summed"]["leaf"] == acc["flat"]["leaf"] == acc["heads"]["leaf"]


def test_stacking_matches_flat_when_levels_are_noise():
    leaf, levels, y = outputs(1500, 0.0, np.random.default_rng(2), leaf_signal=2.0)
    acc = compare_fusion(leaf, levels, y, HIERARCHY)
    assert abs(acc["stacked"]["leaf"] - acc["flat"]["leaf"]) < 0.04, acc
    assert acc["heads"]["level_0"] == pytest.approx(0.5, abs=0.06)  # noise heads: chance


def test_out_of_fold_accuracy_is_honest_on_pure_noise():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, (300, 40)), rng.integers(0, 3, 300)
    oof = out_of_fold_probabilities(x, y, 3)
    in_sample = StackedFusion(3).fit(x, y).predict_proba(x)
    assert np.mean(oof.argmax(1) == y) < 0.45 < np.mean(in_sample.argmax(1) == y)
    np.testing.assert_allclose(oof.sum(1), 1.0)


def test_stacked_model_round_trips_and_matches_sklearn():
    from sklearn.linear_model import LogisticRegression as LR
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def LogisticRegression(**kw):  # the reference: standardise, then the same regression
        return make_pipeline(StandardScaler(), LR(**kw))

    rng = np.random.default_rng(4)
    leaf, levels, y = outputs(200, 2.0, rng)
    x = stacking_features(leaf, levels)
    assert x.shape == (200, 12 + 2 + 4)
    fused = StackedFusion(12).fit(x, y)
    back = StackedFusion.from_dict(json.loads(json.dumps(fused.to_dict())))
    np.testing.assert_allclose(back.predict_proba(x), fused.predict_proba(x))
    np.testing.assert_allclose(fused.predict_proba(x), LogisticRegression(max_iter=2000).fit(x, y).predict_proba(x),
                               atol=1e-6)
    two = (y % 2) * 3  # only classes 0 and 3 present: the binary case, absent classes get 0
    binary = StackedFusion(12).fit(x, two).predict_proba(x)
    np.testing.assert_allclose(binary[:, [0, 3]], LogisticRegression(max_iter=2000).fit(x, two).predict_proba(x),
                               atol=1e-6)
    assert binary[:, [1, 2, 4]].max() == 0.0


def test_fusion_without_level_heads_and_bad_input():
    leaf, _, y = outputs(100, 0.0, np.random.default_rng(5))
    acc = compare_fusion(leaf, [], y, HIERARCHY)
    assert set(acc) == {"flat", "summed", "stacked"}
    with pytest.raises(ValueError, match="1 level outputs"):
        compare_fusion(leaf, [leaf[:, :2]], y, HIERARCHY)
    with pytest.raises(ValueError, match="not fitted"):
        StackedFusion(3).predict_proba(np.zeros((1, 3)))


def test_grouped_folds_keep_an_item_out_of_its_own_training_rows():
    """Views of one item share a fingerprint but items' labels are random: without groups the fingerprint
    leaks the label across folds; with the item ids as groups the out-of-fold accuracy drops to chance."""
    rng = np.random.default_rng(6)
    items = np.repeat(np.arange(60), 5)
    y = rng.integers(0, 3, 60)[items]
    x = rng.normal(0, 1, (60, 80))[items] + rng.normal(0, 0.05, (300, 80))  # 80 > 60 items: separable
    leaky = np.mean(out_of_fold_probabilities(x, y, 3).argmax(1) == y)
    grouped = out_of_fold_probabilities(x, y, 3, groups=[f"id_{i}" for i in items])
    assert leaky > 0.9 and np.mean(grouped.argmax(1) == y) < 0.5
    with pytest.raises(ValueError, match="groups for"):
        out_of_fold_probabilities(x, y, 3, groups=["a"])
