"""Metrics against hand-computed tiny cases and plain-loop references (fashionlens.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens.data.samples import DatasetInfo, Sample
from fashionlens.evaluation import (
    apply_affine,
    attribute_topk_recall,
    box_iou,
    box_metrics,
    calibration_bins,
    confusion_matrix,
    detection_rate,
    expected_calibration_error,
    nearest_neighbors,
    normalized_error,
    per_class_accuracy,
    recall_at_k_and_map_at_r,
    retrieval_topk,
    single_choice_group_accuracy,
    topk_accuracy,
)


def unit(*degrees: float) -> np.ndarray:
    """2-D unit vectors at the given angles: cosine similarity = cos(angle difference)."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# ---------------------------------------------------------------- classification

def test_topk_accuracy_hand_case_ignores_minus_one():
    scores = np.array([[0.1, 0.5, 0.3, 0.1],   # label 1: rank 1
                       [0.4, 0.3, 0.2, 0.1],   # label 2: rank 3
                       [0.1, 0.2, 0.3, 0.4],   # label 0: rank 4
                       [0.9, 0.0, 0.0, 0.0]])  # unlabelled
    labels = np.array([1, 2, 0, -1])
    assert topk_accuracy(scores, labels, ks=(1, 3, 5)) == pytest.approx({1: 1 / 3, 3: 2 / 3, 5: 1.0})
    # torch tensors are accepted as well
    assert topk_accuracy(torch.tensor(scores), torch.tensor(labels), ks=(1,))[1] == pytest.approx(1 / 3)


def test_topk_accuracy_tie_rule():
    # a tie is a hit unless at least k scores are strictly greater
    assert topk_accuracy([[0.5, 0.5, 0.5]], [2], ks=(1,)) == {1: 1.0}
    assert topk_accuracy([[0.9, 0.5, 0.5]], [2], ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_topk_accuracy_bad_input():
    with pytest.raises(ValueError, match="no labelled"):
        topk_accuracy(np.zeros((2, 3)), [-1, -1])
    with pytest.raises(ValueError, match="no labelled"):
        topk_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="outside"):
        topk_accuracy(np.zeros((1, 3)), [3])
    with pytest.raises(ValueError, match="NaN"):
        topk_accuracy([[np.nan, 1.0]], [0])


