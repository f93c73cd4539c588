"""benchmarks/bench_answer_loop.py: the simulated person's answers (the rule exactly, the wrong share statistically)
and one end-to-end round of the loop (seed run, catalog, answers, export, fine-tune, reference) with tiny_cnn."""

from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_answer_loop as bench

CLASSES = ["dress", "hat", "pants", "shirt", "shoes", "t-shirt"]


def test_right_answers_confirm_right_predictions_and_correct_wrong_ones_to_the_truth():
    rng = np.random.default_rng(0)
    assert bench.simulated_answer("hat", "hat", CLASSES, 0.0, rng) == bench.Answer("yes", None, "hat", False)
    assert bench.simulated_answer("hat", "pants", CLASSES, 0.0, rng) == bench.Answer("no", "pants", "pants", False)


def test_wrong_answers_confirm_a_wrong_prediction_or_miscorrect_a_right_one():
    rng = np.random.default_rng(0)
    assert bench.simulated_answer("hat", "pants", CLASSES, 1.0, rng) == bench.Answer("yes", None, "hat", True)
    seen = set()
    for _ in range(200):
        a = bench.simulated_answer("shirt", "shirt", CLASSES, 1.0, rng)
        assert a.verdict == "no" and a.wrong and a.category == a.label and a.label in CLASSES and a.label != "shirt"
        seen.add(a.label)
    assert seen == set(CLASSES) - {"shirt"}  # every other class can be the wrong correction


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="among the classes"):
        bench.simulated_answer("coat", "hat", CLASSES, 0.1, rng)
    with pytest.raises(ValueError, match="wrong_share"):
        bench.simulated_answer("hat", "hat", CLASSES, 1.5, rng)


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_the_wrong_share_holds_and_every_answer_follows_the_rule(share):
    """20,000 answers to a model right 70% of the time: the share of wrong labels is ``share`` within 4.5 standard
    errors, the rule holds answer by answer, wrong corrections spread evenly over the other classes, and the
    same seed gives the same answers."""
    rng, truth_rng = np.random.default_rng(1), np.random.default_rng(2)
    n, wrong, by_class = 20_000, 0, collections.Counter()
    answers = []
    for _ in range(n):
        truth = CLASSES[int(truth_rng.integers(len(CLASSES)))]
        predicted = truth if truth_rng.random() < 0.7 else CLASSES[int(truth_rng.integers(len(CLASSES)))]
        a = bench.simulated_answer(predicted, truth, CLASSES, share, rng)
        answers.append(a)
        assert a.wrong == (a.label != truth)
        assert (a.verdict == "yes") == (a.label == predicted)  # "yes" keeps the prediction, "no" changes it
        assert a.category == (None if a.verdict == "yes" else a.label)
        if not a.wrong:
            assert a.label == truth
        elif predicted != truth:
            assert a.label == predicted  # the person agreed with the model's mistake
        else:
            by_class[CLASSES.index(a.label) - CLASSES.index(truth)] += 1  # offset of the wrong class
        wrong += a.wrong
    assert abs(wrong / n - share) < 4.5 * np.sqrt(share * (1 - share) / n)
    counts = np.array([by_class[k] for k in by_class])
    assert abs(counts.sum() / n - 0.7 * share - 0.3 * share / len(CLASSES)) < 0.02  # right predictions miscorrected
    again = np.random.default_rng(1)
    truth_rng = np.random.default_rng(2)
    for a in answers[:500]:
        truth = CLASSES[int(truth_rng.integers(len(CLASSES)))]
        predicted = truth if truth_rng.random() < 0.7 else CLASSES[int(truth_rng.integers(len(CLASSES)))]
        assert bench.simulated_answer(predicted, truth, CLASSES, share, again) == a


def test_wrong_corrections_are_uniform_over_the_other_classes():
    rng = np.random.default_rng(3)
    counts = collections.Counter(bench.simulated_answer("hat", "hat", CLASSES, 1.0, rng).label for _ in range(6000))
    expected = 6000 / (len(CLASSES) - 1)
    assert set(counts) == set(CLASSES) - {"hat"}
    assert all(abs(c - expected) < 4.5 * np.sqrt(expected) for c in counts.values())


def test_split_train_keeps_a_stratified_seed_and_disjoint_rounds():
    labels = np.repeat(np.arange(4), [50, 30, 12, 8])
    seed, parts = bench.split_train(labels, 0.1, 3, seed=0)
    assert sorted(np.bincount(labels[seed], minlength=4)) == sorted([5, 3, 1, 1])
    every = np.concatenate([seed, *parts])
    assert len(every) == len(labels) == len(set(every.tolist()))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    _, few = bench.split_train(labels, 0.1, 2, seed=0, per_round=7)
    assert [len(p) for p in few] == [7, 7]


# -- one round end to end --------------------------------------------------------------------------------------
def photo_folder(root, per_class_train=10, per_class_val=4):
    """root/{train,validation}/<class>/*.jpg: three classes told apart by colour, with noise."""
    from PIL import Image

    colours = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class_train), ("validation", per_class_val)):
        for name, colour in colours.items():
            os.makedirs(root / split / name)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return root


def test_one_round_end_to_end_with_tiny_cnn(tmp_path, one_thread):
    photos = photo_folder(tmp_path / "photos")
    args = bench.parse_args(["--photos", str(photos), "--work", str(tmp_path / "work"), "--rounds", "1",
                             "--seed-share", "0.2", "--wrong-share", "0.5", "--backbone", "tiny_cnn",
                             "--frozen-stages", "0", "--image-size", "32", "--seed-epochs", "1", "--round-epochs", "1",
                             "--threads", "1",
                             "--set", "model.pretrained=false", "--set", "model.hidden_dim=16",
                             "--set", "model.embedding_dim=8", "--set", "model.tta_flip=false",
                             "--set", "data.num_workers=0", "--set", "train.batch_size=8"])
    result = bench.run_loop(args)
    first, answered = result["rows"]
    assert first["round"] == 0 and first["labelled"] == 6  # 2 of 10 per class
    assert answered["answers"] == 24 and answered["labelled"] == 30  # the seed (confirmed) + every answer
    assert answered["confirmed"] + answered["corrected"] == 24
    assert answered["by_provenance"]["confirmed"] >= 6
    # the manifest's label noise is exactly the wrong answers (the seed is right)
    assert answered["manifest_wrong"] == answered["answers_wrong"]
    assert answered["label_noise"] == pytest.approx(answered["answers_wrong"] / 30)
    for row in (first, answered, result["reference"]):
        assert 0.0 <= row["val_top1"] <= 1.0 and row["val_images"] == 12
    assert result["reference"]["labelled"] == 30 and result["reference"]["epochs"] >= 1
    config = bench.load_yaml(os.path.join(answered["run_dir"], "config.yaml"))
    assert config.train.init_from == first["run_dir"] and config.train.val_split == ""
    assert config.train.lr == bench.load_recipe("finetune").train.lr  # the shipped finetune recipe
    assert "| all labels (reference" in bench.table(result)
    svg = bench.plot(result, str(tmp_path / "loop.svg"), "test")
    with open(svg, encoding="utf-8") as f:
        assert f.read().lstrip().startswith("<?xml")
    json.dumps(result, default=str)
