"""Landmark heads: a heatmap head with a differentiable soft-argmax, and direct regression.

Both return landmark positions ``(B, K, 2)`` as (x, y) in [0, 1] of the input image (x / W, y / H)
and visibility logits ``(B, K, 3)`` (0 visible, 1 occluded, 2 truncated).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_VISIBILITY = 3


def soft_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected position under the softmax of each heatmap.

    ``heatmaps``: (B, K, h, w) logits.  Returns ``(xy (B, K, 2) in [0, 1], probs (B, K, h, w))``;
    cell (i, j) has its centre at ((j + 0.5) / w, (i + 0.5) / h), the ``align_corners=False`` convention.
    """
    b, k, h, w = heatmaps.shape
    probs = heatmaps.flatten(2).softmax(-1).view(b, k, h, w)
    xs = (torch.arange(w, device=heatmaps.device, dtype=probs.dtype) + 0.5) / w
    ys = (torch.arange(h, device=heatmaps.device, dtype=probs.dtype) + 0.5) / h
    x = (probs.sum(2) * xs).sum(-1)  # (B, K): marginal over rows, then expectation over columns
    y = (probs.sum(3) * ys).sum(-1)
    return torch.stack([x, y], -1), probs


class PerLandmarkLinear(nn.Module):
    """A separate linear map per landmark: (B, K, C) -> (B, K, out)."""

    def __init__(self, num_landmarks: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_landmarks, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_landmarks, out_features))
        nn.init.normal_(self.weight, std=in_features ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkc,kco->bko", x, self.weight) + self.bias


class HeatmapHead(nn.Module):
    """1x1 reduce, ``upsample`` x2 deconvolutions, 1x1 to K heatmaps, soft-argmax.

    Visibility logits come from each landmark's heatmap-weighted (attention-pooled) features.
    Heatmap side = feature side * 2**upsample.
    """

    def __init__(self, in_channels: int, num_landmarks: int = 8, channels: int = 64, upsample: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                   nn.ReLU(inplace=True)]
        for _ in range(upsample):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.to_heatmaps = nn.Conv2d(channels, num_landmarks, 1)
        nn.init.normal_(self.to_heatmaps.weight, std=1e-3)  # near-uniform heatmaps: start at the centre
        nn.init.zeros_(self.to_heatmaps.bias)
        self.visibility = PerLandmarkLinear(num_landmarks, channels, NUM_VISIBILITY)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``features`` (B, C, h, w) -> landmarks (B, K, 2), visibility (B, K, 3), heatmaps (B, K, h', w')."""
        body = self.body(features)  # (B, c, h', w')
        heatmaps = self.to_heatmaps(body)  # (B, K, h', w')
        xy, probs = soft_argmax(heatmaps)
        attended = torch.einsum("bkhw,bchw->bkc", probs, body)  # (B, K, c)
        return {"landmarks": xy, "visibility": self.visibility(attended), "heatmaps": heatmaps}


class RegressionHead(nn.Module):
    """Pooled features -> MLP -> sigmoid positions and visibility logits."""

    def __init__(self, in_channels: int, num_landmarks: int = 8, hidden: int = 256):
        super().__init__()
        self.k = num_landmarks
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True))
        self.position = nn.Linear(hidden, num_landmarks * 2)
        self.visibility = nn.Linear(hidden, num_landmarks * NUM_VISIBILITY)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``features`` (B, C, h, w) -> landmarks (B, K, 2) in (0, 1), visibility (B, K, 3)."""
        hidden = self.mlp(F.adaptive_avg_pool2d(features, 1).flatten(1))  # (B, hidden)
        xy = torch.sigmoid(self.position(hidden)).view(-1, self.k, 2)
        return {"landmarks": xy, "visibility": self.visibility(hidden).view(-1, self.k, NUM_VISIBILITY)}


def make_landmark_head(kind: str, in_channels: int, num_landmarks: int, hidden: int) -> nn.Module:
    """``kind``: "heatmap" or "regression"."""
    if kind == "heatmap":
        return HeatmapHead(in_channels, num_landmarks, channels=max(32, hidden // 4))
    if kind == "regression":
        return RegressionHead(in_channels, num_landmarks, hidden)
    raise ValueError(f"unknown landmark_head {kind!r}; choices: 'heatmap', 'regression'")
