"""Training orchestration (fit.py): run directory, resume after a kill, early stop, time limit, held-out
validation, best-checkpoint selection and determinism, on a tiny rendered garment set and tiny_cnn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig, load_yaml
from fashionlens.data.readers import read
from fashionlens.training.checkpoint import FORMAT_VERSION, load_checkpoint, load_model
from fashionlens.training.fit import Trainer, config_from_checkpoint, epoch_batches, fit, make_loader, split_train_val

BATCH = 16  # 51 training images -> 3 full batches (drop_last) per epoch
STEPS_PER_EPOCH = 3


def tiny_cfg(spec: str, seed: int = 0, **train) -> RunConfig:
    train = {"epochs": 2, "batch_size": BATCH, "checkpoint_every": 0, "warmup_epochs": 0.5, **train}
    return RunConfig(data=DataConfig(spec=spec, image_size=48),
                     model=ModelConfig(backbone="tiny_cnn", pretrained=False, hidden_dim=32, embedding_dim=16),
                     loss=LossConfig(metric_loss="triplet"), train=TrainConfig(**train), seed=seed, threads=1)


def weights(path: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def read_metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def scripted_validation(monkeypatch, key: str, values: list[float]) -> None:
    """Replace validation by a script: epoch i reports ``values[i]`` for ``key``."""
    calls = iter(values)
    monkeypatch.setattr(Trainer, "validate", lambda self: {"val_loss": 1.0, key: next(calls)})


# ---------------------------------------------------------------- (a) a run directory end to end


def test_fit_writes_a_complete_run_directory(spec, tmp_path):
    logs: list[str] = []
    summary = fit(tiny_cfg(spec), str(tmp_path), progress=False, log=logs.append)
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "best.pt", "last.pt"):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert summary["epochs"] == 2 and summary["steps"] == 2 * STEPS_PER_EPOCH and summary["stopped"] is None
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [3, 6]
    assert all(r["train_images"] == STEPS_PER_EPOCH * BATCH and "val_category_top1" in r for r in records)
    assert any(line.startswith("epoch 2:") for line in logs)

    saved = load_yaml(str(tmp_path / "config.yaml"))
    assert saved.model.backbone == "tiny_cnn" and saved.data.spec == spec and saved.train.batch_size == BATCH

    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)  # no pickled code
    info = read(spec).info
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["fashionlens_version"]
    assert ckpt["labels"]["categories"] == info.categories and ckpt["labels"]["attributes"] == info.attributes
    assert ckpt["labels"]["hierarchy_levels"] and ckpt["epoch"] == 2 and ckpt["batch"] == 0 and ckpt["step"] == 6
    assert config_from_checkpoint(ckpt).model.embedding_dim == 16
    model, cfg, labels = load_model(str(tmp_path))  # the checkpoint alone rebuilds the model (strict load)
    assert cfg.model.backbone == "tiny_cnn" and labels["categories"] == info.categories
    assert model(torch.zeros(2, 3, 48, 48))["category"].shape == (2, info.num_categories)
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["best"] == summary["best"] == min(r["val_loss"] for r in records)


# ---------------------------------------------------------------- (b) resume after SIGKILL

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import fashionlens.training.fit as F
    from test_fit import tiny_cfg

    real_save = F.save_checkpoint

    def save_then_die(path, state):  # dies abruptly right after the mid-epoch checkpoint of epoch 2, batch 2
        real_save(path, state)
        if state["epoch"] == 1 and state["batch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    F.save_checkpoint = save_then_die
    F.fit(tiny_cfg(sys.argv[1], epochs=3, checkpoint_every=1), sys.argv[2], progress=False)
""")


def test_resume_after_kill_continues_mid_epoch_and_matches_an_uninterrupted_run(spec, tmp_path):
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, spec, str(run)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = load_checkpoint(str(run / "last.pt"))
    assert (saved["epoch"], saved["batch"], saved["step"]) == (1, 2, 5)
    before = read_metrics(run)
    assert [r["epoch"] for r in before] == [1]

    logs: list[str] = []
    summary = fit(tiny_cfg(spec, epochs=3, checkpoint_every=1), str(run), progress=False, log=logs.append)
    assert any("resuming" in line and "epoch 2, batch 2, step 5" in line for line in logs), logs
    assert summary["steps"] == 3 * STEPS_PER_EPOCH and summary["epochs"] == 3
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[0] == before[0]
    assert records[1]["train_images"] == BATCH  # only the one batch left of epoch 2 was trained
    assert records[2]["train_images"] == STEPS_PER_EPOCH * BATCH

    reference = tmp_path / "reference"
    fit(tiny_cfg(spec, epochs=3, checkpoint_every=1), str(reference), progress=False, log=lambda *a: None)
    assert_same_weights(weights(str(run / "last.pt")), weights(str(reference / "last.pt")))


