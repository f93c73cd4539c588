"""``train.init_from``: the backbone is always copied; the heads too when the new run has the init run's label set
(categories, attributes, taxonomy levels, items) and model layout, with a log line saying which happened."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from fashionlens.training.checkpoint import load_checkpoint
from fashionlens.training.fit import Trainer, fit, init_backbone_from

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 small photos per colour class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    files = []
    for name, colour in COLOURS.items():
        for i in range(12):
            path = root / f"{name}-{i}.jpg"
            Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 25, (40, 32, 3)), 0, 255).astype(np.uint8)).save(path)
            files.append((str(path), name))
    return files


def manifest(path, rows, rename=None) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["image", "category", "split"])
        for image, name in rows:
            out.writerow([image, (rename or {}).get(name, name), "train"])
    return f"manifest:{path}"


def tiny(spec: str, init_from: str = "", hidden: int = 16) -> RunConfig:
    return RunConfig(data=DataConfig(spec=spec, image_size=32, num_workers=0),
                     model=ModelConfig(name="global", backbone="tiny_cnn", pretrained=False, hidden_dim=hidden,
                                       embedding_dim=8, use_bbox=False),
                     loss=LossConfig(metric_loss="none", metric=0.0),
                     train=TrainConfig(epochs=1, batch_size=8, checkpoint_every=0, val_split="", init_from=init_from,
                                       select_metric="last"),
                     threads=1)


@pytest.fixture(scope="module")
def init_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("init")
    fit(tiny(manifest(out / "a.csv", photos)), str(out / "run"), progress=False, log=lambda *_: None)
    return str(out / "run")


def trainer(cfg: RunConfig, out) -> tuple[Trainer, list[str]]:
    logs: list[str] = []
    return Trainer(cfg, str(out), progress=False, log=logs.append), logs


def split(state: dict) -> tuple[dict, dict]:
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    return backbone, {k: v for k, v in state.items() if not k.startswith("backbone.")}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_label_set_copies_the_heads_too(photos, init_run, tmp_path):
    t, logs = trainer(tiny(manifest(tmp_path / "b.csv", photos[::2]), init_run), tmp_path / "tuned")
    saved_backbone, saved_heads = split(load_checkpoint(os.path.join(init_run, "best.pt"))["model"])
    backbone, heads = split(t.model.state_dict())
    assert same(backbone, saved_backbone) and same(heads, saved_heads)
    line = next(m for m in logs if m.startswith("initialised"))
    assert f"{len(saved_heads)} head tensors from {init_run}" in line and "heads continue" in line
    assert same(split(t.eval_model.state_dict())[1], saved_heads)  # what validation and checkpoints use


def test_other_categories_keep_only_the_backbone(photos, init_run, tmp_path):
    spec = manifest(tmp_path / "c.csv", photos, rename={"red": "crimson"})  # same count, another name
    t, logs = trainer(tiny(spec, init_run), tmp_path / "tuned")
    saved_backbone, saved_heads = split(load_checkpoint(os.path.join(init_run, "best.pt"))["model"])
    backbone, heads = split(t.model.state_dict())
    assert same(backbone, saved_backbone) and heads.keys() == saved_heads.keys()
    assert not torch.equal(heads["category.weight"], saved_heads["category.weight"])
    line = next(m for m in logs if m.startswith("initialised"))
    assert "backbone tensors from" in line and "heads start afresh: its categories differ" in line


def test_another_head_layout_keeps_only_the_backbone(photos, init_run, tmp_path):
    t, logs = trainer(tiny(manifest(tmp_path / "d.csv", photos), init_run, hidden=24), tmp_path / "tuned")
    saved_backbone, _ = split(load_checkpoint(os.path.join(init_run, "best.pt"))["model"])
    assert same(split(t.model.state_dict())[0], saved_backbone)
    assert "other names or shapes" in next(m for m in logs if m.startswith("initialised"))


def test_without_labels_only_the_backbone_is_copied(init_run, photos, tmp_path):
    from fashionlens.models import build_model

    model = build_model(tiny("").model, num_categories=3, num_attributes=0)
    before = split(model.state_dict())[1]
    n, heads, why = init_backbone_from(model, init_run)
    assert n > 0 and heads == 0 and why
    assert same(split(model.state_dict())[1], before)


def test_the_continued_heads_train_on(photos, init_run, tmp_path):
    summary = fit(tiny(manifest(tmp_path / "e.csv", photos), init_run), str(tmp_path / "tuned"), progress=False,
                  log=lambda *_: None)
    assert summary["epochs"] == 1
    _, heads = split(load_checkpoint(str(tmp_path / "tuned" / "best.pt"))["model"])
    _, saved = split(load_checkpoint(os.path.join(init_run, "best.pt"))["model"])
    assert not torch.equal(heads["category.weight"], saved["category.weight"])  # a step moved them
