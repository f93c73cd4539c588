"""A run's calibration: fit it on a data spec (:func:`calibrate_run`, writes ``calibration.json`` next to the
checkpoint) and load it back (:func:`load_calibration`, :func:`load_hedger`).  The fitting itself is
``hierarchy.calibration.calibrate_outputs`` (arrays in, the JSON state out)."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Sequence

from fashionlens.files import atomic_write
from fashionlens.hierarchy.calibration import DEFAULT_TARGETS, FORMAT, calibrate_outputs
from fashionlens.hierarchy.hedging import HedgedClassifier
from fashionlens.runs.outputs import run_outputs
from fashionlens.training.checkpoint import find_checkpoint

CALIBRATION_FILE = "calibration.json"


def calibration_path(run: str) -> str:
    """``calibration.json`` in the run directory (or next to a checkpoint file given directly)."""
    return os.path.join(run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)), CALIBRATION_FILE)


def calibrate_run(run: str, spec: str, *, split: str = "val", targets: Sequence[float] = DEFAULT_TARGETS,
                  batch_size: int = 64, progress: bool = True, num_workers: int = 0) -> dict[str, Any]:
    """Collect the run's outputs on ``spec``'s ``split``, fit everything (``calibrate_outputs``) and write
    ``calibration.json`` into the run.  Returns the stored state plus ``path``."""
    preds, targets_, samples, labels, _ = run_outputs(run, spec, split=split, batch_size=batch_size,
                                                     progress=progress, num_workers=num_workers)
    if "category" not in preds or "category" not in targets_:
        raise ValueError(f"{run}: the model or {spec} has no category labels to calibrate")
    levels = [preds[f"level_{i}"] for i in range(len(labels.get("hierarchy_levels") or [])) if f"level_{i}" in preds]
    items = [s.item_id if s.item_id is not None else f"row{i}" for i, s in enumerate(samples)]
    state = calibrate_outputs(preds["category"], targets_["category"], labels, levels, targets, groups=items)
    ckpt = find_checkpoint(run)
    state.update(data=spec, split=split, checkpoint=os.path.basename(ckpt), checkpoint_mtime_ns=os.stat(ckpt).st_mtime_ns)
    path = atomic_write(calibration_path(run), json.dumps(state, indent=1, allow_nan=False))
    return {**state, "path": path}


def load_calibration(run: str) -> dict[str, Any]:
    """The calibration.json state of ``run``; FileNotFoundError telling to run ``fashionlens calibrate`` first."""
    path = calibration_path(run)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: hedged answers (--target-accuracy) need a calibrated model; "
                                f"run `fashionlens calibrate --model {run} --data SPEC` first")
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); rerun `fashionlens calibrate`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fashionlens calibration file; rerun `fashionlens calibrate`")
    return state


def load_hedger(run: str, labels: dict[str, Any] | None = None) -> HedgedClassifier:
    """The :class:`~fashionlens.hierarchy.hedging.HedgedClassifier` stored in ``run``; with ``labels`` (the
    checkpoint's) its categories must match the model's and a checkpoint newer than the file warns."""
    state = load_calibration(run)
    path = calibration_path(run)
    if labels is None:
        return HedgedClassifier.from_dict(state)
    if state.get("category_names") != list(labels["categories"]):
        raise ValueError(f"{path}: its categories differ from the model's; rerun `fashionlens calibrate`")
    ckpt = find_checkpoint(run)
    if os.path.basename(ckpt) == state.get("checkpoint") and os.stat(ckpt).st_mtime_ns != state.get("checkpoint_mtime_ns"):
        warnings.warn(f"{ckpt} changed after {path} was written; rerun `fashionlens calibrate`", stacklevel=2)
    return HedgedClassifier.from_dict(state)


__all__ = ["CALIBRATION_FILE", "calibrate_run", "calibration_path", "load_calibration", "load_hedger"]