def test_resume_false_starts_over(spec, tmp_path):
    fit(tiny_cfg(spec, epochs=1), str(tmp_path), progress=False, log=lambda *a: None)
    summary = fit(tiny_cfg(spec, epochs=1), str(tmp_path), resume=False, progress=False, log=lambda *a: None)
    assert summary["steps"] == STEPS_PER_EPOCH
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]  # metrics.jsonl rewritten, not appended to


# ---------------------------------------------------------------- (c) early stop and time limit


def test_early_stopping_stops_and_says_why(spec, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, "val_category_top1", [0.5, 0.4, 0.3, 0.9, 0.9, 0.9])
    logs: list[str] = []
    summary = fit(tiny_cfg(spec, epochs=6, early_stop_patience=2, select_metric="val_category_top1"),
                  str(tmp_path), progress=False, log=logs.append)
    assert summary["epochs"] == 3 and summary["steps"] == 3 * STEPS_PER_EPOCH
    assert "no improvement of val_category_top1 for 2 epochs" in summary["stopped"]
    assert any(line.startswith("stopped early: no improvement") for line in logs)
    assert load_checkpoint(str(tmp_path / "best.pt"))["epoch"] == 1


def test_time_limit_stops_mid_run_with_a_resumable_position(spec, tmp_path):
    logs: list[str] = []
    epochs = 200
    summary = fit(tiny_cfg(spec, epochs=epochs, max_minutes=0.01, val_split="dev"), str(tmp_path),
                  progress=False, log=logs.append)  # 0.6 s: far less than 600 steps
    assert summary["stopped"] == "time limit of 0.01 min"
    assert any(line.startswith("stopped early: time limit") for line in logs)
    assert 0 < summary["steps"] < epochs * STEPS_PER_EPOCH
    last = load_checkpoint(str(tmp_path / "last.pt"))
    per_epoch = len(split_train_val(read(spec), "train", "dev", seed=0)[0]) // BATCH
    assert last["step"] == summary["steps"] == last["epoch"] * per_epoch + last["batch"]
    final = last["history"][-1]
    assert final["epoch"] == summary["epochs"] + (1 if last["batch"] else 0)
    assert final.get("partial", False) == (last["batch"] > 0) and final.get("batches", 0) == last["batch"]
    # (d) at fit level: no "dev" split, so part of the training items were held out and validated on
    assert any("no 'dev' split: holding out" in line for line in logs)
    assert "val_loss" in last["history"][-1]


# ---------------------------------------------------------------- (d) held-out validation items


def test_missing_val_split_holds_out_about_ten_percent_of_items(spec):
    data = read(spec)
    train_only = data.split("train")
    items = {s.item_id for s in train_only}
    train, val = split_train_val(train_only, "train", "val", seed=0)
    train_items, val_items = {s.item_id for s in train}, {s.item_id for s in val}
    assert not train_items & val_items and train_items | val_items == items
    assert len(val_items) == round(0.1 * len(items)) and len(train) + len(val) == len(train_only)
    again = split_train_val(train_only, "train", "val", seed=0)[1]
    assert [s.image for s in again] == [s.image for s in val]  # deterministic for the seed
    assert len(split_train_val(train_only, "train", "", seed=0)[1]) == 0  # "" = no validation
    real_train, real_val = split_train_val(data, "train", "val", seed=0)
    assert len(real_train) == len(train_only) and {s.split for s in real_val} == {"val"}
    with pytest.raises(ValueError, match="no samples in the training split 'nope'"):
        split_train_val(data, "nope", "val", seed=0)


# ---------------------------------------------------------------- (e) best-checkpoint selection


@pytest.mark.parametrize("key, values, best_epoch", [
    ("val_category_top1", [0.2, 0.5, 0.3], 2),  # accuracy: maximised
    ("val_loss", [2.0, 3.0, 1.0], 3),  # loss: minimised
    ("val_landmark_ne", [0.3, 0.1, 0.2], 2),  # normalised error: minimised
])
def test_select_metric_picks_the_best_epoch(spec, tmp_path, monkeypatch, key, values, best_epoch):
    scripted_validation(monkeypatch, key, values)
    summary = fit(tiny_cfg(spec, epochs=3, select_metric=key), str(tmp_path), progress=False, log=lambda *a: None)
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["epoch"] == best_epoch and best["best"] == summary["best"] == values[best_epoch - 1]
    assert load_checkpoint(str(tmp_path / "last.pt"))["epoch"] == 3


