"""Metric-learning losses on the embedding, composed from pytorch-metric-learning objects.

* ``"triplet"``: ``TripletMarginLoss`` with ``BatchHardMiner`` (hardest positive and negative per anchor)
  or ``TripletMarginMiner(type_of_triplets="semihard")``.
* ``"contrastive"``: ``ContrastiveLoss`` on the Siamese pairs ``PairMarginMiner`` selects.
* ``"ntxent"``: ``NTXentLoss`` (SimCLR's normalised temperature-scaled cross-entropy): every other
  embedding of the batch is a negative; with ``instance_views`` it learns from unlabelled images.
* ``"proxy_anchor"``: ``ProxyAnchorLoss``; its proxies are parameters of this module, so an optimizer
  built over ``MultiTaskLoss.parameters()`` (or this module's) trains them.
* ``"multi_similarity"``: ``MultiSimilarityLoss`` (Wang et al. 2019): soft-weighted positive and negative
  cosine similarities, scaled by ``ms_alpha`` / ``ms_beta`` around ``ms_base``; every pair counts, so
  negatives are pushed below ``ms_base`` and unrelated items end far apart on the sphere.  ``ms_epsilon``
  > 0 adds the paper's ``MultiSimilarityMiner``, which keeps only pairs within epsilon of the hardest
  opposite pair and so stops once negatives are epsilon below positives (items stay in one cone).
* ``"supcon"``: ``SupConLoss`` (Khosla et al. 2020): NT-Xent with every same-label sample a positive, at
  ``temperature``.

The labels are item identities (``metric_labels: item``, same garment) or categories (``category``, same
kind: image folders without item ids, as in the deep-metric-learning benchmarks).

Distances are Euclidean between L2-normalised embeddings (the library default, ``LpDistance``).

Data-parallel training: while gradients are computed, every rank's embeddings and labels are gathered
(:func:`gather_across_ranks`, in rank order, this rank's rows keeping their gradient), so miners and
negatives see the global batch; the gradient is multiplied by the world size, as pytorch-metric-learning's
``DistributedLossWrapper`` does, so that DDP's gradient average gives the gradient of one process on the
joint batch (the value stays the global batch's loss, comparable with a single-process run).  The wrapper
itself is not used: it needs equal shard sizes and leaves its miner on the local batch.  Losses with
parameters (ProxyAnchor) stay local: every rank would give their proxies the whole batch's gradient and
DDP's average would not undo the scale; the proxies already carry what the other ranks' images taught.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from fashionlens.config import LossConfig

METRIC_LOSSES = ("triplet", "contrastive", "ntxent", "proxy_anchor", "multi_similarity", "supcon", "none")
METRIC_LABELS = ("item", "category")
MINERS = ("batch_hard", "semihard")


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order (shards may differ in length); this rank's
    rows are ``x`` itself, so gradients flow into them (the other ranks' rows are constants here).  A
    collective: every rank must call it.  ``x`` itself when no process group runs."""
    world = _world()
    if world == 1:
        return x
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: len(x)] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts[dist.get_rank()] = x
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes)])


class MetricLoss(nn.Module):
    """forward(embeddings (B, D), labels (B,) int64, -1 unknown) -> scalar loss.

    Samples with unknown labels are left out; fewer than two labelled samples give a zero loss
    (connected to the graph, so ``backward`` still works).  Data-parallel and with gradients enabled, the
    loss is that of the global batch (module docstring).
    """

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.cross_rank = not any(True for _ in loss.parameters())  # proxy losses stay local (module docstring)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        world = _world() if torch.is_grad_enabled() and self.cross_rank else 1  # validation: shards run unevenly
        if world > 1:
            embeddings, labels = gather_across_ranks(embeddings), gather_across_ranks(labels)
        keep = labels >= 0
        if int(keep.sum()) < 2:
            return embeddings.sum() * 0.0
        emb, lab = embeddings[keep], labels[keep]
        loss = self.loss(emb, lab) if self.miner is None else self.loss(emb, lab, self.miner(emb, lab))
        return loss if world == 1 else loss * world - loss.detach() * (world - 1)  # value L, gradient W x dL


def build_metric_loss(cfg: LossConfig, num_items: int = 0, embedding_dim: int = 128) -> MetricLoss | None:
    """The metric loss ``cfg.metric_loss`` names (None for "none"); ``num_items`` (the number of distinct
    labels: items, or categories with ``metric_labels: category``) sizes the proxies."""
    kind = cfg.metric_loss
    if kind == "none":
        return None
    if kind == "triplet":
        if cfg.miner == "batch_hard":
            miner: nn.Module = pml_miners.BatchHardMiner()
        elif cfg.miner == "semihard":
            miner = pml_miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets="semihard")
        else:
            raise ValueError(f"unknown miner {cfg.miner!r}; choices: {', '.join(MINERS)}")
        return MetricLoss(pml_losses.TripletMarginLoss(margin=cfg.margin), miner)
    if kind == "contrastive":
        return MetricLoss(
            pml_losses.ContrastiveLoss(pos_margin=cfg.pos_margin, neg_margin=cfg.neg_margin),
            pml_miners.PairMarginMiner(pos_margin=cfg.pos_margin, neg_margin=cfg.neg_margin),
        )
    if kind == "ntxent":
        return MetricLoss(pml_losses.NTXentLoss(temperature=cfg.temperature))
    if kind == "proxy_anchor":
        if num_items < 1:
            raise ValueError("proxy_anchor needs num_items > 0 (one proxy per item identity)")
        return MetricLoss(pml_losses.ProxyAnchorLoss(
            num_classes=num_items, embedding_size=embedding_dim, margin=cfg.proxy_margin, alpha=cfg.proxy_alpha,
        ))
    if kind == "multi_similarity":
        return MetricLoss(pml_losses.MultiSimilarityLoss(alpha=cfg.ms_alpha, beta=cfg.ms_beta, base=cfg.ms_base),
                          pml_miners.MultiSimilarityMiner(epsilon=cfg.ms_epsilon) if cfg.ms_epsilon > 0 else None)
    if kind == "supcon":
        return MetricLoss(pml_losses.SupConLoss(temperature=cfg.temperature))
    raise ValueError(f"unknown metric_loss {kind!r}; choices: {', '.join(METRIC_LOSSES)}")
