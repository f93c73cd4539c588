"""Weight averaging: an exponential moving average of the weights (BatchNorm statistics included), with warm-up."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """``torch.optim.swa_utils.AveragedModel`` keeping an exponential moving average of ``model``'s weights
    and BatchNorm statistics, with the usual warm-up: step n averages with ``min(decay, (1 + n) / (10 + n))``,
    so early in a run (or in a short one) the average follows the weights instead of the initialisation."""
    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        n = float(steps)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for a, c in zip(averaged, current):
                a.copy_(a * d + c * (1.0 - d))

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)
