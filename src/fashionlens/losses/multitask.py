"""The multi-task loss: one masked term per task, and their weighted sum.

``MultiTaskLoss(cfg)(outputs, batch)`` reads the model's output dict and the data set's batch dict
(see ``fashionlens.data.dataset``) and returns ``{"loss": weighted sum, <task>: term, ...}``.  A term
is computed when the model produced its output and the batch carries its labels; unknown labels
(-1 categories / items, attribute_mask 0, landmark_mask False) contribute nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fashionlens.config import LossConfig
from fashionlens.losses.metric import METRIC_LABELS, build_metric_loss
from fashionlens.utils import import_torchvision

TASKS = ("category", "levels", "attributes", "landmarks", "visibility", "item", "metric", "bbox", "distill", "kd")
LANDMARK_LOSSES = ("l1", "mse", "heatmap")


def task_weights(cfg: LossConfig) -> dict[str, float]:
    """Task name -> weight, as configured."""
    return {task: float(getattr(cfg, task)) for task in TASKS}


def stage_weights(epoch: int, cfg: LossConfig) -> dict[str, float]:
    """FashionNet's two-stage schedule: landmarks first, then every task.

    For ``epoch < cfg.landmark_epochs`` (0-based) the landmark and visibility weights are multiplied by
    ``landmark_stage_boost`` and every other weight by ``landmark_stage_others``; afterwards the
    configured weights apply.
    """
    weights = task_weights(cfg)
    if epoch >= cfg.landmark_epochs:
        return weights
    return {task: w * (cfg.landmark_stage_boost if task in ("landmarks", "visibility") else cfg.landmark_stage_others)
            for task, w in weights.items()}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is set (broadcast); 0 (with gradient) when nothing is."""
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over (B, C) logits ignoring targets < 0; 0 when no target is known."""
    target = target.long()
    if not bool((target >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.clamp_min(-1), weight=weight, ignore_index=-1,
                           label_smoothing=label_smoothing)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation: ``T² · KL(teacher || softmax(student / T))``, batch mean (the T² keeps the
    gradient scale of the hard-label term when T changes; Hinton et al., 2015)."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature ** 2


def attribute_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE-with-logits over (B, A), averaged over the known entries (``mask`` 1)."""
    per = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none",
                                             pos_weight=pos_weight)
    return masked_mean(per, mask)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 or MSE between (B, K, 2) positions in [0, 1], averaged over coordinates of landmarks in ``mask``."""
    if kind == "l1":
        per = (pred - target.to(pred.dtype)).abs()
    elif kind == "mse":
        per = (pred - target.to(pred.dtype)).square()
    else:
        raise ValueError(f"unknown position loss {kind!r}; choices: 'l1', 'mse'")
    return masked_mean(per, mask.unsqueeze(-1))


def gaussian_targets(target: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Normalised Gaussian heatmaps (B, K, h, w) centred at (B, K, 2) positions in [0, 1]; ``sigma`` in cells."""
    xs = torch.arange(width, device=target.device, dtype=target.dtype)  # cell j has its centre at (j + 0.5) / w
    ys = torch.arange(height, device=target.device, dtype=target.dtype)
    cx = target[..., 0, None] * width - 0.5  # (B, K, 1) in cell units
    cy = target[..., 1, None] * height - 0.5
    d2 = (ys.view(1, 1, -1, 1) - cy[..., None]).square() + (xs.view(1, 1, 1, -1) - cx[..., None]).square()
    logits = -d2 / (2 * sigma * sigma)  # (B, K, h, w)
    return logits.flatten(2).softmax(-1).view_as(logits)


