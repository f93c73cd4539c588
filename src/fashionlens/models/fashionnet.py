"""FashionNet-style multi-task network: global branch, landmark branch, landmark-pooled local branch.

One image goes through the backbone once.  The global branch pools the whole feature map; the landmark
branch predicts the 8 unified landmarks (positions in [0, 1] of the input image, and visibility); the
local branch samples features around the PREDICTED landmarks (no ground truth needed at test time),
weighted by the predicted probability that each landmark is visible.  The local branch reads the final map
(``local_stride=32``, the default) or, like the original FashionNet's conv4, a finer mid-level stage of the
same pass (``local_stride=16`` or ``8``, found from the backbone's ``feature_info``).  Global and local features are
fused and feed the heads: category, hierarchy levels, attributes, an L2-normalised embedding and an
optional item-identity classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fashionlens.config import ModelConfig
from fashionlens.models.attention import SpatialAttention
from fashionlens.models.backbones import create_backbone, freeze_stages
from fashionlens.models.heads import make_landmark_head
from fashionlens.models.landmarks import LocalBranch

NUM_LANDMARKS = 8
EMBEDDING_INPUTS = ("fused", "pooled")  # what the embedding head reads
#: ``local_stride`` that always means the final map, whatever its reduction (tiny_cnn's is 8): the default,
#: and what every run made before ``local_stride`` existed used.
FINAL_MAP_STRIDE = 32

#: Named presets for ``create_model``: keyword arguments of ``FashionNet``.
PRESETS: dict[str, dict[str, Any]] = {
    "fashionnet": {"use_landmarks": True, "use_local": True},
    "global": {"use_landmarks": False, "use_local": False},
}


class FashionNet(nn.Module):
    """Multi-task garment network.

    ``forward(images (B, 3, H, W), landmarks=None)`` returns a dict of tensors (keys of disabled parts
    are absent):

    * ``"category"`` (B, num_categories) logits; ``"levels"`` list of (B, n_level) logits, one per level
    * ``"attributes"`` (B, num_attributes) multi-label logits
    * ``"landmarks"`` (B, 8, 2) (x, y) in [0, 1]; ``"visibility"`` (B, 8, 3) logits;
      ``"heatmaps"`` (B, 8, h', w') logits (heatmap head only)
    * ``"embedding"`` (B, embedding_dim), unit L2 norm (in eval with ``search_pooled`` > 0 the search vector
      (B, search_dim): the normalised pooled features first, the embedding's direction in the last columns);
      ``"item"`` (B, num_items) logits
    * ``"bbox"`` (B, 4) garment box x1, y1, x2, y2 in [0, 1] of the input image (``use_bbox``)
    * ``"attention"`` (B, h, w) spatial saliency in [0, 1] weighting the global pooling (``spatial_attention``)
    * ``"features"`` (B, hidden_dim) fused features the heads read

    ``landmarks`` (B, 8, 2) in [0, 1], when given, replaces the predicted positions in the local
    branch (teacher forcing during training); the predicted ones are still returned.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "tiny_cnn",
        num_categories: int = 0,
        num_attributes: int = 0,
        embedding_dim: int = 128,
        num_items: int = 0,
        level_sizes: Sequence[int] = (),
        use_landmarks: bool = True,
        use_local: bool = True,
        use_bbox: bool = True,
        spatial_attention: bool = False,
        landmark_head: str = "heatmap",
        fuse_conv: bool = False,
        embedding_from: str = "fused",
        hidden_dim: int = 256,
        local_channels: int = 32,
        local_grid: int = 3,
        local_window: float = 0.125,
        local_stride: int = FINAL_MAP_STRIDE,
        detach_landmarks: bool = True,
        dropout: float = 0.1,
        pretrained: bool | str = False,
        frozen_stages: int = 0,
        tta_flip: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        search_pooled: float = 0.0,
    ):
        super().__init__()
        if use_local and not use_landmarks:
            raise ValueError("use_local needs the landmark branch (use_landmarks=True): it pools at landmarks")
        if embedding_from not in EMBEDDING_INPUTS:
            raise ValueError(f"embedding_from must be one of {', '.join(EMBEDDING_INPUTS)}, got {embedding_from!r}")
        if embedding_dim < 1 or hidden_dim < 1:
            raise ValueError(f"embedding_dim and hidden_dim must be positive, got {embedding_dim}, {hidden_dim}")
        if not search_pooled >= 0:
            raise ValueError(f"search_pooled must be >= 0 (0: search with the embedding alone), got {search_pooled}")
        self.backbone = create_backbone(backbone, pretrained, **(backbone_kwargs or {})) if isinstance(backbone, str) else backbone
        if not hasattr(self.backbone, "forward_features") or not hasattr(self.backbone, "num_features"):
            raise TypeError("backbone module must provide forward_features(x) -> (B, C, h, w) and num_features")
        channels = int(self.backbone.num_features)
        # Frozen stem + first stages ("head plus last blocks" fine-tuning): no gradients, BatchNorm kept in eval.
        self._frozen = freeze_stages(self.backbone, frozen_stages)
        self.tta_flip = tta_flip  # eval mode: average the predictions for the image and its mirror
        self.fuse_conv, self.detach_landmarks = fuse_conv, detach_landmarks
        self.global_proj = nn.Sequential(nn.Linear(channels, hidden_dim), nn.ReLU(inplace=True))
        self.attention = SpatialAttention(channels) if spatial_attention else None
        self.landmark_head = make_landmark_head(landmark_head, channels, NUM_LANDMARKS, hidden_dim) \
            if use_landmarks else None
        # Which map the local branch samples: None = the final map (as before local_stride), else the
        # feature_info index of a mid-level stage, returned by the same backbone pass (forward_intermediates).
        self.local_stride = int(local_stride)
        self._local_index = _local_stage(self.backbone, self.local_stride) if use_local else None
        local_in = channels if self._local_index is None else _stage_channels(self.backbone, self._local_index)
        self.local = LocalBranch(local_in, NUM_LANDMARKS, local_channels, hidden_dim, local_grid, local_window) \
            if use_local else None
        fused_in = hidden_dim * (2 if use_local else 1)
        self.fuse = nn.Sequential(nn.Linear(fused_in, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.category = nn.Linear(hidden_dim, num_categories) if num_categories > 0 else None
        self.levels = nn.ModuleList(nn.Linear(hidden_dim, int(n)) for n in level_sizes)
        self.attributes = nn.Linear(hidden_dim, num_attributes) if num_attributes > 0 else None
        self._fuse_index = _penultimate_index(self.backbone) if fuse_conv else None
        conv_channels = _stage_channels(self.backbone, self._fuse_index) if fuse_conv else 0
        self.embedding_from = embedding_from
        self.embedding = nn.Linear((hidden_dim if embedding_from == "fused" else channels) + conv_channels,
                                   embedding_dim)
        self.item = nn.Linear(embedding_dim, num_items) if num_items > 0 else None
        # Search vectors (eval): the trained embedding alone, or with search_pooled w > 0 the normalised
        # concatenation [w * normalised pooled backbone features, embedding]: the backbone's general features
        # next to the trained ones, for kinds of garment never trained on.  The embedding stays the last
        # embedding_dim columns (in direction), which is what the metric loss reads.
        self.search_pooled = float(search_pooled)
        self.search_dim = int(embedding_dim) + (channels if self.search_pooled > 0 else 0)
        self.bbox = nn.Linear(hidden_dim, 4) if use_bbox else None  # (cx, cy, w, h) logits

    def _backbone(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One backbone pass: (final feature map (B, C, h, w), penultimate-stage map for ``fuse_conv`` or
        None, the map the local branch samples (the final one unless ``local_stride`` picks a stage))."""
        wanted = sorted({i for i in (self._fuse_index, self._local_index) if i is not None})
        if not wanted:
            final = self.backbone.forward_features(images)
            return final, None, final
        final, intermediates = self.backbone.forward_intermediates(images, indices=wanted)
        maps = dict(zip(wanted, intermediates))  # intermediates come in stage order
        mid = None if self._fuse_index is None else maps[self._fuse_index]
        return final, mid, final if self._local_index is None else maps[self._local_index]

    def train(self, mode: bool = True) -> "FashionNet":
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict[str, Any]:
        if self.tta_flip and not self.training:
            return _merge_flipped(self._forward(torch.cat([images, torch.flip(images, dims=[3])])), len(images))
        return self._forward(images, landmarks)

    def _forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict[str, Any]:
        feats, mid, local_feats = self._backbone(images)  # (B, C, h, w); local: (B, C', H/s, W/s)
        out: dict[str, Any] = {}
        if self.attention is not None:
            pooled, out["attention"] = self.attention(feats)  # (B, C), saliency (B, h, w)
        else:
            pooled = F.adaptive_avg_pool2d(feats, 1).flatten(1)  # (B, C)
        if self.training:
            out["pooled"] = pooled  # (B, C) for the feature-distillation loss (not an inference output)
        parts = [self.global_proj(pooled)]  # (B, hidden)
        if self.landmark_head is not None:
            out.update(self.landmark_head(feats))  # landmarks (B, 8, 2), visibility (B, 8, 3)
        if self.local is not None:
            where = out["landmarks"] if landmarks is None else landmarks.to(feats.dtype)
            gate = out["visibility"].softmax(-1)[..., 0]  # (B, 8) probability "visible"
            if self.detach_landmarks:
                where, gate = where.detach(), gate.detach()
            parts.append(self.local(local_feats, where, gate))  # (B, hidden)
        fused = self.fuse(torch.cat(parts, 1))  # (B, hidden)
        out["features"] = fused
        if self.bbox is not None:
            out["bbox"] = _box_from_logits(self.bbox(parts[0]))  # from the global branch
        if self.category is not None:
            out["category"] = self.category(fused)
        if len(self.levels):
            out["levels"] = [head(fused) for head in self.levels]
        if self.attributes is not None:
            out["attributes"] = self.attributes(fused)
        emb_in = fused if self.embedding_from == "fused" else pooled
        if mid is not None:
            emb_in = torch.cat([emb_in, F.adaptive_avg_pool2d(mid, 1).flatten(1)], 1)
        raw = self.embedding(emb_in)  # (B, D)
        out["embedding"] = F.normalize(raw, dim=1)
        if self.search_pooled > 0 and not self.training:  # (B, C + D) search vector
            general = self.search_pooled * F.normalize(pooled, dim=1)
            out["embedding"] = F.normalize(torch.cat([general, out["embedding"]], 1), dim=1)
        if self.item is not None:
            out["item"] = self.item(raw)
        return out

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval embeddings (B, search_dim) (no gradient; caller sets eval mode)."""
        return self.forward(images)["embedding"]


def _merge_flipped(out: dict[str, Any], n: int) -> dict[str, Any]:
    """Test-time mirroring: the outputs of ``[images, mirrored images]`` (2n rows) -> n rows.  Class,
    attribute and item logits and the fused features are averaged; the embedding is the normalised mean;
    geometric outputs (landmarks, box, heatmaps, attention) come from the unmirrored half."""
    merged: dict[str, Any] = {}
    for key, value in out.items():
        if key == "levels":
            merged[key] = [(v[:n] + v[n:]) / 2 for v in value]
        elif key in ("category", "attributes", "item", "features"):
            merged[key] = (value[:n] + value[n:]) / 2
        elif key == "embedding":
            merged[key] = F.normalize(value[:n] + value[n:], dim=1)
        else:
            merged[key] = value[:n]
    return merged


def _box_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, 4) logits of centre and size -> (B, 4) x1, y1, x2, y2 in [0, 1], always well ordered."""
    centre, size = logits[:, :2].sigmoid(), logits[:, 2:].sigmoid()
    return torch.cat([(centre - size / 2).clamp(0, 1), (centre + size / 2).clamp(0, 1)], 1)


def _info_field(entry: Any, key: str) -> int:
    """A field of one ``feature_info`` entry (timm models: dicts; ``FeatureInfo``-like objects: attributes)."""
    return int(entry[key] if isinstance(entry, dict) else getattr(entry, key))


def _stage_channels(backbone: nn.Module, index: int) -> int:
    return _info_field(backbone.feature_info[index], "num_chs")


def _penultimate_index(backbone: nn.Module) -> int:
    info = getattr(backbone, "feature_info", None)
    if not info or len(info) < 2 or not hasattr(backbone, "forward_intermediates"):
        raise ValueError("fuse_conv needs a backbone with forward_intermediates and >= 2 feature_info stages")
    return len(info) - 2


def _local_stage(backbone: nn.Module, stride: int) -> int | None:
    """The ``feature_info`` index of the stage the local branch samples at ``stride``; None = the final map.

    The final map is taken when ``stride`` is its reduction (the last stage's) or ``FINAL_MAP_STRIDE``
    (32, the default, on any backbone); another stride must be the reduction of an earlier stage (the
    deepest one where several share it).  Anything else is a ValueError listing the strides there are.
    """
    info = list(getattr(backbone, "feature_info", None) or [])
    reductions = [_info_field(entry, "reduction") for entry in info]
    if stride == FINAL_MAP_STRIDE or (reductions and stride == reductions[-1]):
        return None
    name = type(backbone).__name__
    if not reductions or not hasattr(backbone, "forward_intermediates"):
        raise ValueError(f"local_stride={stride}: {name} has no feature_info / forward_intermediates to pick a "
                         f"mid-level stage from; only local_stride={FINAL_MAP_STRIDE} (the final map) works")
    if stride not in reductions:
        have = ", ".join(map(str, sorted(set(reductions) | {FINAL_MAP_STRIDE})))
        final = "" if reductions[-1] == FINAL_MAP_STRIDE else \
            f" ({FINAL_MAP_STRIDE} = the final map, whose own stride is {reductions[-1]})"
        raise ValueError(f"local_stride={stride}: {name} has stages at strides {have}{final}")
    return max(i for i, r in enumerate(reductions) if r == stride)


def create_model(name: str = "fashionnet", **kw: Any) -> FashionNet:
    """A ``FashionNet`` from a named preset (see ``PRESETS``); ``kw`` override the preset's arguments."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choices: {', '.join(PRESETS)}")
    return FashionNet(**{**PRESETS[name], **kw})


def build_model(cfg: ModelConfig, num_categories: int = 0, num_attributes: int = 0, num_items: int = 0,
                level_sizes: Sequence[int] = ()) -> FashionNet:
    """A model from the run config plus the label-space sizes the data set declares."""
    kw: dict[str, Any] = dict(
        backbone=cfg.backbone, pretrained=cfg.pretrained, embedding_dim=cfg.embedding_dim,
        hidden_dim=cfg.hidden_dim, use_bbox=cfg.use_bbox, spatial_attention=cfg.spatial_attention,
        landmark_head=cfg.landmark_head, fuse_conv=cfg.fuse_conv, embedding_from=cfg.embedding_from,
        local_channels=cfg.local_channels, local_grid=cfg.local_grid, local_window=cfg.local_window,
        local_stride=cfg.local_stride,
        detach_landmarks=cfg.detach_landmarks, dropout=cfg.dropout,
        frozen_stages=cfg.frozen_stages, tta_flip=cfg.tta_flip, backbone_kwargs=dict(cfg.backbone_kwargs),
        search_pooled=cfg.search_pooled,
        num_categories=num_categories, num_attributes=num_attributes, num_items=num_items,
        level_sizes=tuple(level_sizes),
    )
    if cfg.use_landmarks is not None:
        kw["use_landmarks"] = cfg.use_landmarks
    if cfg.use_local is not None:
        kw["use_local"] = cfg.use_local
    return create_model(cfg.name, **kw)
