"""Learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up from ~0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float, backbone: bool = True) -> None:
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (default 1); with ``backbone``
    False the groups marked ``"backbone": True`` get 0 (the heads-only phase of LP-FT: no step, no weight decay)."""
    for group in optimizer.param_groups:
        on = backbone or not group.get("backbone", False)
        group["lr"] = lr * group.get("lr_scale", 1.0) if on else 0.0


def backbone_trains(step: int, head_steps: int) -> bool:
    """LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
    ICLR 2022): the first ``head_steps`` steps fit the heads on the pretrained features, then everything trains,
    so the backbone's first gradients come from fitted heads rather than random ones."""
    return step >= head_steps
