"""The `fashionlens` command end to end on tiny rendered data: synth, data stats/show, train, evaluate, predict."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from fashionlens.cli import main

from conftest import require_clothing_small

TINY = ["--backbone", "tiny_cnn", "--no-pretrained", "--image-size", "48", "--batch-size", "16", "--quiet",
        "--set", "train.pk_items=4", "--set", "train.checkpoint_every=0"]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "garments"
    assert main(["synth", str(out), "--items", "20", "--views", "4", "--size", "64", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(render, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", f"garments:{render}", "--out", str(run), "--epochs", "2", *TINY]) == 0
    return run


def test_data_stats_json_keys(render, capsys):
    assert main(["data", "stats", f"garments:{render}", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_images"] == 80 and stats["num_items"] == 20
    assert stats["num_categories"] == 14 and stats["num_attributes"] > 30
    assert stats["num_with_landmarks"] == 80 and stats["num_with_bbox"] == 80
    assert sum(stats["splits"].values()) == 80 and set(stats["splits"]) <= {"train", "val", "test"}


def test_data_stats_real_photos(capsys):
    root = require_clothing_small()
    assert main(["data", "stats", f"folder:{root}", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_images"] == 3409 and stats["num_categories"] == 10
    assert set(stats["splits"]) == {"train", "val"} and stats["num_with_bbox"] == 0 and stats["num_items"] == 0


def test_data_show_writes_sheet(render, tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["data", "show", f"garments:{render}", "--out", str(out), "--n", "8", "--thumb", "64"]) == 0
    with Image.open(out) as im:
        assert im.size == (8 * 68, 1 * 82)
        assert len(set(im.convert("RGB").tobytes()[i:i + 3] for i in range(0, im.width * im.height * 3, 3))) > 50  # real pictures, not a blank canvas


def test_bad_spec_is_a_clear_error(capsys):
    assert main(["data", "stats", "nosuchformat:/x"]) == 2
    err = capsys.readouterr().err
    assert "unknown data spec" in err and "garments:PATH" in err
    assert main(["data", "stats", "folder:/definitely/not/here"]) == 2


def test_bad_override_is_named(render, tmp_path, capsys):
    assert main(["train", "--data", f"garments:{render}", "--out", str(tmp_path / "r"),
                 "--set", "train.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err


def test_train_writes_a_run(trained):
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "best.pt", "last.pt"):
        assert (trained / name).is_file(), name
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["epoch"] == 2


def test_evaluate_json_keys(render, trained, tmp_path, capsys):
    assert main(["evaluate", "--model", str(trained), "--data", f"garments:{render}", "--json",
                 "--out", str(tmp_path / "rep")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("category_top1", "category_top3", "category_top5", "attribute_recall_top3", "attribute_recall_top5",
                "landmark_ne", "retrieval_top1", "retrieval_top20", "inshop_top1", "inshop_top20", "c2s_top1",
                "c2s_top20"):
        assert isinstance(metrics[key], float) and 0 <= metrics[key] <= 1 or key == "landmark_ne", key
    assert metrics["category_top1"] <= metrics["category_top3"] <= metrics["category_top5"]
    assert metrics["c2s_top1"] <= metrics["c2s_top20"]
    for name in ("report.json", "report.md", "confusion.png", "per_class.png", "retrieval.png"):
        assert (tmp_path / "rep" / name).is_file(), name


def test_evaluate_at_another_eval_scale(render, trained, capsys):
    from fashionlens.runs import run_outputs

    spec = f"garments:{render}"
    plain = run_outputs(str(trained), spec, split="val", progress=False)[0]["embedding"]
    same = run_outputs(str(trained), spec, split="val", progress=False, eval_scale=1.0)[0]["embedding"]
    larger = run_outputs(str(trained), spec, split="val", progress=False, eval_scale=1.5)[0]["embedding"]
    assert (plain == same).all() and plain.shape == larger.shape
    assert abs(plain - larger).max() > 1e-3  # 72 px inputs instead of 48: other features
    assert main(["evaluate", "--model", str(trained), "--data", spec, "--split", "val", "--json",
                 "--eval-scale", "1.5"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["category_top1"] <= 1
    assert main(["evaluate", "--model", str(trained), "--data", spec, "--eval-scale", "5"]) == 2
    assert "eval_scale" in capsys.readouterr().err


def test_predict_json_lines_in_order_with_errors(render, trained, tmp_path, capsys):
    shop = sorted((render / "category" / "img").rglob("shop_01.jpg"))[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    paths = [str(shop[0]), str(bad), str(shop[1]), str(tmp_path / "missing.jpg"), str(shop[2])]
    assert main(["predict", "--model", str(trained), *paths]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["image"] for a in answers] == paths
    assert "error" in answers[1] and "bad.jpg" in answers[1]["error"]
    assert "error" in answers[3] and "missing.jpg" in answers[3]["error"]
    good = answers[0]
    assert good["category"] == good["category_scores"][0]["name"] and len(good["category_scores"]) == 5
    assert abs(sum(s["score"] for s in good["category_scores"])) <= 1.0 + 1e-6
    assert all({"name", "x", "y", "visibility"} <= set(lm) for lm in good["landmarks"])
    x1, y1, x2, y2 = good["bbox"]
    assert 0 <= x1 <= x2 <= good["width"] and 0 <= y1 <= y2 <= good["height"]
    assert isinstance(good["attributes"], list)


def test_module_entry_point(render):
    out = subprocess.run([sys.executable, "-m", "fashionlens", "data", "stats", f"garments:{render}", "--json"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["num_images"] == 80


def test_demo_quick_then_reuses(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--quick", "--no-serve"]) == 0
    first = capsys.readouterr().out
    assert "rendering" in first and "training" in first and "consumer-to-shop top-1 / top-20" in first
    assert (work / "garments_sheet.png").is_file() and (work / "run" / "best.pt").is_file()
    assert (work / "report" / "report.md").is_file()
    assert "catalog: 40 items" in first and (work / "catalog" / "items.db").is_file()
    assert main(["demo", "--workdir", str(work), "--quick", "--no-serve"]) == 0  # second run reuses render and model
    second = capsys.readouterr().out
    assert "reusing the rendered garment set" in second and "reusing the trained model" in second
    # the demo calibrates its run and writes what it was trained on; it serves hedged, guided answers
    assert (work / "run" / "calibration.json").is_file() and (work / "run" / "familiarity.npz").is_file()
    assert "calibrated the model" in first and "familiarity:" in first
    from fashionlens.cli.serve import demo_settings

    settings = demo_settings(str(work / "run"), str(work / "catalog"), "k")
    assert settings.guide == "imagenet" and settings.target_accuracy == 0.9 and settings.api_key == "k"
    (work / "run" / "calibration.json").unlink()
    assert demo_settings(str(work / "run"), str(work / "catalog"), "k").target_accuracy is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_http(render, trained, tmp_path):
    import time
    import urllib.request

    catalog = tmp_path / "cat"
    assert main(["catalog", "build", "--model", str(trained), "--data", f"garments:{render}", "--out", str(catalog)]) == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fashionlens", "serve", "--catalog", str(catalog), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "FASHIONLENS_API_KEY": "k"})
    try:
        deadline, health = time.time() + 90, None
        while time.time() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert health is not None and health["status"] == "ok" and health["catalog_items"] == 80
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert b"fashionlens" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