def heatmap_loss(heatmaps: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """KL(Gaussian target || softmax(heatmap)) per landmark, averaged over landmarks in ``mask``.

    ``heatmaps`` (B, K, h, w) logits; ``target`` (B, K, 2) in [0, 1]; 0 for a perfect match.
    """
    b, k, h, w = heatmaps.shape
    q = gaussian_targets(target.to(heatmaps.dtype), h, w, sigma).flatten(2)  # (B, K, h*w)
    log_p = heatmaps.flatten(2).log_softmax(-1)
    kl = (q * (q.clamp_min(1e-12).log() - log_p)).sum(-1)  # (B, K)
    return masked_mean(kl, mask)


def box_loss(pred: torch.Tensor, target: torch.Tensor, has_box: torch.Tensor) -> torch.Tensor:
    """L1 + generalised IoU loss of (B, 4) x1y1x2y2 boxes in [0, 1], averaged over images with a box."""
    if not has_box.any():
        return pred.sum() * 0.0
    import_torchvision()
    from torchvision.ops import generalized_box_iou_loss  # lazy: only after the CPU shim above, and only with boxes

    p, t = pred[has_box].float(), target[has_box].float()
    return F.l1_loss(p, t) + generalized_box_iou_loss(p, t, reduction="mean", eps=1e-6)


def visibility_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, K, 3) visibility logits against (B, K) classes, averaged where ``mask``."""
    per = F.cross_entropy(logits.flatten(0, 1), target.long().flatten(), reduction="none").view_as(target)
    return masked_mean(per.to(logits.dtype), mask)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the task losses; an ``nn.Module`` so metric-loss parameters (ProxyAnchor proxies)
    reach the optimizer through ``parameters()`` and follow ``.to(device)``.

    ``class_weights`` (num_categories,) weights the category cross-entropy; ``attribute_pos_weight``
    (num_attributes,) overrides ``cfg.attribute_pos_weight``; ``level_maps[l]`` (num_categories,) maps a
    category to its class at hierarchy level ``l`` (-1 none), used when the batch has no "levels" (B, L).
    """

    def __init__(self, cfg: LossConfig, num_items: int = 0, embedding_dim: int = 128,
                 class_weights: torch.Tensor | None = None, attribute_pos_weight: torch.Tensor | None = None,
                 level_maps: Sequence[torch.Tensor] = ()):
        super().__init__()
        if cfg.landmark_loss not in LANDMARK_LOSSES:
            raise ValueError(f"unknown landmark_loss {cfg.landmark_loss!r}; choices: {', '.join(LANDMARK_LOSSES)}")
        if cfg.metric_labels not in METRIC_LABELS:
            raise ValueError(f"unknown metric_labels {cfg.metric_labels!r}; choices: {', '.join(METRIC_LABELS)}")
        self.cfg = cfg
        self.metric = build_metric_loss(cfg, num_items, embedding_dim) if cfg.metric > 0 else None
        self.embedding_dim = int(embedding_dim)
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())
        if attribute_pos_weight is None and cfg.attribute_pos_weight != 1.0:
            attribute_pos_weight = torch.tensor(float(cfg.attribute_pos_weight))
        self.register_buffer("pos_weight", None if attribute_pos_weight is None else attribute_pos_weight.float())
        for i, mapping in enumerate(level_maps):
            self.register_buffer(f"level_map_{i}", torch.as_tensor(mapping, dtype=torch.long))
        self.num_levels = len(level_maps)

    def terms(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every task term the outputs and the batch allow (unweighted)."""
        cfg, out = self.cfg, {}
        if "category" in outputs and "category" in batch:
            out["category"] = cross_entropy(outputs["category"], batch["category"], self.class_weights,
                                            cfg.label_smoothing)
        if outputs.get("levels"):
            level_targets = self._level_targets(batch)
            if level_targets is not None:
                out["levels"] = torch.stack([cross_entropy(logits, level_targets[:, i], None, cfg.label_smoothing)
                                             for i, logits in enumerate(outputs["levels"])]).mean()
        if "attributes" in outputs and "attributes" in batch:
            mask = batch.get("attribute_mask", torch.ones_like(batch["attributes"]))
            out["attributes"] = attribute_loss(outputs["attributes"], batch["attributes"], mask, self.pos_weight)
        if "landmarks" in outputs and "landmarks" in batch:
            out.update(self._landmark_terms(outputs, batch))
        if "bbox" in outputs and "bbox" in batch and "has_bbox" in batch:
            out["bbox"] = box_loss(outputs["bbox"], batch["bbox"], batch["has_bbox"].bool())
        if "item" in outputs and "item" in batch:
            out["item"] = cross_entropy(outputs["item"], batch["item"], None, cfg.label_smoothing)
        if "pooled" in outputs and "teacher_pooled" in outputs:  # feature distillation: cosine distance
            out["distill"] = (1 - F.cosine_similarity(outputs["pooled"].float(),
                                                      outputs["teacher_pooled"].float(), dim=1)).mean()
        if "category" in outputs and "teacher_category" in outputs:  # distillation from teacher runs
            out["kd"] = kd_loss(outputs["category"], outputs["teacher_category"], cfg.kd_temperature)
        labels = batch.get(cfg.metric_labels)
        if self.metric is not None and "embedding" in outputs and labels is not None:
            # in eval a model with search_pooled returns a wider search vector that ends with the embedding
            embedding = outputs["embedding"][:, -self.embedding_dim:]
            out["metric"] = self.metric(embedding, labels.long())
        return out

    def _level_targets(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """(B, L) level classes from the batch, or mapped from its categories."""
        if "levels" in batch:
            return batch["levels"].long()
        if not self.num_levels or "category" not in batch:
            return None
        category = batch["category"].long()
        known = category >= 0
        columns = [torch.where(known, getattr(self, f"level_map_{i}")[category.clamp_min(0)], -1)
                   for i in range(self.num_levels)]
        return torch.stack(columns, 1)

    def _landmark_terms(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        present = batch["landmark_mask"].bool()  # (B, K)
        visibility = batch["visibility"].long()
        visible = present & (visibility == 0)
        if self.cfg.landmark_loss == "heatmap":
            if "heatmaps" not in outputs:
                raise ValueError("landmark_loss='heatmap' needs a model with landmark_head='heatmap'")
            position = heatmap_loss(outputs["heatmaps"], batch["landmarks"], visible, self.cfg.heatmap_sigma)
        else:
            position = landmark_loss(outputs["landmarks"], batch["landmarks"], visible, self.cfg.landmark_loss)
        out = {"landmarks": position}
        if "visibility" in outputs:
            out["visibility"] = visibility_loss(outputs["visibility"], visibility, present)
        return out

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any],
                weights: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": sum of weight * term, <task>: term}``; ``weights`` (e.g. ``stage_weights``) override cfg."""
        weights = task_weights(self.cfg) if weights is None else dict(weights)
        unknown = set(weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task weight(s) {sorted(unknown)}; tasks: {', '.join(TASKS)}")
        terms = self.terms(outputs, batch)
        if not terms:
            raise ValueError("no loss term applies: the outputs and the batch share no task "
                             f"(outputs {sorted(outputs)}, batch {sorted(batch)})")
        total = sum(weights.get(task, 0.0) * value for task, value in terms.items())
        return {"loss": total, **terms}
