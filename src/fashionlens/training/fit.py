"""Orchestration of a training run: data, model, optimiser, epochs, validation, checkpoints, resume.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``curves.png``, ``last.pt`` (resumable, also written every ``checkpoint_every`` steps) and ``best.pt``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from fashionlens.config import RunConfig, from_dict, save_yaml, to_dict
from fashionlens.data.dataset import GarmentDataset, PKSampler
from fashionlens.data.readers import read
from fashionlens.data.samples import SampleSet
from fashionlens.data.transforms import build_transforms
from fashionlens.evaluation.report import compute_metrics
from fashionlens.losses import MultiTaskLoss
from fashionlens.losses.multitask import stage_weights
from fashionlens.models import backbone_normalization, build_model
from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from fashionlens.training.loop import collect_outputs, train_one_epoch
from fashionlens.training.schedule import lr_at
from fashionlens.utils import seed_everything, set_threads


@dataclass
class Hierarchy:
    """Level structure derived from dotted category paths ("upper.tops.tee"): one list of node names per
    level above the leaves, and for each level a map category index -> node index at that level."""

    levels: list[list[str]]
    maps: list[list[int]]

    @classmethod
    def from_paths(cls, paths: list[str]) -> "Hierarchy":
        depth = min((len(p.split(".")) for p in paths), default=0)
        levels, maps = [], []
        for level in range(depth - 1):  # internal levels only (the leaf level is the category head)
            prefixes = [".".join(p.split(".")[: level + 1]) for p in paths]
            names = sorted(set(prefixes))
            levels.append(names)
            maps.append([names.index(x) for x in prefixes])
        return cls(levels, maps)


def split_train_val(data: SampleSet, train_split: str, val_split: str, seed: int) -> tuple[SampleSet, SampleSet]:
    """The configured splits; when the validation split is empty, hold out ~10% of training *items*
    (or images when there are no items) deterministically."""
    train = data.split(train_split)
    if not len(train):
        raise ValueError(f"no samples in the training split {train_split!r}; splits: {data.splits()}")
    val = data.split(val_split) if val_split else SampleSet([], data.info)
    if val_split and not len(val):
        keys = [s.item_id or s.image for s in train.samples]
        rng = np.random.default_rng(seed)
        held = {k for k in sorted(set(keys)) if rng.random() < 0.1}
        val = SampleSet([s for s, k in zip(train.samples, keys) if k in held], data.info)
        train = SampleSet([s for s, k in zip(train.samples, keys) if k not in held], data.info)
    return train, val


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Copy of ``cfg`` with the normalisation following the backbone."""
    cfg = copy.deepcopy(cfg)
    cfg.data.mean, cfg.data.std = (tuple(float(v) for v in x) for x in
                                   backbone_normalization(cfg.model.backbone, cfg.model.pretrained))
    return cfg


