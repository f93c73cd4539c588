"""A run's calibration: fit it on a data spec (:func:`calibrate_run`, writes ``calibration.json`` next to the
checkpoint) and load it back (:func:`load_calibration`, :func:`load_hedger`).  The fitting itself is
``hierarchy.calibration.calibrate_outputs`` (arrays in, the JSON state out).

An ensemble (``--model A --model B``) has a calibration of its own, fitted on its averaged calibrated
probabilities (``runs.ensemble.calibrate_ensemble``; the members' calibration.json stay as they are): the file
``calibration.ensemble-<key>.json`` in the first member's run directory, ``<key>`` a hash of the members'
checkpoint paths in sorted order (:func:`ensemble_key`), so the same members in any order find it again, in any
member's directory (:func:`find_ensemble_calibration`), and another member set never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any, Sequence

import numpy as np

from fashionlens.files import atomic_write
from fashionlens.hierarchy.calibration import DEFAULT_TARGETS, FORMAT, calibrate_outputs
from fashionlens.hierarchy.hedging import HedgedClassifier
from fashionlens.runs.outputs import run_outputs
from fashionlens.training.checkpoint import find_checkpoint

CALIBRATION_FILE = "calibration.json"
#: An ensemble's calibration file in a member's run directory; ``{key}``: :func:`ensemble_key` of its members.
ENSEMBLE_CALIBRATION_FILE = "calibration.ensemble-{key}.json"


def calibration_path(run: str) -> str:
    """``calibration.json`` in the run directory (or next to a checkpoint file given directly)."""
    return os.path.join(run_directory(run), CALIBRATION_FILE)


def run_directory(run: str) -> str:
    """The directory of a run: the run directory itself, or the one holding a checkpoint file given directly."""
    return run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))


def calibration_state(preds: dict[str, np.ndarray], targets_: dict[str, np.ndarray], samples: Sequence[Any],
                      labels: dict[str, Any], model: str, spec: str,
                      targets: Sequence[float] = DEFAULT_TARGETS) -> dict[str, Any]:
    """``calibrate_outputs`` of outputs collected on ``spec`` (``model`` names the model(s) in the error for
    data without category labels): the temperature of ``preds["category"]``, the lambda table, the level fusion."""
    if "category" not in preds or "category" not in targets_:
        raise ValueError(f"{model}: the model or {spec} has no category labels to calibrate")
    levels = [preds[f"level_{i}"] for i in range(len(labels.get("hierarchy_levels") or [])) if f"level_{i}" in preds]
    items = [s.item_id if s.item_id is not None else f"row{i}" for i, s in enumerate(samples)]
    return calibrate_outputs(preds["category"], targets_["category"], labels, levels, targets, groups=items)


def calibrate_run(run: str, spec: str, *, split: str = "val", targets: Sequence[float] = DEFAULT_TARGETS,
                  batch_size: int = 64, progress: bool = True, num_workers: int = 0) -> dict[str, Any]:
    """Collect the run's outputs on ``spec``'s ``split``, fit everything (``calibrate_outputs``) and write
    ``calibration.json`` into the run.  Returns the stored state plus ``path``."""
    preds, targets_, samples, labels, _ = run_outputs(run, spec, split=split, batch_size=batch_size,
                                                     progress=progress, num_workers=num_workers)
    state = calibration_state(preds, targets_, samples, labels, run, spec, targets)
    ckpt = find_checkpoint(run)
    state.update(data=spec, split=split, checkpoint=os.path.basename(ckpt), checkpoint_mtime_ns=os.stat(ckpt).st_mtime_ns)
    path = atomic_write(calibration_path(run), json.dumps(state, indent=1, allow_nan=False))
    return {**state, "path": path}


def _read_state(path: str, rerun: str) -> dict[str, Any]:
    """The calibration state in ``path`` (an existing file); ValueError naming it, telling to run ``rerun``."""
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); rerun {rerun}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fashionlens calibration file; rerun {rerun}")
    return state


def load_calibration(run: str) -> dict[str, Any]:
    """The calibration.json state of ``run``; FileNotFoundError telling to run ``fashionlens calibrate`` first."""
    path = calibration_path(run)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: hedged answers (--target-accuracy) need a calibrated model; "
                                f"run `fashionlens calibrate --model {run} --data SPEC` first")
    return _read_state(path, "`fashionlens calibrate`")


def load_hedger(run: str | Sequence[str], labels: dict[str, Any] | None = None) -> HedgedClassifier:
    """The :class:`~fashionlens.hierarchy.hedging.HedgedClassifier` stored in ``run``; with ``labels`` (the
    checkpoint's) its categories must match the model's and a checkpoint newer than the file warns.  A list of
    two or more runs: their ensemble's (:func:`load_ensemble_hedger`)."""
    runs = model_paths(run)
    if len(runs) > 1:
        return load_ensemble_hedger(runs, labels)
    run = runs[0]
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


# -- an ensemble's calibration ----------------------------------------------------------------------------
def model_paths(run: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One run path, or a list of them (an ensemble), as a list of strings."""
    return [os.fspath(run)] if isinstance(run, (str, os.PathLike)) else [os.fspath(r) for r in run]


def ensemble_checkpoints(runs: Sequence[str]) -> list[str]:
    """The real paths of the members' checkpoints (or exported files), sorted: what identifies an ensemble's
    probabilities (their mean does not depend on the members' order)."""
    return sorted(os.path.realpath(find_checkpoint(os.fspath(r))) for r in runs)


def ensemble_key(runs: Sequence[str]) -> str:
    """12 hex digits naming the member set (:func:`ensemble_checkpoints`): the same in any order, another for
    any other set of members."""
    return hashlib.sha256("\n".join(ensemble_checkpoints(runs)).encode()).hexdigest()[:12]


def ensemble_calibration_path(runs: Sequence[str]) -> str:
    """Where ``fashionlens calibrate --model A --model B`` writes the ensemble's calibration: the first member's
    run directory, under :data:`ENSEMBLE_CALIBRATION_FILE`."""
    return os.path.join(run_directory(os.fspath(runs[0])), ENSEMBLE_CALIBRATION_FILE.format(key=ensemble_key(runs)))


def find_ensemble_calibration(runs: Sequence[str]) -> str | None:
    """The ensemble's calibration file in any member's run directory (first member first), None when absent."""
    name = ENSEMBLE_CALIBRATION_FILE.format(key=ensemble_key(runs))
    for run in runs:
        path = os.path.join(run_directory(os.fspath(run)), name)
        if os.path.isfile(path):
            return path
    return None


def ensemble_command(runs: Sequence[str]) -> str:
    """The ``fashionlens calibrate`` command line that calibrates the ensemble of ``runs``."""
    return "fashionlens calibrate " + " ".join(f"--model {r}" for r in runs) + " --data SPEC"


def load_ensemble_calibration(runs: Sequence[str]) -> dict[str, Any]:
    """The calibration state of the ensemble of ``runs`` (any order); FileNotFoundError telling the command that
    writes it, ValueError when the file found names other members."""
    runs = model_paths(runs)
    path = find_ensemble_calibration(runs)
    if path is None:
        name = ENSEMBLE_CALIBRATION_FILE.format(key=ensemble_key(runs))
        raise FileNotFoundError(f"ensemble {' + '.join(runs)} is not calibrated ({name} is in none of its run "
                                "directories): hedged answers (--target-accuracy) need a calibrated ensemble; run "
                                f"`{ensemble_command(runs)}` first")
    state = _read_state(path, f"`{ensemble_command(runs)}`")
    known = [m.get("checkpoint") for m in state.get("members") or []]
    if sorted(map(str, known)) != ensemble_checkpoints(runs):
        raise ValueError(f"{path}: fitted for the ensemble of {', '.join(map(str, known))}, not of "
                         f"{', '.join(runs)}; rerun `{ensemble_command(runs)}`")
    return state


def load_ensemble_hedger(runs: Sequence[str], labels: dict[str, Any] | None = None,
                         temperatures: Sequence[float] | None = None) -> HedgedClassifier:
    """The :class:`~fashionlens.hierarchy.hedging.HedgedClassifier` of the ensemble of ``runs`` (any order):
    fitted on the members' mean calibrated probabilities.  With ``labels`` its categories must be the members';
    a member checkpoint changed since, or a member temperature other than the one it was fitted with
    (``temperatures``, in the order of ``runs``: a member calibrated again), warns."""
    runs = model_paths(runs)
    state = load_ensemble_calibration(runs)
    path = find_ensemble_calibration(runs)
    if labels is not None and state.get("category_names") != list(labels["categories"]):
        raise ValueError(f"{path}: its categories differ from the models'; rerun `{ensemble_command(runs)}`")
    fitted = {m["checkpoint"]: m for m in state["members"]}
    now = [float(t) for t in temperatures] if temperatures is not None else [None] * len(runs)
    for run, temperature in zip(runs, now):
        ckpt = os.path.realpath(find_checkpoint(run))
        member = fitted[ckpt]
        changed = os.stat(ckpt).st_mtime_ns != member.get("checkpoint_mtime_ns")
        if changed or (temperature is not None and abs(temperature - float(member["temperature"])) > 1e-9):
            what = f"{ckpt} changed" if changed else f"the calibration of {run} changed"
            warnings.warn(f"{what} after {path} was written; rerun `{ensemble_command(runs)}`", stacklevel=2)
    return HedgedClassifier.from_dict(state)


def write_ensemble_calibration(runs: Sequence[str], temperatures: Sequence[float],
                               state: dict[str, Any]) -> dict[str, Any]:
    """Write ``state`` (fitted on the ensemble's averaged probabilities) as the ensemble's calibration file
    (:func:`ensemble_calibration_path`) with its members (checkpoint, its mtime, the temperature it was averaged
    with); returns the stored state plus ``path``."""
    members = [{"run": os.path.abspath(r), "checkpoint": os.path.realpath(find_checkpoint(r)),
                "checkpoint_mtime_ns": os.stat(find_checkpoint(r)).st_mtime_ns, "temperature": float(t)}
               for r, t in zip(runs, temperatures)]
    state = {**state, "ensemble_key": ensemble_key(runs), "members": members}
    path = atomic_write(ensemble_calibration_path(runs), json.dumps(state, indent=1, allow_nan=False))
    return {**state, "path": path}


__all__ = ["CALIBRATION_FILE", "ENSEMBLE_CALIBRATION_FILE", "calibrate_run", "calibration_path", "calibration_state",
           "ensemble_calibration_path", "ensemble_checkpoints", "ensemble_command", "ensemble_key",
           "find_ensemble_calibration", "load_calibration", "load_ensemble_calibration", "load_ensemble_hedger",
           "load_hedger", "model_paths", "run_directory", "write_ensemble_calibration"]
