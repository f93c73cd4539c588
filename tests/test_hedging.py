"""Hedged predictions (DARTS): hand-computed trees, rewards and answers; the lambda search on calibrated data."""

import json
import math

import numpy as np
import pytest

from fashionlens.hierarchy.hedging import ROOT_NAME, CategoryTree, HedgedClassifier, decide

# 4 leaves: a.x, a.y, a.v under "a" (3 leaves) and b.z alone under "b".
PATHS = ["a.x", "a.y", "a.v", "b.z"]
NAMES = ["X", "Y", "V", "Z"]
A, B, ROOT = 4, 5, 6  # node order: leaves, internal nodes deepest first (then by name), the root last
GARMENT_PATHS = ["upper.tops.tee", "upper.tops.tank", "upper.tops.button-down", "upper.knitwear.sweater",
                 "upper.knitwear.hoodie", "upper.outerwear.jacket", "lower.trousers.trousers",
                 "lower.trousers.leggings", "lower.shorts.shorts", "lower.skirts.skirt", "full.dresses.dress",
                 "full.onepieces.jumpsuit", "full.onepieces.romper", "full.outerwear.coat"]


@pytest.fixture
def tree():
    return CategoryTree.from_paths(PATHS, NAMES)


def test_tree_structure_and_rewards(tree):
    assert tree.num_leaves == 4 and tree.num_nodes == 7 and tree.root == ROOT
    assert tree.names == ["X", "Y", "V", "Z", "a", "b", ROOT_NAME]
    assert tree.paths[A] == ["a"] and tree.paths[1] == ["a", "y"] and tree.paths[ROOT] == []
    assert tree.parents == [A, A, A, B, ROOT, ROOT, -1]
    assert tree.membership.sum(axis=1).tolist() == [1, 1, 1, 1, 3, 1, 4]
    # r(v) = log2(4) - log2(#leaves under v)
    np.testing.assert_allclose(tree.rewards, [2, 2, 2, 2, 2 - math.log2(3), 2, 0])
    assert tree.is_correct(np.array([A, A, ROOT, 1, B]), np.array([0, 3, 2, 1, 3])).tolist() == [
        True, False, True, True, True]


def test_answers_hand_computed(tree):
    """p = (0.35, 0.3, 0.25, 0.1): p(a) = 0.9.  lambda = 0: leaf X (2 * 0.35 = 0.7 beats 0.415 * 0.9);
    X and a swap at (2 + l) 0.35 = (0.415 + l) 0.9, l = 0.594; a and the root at (0.415 + l) 0.9 = l, l = 3.74."""
    node_probs = tree.node_probabilities(np.array([[0.35, 0.3, 0.25, 0.1]]))
    np.testing.assert_allclose(node_probs[0], [0.35, 0.3, 0.25, 0.1, 0.9, 0.1, 1.0])
    r_a = 2 - math.log2(3)
    swap_xa, swap_a_root = (0.9 * r_a - 0.7) / (0.35 - 0.9), 0.9 * r_a / 0.1
    assert [int(decide(tree, node_probs, lam)[0]) for lam in (0.0, swap_xa - 1e-6, swap_xa + 1e-6, 1.0,
                                                             swap_a_root - 1e-6, swap_a_root + 1e-6, 1e6)] == [
        0, 0, A, A, A, ROOT, ROOT]
    assert int(decide(tree, node_probs, math.inf)[0]) == ROOT


def test_lambda_zero_maximises_expected_reward_not_the_top_leaf():
    """8 leaves, "a" holds two of them: r(a) = 2, r(leaf) = 3.  With p = (0.3, 0.3, 0.4/6 ...) the expected
    reward of "a" (2 * 0.6 = 1.2) beats the best leaf's (3 * 0.3 = 0.9): lambda = 0 answers "a"."""
    tree = CategoryTree.from_paths(["a.1", "a.2", "b.3", "b.4", "c.5", "c.6", "d.7", "d.8"])
    p = np.array([[0.3, 0.3] + [0.4 / 6] * 6])
    node = int(decide(tree, tree.node_probabilities(p), 0.0)[0])
    assert tree.names[node] == "a" and tree.rewards[node] == pytest.approx(2.0)
    values = tree.rewards * tree.node_probabilities(p)[0]
    assert node == int(np.argmax(values)) and values[node] == pytest.approx(1.2)


