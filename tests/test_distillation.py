"""Knowledge distillation from trained runs (train.teachers + loss.kd): the KL term against a plain numpy
reference, the teachers' view of the student's batch, and a student trained through the product's trainer and
CLI, with the errors a user meets (no teachers, other categories)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fashionlens.cli import main as cli_main
from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from fashionlens.losses.multitask import MultiTaskLoss, kd_loss
from fashionlens.training.checkpoint import load_model
from fashionlens.training.fit import fit
from fashionlens.training.teachers import TeacherEnsemble, load_teachers


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_kd_loss_is_t_squared_kl_of_teacher_to_student():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(6, 5)).astype(np.float32)
    teacher = softmax(rng.normal(size=(6, 5)) * 2)
    for t in (1.0, 2.0, 4.0):
        q = softmax(student / t)
        want = (teacher * (np.log(teacher) - np.log(q))).sum(1).mean() * t * t
        got = kd_loss(torch.tensor(student), torch.tensor(teacher), t).item()
        assert got == pytest.approx(want, rel=1e-5)
    # zero when the student already gives the teacher's distribution
    same = np.log(teacher)
    assert kd_loss(torch.tensor(same), torch.tensor(teacher), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # the multi-task loss adds it only when the outputs carry the teachers' probabilities
    loss = MultiTaskLoss(LossConfig(metric=0, kd=0.5, kd_temperature=2.0), num_items=0, embedding_dim=8)
    outputs = {"category": torch.tensor(student)}
    batch = {"category": torch.zeros(6, dtype=torch.long)}
    assert "kd" not in loss(outputs, batch)
    terms = loss({**outputs, "teacher_category": torch.tensor(teacher, dtype=torch.float32)}, batch)
    assert terms["kd"].item() == pytest.approx(kd_loss(torch.tensor(student), torch.tensor(teacher), 2.0).item())
    assert terms["loss"].item() == pytest.approx(terms["category"].item() + 0.5 * terms["kd"].item(), rel=1e-5)


class Recorder(torch.nn.Module):
    """A 'model' that records its input and answers fixed logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.seen = logits, None

    def forward(self, x):
        self.seen = x.clone()
        return {"category": self.logits.expand(x.shape[0], -1)}


def test_teachers_see_the_batch_in_their_own_normalisation_and_size():
    student = DataConfig(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    imagenet = DataConfig(image_size=48, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    same = DataConfig(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    a, b = Recorder(torch.tensor([[2.0, 0.0, 0.0]])), Recorder(torch.tensor([[0.0, 0.0, 2.0]]))
    ensemble = TeacherEnsemble([a, b], [imagenet, same], student, temperature=2.0)
    ensemble.train()
    assert not any(m.training for m in ensemble.models)  # teachers always answer as served
    raw = torch.rand(2, 3, 32, 32)
    batch = (raw - 0.5) / 0.5
    probs = ensemble(batch)
    assert b.seen.shape == (2, 3, 32, 32) and torch.allclose(b.seen, batch, atol=1e-6)
    assert a.seen.shape == (2, 3, 48, 48)
    mean = torch.tensor(imagenet.mean).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.std).view(1, 3, 1, 1)
    expected = (torch.nn.functional.interpolate(raw, size=(48, 48), mode="bilinear", antialias=True) - mean) / std
    assert torch.allclose(a.seen, expected, atol=1e-4)
    want = (softmax(np.array([[1.0, 0.0, 0.0]])) + softmax(np.array([[0.0, 0.0, 1.0]]))) / 2
    assert np.allclose(probs.numpy(), np.repeat(want, 2, 0), atol=1e-6)
    with pytest.raises(ValueError, match="kd_temperature"):
        TeacherEnsemble([a], [same], student, temperature=0)


def read_metrics(run_dir: str) -> list[dict]:
    with open(f"{run_dir}/metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def small_cfg(spec: str, size: int = 48, **overrides) -> RunConfig:
    train = {"epochs": 1, "batch_size": 16, "checkpoint_every": 0, "warmup_epochs": 0.5}
    loss = {"metric": 0.0}
    for key, value in overrides.items():
        (train if key in TrainConfig.__dataclass_fields__ else loss)[key] = value
    return RunConfig(data=DataConfig(spec=spec, image_size=size),
                     model=ModelConfig(backbone="tiny_cnn", pretrained=False, hidden_dim=32, embedding_dim=16),
                     loss=LossConfig(**loss), train=TrainConfig(**train), seed=0, threads=1)


@pytest.fixture(scope="module")
def teacher_run(spec, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = small_cfg(spec, size=56, epochs=2)
    cfg.model.tta_flip = True  # served with mirror averaging; as a teacher, one forward per step
    fit(cfg, str(out), progress=False, log=lambda *_: None)
    return str(out)


def test_a_student_learns_from_two_teachers_through_the_cli(spec, teacher_run, tmp_path, capsys):
    student = tmp_path / "student"
    rc = cli_main(["train", "--data", spec, "--out", str(student), "--backbone", "tiny_cnn", "--no-pretrained",
                   "--model", "global", "--image-size", "40", "--epochs", "1", "--batch-size", "16", "--threads", "1",
                   "--teacher", teacher_run, "--teacher", teacher_run, "--set", "loss.kd_temperature=3",
                   "--set", "loss.metric=0", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1
    row = read_metrics(str(student))[-1]
    assert row["train_kd"] > 0  # the term was computed and logged
    _, cfg, _ = load_model(str(student))
    assert cfg.train.teachers == [teacher_run, teacher_run] and cfg.loss.kd == 1.0 and cfg.loss.kd_temperature == 3


def test_distillation_errors_name_what_is_missing(spec, teacher_run, tmp_path):
    with pytest.raises(ValueError, match="train.teachers"):
        fit(small_cfg(spec, kd=1.0), str(tmp_path / "a"), progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="loss.kd"):
        fit(small_cfg(spec, teachers=[teacher_run]), str(tmp_path / "b"), progress=False, log=lambda *_: None)
    _, cfg, labels = load_model(teacher_run)
    with pytest.raises(ValueError, match=f"teacher {teacher_run}: its categories"):
        load_teachers([teacher_run], list(reversed(labels["categories"])), cfg.data, 1.0)
    ensemble = load_teachers([teacher_run], labels["categories"], cfg.data, 1.0)
    assert cfg.model.tta_flip and not any(m.tta_flip for m in ensemble.models)
    assert ensemble.sizes == [56]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_teachers([str(tmp_path / "nowhere")], labels["categories"], cfg.data, 1.0)
