"""Losses: the weighted multi-task loss and metric-learning losses from pytorch-metric-learning."""

from fashionlens.losses.metric import MetricLoss, build_metric_loss
from fashionlens.losses.multitask import TASKS, MultiTaskLoss, stage_weights, task_weights

__all__ = ["TASKS", "MetricLoss", "MultiTaskLoss", "build_metric_loss", "stage_weights", "task_weights"]