def test_large_lambda_tends_to_the_highest_posterior_node(tree):
    """(r + l) p / l -> p as l grows: the answer becomes the node of largest posterior, i.e. the root (p = 1),
    unless another node also has posterior exactly 1: then the larger reward of that node wins for every l."""
    big = 1e9
    spread = np.array([[0.3, 0.2, 0.2, 0.3]])
    assert int(decide(tree, tree.node_probabilities(spread), big)[0]) == ROOT
    inside_a = np.array([[0.0, 0.6, 0.4, 0.0]])  # p(a) = 1 exactly
    assert int(decide(tree, tree.node_probabilities(inside_a), big)[0]) == A
    one_hot = np.array([[0.0, 1.0, 0.0, 0.0]])
    assert int(decide(tree, tree.node_probabilities(one_hot), big)[0]) == 1


def test_ties_go_to_the_more_specific_node():
    """"upper.outerwear" holds only the jacket: same leaves, same reward, same posterior; the leaf wins."""
    tree = CategoryTree.from_paths(GARMENT_PATHS)
    jacket = GARMENT_PATHS.index("upper.outerwear.jacket")
    p = np.full((1, 14), 0.1 / 13)
    p[0, jacket] = 0.9
    for lam in (0.0, 0.5, 3.0):
        assert int(decide(tree, tree.node_probabilities(p), lam)[0]) == jacket


def test_decide_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    tree = CategoryTree.from_paths(GARMENT_PATHS)
    probs = rng.dirichlet(np.full(14, 0.3), size=200)
    for lam in (0.0, 0.7, 5.0):
        fast = decide(tree, tree.node_probabilities(probs), lam)
        for i, p in enumerate(probs):
            scores = [(tree.rewards[v] + lam) * sum(p[c] for c in range(14) if tree.membership[v, c])
                      for v in range(tree.num_nodes)]
            assert fast[i] == int(np.argmax(scores))  # same first-maximum rule


def test_fit_lambda_is_the_smallest_lambda_meeting_the_target(tree):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=300)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    hedger = HedgedClassifier(tree)
    node_probs = tree.node_probabilities(probs)
    for target in (0.7, 0.85, 0.95):
        lam = hedger.fit_lambda(probs, labels, target)
        assert 0 < lam < math.inf
        assert hedger.accuracy(node_probs, labels, lam) >= target
        assert hedger.accuracy(node_probs, labels, lam * (1 - 1e-4)) < target  # minimal (bisection width 1e-6)
    assert hedger.lambda_for(0.85) == hedger.lambdas[0.85]
    assert hedger.lambda_for(0.8) == hedger.lambdas[0.85]  # the next fitted target above: still met
    with pytest.raises(ValueError, match="no lambda fitted for target accuracy 0.99"):
        hedger.lambda_for(0.99)


def test_target_met_without_hedging_gives_lambda_zero(tree):
    probs = np.eye(4)[[0, 1, 2, 3, 0]] * 0.97 + 0.0075
    hedger = HedgedClassifier(tree)
    assert hedger.fit_lambda(probs, np.array([0, 1, 2, 3, 0]), 0.99) == 0.0
    assert hedger.base_accuracy == 1.0 and hedger.lambda_for(0.5) == 0.0


