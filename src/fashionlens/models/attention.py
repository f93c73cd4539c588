"""Spatial saliency: a learned map that weights the feature map before global pooling.

The seed thesis's spatial-salience learning: on cluttered consumer photos, average pooling mixes
background into the garment's descriptor; a 1-channel saliency map (sigmoid of a small conv head)
re-weights the locations, and pooling becomes a saliency-weighted mean.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class SpatialAttention(nn.Module):
    """``forward(features (B, C, h, w)) -> (pooled (B, C), saliency (B, h, w) in [0, 1])``."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 3, padding=1))
        nn.init.zeros_(self.score[-1].weight)  # starts as plain average pooling (uniform saliency)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        saliency = torch.sigmoid(self.score(features))  # (B, 1, h, w)
        weights = saliency / saliency.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        pooled = (features * weights).sum(dim=(2, 3))  # (B, C): saliency-weighted mean
        return pooled, saliency[:, 0]
