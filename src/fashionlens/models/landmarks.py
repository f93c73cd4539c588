"""Landmark pooling: the FashionNet local branch, features gathered around (predicted) landmarks."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def landmark_grid(landmarks: torch.Tensor, grid: int = 3, window: float = 0.125) -> torch.Tensor:
    """Sampling points around each landmark, in ``F.grid_sample`` coordinates.

    ``landmarks``: (B, K, 2) (x, y) in [0, 1] of the image.  Each landmark gets a ``grid x grid``
    lattice spanning ``window`` (fraction of the image side) centred on it.
    Returns (B, K * grid, grid, 2) in [-1, 1] (``align_corners=False``: -1 is the image's outer edge).
    """
    b, k, _ = landmarks.shape
    if grid > 1:
        offsets = torch.linspace(-window / 2, window / 2, grid, device=landmarks.device, dtype=landmarks.dtype)
    else:
        offsets = landmarks.new_zeros(1)
    gx = landmarks[..., 0, None, None] + offsets.view(1, 1, 1, grid)  # (B, K, 1, G): columns vary
    gy = landmarks[..., 1, None, None] + offsets.view(1, 1, grid, 1)  # (B, K, G, 1): rows vary
    points = torch.stack(torch.broadcast_tensors(gx, gy), -1)  # (B, K, G, G, 2)
    return (points * 2 - 1).reshape(b, k * grid, grid, 2)


def pool_landmarks(features: torch.Tensor, landmarks: torch.Tensor, grid: int = 3,
                   window: float = 0.125) -> torch.Tensor:
    """Max of bilinearly sampled features over a small window around each landmark.

    ``features``: (B, C, h, w) covering the whole image; ``landmarks``: (B, K, 2) in [0, 1].
    Points outside the image read zeros.  Returns (B, K, C).
    """
    b, c = features.shape[:2]
    k = landmarks.shape[1]
    points = landmark_grid(landmarks.to(features.dtype), grid, window)
    samples = F.grid_sample(features, points, mode="bilinear", padding_mode="zeros", align_corners=False)
    return samples.reshape(b, c, k, grid * grid).amax(-1).transpose(1, 2)  # (B, K, C)


class LocalBranch(nn.Module):
    """Reduce channels, pool around each landmark, gate by visibility, project to ``out_features``.

    forward(features (B, C, h, w), landmarks (B, K, 2) in [0, 1], gate (B, K) in [0, 1]) -> (B, out_features).
    """

    def __init__(self, in_channels: int, num_landmarks: int = 8, channels: int = 32, out_features: int = 256,
                 grid: int = 3, window: float = 0.125):
        super().__init__()
        if grid < 1 or not 0 < window <= 1:
            raise ValueError(f"local_grid must be >= 1 and local_window in (0, 1], got {grid} and {window}")
        self.grid, self.window = grid, window
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Linear(num_landmarks * channels, out_features), nn.ReLU(inplace=True))

    def forward(self, features: torch.Tensor, landmarks: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(features)  # (B, c, h, w)
        pooled = pool_landmarks(reduced, landmarks, self.grid, self.window)  # (B, K, c)
        pooled = pooled * gate.unsqueeze(-1)  # occluded / truncated landmarks contribute less
        return self.project(pooled.flatten(1))  # (B, out_features)