def _optimizer(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Parameter groups: backbone (lr x backbone_lr_scale) and heads; no weight decay on 1-D params."""
    groups: dict[tuple[float, bool], list] = {}
    named = [(n, p) for n, p in model.named_parameters()] + [(f"loss.{n}", p) for n, p in loss_fn.named_parameters()]
    for name, param in named:
        if not param.requires_grad:
            continue
        scale = cfg.train.backbone_lr_scale if name.startswith("backbone.") else 1.0
        groups.setdefault((scale, param.ndim <= 1), []).append(param)
    param_groups = [{"params": ps, "lr_scale": scale, "weight_decay": 0.0 if no_decay else cfg.train.weight_decay}
                    for (scale, no_decay), ps in groups.items()]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.train.lr)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.train.optimizer!r}; choices: adamw, sgd")


class _Skip(torch.utils.data.Sampler):
    """Yield the batches of ``batch_sampler`` after the first ``skip`` (resuming mid-epoch)."""

    def __init__(self, batch_sampler: Any, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch


def _train_batches(ds: GarmentDataset, cfg: RunConfig, epoch: int) -> Any:
    """The epoch's batch sampler: P x K by item when configured, else shuffled batches; seeded by epoch."""
    if cfg.train.pk_items > 0:
        sampler = PKSampler(ds.item_labels, cfg.train.pk_items, cfg.train.pk_images, seed=cfg.seed,
                            length=max(1, len(ds) // (cfg.train.pk_items * cfg.train.pk_images)))
        sampler.set_epoch(epoch)
        return sampler
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    return BatchSampler(RandomSampler(ds, generator=generator), cfg.train.batch_size, drop_last=len(ds) > cfg.train.batch_size)


def _loader(ds: GarmentDataset, cfg: RunConfig, batch_sampler: Any = None) -> DataLoader:
    workers = cfg.data.num_workers
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, num_workers=workers, persistent_workers=False)
    return DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, num_workers=workers)


def init_backbone_from(model: torch.nn.Module, run_dir: str) -> int:
    """Copy the backbone weights of another run (identity pre-training); returns the number of tensors."""
    state = load_checkpoint(find_checkpoint(run_dir))["model"]
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise ValueError(f"{run_dir}: its checkpoint has no backbone weights")
    model.backbone.load_state_dict(backbone)
    return len(backbone)


class Trainer:
    """Builds everything a run needs from a :class:`RunConfig` and trains it into ``out_dir``."""

    def __init__(self, cfg: RunConfig, out_dir: str, *, progress: bool = True, log=print):
        self.cfg, self.out_dir, self.progress, self.log = resolve_config(cfg), out_dir, progress, log
        os.makedirs(out_dir, exist_ok=True)
        seed_everything(self.cfg.seed)
        set_threads(self.cfg.threads)
        data = read(self.cfg.data.spec, missing="skip" if self.cfg.data.skip_missing else "error")
        self.info = data.info
        self.train_set, self.val_set = split_train_val(data, self.cfg.train.train_split, self.cfg.train.val_split,
                                                       self.cfg.seed)
        self.hierarchy = Hierarchy.from_paths(self.info.category_paths) if self.info.category_paths else Hierarchy([], [])
        self.train_ds = GarmentDataset(self.train_set, build_transforms(self.cfg.data, train=True),
                                       num_attributes=self.info.num_attributes)
        self.val_ds = GarmentDataset(self.val_set, build_transforms(self.cfg.data, train=False),
                                     num_attributes=self.info.num_attributes)
        self.model = self._build_model()
        self.loss_fn = MultiTaskLoss(self.cfg.loss, num_items=len(self.train_ds.items),
                                     embedding_dim=self.cfg.model.embedding_dim,
                                     class_weights=self._class_weights(),
                                     level_maps=[torch.tensor(m) for m in self.hierarchy.maps])
        self.optimizer = _optimizer(self.model, self.loss_fn, self.cfg)
        self.steps_per_epoch = len(_train_batches(self.train_ds, self.cfg, 0))

    def _build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        model = build_model(cfg.model, num_categories=self.info.num_categories,
                            num_attributes=self.info.num_attributes,
                            num_items=len(self.train_ds.items) if cfg.loss.item > 0 else 0,
                            level_sizes=[len(level) for level in self.hierarchy.levels])
        if cfg.train.init_from:
            n = init_backbone_from(model, cfg.train.init_from)
            self.log(f"initialised {n} backbone tensors from {cfg.train.init_from}")
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _class_weights(self) -> torch.Tensor | None:
        if not self.cfg.loss.class_weights or not self.info.num_categories:
            return None
        counts = np.bincount([s.category for s in self.train_set if s.category is not None],
                             minlength=self.info.num_categories).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
        return torch.tensor(weights, dtype=torch.float32)

    def labels(self) -> dict[str, Any]:
        """What a checkpoint must carry to be self-describing."""
        info = self.info
        return {"categories": info.categories, "category_paths": info.category_paths,
                "category_types": info.category_types, "attributes": info.attributes,
                "attribute_groups": info.attribute_groups,
                "group_names": {str(k): v for k, v in info.group_names.items()},
                "single_choice_groups": info.single_choice_groups,
                "hierarchy_levels": self.hierarchy.levels, "hierarchy_maps": self.hierarchy.maps,
                "items": self.train_ds.items if self.cfg.loss.item > 0 else []}

    def state(self, epoch: int, batch: int, step: int, best: float | None, bad_epochs: int, history: list) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "loss_state": self.loss_fn.state_dict(), "config": to_dict(self.cfg), "labels": self.labels(),
                "epoch": epoch, "batch": batch, "step": step, "best": best, "bad_epochs": bad_epochs,
                "history": history}

    def validate(self) -> dict[str, Any]:
        if not len(self.val_ds):
            return {}
        preds, targets, losses = collect_outputs(self.model, _loader(self.val_ds, self.cfg), self.loss_fn,
                                                 channels_last=self.cfg.train.channels_last, progress=self.progress,
                                                 desc="val")
        samples = [self.val_ds.samples[i] for i in targets["index"]]
        metrics = compute_metrics(preds, targets, samples, self.info)
        keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
        return {**losses, **{f"val_{k}": v for k, v in keep.items()}}

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train for ``cfg.train.epochs`` (or until the time limit / early stop); returns the summary."""
        cfg, tc = self.cfg, self.cfg.train
        save_yaml(cfg, os.path.join(self.out_dir, "config.yaml"))
        last_path, best_path = os.path.join(self.out_dir, "last.pt"), os.path.join(self.out_dir, "best.pt")
        epoch, skip, step, best, bad, history = 0, 0, 0, None, 0, []
        if resume and os.path.isfile(last_path):
            ckpt = load_checkpoint(last_path)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.loss_fn.load_state_dict(ckpt["loss_state"])
            epoch, skip, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
            best, bad, history = ckpt["best"], ckpt["bad_epochs"], ckpt["history"]
            self.log(f"resuming from {last_path}: epoch {epoch + 1}, batch {skip}, step {step}")
        total = tc.epochs * self.steps_per_epoch
        warmup = int(tc.warmup_epochs * self.steps_per_epoch)
        lr_fn = lambda s: lr_at(s, total, warmup, tc.lr, tc.min_lr)  # noqa: E731
        deadline = time.time() + tc.max_minutes * 60 if tc.max_minutes > 0 else None
        stopped = ""
        while epoch < tc.epochs and not stopped:
            weights = stage_weights(epoch, cfg.loss)
            batches = _Skip(_train_batches(self.train_ds, cfg, epoch), skip)
            start_batch = skip

            def on_step(s: int, i: int, _epoch=epoch) -> None:
                if tc.checkpoint_every and s % tc.checkpoint_every == 0:
                    save_checkpoint(last_path, self.state(_epoch, start_batch + i + 1, s, best, bad, history))

            train_metrics, step = train_one_epoch(
                self.model, _loader(self.train_ds, cfg, batches), lambda o, b: self.loss_fn(o, b, weights),
                self.optimizer, step=step, lr_fn=lr_fn, grad_clip=tc.grad_clip, amp=tc.amp,
                channels_last=tc.channels_last, deadline=deadline, on_step=on_step, progress=self.progress,
                desc=f"epoch {epoch + 1}/{tc.epochs}")
            skip = 0
            record = {"epoch": epoch + 1, "step": step, "lr": lr_fn(step), **train_metrics, **self.validate()}
            history.append(record)
            improved, best = self._improved(record, best)
            bad = 0 if improved else bad + 1
            epoch += 1
            if deadline is not None and time.time() > deadline:
                stopped = f"time limit of {tc.max_minutes} min"
            elif tc.early_stop_patience and bad >= tc.early_stop_patience:
                stopped = f"no improvement of {tc.select_metric} for {bad} epochs"
            state = self.state(epoch, 0, step, best, bad, history)
            save_checkpoint(last_path, state)
            if improved:
                save_checkpoint(best_path, state)
            self._log_epoch(record, improved)
        self._plot(history)
        if stopped:
            self.log(f"stopped early: {stopped}")
        return {"run_dir": self.out_dir, "epochs": epoch, "steps": step, "best": best,
                "select_metric": tc.select_metric, "stopped": stopped or None, "last": history[-1] if history else {}}

    def _improved(self, record: dict, best: float | None) -> tuple[bool, float | None]:
        key = self.cfg.train.select_metric
        value = record.get(key)
        if value is None:  # no validation data: judge on the training loss
            key, value = "train_loss", record.get("train_loss")
        if value is None:
            return True, best
        minimise = key.endswith("loss") or key.endswith("_ne")
        better = best is None or (value < best if minimise else value > best)
        return better, (value if better else best)

    def _log_epoch(self, record: dict, improved: bool) -> None:
        with open(os.path.join(self.out_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        shown = {k: record[k] for k in ("train_loss", "val_loss", "val_category_top1", "val_retrieval_top20",
                                         "val_landmark_ne", "train_images_per_s") if record.get(k) is not None}
        self.log(f"epoch {record['epoch']}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
                 + ("  (best)" if improved else ""))

    def _plot(self, history: list[dict]) -> None:
        if not history:
            return
        from fashionlens.evaluation.plots import plot_curves

        keys = [k for k in ("train_loss", "val_loss", "val_category_top1", "val_retrieval_top20", "val_landmark_ne")
                if any(h.get(k) is not None for h in history)]
        plot_curves(history, keys, os.path.join(self.out_dir, "curves.png"))


def fit(cfg: RunConfig, out_dir: str, *, resume: bool = True, progress: bool = True, log=print) -> dict[str, Any]:
    """Train a model as configured into ``out_dir`` (resuming from ``out_dir/last.pt`` when present)."""
    return Trainer(cfg, out_dir, progress=progress, log=log).fit(resume=resume)


def config_from_checkpoint(ckpt: dict) -> RunConfig:
    return from_dict(ckpt["config"])