def test_root_only_when_no_finite_lambda_reaches_the_target(tree):
    """A confidently wrong sample (p = 1 on the wrong leaf) keeps its leaf answer for every finite lambda."""
    probs = np.array([[0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    labels = np.array([0, 0])
    hedger = HedgedClassifier(tree)
    assert hedger.fit_lambda(probs, labels, 1.0) == math.inf
    assert hedger.predict(probs, 1.0).tolist() == [ROOT, ROOT]
    res = hedger.evaluate(probs, labels, 1.0)
    assert res["hedged_accuracy"] == 1.0 and res["hedged_specificity"] == 0.0 and res["flat_accuracy"] == 0.5


def calibrated_split(n, rng, tree):
    """Perfectly calibrated synthetic outputs: labels are drawn from the predicted distribution."""
    group = np.array([tree.parents[c] for c in range(tree.num_leaves)])
    logits = rng.normal(0, 2.0, (n, tree.num_leaves)) + 1.5 * rng.normal(0, 1.0, (n, tree.num_nodes))[:, group]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > probs.cumsum(1)).sum(1)
    return probs, np.minimum(labels, tree.num_leaves - 1)


def test_binary_search_reaches_the_target_on_held_out_calibrated_data():
    rng = np.random.default_rng(2)
    tree = CategoryTree.from_paths(GARMENT_PATHS)
    val, test = calibrated_split(20000, rng, tree), calibrated_split(20000, rng, tree)
    hedger = HedgedClassifier(tree)
    rows = hedger.fit_table(*val, [0.90, 0.95, 0.99])
    assert [r["target_accuracy"] for r in rows] == [0.90, 0.95, 0.99]
    flat = float(np.mean(test[0].argmax(1) == test[1]))
    assert flat < 0.8  # hedging is needed to reach the targets
    specificity = []
    for target in (0.90, 0.95, 0.99):
        res = hedger.evaluate(*test, target)
        assert abs(res["hedged_accuracy"] - target) <= 0.01, (target, res)
        assert 0 < res["hedged_specificity"] < res["max_specificity"] == pytest.approx(math.log2(14))
        specificity.append(res["hedged_specificity"])
    assert specificity[0] > specificity[1] > specificity[2]  # the price of accuracy


def test_tradeoff_curve_runs_from_specific_to_the_root():
    rng = np.random.default_rng(3)
    tree = CategoryTree.from_paths(GARMENT_PATHS)
    probs, labels = calibrated_split(3000, rng, tree)
    curve = HedgedClassifier(tree).tradeoff_curve(probs, labels, num=20)
    assert len(curve["lambda"]) == len(curve["accuracy"]) == len(curve["specificity"]) == 22
    assert curve["lambda"][0] == 0 and math.isinf(curve["lambda"][-1])
    assert curve["accuracy"][-1] == 1.0 and curve["specificity"][-1] == 0.0
    assert curve["specificity"][0] > 2.0 and curve["accuracy"][0] < 0.8


def test_answers_and_json_round_trip(tree):
    probs = np.array([[0.35, 0.3, 0.25, 0.1], [0.0, 1.0, 0.0, 0.0]])
    hedger = HedgedClassifier(tree, temperature=1.7)
    hedger.lambdas = {0.9: 1.0, 0.99: math.inf}
    hedger.base_accuracy = 0.5
    assert hedger.answers(probs, 0.9) == [
        {"name": "a", "path": ["a"], "probability": 0.9, "target_accuracy": 0.9},
        {"name": "Y", "path": ["a", "y"], "probability": 1.0, "target_accuracy": 0.9}]
    state = json.loads(json.dumps(hedger.to_dict(), allow_nan=False))
    back = HedgedClassifier.from_dict(state)
    assert back.temperature == 1.7 and back.lambdas == hedger.lambdas and back.base_accuracy == 0.5
    assert back.tree.names == tree.names and np.array_equal(back.tree.membership, tree.membership)
    assert back.answers(probs, 0.95)[0]["name"] == ROOT_NAME  # inf: the root
    np.testing.assert_allclose(back.calibrate(np.log([[0.35, 0.3, 0.25, 0.1]])).sum(), 1.0)


def test_flat_taxonomy_and_bad_input():
    tree = CategoryTree.from_paths(["Tee", "Shorts", "Dress"])  # no taxonomy: leaves under the root
    assert tree.num_nodes == 4 and tree.parents == [3, 3, 3, -1]
    hedger = HedgedClassifier(tree)
    with pytest.raises(ValueError, match="3 categories"):
        hedger.fit_lambda(np.ones((2, 4)) / 4, np.array([0, 1]), 0.9)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        hedger.fit_lambda(np.ones((2, 3)) / 3, np.array([0, 1]), 1.5)
    with pytest.raises(ValueError, match="category indices"):
        hedger.fit_lambda(np.ones((2, 3)) / 3, np.array([0, 3]), 0.9)
    with pytest.raises(ValueError, match="temperature"):
        HedgedClassifier(tree, temperature=0.0)
    with pytest.raises(ValueError, match="at least one"):
        CategoryTree.from_paths([])