def test_topk_accuracy_matches_loop_on_random_data():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(200, 12)), rng.integers(-1, 12, size=200)
    got = topk_accuracy(scores, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        hits = [labels[i] in np.argsort(-scores[i])[:k] for i in range(200) if labels[i] >= 0]
        assert got[k] == pytest.approx(np.mean(hits))


def test_confusion_and_per_class_accuracy():
    cm = confusion_matrix([0, 1, 1, 2, 0], [0, 1, 2, 2, -1], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    acc = per_class_accuracy([0, 1, 1, 2], [0, 1, 2, 2], num_classes=4)
    np.testing.assert_allclose(acc[:3], [1.0, 1.0, 0.5])
    assert np.isnan(acc[3])  # class 3 has no sample
    with pytest.raises(ValueError, match="pred outside"):
        confusion_matrix([5], [0], num_classes=3)


def test_expected_calibration_error_hand_case():
    probs = np.array([[0.95, 0.05],   # conf .95, correct -> bin (.9, 1]
                      [0.85, 0.15],   # conf .85, wrong   -> bin (.8, .9]
                      [0.55, 0.45],   # conf .55, correct -> bin (.5, .6]
                      [0.58, 0.42],   # conf .58, wrong   -> bin (.5, .6]
                      [0.99, 0.01]])  # unlabelled
    labels = np.array([0, 1, 0, 1, -1])
    # (1 * |1 - .95| + 1 * |0 - .85| + 2 * |.5 - .565|) / 4
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(1.03 / 4)
    bins = calibration_bins(probs, labels, n_bins=10)
    np.testing.assert_array_equal(bins["count"], [0, 0, 0, 0, 0, 2, 0, 0, 1, 1])
    assert bins["confidence"][5] == pytest.approx(0.565) and np.isnan(bins["accuracy"][0])
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == 0.0
    with pytest.raises(ValueError, match="no labelled"):
        expected_calibration_error(probs, [-1] * 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([[2.0, -1.0]], [0])


ATTR_SCORES = np.array([[0.9, 0.8, 0.1, 0.7, 0.2, 0.3],   # ranking 0 1 3 5 4 2, positives {0, 4}
                        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # ranking 5 4 3 2 1 0, positive {5}
                        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])  # no positive: excluded
ATTR_LABELS = np.array([[1, -1, -1, -1, 1, -1],
                        [-1, -1, 0, -1, -1, 1],
                        [-1, 0, -1, -1, 0, -1]])
ATTR_GROUPS = np.array([1, 1, 1, 2, 2, 2])


def test_attribute_topk_recall_hand_case_with_groups():
    out = attribute_topk_recall(ATTR_SCORES, ATTR_LABELS, ks=(1, 2, 5), groups=ATTR_GROUPS)
    # image 0: top1 {0} -> 1/2, top2 {0,1} -> 1/2, top5 -> 2/2; image 1: 1 for every k
    assert out["top_k_recall"] == pytest.approx({1: 0.75, 2: 0.75, 5: 1.0})
    assert out["num_images"] == 2
    # group 1 = attributes 0-2: only image 0 has a positive (attribute 0, ranked first in the group)
    assert out["per_group"][1] == {"top_k_recall": {1: 1.0, 2: 1.0, 5: 1.0}, "num_images": 1}
    # group 2 = attributes 3-5: image 0's positive 4 ranks 3rd of (.7, .2, .3); image 1's 5 ranks 1st
    assert out["per_group"][2]["top_k_recall"] == pytest.approx({1: 0.5, 2: 0.5, 5: 1.0})
    # the fine-grained {1, 0} encoding gives the same numbers
    same = attribute_topk_recall(ATTR_SCORES, np.where(ATTR_LABELS == 1, 1, 0), ks=(1, 2, 5))
    assert same["top_k_recall"] == out["top_k_recall"]


def test_attribute_topk_recall_mask_and_ties():
    # masking attributes 1 and 3 (not ranked): image 0 ranks 0 5 4 2 -> top3 holds both positives
    assert attribute_topk_recall(ATTR_SCORES, ATTR_LABELS, mask=[1, 0, 1, 0, 1, 1], ks=(3,))["top_k_recall"] == {3: 1.0}
    # masking image 0's positive 0: its only positive 4 is 4th of 1 3 5 4 2 -> 0; image 1 -> 1
    mask = np.ones((3, 6), bool)
    mask[0, 0] = False
    assert attribute_topk_recall(ATTR_SCORES, ATTR_LABELS, mask=mask, ks=(3,))["top_k_recall"] == {3: 0.5}
    # all scores tied: nothing is strictly greater, so every positive is in the top 1
    assert attribute_topk_recall(np.zeros((1, 4)), [[0, 1, 1, 0]], ks=(1,))["top_k_recall"] == {1: 1.0}


def test_attribute_topk_recall_degenerate():
    with pytest.raises(ValueError, match="no image has a positive"):
        attribute_topk_recall(ATTR_SCORES, -np.ones((3, 6)))
    out = attribute_topk_recall(ATTR_SCORES, ATTR_LABELS, ks=(1,), groups=[1, 1, 1, 1, 1, 9])
    assert out["per_group"][9]["num_images"] == 1  # image 1's positive 5
    out = attribute_topk_recall(ATTR_SCORES[:1], ATTR_LABELS[:1], ks=(1,), groups=[1, 1, 1, 1, 1, 9])
    assert out["per_group"][9]["num_images"] == 0 and math.isnan(out["per_group"][9]["top_k_recall"][1])


def test_attribute_topk_recall_matches_loop_on_random_data():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(60, 30))
    labels = np.where(rng.random((60, 30)) < 0.1, 1, -1)
    got = attribute_topk_recall(scores, labels, ks=(3, 5))
    for k in (3, 5):
        recalls = []
        for i in range(60):
            positives = set(np.flatnonzero(labels[i] == 1))
            if positives:
                recalls.append(len(positives & set(np.argsort(-scores[i])[:k])) / len(positives))
        assert got["top_k_recall"][k] == pytest.approx(np.mean(recalls))
        assert got["num_images"] == len(recalls)


def test_single_choice_group_accuracy_hand_case():
    groups = [0, 0, 0, 1, 1]
    scores = np.array([[0.2, 0.7, 0.1, 0.6, 0.4],   # g0 right, g1 wrong
                       [0.5, 0.3, 0.2, 0.1, 0.9],   # g0 right, g1 right
                       [0.1, 0.2, 0.3, 0.5, 0.5]])  # g0 right, g1 tie -> right
    labels = np.array([[0, 1, 0, 0, 1],
                       [1, 0, 0, 0, 1],
                       [0, 0, 1, 0, 1]])
    out = single_choice_group_accuracy(scores, labels, groups)
    assert out["accuracy"] == pytest.approx({0: 1.0, 1: 2 / 3})
    assert out["mean_accuracy"] == pytest.approx(5 / 6)
    assert out["num_images"] == {0: 3, 1: 3}
    labels[1, :3] = 0  # image 1 has no positive in group 0: skipped there
    assert single_choice_group_accuracy(scores, labels, groups)["num_images"] == {0: 2, 1: 3}
    labels[0, :3] = 1
    with pytest.raises(ValueError, match="not single-choice"):
        single_choice_group_accuracy(scores, labels, groups)


# ---------------------------------------------------------------- retrieval

def reference_retrieval(q, q_ids, g, g_ids, ks, exclude=None):
    """Plain-loop reference: cosine ranking, ties put irrelevant items first, AP over relevant items."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits = {k: [] for k in ks}
    aps = []
    for i in range(len(q)):
        ranked = []
        for j in range(len(g)):
            if exclude is not None and exclude[i] == j:
                continue
            relevant = g_ids[j] == q_ids[i]
            ranked.append((-float(q[i] @ g[j]), relevant))
        ranked.sort()  # by similarity descending, then False (irrelevant) before True
        flags = [relevant for _, relevant in ranked]
        if not any(flags):
            continue
        found, precisions = 0, []
        for rank, relevant in enumerate(flags, start=1):
            if relevant:
                found += 1
                precisions.append(found / rank)
        aps.append(sum(precisions) / found)
        for k in ks:
            hits[k].append(any(flags[:k]))
    return {k: float(np.mean(v)) for k, v in hits.items()}, float(np.mean(aps)), len(aps)


def test_retrieval_topk_hand_case():
    gallery, gallery_ids = unit(0, 30, 60, 90), np.array(["A", "B", "A", "C"])
    # q0 (0 deg):  g0 A, g1 B, g2 A, g3 C -> relevant at ranks 1, 3: AP = (1 + 2/3) / 2
    # q1 (80 deg): g3 C, g2 A, g1 B, g0 A -> relevant at rank 3:    AP = 1/3
    # q2 (40 deg): g1 B, g2 A, g0 A, g3 C -> relevant at ranks 2, 3: AP = (1/2 + 2/3) / 2
    # q3 has an id absent from the gallery: excluded, counted
    queries, query_ids = unit(0, 80, 40, 10), np.array(["A", "B", "A", "Z"])
    for chunk in (1, 2, 1024):
        out = retrieval_topk(queries, query_ids, gallery, gallery_ids, ks=(1, 2, 3), chunk=chunk)
        assert out["top_k_accuracy"] == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
        assert out["mean_average_precision"] == pytest.approx((5 / 6 + 1 / 3 + 7 / 12) / 3)
        assert (out["num_queries"], out["num_evaluated"], out["num_without_relevant"]) == (4, 3, 1)


def test_retrieval_topk_exclude_self_same_set():
    emb, ids = unit(0, 20, 50, 90), np.array([7, 7, 8, 8])
    # leave-one-out: q0 -> g1 (7) hit; q1 -> g0 (7) hit; q2 -> g1 (7), g3 (8): rank 2; q3 -> g2 (8) hit
    out = retrieval_topk(emb, ids, emb, ids, ks=(1, 2), exclude_self=np.arange(4))
    assert out["top_k_accuracy"] == pytest.approx({1: 0.75, 2: 1.0})
    assert out["mean_average_precision"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    # without the exclusion every query finds itself first
    assert retrieval_topk(emb, ids, emb, ids, ks=(1,))["top_k_accuracy"] == {1: 1.0}
    # excluding a query's only relevant item removes the query
    out = retrieval_topk(emb[:2], [5, 6], emb, [5, 6, 6, 6], ks=(1,), exclude_self=[0, 1])
    assert (out["num_evaluated"], out["num_without_relevant"]) == (1, 1)
    assert out["top_k_accuracy"] == {1: 0.0}  # query 1 (20 deg): g0 (id 5) comes before g2 (id 6)


def test_retrieval_topk_ties_are_pessimistic():
    same = np.ones((3, 4))
    # all similarities equal: the irrelevant item is ranked before the relevant ones
    out = retrieval_topk(same[:1], ["A"], same, ["A", "A", "B"], ks=(1, 2))
    assert out["top_k_accuracy"] == {1: 0.0, 2: 1.0}
    assert out["mean_average_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_retrieval_topk_degenerate_inputs():
    with pytest.raises(ValueError, match="no query has a relevant"):
        retrieval_topk(unit(0), [1], unit(0, 10), [2, 3])
    with pytest.raises(ValueError, match="no query has a relevant"):  # its only match is itself, excluded
        retrieval_topk(unit(0), [5], unit(0, 10), [5, 6], exclude_self=[0])
    with pytest.raises(ValueError, match="equal width"):
        retrieval_topk(np.ones((2, 3)), [1, 2], np.ones((2, 4)), [1, 2])
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_topk(unit(0), [1], unit(0), [1], exclude_self=[3])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_topk(np.array([[np.nan, 1.0]]), [1], unit(0), [1])


@pytest.mark.parametrize("same_set", [False, True])
def test_retrieval_topk_matches_loop_reference(same_set):
    rng = np.random.default_rng(2)
    ks = (1, 5, 10, 20)
    if same_set:
        gallery = rng.normal(size=(120, 8)).astype(np.float32)
        gallery_ids = rng.integers(0, 30, size=120)
        queries, query_ids, exclude = gallery, gallery_ids, np.arange(120)
    else:
        queries, gallery = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(150, 8)).astype(np.float32)
        query_ids, gallery_ids = rng.integers(0, 25, size=40), rng.integers(0, 20, size=150)
        exclude = np.where(rng.random(40) < 0.3, rng.integers(0, 150, size=40), -1)
    hits, m_ap, n_eval = reference_retrieval(queries, query_ids, gallery, gallery_ids, ks, exclude)
    out = retrieval_topk(torch.from_numpy(queries), query_ids, gallery, gallery_ids, ks=ks,
                         exclude_self=exclude, chunk=16)
    assert out["num_evaluated"] == n_eval and out["num_queries"] == len(queries)
    assert out["top_k_accuracy"] == pytest.approx(hits)
    assert out["mean_average_precision"] == pytest.approx(m_ap, abs=1e-9)


def test_nearest_neighbors_order_and_exclusion():
    gallery = unit(0, 30, 60, 90)
    idx, sims = nearest_neighbors(unit(0, 80), gallery, k=3, exclude_self=[0, -1])
    np.testing.assert_array_equal(idx, [[1, 2, 3], [3, 2, 1]])
    np.testing.assert_allclose(sims[0], np.cos(np.deg2rad([30, 60, 90])), atol=1e-6)


# angles / labels of the leave-one-out hand case; "C" occurs once and is far from everything
LOO_ANGLES = (0, 10, 25, 60, 70, 100, 230)
LOO_LABELS = np.array(["A", "A", "B", "A", "B", "B", "C"])


def test_recall_at_k_and_map_at_r_hand_case():
    # neighbour lists (R = 2 for every A and B item):
    #  p0: A B A B B  -> MAP@R 1/2, R-prec 1/2, first hit 1
    #  p1: A B A B B  -> 1/2, 1/2, 1          p2 (B): A A A B B -> 0, 0, 4
    #  p3 (A): B B B A A -> 0, 0, 4           p4 (B): A B ... -> (1/2)/2, 1/2, 2
    #  p5 (B): B A B ... -> 1/2, 1/2, 1       p6 (C): no other C -> excluded
    out = recall_at_k_and_map_at_r(unit(*LOO_ANGLES), LOO_LABELS, ks=(1, 2, 4))
    assert out["recall_at_k"] == pytest.approx({1: 0.5, 2: 4 / 6, 4: 1.0})
    assert out["map_at_r"] == pytest.approx(1.75 / 6)
    assert out["r_precision"] == pytest.approx(1 / 3)
    assert (out["num_queries"], out["num_evaluated"], out["num_without_relevant"]) == (7, 6, 1)


def test_recall_at_k_agrees_with_retrieval_topk_and_map_at_r_loop():
    rng = np.random.default_rng(3)
    emb, labels = rng.normal(size=(80, 6)).astype(np.float32), rng.integers(0, 8, size=80)
    out = recall_at_k_and_map_at_r(emb, labels, ks=(1, 5, 10))
    same = retrieval_topk(emb, labels, emb, labels, ks=(1, 5, 10), exclude_self=np.arange(80))
    assert out["recall_at_k"] == pytest.approx(same["top_k_accuracy"])
    unit_emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    map_r = []
    for i in range(80):
        order = [j for j in np.argsort(-(unit_emb @ unit_emb[i]), kind="stable") if j != i]
        r = int((labels == labels[i]).sum()) - 1
        correct = [labels[j] == labels[i] for j in order[:r]]
        map_r.append(sum(np.cumsum(correct)[p] / (p + 1) for p in range(r) if correct[p]) / r)
    assert out["map_at_r"] == pytest.approx(np.mean(map_r), abs=1e-6)


def test_recall_at_k_degenerate():
    with pytest.raises(ValueError, match="no label occurs twice"):
        recall_at_k_and_map_at_r(unit(0, 10, 20), [1, 2, 3])


# ---------------------------------------------------------------- landmarks

LM_TRUE = np.array([[[10, 20], [50, 100], [0, 0]],
                    [[10, 10], [20, 20], [25, 25]]], dtype=np.float64)
LM_PRED = np.array([[[13, 28], [50, 100], [99, 99]],   # slot 0: (3/100, 8/200) -> 0.05; slot 1: 0
                    [[0, 0], [26, 28], [25, 30]]],      # slot 1: (6/50, 8/50) -> 0.2; slot 2: 5/50 -> 0.1
                   dtype=np.float64)
LM_VISIBLE = np.array([[True, True, False], [False, True, True]])
LM_SIZE = np.array([[100, 200], [50, 50]])  # (width, height)


def test_normalized_error_hand_case():
    out = normalized_error(LM_PRED, LM_TRUE, LM_VISIBLE, LM_SIZE)
    assert out["normalized_error"] == pytest.approx(0.35 / 4)  # (0.05 + 0 + 0.2 + 0.1) / 4
    assert out["per_landmark"] == pytest.approx({"0": 0.05, "1": 0.1, "2": 0.1})
    assert out["num_visible"] == 4
    # the same numbers from coordinates already normalized by (W, H)
    size = LM_SIZE[:, None, :]
    again = normalized_error(LM_PRED / size, LM_TRUE / size, LM_VISIBLE, None)
    assert again["normalized_error"] == pytest.approx(out["normalized_error"])


def test_normalized_error_slot_names_and_errors():
    pred = np.zeros((1, 8, 2))
    out = normalized_error(pred, pred + 0.1, np.ones((1, 8), bool))
    assert out["per_landmark"]["left_collar"] == pytest.approx(math.sqrt(0.02))
    true = LM_TRUE.copy()
    true[0, 2] = np.nan  # invisible: ignored
    assert normalized_error(LM_PRED, true, LM_VISIBLE, LM_SIZE)["num_visible"] == 4
    true[0, 0] = np.nan  # visible: an error
    with pytest.raises(ValueError, match="NaN"):
        normalized_error(LM_PRED, true, LM_VISIBLE, LM_SIZE)
    with pytest.raises(ValueError, match="no visible"):
        normalized_error(LM_PRED, LM_TRUE, np.zeros((2, 3), bool), LM_SIZE)
    with pytest.raises(ValueError, match="width, height"):
        normalized_error(LM_PRED, LM_TRUE, LM_VISIBLE, LM_SIZE[:1])


def test_detection_rate_hand_case():
    assert detection_rate(LM_PRED, LM_TRUE, LM_VISIBLE, LM_SIZE, thresholds=(0.06, 0.15, 0.3)) == \
        pytest.approx({0.06: 0.5, 0.15: 0.75, 0.3: 1.0})


# ---------------------------------------------------------------- landmarks in the original image's frame

PAD_AFFINE = np.array([[1.0, 4 / 3], [0.0, -1 / 6]])  # 160 x 120 photo padded to a square (test_transforms)


def test_apply_affine_matches_loop_and_refuses_bad_shapes():
    rng = np.random.default_rng(1)
    pts, aff = rng.uniform(size=(3, 8, 2)), rng.uniform(-1, 2, size=(3, 2, 2))
    got = apply_affine(pts, aff)
    for i in range(3):
        for k in range(8):
            np.testing.assert_allclose(got[i, k], [pts[i, k, a] * aff[i, 0, a] + aff[i, 1, a] for a in (0, 1)])
    with pytest.raises(ValueError, match=r"affine \(N, 2, 2\)"):
        apply_affine(pts, aff[:2])


@pytest.mark.parametrize("d", [1.0, 4.0])
def test_landmark_ne_is_normalized_by_the_original_image(d):
    from fashionlens.evaluation.report import landmark_metrics

    w, h = 160, 120
    true_px = np.array([[[40.0, 30.0], [100.0, 70.0]]])  # pixel indices in the original photo
    to_unit = lambda px: ((px + 0.5) / [w, h] - PAD_AFFINE[1]) / PAD_AFFINE[0]  # noqa: E731 original -> network input
    affine = PAD_AFFINE[None]
    vis, present = np.zeros((1, 2), np.int64), np.ones((1, 2), bool)
    down = landmark_metrics(to_unit(true_px + [0, d]), to_unit(true_px), vis, present, affine)
    assert down["landmark_ne"] == pytest.approx(d / h) and down["landmark_ne_frame"] == "original"
    assert down["landmark_ne_input"] == pytest.approx(d / h * 3 / 4)  # the padded square squeezes y by 72 / 96
    right = landmark_metrics(to_unit(true_px + [d, 0]), to_unit(true_px), vis, present, affine)
    assert right["landmark_ne"] == pytest.approx(d / w) and right["landmark_ne_input"] == pytest.approx(d / w)
    plain = landmark_metrics(to_unit(true_px + [0, d]), to_unit(true_px), vis, present)  # no affine: input frame
    assert plain["landmark_ne"] == pytest.approx(d / h * 3 / 4) and plain["landmark_ne_frame"] == "input"
    assert landmark_metrics(to_unit(true_px), to_unit(true_px), vis + 1, present, affine) == {}  # none visible


# ---------------------------------------------------------------- boxes


def iou_loop(p, t) -> float:
    """Plain reference: IoU of two x1 y1 x2 y2 boxes, 0 when the union is empty."""
    area = lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])  # noqa: E731
    iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
    union = area(p) + area(t) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def test_box_iou_hand_cases():
    pred = [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 1, 3], [3, 3, 1, 1], [0, 0, 0, 0]]
    true = [[0, 0, 2, 2], [1, 0, 3, 2], [2, 2, 3, 3], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 0, 0]]
    # same, half-shifted (2 / 6), disjoint, contained (1 / 4), zero-width, inverted, two empty boxes
    np.testing.assert_allclose(box_iou(pred, true), [1.0, 1 / 3, 0.0, 0.25, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 boxes"):
        box_iou(np.zeros((2, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        box_iou([[0, 0, np.nan, 1]], [[0, 0, 1, 1]])


def test_box_iou_matches_loop_on_random_boxes_with_degenerate_ones():
    rng = np.random.default_rng(3)
    pred, true = rng.uniform(0, 1, (300, 4)), rng.uniform(0, 1, (300, 4))  # about 3/4 inverted on some axis
    true[:40] = pred[:40]  # identical
    pred[40:60, 2] = pred[40:60, 0]  # zero width
    true[60:80] = 0.0  # empty truths
    got = box_iou(pred, true)
    np.testing.assert_allclose(got, [iou_loop(p, t) for p, t in zip(pred, true)], atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all() and np.isfinite(got).all()
    ok = (pred[:40, 2] > pred[:40, 0]) & (pred[:40, 3] > pred[:40, 1])
    np.testing.assert_allclose(got[:40][ok], 1.0)


def test_box_metrics_counts_only_images_with_a_box():
    pred = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [5, 5, 6, 6.0]])
    true = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 0, 0.0]])
    res = box_metrics(pred, true, [True, True, True, False])  # IoU 1, 1/2 (counts at 0.5), 1/4; the last has no box
    assert res == pytest.approx({"iou_mean": (1 + 0.5 + 0.25) / 3, "accuracy": 2 / 3, "num_boxes": 3})
    assert box_metrics(pred, true, [False] * 4) == {}
    with pytest.raises(ValueError, match="has_box"):
        box_metrics(pred, true, [True])


# ---------------------------------------------------------------- compute_metrics


def protocol_fixture():
    """Two consumer and two shop rows of two items, with category, attribute, landmark and box targets."""
    samples = [Sample(image=f"{i}.jpg", item_id=f"id_{i % 2}", domain=("consumer", "shop")[i // 2], split="test")
               for i in range(4)]
    emb = unit(0, 90, 5, 95)  # each consumer photo is nearest to its own item's shop photo
    preds = {"embedding": emb, "category": np.eye(3)[[0, 1, 2, 2]] * 5, "attributes": np.eye(4)[[0, 1, 2, 3]],
             "landmarks": np.full((4, 8, 2), 0.5), "bbox": np.tile([0.0, 0.0, 0.5, 0.5], (4, 1))}
    targets = {"category": np.array([0, 1, 2, 0]), "attributes": np.eye(4)[[0, 1, 2, 2]], "attribute_mask": np.ones((4, 4)),
               "landmarks": np.full((4, 8, 2), 0.6), "visibility": np.zeros((4, 8), np.int64),
               "landmark_mask": np.ones((4, 8), bool), "bbox": np.tile([0.0, 0.0, 0.5, 0.25], (4, 1)),
               "has_bbox": np.array([True, True, False, True]), "landmark_affine": np.tile([[2.0, 1.0], [0.0, 0.0]], (4, 1, 1))}
    info = DatasetInfo("tiny", categories=["a", "b", "c"], attributes=["p", "q", "r", "s"], attribute_groups=[1] * 4)
    return preds, targets, samples, info


def test_compute_metrics_keys_and_skips():
    from fashionlens.evaluation.report import RETRIEVAL_KS, compute_metrics

    assert 40 in RETRIEVAL_KS
    preds, targets, samples, info = protocol_fixture()
    m = compute_metrics(preds, targets, samples, info)
    assert m["category_top1"] == 0.75 and m["attribute_recall_top3"] == 1.0
    assert m["c2s_top1"] == 1.0 and m["c2s_top40"] == 1.0 and m["retrieval_top40"] == 1.0
    assert m["retrieval_protocol"] == "c2s"
    assert m["bbox_iou_mean"] == pytest.approx(0.5) and m["bbox_acc_iou50"] == 1.0 and m["bbox_images"] == 3
    assert m["landmark_ne"] == pytest.approx(math.hypot(0.2, 0.1))  # x scaled by 2: the original frame
    assert m["landmark_ne_input"] == pytest.approx(math.hypot(0.1, 0.1))
    skipped = compute_metrics(preds, targets, samples, info, categories=False, attributes=False)
    assert skipped["category_top1"] is None and skipped["attribute_recall_top3"] is None
    assert "category_confusion" not in skipped and skipped["c2s_top40"] == 1.0
    del targets["landmark_affine"]
    assert compute_metrics(preds, targets, samples, info)["landmark_ne_frame"] == "input"


# ---------------------------------------------------------------- plots

def assert_png(path, min_side=100):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_side and max(image.size) < 5000


def test_plots_write_pngs(tmp_path):
    from fashionlens.evaluation.plots import plot_confusion, plot_curves, plot_per_class, plot_retrieval_grid

    names = ["tee", "dress", "jeans"]
    assert_png(plot_confusion(np.array([[5, 1, 0], [0, 3, 2], [0, 0, 0]]), names, tmp_path / "cm.png"))
    assert_png(plot_per_class(np.array([0.8, 0.6, np.nan]), names, tmp_path / "sub" / "acc.png"))
    history = [{"epoch": 1, "loss": 2.0, "top1": 0.2}, {"epoch": 2, "loss": 1.5}, {"epoch": 3, "loss": 1.1, "top1": 0.5}]
    assert_png(plot_curves(history, ["loss", "top1"], tmp_path / "curves.png"))
    images = [Image.new("RGB", (32, 48), c) for c in ("red", "blue", "gray")]
    path = plot_retrieval_grid(images[:2], [images, images[:1]], [[True, False, True], [False]], tmp_path / "grid.png")
    assert_png(path)
    with pytest.raises(ValueError, match="same length"):
        plot_retrieval_grid(images[:1], [images], [[True]], tmp_path / "bad.png")
