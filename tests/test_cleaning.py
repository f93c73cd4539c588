"""Model-in-the-loop cleaning, the manifest it writes, the feature cache, and the `audit` / `clean` commands
end to end on a tiny garments render."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from test_audit import clusters
from test_export import make_run

import fashionlens
from fashionlens import cli
from fashionlens.audit import features as features_module
from fashionlens.audit.cleaning import (
    clean_labels,
    seed_fraction,
    seed_from_manifest,
    write_manifest,
)
from fashionlens.audit.features import compute_features
from fashionlens.audit.noise import uniform_noise

torch.set_num_threads(1)


def run_cli(argv: list[str]) -> int:
    return cli.main(argv)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    assert cli.main(["synth", str(root / "g"), "--items", "24", "--views", "3", "--size", "64", "--quiet"]) == 0
    return root


def noisy_clusters(rate=0.3):
    x, y = clusters(k=5, per_class=100, dim=16, spread=1.2, seed=1)
    noisy, wrong = uniform_noise(y, rate, seed=0)
    seed = seed_fraction(noisy, 0.1, seed=0) & ~wrong  # the trusted images are truly clean
    return x, y, noisy, wrong, seed


def test_cleaning_improves_label_accuracy():
    x, y, noisy, _, seed = noisy_clusters()
    seen = []
    result = clean_labels(x, noisy, seed, rounds=3, true_labels=y, on_round=lambda s, lab, st: seen.append(s))
    keep = result.keep
    given_accuracy = (noisy == y).mean()
    assert given_accuracy == pytest.approx(0.7)
    assert (result.labels[keep] == y[keep]).mean() > 0.95 > given_accuracy + 0.2
    assert keep.sum() > 0.6 * len(y)  # most images survive
    assert (result.status[seed] == "seed").all() and (result.labels[seed] == noisy[seed]).all()
    assert (result.labels[~keep] == -1).all() and set(result.status) <= {"seed", "kept", "relabelled", "dropped"}
    relabelled = result.status == "relabelled"
    assert relabelled.any() and (result.labels[relabelled] != noisy[relabelled]).all()
    for r in result.rounds:
        assert r["seed"] + r["kept"] + r["relabelled"] + r["dropped"] == len(y)
    assert seen == result.rounds and result.rounds[0]["trained_on"] == seed.sum()
    assert result.rounds[-1]["kept_accuracy"] == pytest.approx((result.labels[keep] == y[keep]).mean())


def test_drop_mode_and_unlabelled_images():
    x, y, noisy, wrong, seed = noisy_clusters()
    dropped = clean_labels(x, noisy, seed, mode="drop")
    assert not (dropped.status == "relabelled").any()
    assert (dropped.status[wrong] == "dropped").mean() > 0.9
    unlabelled = noisy.copy()
    unlabelled[~seed] = -1
    labelled = clean_labels(x, unlabelled, seed, rounds=3, threshold=0.6)
    assert not (labelled.status == "kept").any()  # nothing to keep: every image gets a predicted label or none
    got = labelled.labels >= 0
    assert got.sum() > 0.5 * len(y) and (labelled.labels[got] == y[got]).mean() > 0.95


def test_cleaning_rejects_bad_input():
    x, _, noisy, _, seed = noisy_clusters()
    with pytest.raises(ValueError, match="mode"):
        clean_labels(x, noisy, seed, mode="fix")
    with pytest.raises(ValueError, match="at least 2 classes"):
        clean_labels(x, noisy, np.arange(len(noisy)) == 0)
    with pytest.raises(ValueError, match="must agree"):
        clean_labels(x[:-1], noisy, seed)


def test_manifest_round_trip(render, tmp_path):
    data = fashionlens.read(f"garments:{render / 'g'}")
    samples = data.samples[:20]
    labels = [s.category if i % 4 else -1 for i, s in enumerate(samples)]  # every 4th dropped
    labels[1] = (labels[1] + 1) % len(data.info.categories)  # one relabelled
    path = str(tmp_path / "m" / "clean.csv")
    written = write_manifest(path, samples, labels, data.info.categories, category_paths=data.info.category_paths,
                             attributes=data.info.attributes, extra={"status": ["x"] * 20})
    back = fashionlens.read(f"manifest:{path}")
    kept = [s for s, lab in zip(samples, labels) if lab >= 0]
    assert written == len(back) == 15
    for a, b, lab in zip(back.samples, kept, [lab for lab in labels if lab >= 0]):
        assert a.image == b.image and a.split == b.split and a.item_id == b.item_id and a.domain == b.domain
        assert a.category_name == data.info.categories[lab] and a.bbox == b.bbox
        np.testing.assert_allclose(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.visibility, b.visibility)
        names = {back.info.attributes[j] for j in np.flatnonzero(a.attributes == 1)}
        assert names == {data.info.attributes[j] for j in np.flatnonzero(b.attributes == 1)}
    assert back.samples[0].category_name == data.info.categories[(samples[1].category + 1) % 14]
    assert set(back.info.category_paths) <= set(data.info.category_paths)


def test_seed_manifest_errors_name_the_line(render, tmp_path):
    data = fashionlens.read(f"garments:{render / 'g'}")
    path = tmp_path / "seed.csv"
    path.write_text(f"image,category\n{data.samples[0].image},Tee\n{data.samples[1].image},Kilt\n")
    with pytest.raises(ValueError, match=r"seed\.csv:3: seed category 'Kilt'"):
        seed_from_manifest(data.samples, str(path), data.info.categories)
    path.write_text(f"image,category\n{render}/nowhere.jpg,Tee\n")
    with pytest.raises(FileNotFoundError):
        seed_from_manifest(data.samples, str(path), data.info.categories)
    path.write_text(f"image,category\n{data.samples[2].image},Coat\n")
    mask, labels = seed_from_manifest(data.samples, str(path), data.info.categories)
    assert mask.sum() == 1 and mask[2] and labels[2] == data.info.categories.index("Coat")


def test_feature_cache_hit_and_invalidation(render, tmp_path, monkeypatch):
    samples = fashionlens.read(f"garments:{render / 'g'}").samples[:6]
    run = make_run(tmp_path)
    vectors, rows = compute_features(samples, run, cache_dir=str(tmp_path / "cache"))
    assert vectors.shape == (6, 256) and rows.tolist() == list(range(6)) and np.isfinite(vectors).all()
    embedding, _ = compute_features(samples, run, kind="embedding")
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    monkeypatch.setattr(features_module, "load_feature_model", lambda *a, **k: pytest.fail("cache missed"))
    again, _ = compute_features(samples, run, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again, vectors)
    os.utime(samples[0].image, ns=(1, 1))  # the image changed: new key, recomputed
    with pytest.raises(pytest.fail.Exception, match="cache missed"):
        compute_features(samples, run, cache_dir=str(tmp_path / "cache"))


def test_cli_audit_end_to_end(render, tmp_path, capsys):
    out = tmp_path / "audit"
    code = run_cli(["audit", "--model", "imagenet", "--image-size", "64", "--data", f"garments:{render / 'g'}",
                    "--out", str(out), "--folds", "3", "--cache", str(tmp_path / "cache"), "--quiet", "--threads", "1"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == printed["images"] == 72 and summary["classes"] == 14
    assert len(summary["noise_matrix"]) == 14 and "cleanlab_flagged" in summary
    with open(out / "suspects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["flagged"]
    assert all(r["given"] != r["suggested"] and os.path.isfile(r["image"]) for r in rows)
    page = (out / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") == len(rows) and "Suspected label errors" in page


def test_cli_clean_end_to_end_writes_a_trainable_manifest(render, tmp_path, capsys):
    run = make_run(tmp_path)
    manifest = tmp_path / "clean.csv"
    code = run_cli(["clean", "--model", run, "--data", f"garments:{render / 'g'}", "--out", str(manifest),
                    "--simulate-seed", "0.5", "--rounds", "2", "--threshold", "0.5", "--no-cache", "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["seed_source"] == "simulated" and "SIMULATION" in captured.err
    data = fashionlens.read(f"manifest:{manifest}")
    assert len(data) == report["rows"] and report["passthrough"] == 21  # val + test copied unchanged
    train = data.split("train")
    r = report["rounds"][-1]
    assert len(train) == r["seed"] + r["kept"] + r["relabelled"] and r["seed"] == report["seed"] >= 14
    assert data.splits()["val"] == 9 and data.splits()["test"] == 12
    with open(manifest, newline="") as f:
        status = {row["status"] for row in csv.DictReader(f)}
    assert "seed" in status and "unchanged" in status and "dropped" not in status
    assert run_cli(["clean", "--model", run, "--data", f"garments:{render / 'g'}", "--out", str(manifest),
                    "--simulate-seed", "1.5", "--no-cache", "--quiet"]) == 2
    assert "seed fraction" in capsys.readouterr().err
    # a fraction is no longer a trusted seed: --seed-clean takes a file of checked images
    assert run_cli(["clean", "--model", run, "--data", f"garments:{render / 'g'}", "--out", str(manifest),
                    "--seed-clean", "0.5", "--no-cache", "--quiet"]) == 2
    assert "--simulate-seed 0.5" in capsys.readouterr().err