def test_select_metric_last_ships_the_latest_epoch_whatever_validation_says(spec, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, "val_category_top1", [0.9, 0.1, 0.2])  # epoch 1 "best" on validation
    summary = fit(tiny_cfg(spec, epochs=3, select_metric="last"), str(tmp_path), progress=False, log=lambda *a: None)
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["epoch"] == 3 and summary["best"] == 3.0
    assert_same_weights(best["model"], load_checkpoint(str(tmp_path / "last.pt"))["model"])


def test_unknown_select_metric_is_a_clear_error(spec, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, "val_category_top1", [0.2])
    with pytest.raises(ValueError, match="select_metric 'val_acc' is not a metric of this run; choices: .*val_loss"):
        fit(tiny_cfg(spec, epochs=1, select_metric="val_acc"), str(tmp_path), progress=False, log=lambda *a: None)


# ---------------------------------------------------------------- (f) determinism


def test_identical_seeded_runs_give_identical_weights(spec, tmp_path):
    quiet = lambda *a: None  # noqa: E731
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = tiny_cfg(spec, seed=seed, epochs=1, pk_items=4, pk_images=2)
        fit(cfg, str(tmp_path / name), progress=False, log=quiet)
        runs[name] = weights(str(tmp_path / name / "last.pt"))
    assert_same_weights(runs["a"], runs["b"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])  # the seed matters


def test_distillation_and_category_metric_labels_train(spec, tmp_path):
    """loss.distill keeps a frozen copy of the initial backbone (its weights never move) and logs the term;
    loss.metric_labels=category trains the metric loss on kinds (multi-similarity) and samples P x K by kind."""
    cfg = tiny_cfg(spec, epochs=1, pk_items=2, pk_images=4)
    cfg.loss.distill, cfg.loss.metric_loss, cfg.loss.metric_labels = 1.0, "multi_similarity", "category"
    trainer = Trainer(cfg, str(tmp_path / "run"), progress=False, log=lambda *_: None)
    try:
        teacher = trainer.model_with_loss.teacher
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        assert all(torch.equal(v, trainer.model.backbone.state_dict()[k]) for k, v in before.items())
        batch = next(iter(make_loader(trainer.train_ds, trainer.cfg, epoch_batches(trainer.train_ds, trainer.cfg, 0))))
        assert len(set(batch["category"].tolist())) == 2  # P = 2 kinds per batch
        summary = trainer.fit(resume=False)
        assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the teacher is frozen
        assert not all(torch.equal(v, trainer.model.backbone.state_dict()[k]) for k, v in before.items())
    finally:
        trainer.close()
    row = read_metrics(tmp_path / "run")[-1]
    assert row["train_distill"] > 0 and row["train_metric"] > 0 and summary["epochs"] == 1


def test_head_epochs_train_the_heads_first_then_the_backbone(spec, tmp_path, monkeypatch):
    """LP-FT (train.head_epochs): during the first epoch no backbone weight moves while the heads learn; in the
    second the backbone trains too.  The optimiser marks its backbone groups, and set_lr zeroes only those."""
    from fashionlens.training.fit import build_optimizer
    from fashionlens.training.schedule import backbone_trains, set_lr

    cfg = tiny_cfg(spec, epochs=2, head_epochs=1.0, checkpoint_every=STEPS_PER_EPOCH)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    original = Trainer._save

    def spy(self, run, improved):
        snapshots.setdefault(run.step, {k: v.detach().clone() for k, v in self.model.named_parameters()})
        return original(self, run, improved)

    monkeypatch.setattr(Trainer, "_save", spy)
    trainer = Trainer(cfg, str(tmp_path / "lpft"), progress=False, log=lambda *_: None)
    try:
        start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        groups = trainer.optimizer.param_groups
        assert any(g["backbone"] for g in groups) and any(not g["backbone"] for g in groups)
        trainer.fit(resume=False)
    finally:
        trainer.close()
    after_heads, after_all = snapshots[STEPS_PER_EPOCH], snapshots[2 * STEPS_PER_EPOCH]
    backbone = [k for k in start if k.startswith("backbone.")]
    heads = [k for k in start if not k.startswith("backbone.")]
    assert all(torch.equal(start[k], after_heads[k]) for k in backbone)  # the backbone waited
    assert any(not torch.equal(start[k], after_heads[k]) for k in heads)  # the heads learned
    assert any(not torch.equal(after_heads[k], after_all[k]) for k in backbone)  # then the backbone trained
    assert not backbone_trains(2, 3) and backbone_trains(3, 3)
    opt = build_optimizer(trainer.model, trainer.loss_fn, cfg)
    set_lr(opt, 0.5, backbone=False)
    assert all((g["lr"] == 0.0) == g["backbone"] for g in opt.param_groups)
    with pytest.raises(ValueError, match="head_epochs"):
        fit(tiny_cfg(spec, epochs=2, head_epochs=2.0), str(tmp_path / "never"), progress=False, log=lambda *_: None)
