"""Orchestration of a training run: data, model, optimiser, epochs, validation, checkpoints, resume.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``curves.png``, ``last.pt`` (resumable, also written every ``checkpoint_every`` steps) and ``best.pt``.

The run trains where ``train.device`` says (``auto``: a CUDA GPU when present, else the CPU): the model, its
loss and the batches live there, batches come from pinned memory with ``non_blocking`` copies, and
``train.amp`` picks the mixed precision the device supports (``loop.precision_for``).

Launched by ``torchrun --nproc-per-node N`` the same code trains data-parallel (see
``fashionlens.training.distributed``): one process per GPU with NCCL (gloo on the CPU), each process takes
its shard of every global batch, DDP averages the gradients, the metric loss sees the global batch,
validation is sharded and gathered on rank 0, and only rank 0 writes files and logs.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Subset,
    WeightedRandomSampler,
    default_collate,
)

from fashionlens.config import RunConfig, from_dict, save_yaml, to_dict
from fashionlens.data.dataset import GarmentDataset, PKSampler
from fashionlens.data.readers import read
from fashionlens.data.splits import split_train_val
from fashionlens.data.transforms import build_batch_transform, build_transforms
from fashionlens.evaluation.plots import plot_curves
from fashionlens.evaluation.report import compute_metrics
from fashionlens.files import atomic_write
from fashionlens.hierarchy.taxonomy import Hierarchy
from fashionlens.losses import MultiTaskLoss
from fashionlens.losses.multitask import stage_weights
from fashionlens.models import backbone_normalization, build_model
from fashionlens.models.backbones import stage_depths
from fashionlens.training import distributed as ddp
from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from fashionlens.training.ema import ema_model
from fashionlens.training.loop import collect_outputs, precision_for, to_device, train_one_epoch
from fashionlens.training.sampling import class_balance_weights, instance_views
from fashionlens.training.schedule import backbone_trains, lr_at
from fashionlens.training.teachers import load_teachers
from fashionlens.utils import resolve_device, seed_everything, set_threads


@dataclass
class RunState:
    """Where a run stands: ``epoch`` epochs done, ``batch`` batches of the next one done, ``step``
    optimiser steps in all; the best value of the selection metric and the epochs since it improved."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Copy of ``cfg`` with the normalisation following the backbone."""
    cfg = copy.deepcopy(cfg)
    cfg.data.mean, cfg.data.std = (tuple(float(v) for v in x) for x in
                                   backbone_normalization(cfg.model.backbone, cfg.model.pretrained))
    return cfg


