"""Self-describing checkpoints: weights + resolved config + label names + hierarchy + version.

Saved with ``torch.save`` from plain containers and tensors only, and always loaded with
``torch.load(weights_only=True)``, so loading a checkpoint never executes pickled code.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from fashionlens import __version__
from fashionlens.config import RunConfig, from_dict
from fashionlens.files import atomic_write
from fashionlens.models import build_model

FORMAT_VERSION = 1


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file + rename), so an interrupted save never leaves a torn file."""
    payload = {"format_version": FORMAT_VERSION, "fashionlens_version": __version__, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights-only unpickler: no code runs)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types for a foreign or corrupt file
        raise ValueError(f"{path}: not a readable fashionlens checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"{path}: not a fashionlens checkpoint (no format_version)")
    if payload["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload['format_version']} is newer than this fashionlens supports")
    return payload


def find_checkpoint(run_dir_or_file: str, which: str = "best") -> str:
    """Resolve ``RUN_DIR`` (→ RUN_DIR/best.pt, else last.pt) or a direct checkpoint path."""
    if os.path.isfile(run_dir_or_file):
        return run_dir_or_file
    for name in (f"{which}.pt", "best.pt", "last.pt"):
        candidate = os.path.join(run_dir_or_file, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no checkpoint (best.pt / last.pt) in {run_dir_or_file}")


def load_model(run: str) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """(model in eval mode, resolved run config, label names) from a run directory or checkpoint file."""
    ckpt = load_checkpoint(find_checkpoint(run))
    cfg: RunConfig = from_dict(ckpt["config"])
    labels = ckpt["labels"]
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pretrained = False  # the checkpoint holds the weights
    model = build_model(model_cfg, num_categories=len(labels["categories"]), num_attributes=len(labels["attributes"]),
                        num_items=len(labels.get("items") or []),
                        level_sizes=[len(level) for level in labels.get("hierarchy_levels") or []])
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, labels