def build_optimizer(model: nn.Module, loss_fn: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Parameter groups: heads at lr; backbone at lr x backbone_lr_scale x layer_decay^depth (depth 0 = the
    last stage, counting towards the stem; see ``stage_depths``); no weight decay on 1-D params."""
    tc = cfg.train
    depths = stage_depths(model.backbone) if tc.layer_decay != 1.0 else {}
    groups: dict[tuple[float, bool, bool], list] = {}
    named = [(n, p) for n, p in model.named_parameters()] + [(f"loss.{n}", p) for n, p in loss_fn.named_parameters()]
    for name, param in named:
        if not param.requires_grad:
            continue
        scale, backbone = 1.0, name.startswith("backbone.")
        if backbone:
            scale = tc.backbone_lr_scale * tc.layer_decay ** depths.get(name[len("backbone."):], 0)
        groups.setdefault((scale, param.ndim <= 1, backbone), []).append(param)
    param_groups = [{"params": ps, "lr_scale": scale, "backbone": backbone,
                     "weight_decay": 0.0 if no_decay else cfg.train.weight_decay}
                    for (scale, no_decay, backbone), ps in groups.items()]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.train.lr)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.train.optimizer!r}; choices: adamw, sgd")


def epoch_batches(ds: GarmentDataset, cfg: RunConfig, epoch: int) -> Any:
    """The epoch's global batch sampler: P x K by item (by category with ``loss.metric_labels: category``) when
    configured, else shuffled batches; seeded by epoch."""
    if cfg.train.pk_items > 0:
        labels = ds.item_labels if cfg.loss.metric_labels == "item" else ds.category_labels
        sampler = PKSampler(labels, cfg.train.pk_items, cfg.train.pk_images, seed=cfg.seed,
                            length=max(1, len(ds) // (cfg.train.pk_items * cfg.train.pk_images)))
        sampler.set_epoch(epoch)
        return sampler
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    batch = cfg.train.batch_size
    if cfg.train.balance > 0:  # class-balanced: images of rare classes drawn more often (with replacement)
        sampler: Any = WeightedRandomSampler(class_balance_weights(ds.samples, cfg.train.balance), len(ds),
                                             replacement=True, generator=generator)
    else:
        sampler = RandomSampler(ds, generator=generator)
    return BatchSampler(sampler, batch, drop_last=len(ds) > batch)


def loader_workers(requested: int, device: torch.device | str = "cpu") -> int:
    """DataLoader worker processes: ``requested`` when >= 0; -1 sizes them to the machine: the cores this
    process may use (shared between the processes of a torchrun node) less one for the training process,
    at most 8; on a CPU of 2 or fewer cores per process none (workers would take cores from the compute)."""
    if requested >= 0:
        return int(requested)
    cores = ddp.local_threads(0)
    if torch.device(device).type == "cpu" and cores <= 2:
        return 0
    return max(0, min(8, cores - 1))


def make_loader(ds: Dataset, cfg: RunConfig, batch_sampler: Any = None, seed: int = 0,
                device: torch.device | str = "cpu") -> DataLoader:
    """A DataLoader with its own generator: creating it leaves torch's global generator (which draws the
    augmentations) untouched, so a resumed run sees the same random stream as an uninterrupted one.
    For a GPU the batches are collated into pinned memory (``non_blocking`` copies) and workers prefetch
    four batches each."""
    workers = loader_workers(cfg.data.num_workers, device)
    gpu = torch.device(device).type == "cuda"
    kw: dict[str, Any] = dict(num_workers=workers, generator=torch.Generator().manual_seed(seed), pin_memory=gpu)
    if workers > 0:
        kw["prefetch_factor"] = 4 if gpu else 2
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, persistent_workers=False, **kw)
    return DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, **kw)


#: The checkpoint labels that give the heads' outputs their meaning (``Trainer.labels``): heads are only copied
#: between runs that agree on all of them.
HEAD_LABELS = ("categories", "attributes", "hierarchy_levels", "items")


def init_backbone_from(model: nn.Module, run_dir: str,
                       labels: dict[str, Any] | None = None) -> tuple[int, int, str]:
    """Copy another run's weights into ``model`` (``train.init_from``): its backbone always (identity
    pre-training, a served model fine-tuned on people's answers); its heads too when ``labels`` (the new run's,
    as ``Trainer.labels`` gives them) name the same categories, attributes, taxonomy levels and items, in the
    same order, as the init run's checkpoint and every head tensor has the new model's name and shape.  Then a
    fine-tune continues the init run's classifier instead of starting a random one: in the answer loop of
    benchmarks/bench_answer_loop.py (a 307-photo seed of clothing-small, then 691 answers, 2 epochs of the
    ``finetune`` recipe) validation top-1 went from the seed model's 0.62 to 0.61 with fresh heads, to 0.74
    with the heads continued.

    Returns (backbone tensors copied, head tensors copied, why the heads start afresh: "" when copied)."""
    ckpt = load_checkpoint(find_checkpoint(run_dir))
    state = ckpt["model"]
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise ValueError(f"{run_dir}: its checkpoint has no backbone weights")
    model.backbone.load_state_dict(backbone)
    if labels is None:
        return len(backbone), 0, "no label set given"
    theirs = ckpt.get("labels") or {}
    differ = [k for k in HEAD_LABELS if list(theirs.get(k) or []) != list(labels.get(k) or [])]
    if differ:
        return len(backbone), 0, f"its {' and '.join(differ)} differ from this run's"
    heads = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    if heads.keys() != own.keys() or any(heads[k].shape != own[k].shape for k in own):
        return len(backbone), 0, "its heads have other names or shapes (another model layout)"
    model.load_state_dict(heads, strict=False)
    return len(backbone), len(heads), ""


def _silent(*_args: Any, **_kw: Any) -> None:
    """The log function of ranks other than 0."""


class Trainer:
    """Builds everything a run needs from a :class:`RunConfig` and trains it into ``out_dir``.

    Under torchrun (``WORLD_SIZE`` > 1 in the environment) it joins the process group (NCCL when training
    on GPUs, gloo on the CPU) and trains data-parallel; call :meth:`close` (``fit`` does) to leave it.
    """

    def __init__(self, cfg: RunConfig, out_dir: str, *, progress: bool = True, log: Callable[..., Any] = print):
        self.device = resolve_device(cfg.train.device)  # cuda:LOCAL_RANK under torchrun
        self._owns_group = ddp.env_world_size() > 1 and not (torch.distributed.is_available()
                                                              and torch.distributed.is_initialized())
        self.rank, self.world = ddp.init_distributed(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0
        self.cfg, self.out_dir = resolve_config(cfg), out_dir
        self.progress, self.log = progress and self.main, log if self.main else _silent
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        if self.main:
            os.makedirs(self.out_dir, exist_ok=True)
        seed_everything(self.cfg.seed)
        set_threads(ddp.local_threads(self.cfg.threads) if self.world > 1 else self.cfg.threads)
        self._load_data()
        self.precision = precision_for(self.device, self.cfg.train.amp)
        self.model = self._build_model()
        self.log(f"training on {self._device_name()} ({self.precision.describe()}), "
                 f"{self.world} process{'es' if self.world > 1 else ''}")
        # Weight averaging: an exponential moving average of the weights (BatchNorm statistics included),
        # updated after every step; validation, best.pt and everything downstream use the averaged weights.
        decay = self.cfg.train.ema_decay
        self.ema = ema_model(self.model, decay) if decay > 0 else None
        labels = self.train_ds.items if self.cfg.loss.metric_labels == "item" else self.info.categories
        self.loss_fn = MultiTaskLoss(self.cfg.loss, num_items=len(labels),
                                     embedding_dim=self.cfg.model.embedding_dim,
                                     class_weights=self._class_weights(),
                                     level_maps=[torch.tensor(m) for m in self.hierarchy.maps]).to(self.device)
        self.model_with_loss = ddp.ModelWithLoss(self.model, self.loss_fn, self._teacher(), self._teachers())
        if self.cfg.train.compile:  # in place, after the EMA and teacher copies (they stay eager): parameter
            self.model.compile()   # names, and so checkpoints, stay those of the plain model
        self.optimizer = build_optimizer(self.model, self.loss_fn, self.cfg)
        self.steps_per_epoch = len(epoch_batches(self.train_ds, self.cfg, 0))
        self.train_module = self._data_parallel()  # what the optimiser steps: model_with_loss, in DDP under torchrun
        if self.world > 1:  # same initial weights everywhere (seeded above); own augmentations per rank
            torch.manual_seed(self.cfg.seed * 1000 + self.rank)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def _teacher(self) -> nn.Module | None:
        """``loss.distill``: a frozen copy of the model's initial backbone (pretrained, or ``init_from``'s),
        taken before any step (a resumed run loads its weights later), the distillation target."""
        if self.cfg.loss.distill <= 0:
            return None
        return copy.deepcopy(self.model.backbone).eval()

    def _teachers(self) -> nn.Module | None:
        """``train.teachers`` with ``loss.kd`` > 0: the trained runs to distil, frozen, on this device."""
        runs = self.cfg.train.teachers
        runs = [runs] if isinstance(runs, str) else list(runs or [])
        kd = self.cfg.loss.kd
        if bool(runs) != (kd > 0):
            raise ValueError("knowledge distillation needs both train.teachers (runs) and loss.kd > 0; got "
                             f"{len(runs)} teacher(s) and loss.kd={kd}")
        if not runs:
            return None
        if not self.info.num_categories:
            raise ValueError("train.teachers: distillation matches category probabilities; this data set has none")
        ensemble = load_teachers(runs, self.info.categories, self.cfg.data, self.cfg.loss.kd_temperature)
        self.log(f"distilling {len(runs)} teacher(s) ({', '.join(runs)}) at temperature {self.cfg.loss.kd_temperature}, "
                 f"weight {kd}")
        return ensemble.to(self.device)

    def _load_data(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        data = read(cfg.data.spec, missing="skip" if cfg.data.skip_missing else "error")
        self.info = data.info
        self.train_set, self.val_set = split_train_val(data, tc.train_split, tc.val_split, cfg.seed)
        if tc.val_split and tc.val_split not in data.splits():
            self.log(f"no {tc.val_split!r} split: holding out {len(self.val_set)} of "
                     f"{len(self.val_set) + len(self.train_set)} training images (~10% of items) for validation")
        if tc.instance_views > 0:
            self.train_set = instance_views(self.train_set, tc.instance_views)
            self.log(f"self-supervised: {len(self.train_set) // tc.instance_views} training images as their own "
                     f"items, {tc.instance_views} views each; their labels are not used")
        paths = self.info.category_paths
        self.hierarchy = Hierarchy.from_paths(paths) if paths else Hierarchy([], [])
        self.train_ds = GarmentDataset(self.train_set, build_transforms(cfg.data, train=True),
                                       num_attributes=self.info.num_attributes,
                                       batch_transform=build_batch_transform(cfg.data))
        self.val_ds = GarmentDataset(self.val_set, build_transforms(cfg.data, train=False),
                                     num_attributes=self.info.num_attributes)

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        model = build_model(cfg.model, num_categories=self.info.num_categories,
                            num_attributes=self.info.num_attributes,
                            num_items=len(self.train_ds.items) if cfg.loss.item > 0 else 0,
                            level_sizes=[len(level) for level in self.hierarchy.levels])
        if cfg.train.init_from:
            n, heads, why = init_backbone_from(model, cfg.train.init_from, self.labels())
            if heads:
                self.log(f"initialised {n} backbone tensors and {heads} head tensors from {cfg.train.init_from} "
                         "(same categories and attributes: its heads continue)")
            else:
                self.log(f"initialised {n} backbone tensors from {cfg.train.init_from} (the heads start afresh: {why})")
        if cfg.train.sync_bn:
            model = ddp.sync_batchnorm(model, self.device, self.world, log=self.log)
        model = model.to(self.device)
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

    def _data_parallel(self) -> nn.Module:
        """``self.model_with_loss`` itself single-process, else wrapped in DDP (see ``distributed.wrap_data_parallel``)."""
        if self.world == 1:
            return self.model_with_loss
        tc = self.cfg.train
        per_batch = tc.pk_items if tc.pk_items > 0 else min(tc.batch_size, len(self.train_ds))
        if per_batch < self.world:
            unit = "items (pk_items)" if tc.pk_items > 0 else "images"
            raise ValueError(f"{self.world} processes need at least {self.world} {unit} per batch, got {per_batch}")
        probe = GarmentDataset(self.train_set, build_transforms(self.cfg.data, train=False),
                               num_attributes=self.info.num_attributes)  # un-augmented: draws no random numbers
        batch = to_device(default_collate([probe[i] for i in range(min(len(probe), 4))]), self.device)
        return ddp.wrap_data_parallel(self.model_with_loss, batch, stage_weights(0, self.cfg.loss), log=self.log)

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

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and shipped: the moving average when ``ema_decay`` > 0."""
        return self.ema.module if self.ema is not None else self.model

    def state(self, run: RunState, rng: list[torch.Tensor] | None = None) -> dict:
        """The checkpoint payload: weights, optimiser, loss state, config, labels, position in the run and
        ``rng`` (torch generator state of every rank, so a resumed run draws the same augmentations).
        ``model`` holds the weights to use (the moving average with ``ema_decay``; then ``train_model`` holds
        the optimised weights and ``ema_steps`` the number of averaged steps, for resuming)."""
        state = {"model": self.eval_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "loss_state": self.loss_fn.state_dict(), "config": to_dict(self.cfg), "labels": self.labels(),
                 "epoch": run.epoch, "batch": run.batch, "step": run.step, "best": run.best,
                 "bad_epochs": run.bad_epochs, "history": list(run.history), "rng": rng or []}
        if self.ema is not None:
            state.update(train_model=self.model.state_dict(), ema_steps=int(self.ema.n_averaged))
        if self.precision.scaler is not None:
            state["grad_scaler"] = self.precision.scaler.state_dict()
        return state

    def validate(self) -> dict[str, Any]:
        """Validation losses and metrics (``val_`` keys) on rank 0; {} on other ranks and without val data.
        Data-parallel: each rank runs its contiguous part of the set and rank 0 gathers the outputs."""
        if not len(self.val_ds):
            return {}
        part = ddp.shard_range(len(self.val_ds), self.rank, self.world)
        ds = self.val_ds if self.world == 1 else Subset(self.val_ds, list(part))
        preds, targets, losses = collect_outputs(self.eval_model, make_loader(ds, self.cfg, device=self.device),
                                                 self.loss_fn, device=self.device, precision=self.precision,
                                                 channels_last=self.cfg.train.channels_last, progress=self.progress,
                                                 desc="val")
        preds, targets, losses = ddp.gather_outputs(preds, targets, losses, len(part))
        if not self.main:
            return {}
        samples = [self.val_ds.samples[i] for i in targets["index"]]
        metrics = compute_metrics(preds, targets, samples, self.info)
        keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
        return {**losses, **{f"val_{k}": v for k, v in keep.items()}}

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train for ``cfg.train.epochs`` (or until the time limit / early stop); returns the summary."""
        tc = self.cfg.train
        if not 0 <= tc.head_epochs < max(tc.epochs, 1):
            raise ValueError(f"train.head_epochs must be in [0, train.epochs), got {tc.head_epochs} "
                             f"(epochs {tc.epochs}): the backbone would never train")
        if self.main:
            save_yaml(self.cfg, os.path.join(self.out_dir, "config.yaml"))
        run = self._resume() if resume else RunState()
        total, warmup = tc.epochs * self.steps_per_epoch, int(tc.warmup_epochs * self.steps_per_epoch)
        lr_fn = lambda s: lr_at(s, total, warmup, tc.lr, tc.min_lr)  # noqa: E731
        deadline = time.time() + tc.max_minutes * 60 if tc.max_minutes > 0 else None
        past = lambda: deadline is not None and ddp.any_rank(time.time() > deadline)  # noqa: E731
        stopped = ""
        while run.epoch < tc.epochs and not stopped:
            position = (run.epoch, run.batch)
            train_metrics = self._train_epoch(run, lr_fn, past)
            if deadline is not None and (run.epoch, run.batch) == position:  # out of time before one batch:
                stopped = f"time limit of {tc.max_minutes} min"  # nothing to record; last.pt already holds this
                break
            stopped = self._end_epoch(run, train_metrics, lr_fn(run.step), past)
        if self.main:
            self._plot(run.history)
        if stopped:
            self.log(f"stopped early: {stopped}")
        ddp.barrier()
        return {"run_dir": self.out_dir, "epochs": run.epoch, "steps": run.step, "best": run.best,
                "select_metric": tc.select_metric, "stopped": stopped or None,
                "last": run.history[-1] if run.history else {}}

    def close(self) -> None:
        """Leave the process group this trainer joined (no-op otherwise)."""
        if self._owns_group:
            ddp.cleanup()
            self._owns_group = False

    def _resume(self) -> RunState:
        """Load ``last.pt`` (read on rank 0, sent to every rank) into the model, optimiser and loss."""
        path = os.path.join(self.out_dir, "last.pt")
        ckpt = ddp.broadcast_object(load_checkpoint(path) if self.main and os.path.isfile(path) else None)
        if ckpt is None:
            return RunState()
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if self.ema is not None and "train_model" in ckpt:
            self.ema.module.load_state_dict(ckpt["model"])
            self.ema.n_averaged.fill_(int(ckpt["ema_steps"]))
        elif self.ema is not None:  # saved without averaging: start the average from the weights
            self.ema = ema_model(self.model, self.cfg.train.ema_decay)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.loss_fn.load_state_dict(ckpt["loss_state"])
        if self.precision.scaler is not None and "grad_scaler" in ckpt:
            self.precision.scaler.load_state_dict(ckpt["grad_scaler"])
        rng = ckpt.get("rng") or []
        if len(rng) == self.world:
            torch.set_rng_state(rng[self.rank])
        else:
            self.log(f"{path}: saved by {len(rng)} process(es), resumed by {self.world}: new augmentation streams")
        run = RunState(ckpt["epoch"], ckpt["batch"], ckpt["step"], ckpt["best"], ckpt["bad_epochs"], ckpt["history"])
        self.log(f"resuming from {path}: epoch {run.epoch + 1}, batch {run.batch}, step {run.step}")
        return run

    def _train_epoch(self, run: RunState, lr_fn: Callable[[int], float], past: Callable[[], bool]) -> dict:
        """Train the rest of epoch ``run.epoch`` (from batch ``run.batch``) or until ``past()``; updates ``run``."""
        cfg, tc = self.cfg, self.cfg.train
        group = tc.pk_images if tc.pk_items > 0 else 1
        batches = ddp.RankBatches(epoch_batches(self.train_ds, cfg, run.epoch), self.rank, self.world, group,
                                  skip=run.batch)
        loader = make_loader(self.train_ds, cfg, batches, seed=cfg.seed * 1000 + run.epoch, device=self.device)
        start = run.batch

        def on_step(step: int, index: int) -> None:
            run.step, run.batch = step, start + index + 1
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                self._save(run, improved=False)

        metrics, run.step = train_one_epoch(
            self.train_module, loader, self.optimizer, weights=stage_weights(run.epoch, cfg.loss), step=run.step,
            lr_fn=lr_fn, backbone_fn=lambda s: backbone_trains(s, int(tc.head_epochs * self.steps_per_epoch)),
            device=self.device, precision=self.precision, grad_clip=tc.grad_clip,
            channels_last=tc.channels_last, stop=past, on_step=on_step, progress=self.progress,
            desc=f"epoch {run.epoch + 1}/{tc.epochs}")
        return ddp.merge_train_metrics(ddp.all_gather_objects(metrics))

    def _end_epoch(self, run: RunState, train_metrics: dict, lr: float, past: Callable[[], bool]) -> str:
        """Validate, record, decide (rank 0, sent to all), checkpoint; returns why to stop ("" = go on)."""
        ddp.sync_buffers(self.model)
        if self.ema is not None:
            ddp.sync_buffers(self.ema.module)
        val = self.validate()
        out_of_time = past()
        decision: dict[str, Any] = {}
        if self.main:
            try:
                decision = self._decide(run, {"step": run.step, "lr": lr, **train_metrics, **val}, out_of_time)
            except ValueError as exc:  # bad select_metric: every rank must raise, not wait
                decision = {"error": str(exc)}
        decision = ddp.broadcast_object(decision)
        if "error" in decision:
            raise ValueError(decision["error"])
        run.history.append(decision["record"])
        run.best, run.bad_epochs = decision["best"], decision["bad_epochs"]
        if run.batch >= self.steps_per_epoch:  # a time limit may end an epoch early: resume continues it
            run.epoch, run.batch = run.epoch + 1, 0
        self._save(run, decision["improved"])
        if self.main:
            self._log_epoch(run.history, decision["improved"])
        return decision["stopped"]

    def _decide(self, run: RunState, record: dict, past: bool) -> dict[str, Any]:
        tc = self.cfg.train
        record = {"epoch": run.epoch + 1, **record}
        if run.batch < self.steps_per_epoch:
            record.update(partial=True, batches=run.batch)
        improved, best = self._improved(record, run.best)
        bad = 0 if improved else run.bad_epochs + 1
        stopped = ""
        if past:
            stopped = f"time limit of {tc.max_minutes} min"
        elif tc.early_stop_patience and bad >= tc.early_stop_patience:
            stopped = f"no improvement of {self._selection_key(record)} for {bad} epochs"
        return {"record": record, "improved": improved, "best": best, "bad_epochs": bad, "stopped": stopped}

    def _save(self, run: RunState, improved: bool) -> None:
        """Write last.pt (and best.pt when ``improved``) on rank 0; every rank must call it (RNG gather)."""
        rng = ddp.all_gather_objects(torch.get_rng_state())
        if not self.main:
            return
        state = self.state(run, rng)
        save_checkpoint(os.path.join(self.out_dir, "last.pt"), state)
        if improved:
            save_checkpoint(os.path.join(self.out_dir, "best.pt"), state)

    def _selection_key(self, record: dict) -> str:
        """``select_metric``, or "train_loss" when there is no validation data; a key the validation does
        not produce is a ValueError listing the ones it does."""
        key = self.cfg.train.select_metric
        if key in record or key == "last":
            return key
        if not len(self.val_ds) or not any(k.startswith("val_") for k in record):
            return "train_loss"
        known = sorted(k for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ValueError(f"select_metric {key!r} is not a metric of this run; choices: {', '.join(known)}")

    def _improved(self, record: dict, best: float | None) -> tuple[bool, float | None]:
        """(whether ``record`` beats ``best``, the new best).  Losses, normalised errors (``_ne``) and
        calibration errors (``_ece``) are minimised; everything else is maximised."""
        key = self._selection_key(record)
        if key == "last":  # no selection on validation data: best.pt is the latest completed epoch
            return True, float(record["epoch"])
        value = record.get(key)
        if value is None:
            return False, best
        minimise = key.endswith("loss") or key.endswith("_ne") or key.endswith("_ece")
        better = best is None or (value < best if minimise else value > best)
        return better, (value if better else best)

    def _log_epoch(self, history: list[dict], improved: bool) -> None:
        """Rewrite metrics.jsonl from the history (atomic; stays consistent with last.pt) and log a line."""
        atomic_write(os.path.join(self.out_dir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in history))
        record = history[-1]
        shown = {k: record[k] for k in ("train_loss", "val_loss", "val_category_top1", "val_retrieval_top20",
                                         "val_landmark_ne", "train_images_per_s") if record.get(k) is not None}
        partial = f" (partial: {record['batches']}/{self.steps_per_epoch} batches)" if record.get("partial") else ""
        self.log(f"epoch {record['epoch']}{partial}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
                 + ("  (best)" if improved else ""))

    def _plot(self, history: list[dict]) -> None:
        if not history:
            return
        keys = [k for k in ("train_loss", "val_loss", "val_category_top1", "val_retrieval_top20", "val_landmark_ne")
                if any(h.get(k) is not None for h in history)]
        plot_curves(history, keys, os.path.join(self.out_dir, "curves.png"))


def fit(cfg: RunConfig, out_dir: str, *, resume: bool = True, progress: bool = True,
        log: Callable[..., Any] = print) -> dict[str, Any]:
    """Train a model as configured into ``out_dir`` (resuming from ``out_dir/last.pt`` when present).

    Single-process, or data-parallel when launched by torchrun (every rank returns the same summary).
    """
    trainer = Trainer(cfg, out_dir, progress=progress, log=log)
    try:
        return trainer.fit(resume=resume)
    finally:
        trainer.close()


def config_from_checkpoint(ckpt: dict) -> RunConfig:
    return from_dict(ckpt["config"])
