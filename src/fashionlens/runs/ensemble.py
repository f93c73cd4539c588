"""Ensembles of runs: the combination rule (arrays in, arrays out) and a whole ensemble's outputs on a data spec.

Several models sharing one label set answer as one:

* class probabilities: the **mean of the members' calibrated probabilities** ``softmax(logits / T_m)``
  (``T_m`` the temperature of the member's ``calibration.json``; 1 for a member without one);
  :func:`mean_probabilities`.  Hierarchy levels are averaged the same way (temperature 1), attributes as
  the mean of the members' sigmoid scores (:func:`mean_sigmoid`).
* retrieval embedding: the members' L2-normalised embeddings **concatenated, then L2-normalised**
  (:func:`concat_embeddings`): the cosine similarity of two ensemble embeddings is the mean of the members'
  cosine similarities, and the dimension is the sum of theirs.
* geometry (landmarks, visibility, box): the mean over the members that predict it, in a frame they share
  (original-image pixels in :class:`~fashionlens.inference.EnsemblePredictor`; the network input here only
  when every member saw the same input geometry, else the first member's).

:func:`check_same_labels` is the ValueError naming the runs whose labels differ; :func:`collect_ensemble`
is :func:`~fashionlens.runs.outputs.collect_run` for several runs (what ``evaluate --model A --model B`` uses);
:func:`calibrate_ensemble` fits the ensemble's own hedging calibration on those outputs
(``calibrate --model A --model B``; stored as ``runs.calibrate`` describes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from fashionlens.hierarchy.calibration import DEFAULT_TARGETS
from fashionlens.runs.calibrate import calibration_path, calibration_state, load_calibration, write_ensemble_calibration
from fashionlens.runs.outputs import RunOutputs, collect_run
from fashionlens.utils import softmax

#: The label names an ensemble's members must share (what its averaged outputs index).
SHARED_LABELS = ("categories", "category_paths", "attributes")
#: Keys of ``collect_outputs`` predictions that are positions in the network input (or depend on it).
GEOMETRY = ("landmarks", "visibility", "bbox", "attention")
EPS = 1e-7


def check_same_labels(labels: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    """ValueError naming the first two members (``names``) whose category / attribute names differ."""
    if len(labels) != len(names):
        raise ValueError(f"{len(labels)} label sets for {len(names)} names")
    first = labels[0]
    for other, name in zip(labels[1:], names[1:]):
        for key in SHARED_LABELS:
            a, b = list(first.get(key) or []), list(other.get(key) or [])
            if a != b:
                only_a, only_b = [x for x in a if x not in b][:3], [x for x in b if x not in a][:3]
                detail = (f"{len(a)} vs {len(b)}" if only_a or only_b or len(a) != len(b) else "same names, other order")
                extra = "".join(f"; only in {n}: {', '.join(map(str, o))}" for n, o in ((names[0], only_a), (name, only_b)) if o)
                raise ValueError(f"an ensemble's models must share one label set, but {names[0]} and {name} have "
                                 f"different {key.replace('_', ' ')} ({detail}{extra})")


def mean_probabilities(logits: Sequence[np.ndarray], temperatures: Sequence[float] | None = None) -> np.ndarray:
    """(N, C) float64: the mean over the members of ``softmax(logits_m / T_m)`` (T = 1 where not given)."""
    temperatures = [1.0] * len(logits) if temperatures is None else list(temperatures)
    if not logits or len(temperatures) != len(logits):
        raise ValueError(f"need one temperature per member: {len(logits)} logits, {len(temperatures)} temperatures")
    return np.mean([softmax(np.asarray(z, np.float64), float(t)) for z, t in zip(logits, temperatures)], axis=0)


def mean_sigmoid(logits: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over the members of the sigmoid scores ``1 / (1 + exp(-logits_m))`` (float64)."""
    return np.mean([1.0 / (1.0 + np.exp(-np.asarray(z, np.float64))) for z in logits], axis=0)


def concat_embeddings(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """(N, sum D_m) float32: each member's (N, D_m) embeddings L2-normalised, concatenated, L2-normalised."""
    parts = [np.asarray(e, np.float64) for e in embeddings]
    parts = [e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12) for e in parts]
    joined = np.concatenate(parts, axis=-1)
    return (joined / np.maximum(np.linalg.norm(joined, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def as_logits(probabilities: np.ndarray) -> np.ndarray:
    """``log p``: logits whose softmax is ``probabilities`` again (what metrics and argmax take)."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), EPS)).astype(np.float32)


def as_binary_logits(scores: np.ndarray) -> np.ndarray:
    """``log(s / (1 - s))``: logits whose sigmoid is ``scores`` again."""
    s = np.clip(np.asarray(scores, np.float64), EPS, 1 - EPS)
    return np.log(s / (1 - s)).astype(np.float32)


def run_temperature(run: str) -> float:
    """The temperature of ``run``'s calibration.json; 1.0 when it has none."""
    return float(load_calibration(run)["temperature"]) if os.path.isfile(calibration_path(run)) else 1.0


def ensemble_outputs(preds: Sequence[dict[str, np.ndarray]], temperatures: Sequence[float],
                     same_geometry: bool) -> dict[str, np.ndarray]:
    """One ``collect_outputs`` prediction dict of the ensemble from its members' (same rows, same order).

    ``category`` and ``level_<i>`` become the log of the mean (calibrated) probabilities, ``attributes`` the
    logit of the mean sigmoid score, ``embedding`` :func:`concat_embeddings`; geometric outputs are averaged
    when ``same_geometry`` (every member saw the same network input), else the first member's are kept."""
    out: dict[str, np.ndarray] = {}
    keys = [k for k in preds[0] if all(k in p and p[k].shape[:1] == preds[0][k].shape[:1] for p in preds)]
    for key in keys:
        values = [p[key] for p in preds]
        if key == "embedding":
            out[key] = concat_embeddings(values)
        elif any(v.shape != values[0].shape for v in values):
            continue  # e.g. item logits over different training items: no shared meaning
        elif key == "category":
            out[key] = as_logits(mean_probabilities(values, temperatures))
        elif key.startswith("level_"):
            out[key] = as_logits(mean_probabilities(values))
        elif key == "attributes":
            out[key] = as_binary_logits(mean_sigmoid(values))
        elif key in GEOMETRY:
            out[key] = np.mean(values, axis=0).astype(np.float32) if same_geometry else values[0]
    for key in GEOMETRY:  # a geometric output only some members have: the first such member's
        if key not in out and key in preds[0]:
            out[key] = preds[0][key]
    return out


def collect_ensemble(runs: Sequence[str], spec: str, **kw: Any) -> RunOutputs:
    """:func:`~fashionlens.runs.outputs.collect_run` of every run (same arguments), combined by
    :func:`ensemble_outputs` (the first run's targets and samples); ValueError when the runs' labels differ.

    The members' temperatures come from their calibration.json (1 without).  Landmarks and boxes are
    averaged only when every member saw the same input geometry (equal landmark / box targets and eval
    affines); otherwise the first run's are evaluated and ``agreement.notes`` says so."""
    runs = [os.fspath(r) for r in runs]
    if len(runs) < 2:
        raise ValueError(f"an ensemble needs at least two runs, got {len(runs)}")
    outs = [collect_run(run, spec, **kw) for run in runs]
    check_same_labels([o.labels for o in outs], runs)
    first = outs[0]
    for run, o in zip(runs[1:], outs[1:]):
        if not np.array_equal(o.targets.get("index"), first.targets.get("index")):
            raise ValueError(f"{run} and {runs[0]} were evaluated on different rows of {spec}")
    geometry = [k for k in ("landmarks", "bbox", "landmark_affine") if k in first.targets]
    same = all(np.allclose(o.targets[k], first.targets[k]) for o in outs[1:] for k in geometry)
    preds = ensemble_outputs([o.preds for o in outs], [run_temperature(r) for r in runs], same)
    notes = list(first.agreement.notes)
    if not same and any(k in preds for k in ("landmarks", "bbox")):
        notes.append(f"landmarks and boxes are {runs[0]}'s alone: the ensemble's models see different input "
                     "geometry (image size or resize mode), so their positions are not averaged here")
    agreement = dataclasses.replace(first.agreement, notes=notes)
    return RunOutputs(preds, first.targets, first.samples, first.labels, first.data, first.protocol, agreement)


def calibrate_ensemble(runs: Sequence[str], spec: str, *, split: str = "val", targets: Sequence[float] = DEFAULT_TARGETS,
                       batch_size: int = 64, progress: bool = True, num_workers: int = 0) -> dict[str, Any]:
    """:func:`~fashionlens.runs.calibrate.calibrate_run` for an ensemble: the hedging calibration (temperature,
    lambda table, level fusion) fitted on the ensemble's outputs on ``spec``'s ``split`` (:func:`collect_ensemble`:
    the mean of the members' calibrated probabilities; the members' own calibration.json are left as they are),
    written to the first member's run directory under a name keyed by the member set
    (``runs.calibrate.ensemble_calibration_path``).  Returns the stored state plus ``path``."""
    runs = [os.fspath(r) for r in runs]
    out = collect_ensemble(runs, spec, split=split, batch_size=batch_size, progress=progress, num_workers=num_workers)
    state = calibration_state(out.preds, out.targets, out.samples, out.labels, " + ".join(runs), spec, targets)
    state.update(data=spec, split=split)
    return write_ensemble_calibration(runs, [run_temperature(r) for r in runs], state)


__all__ = ["SHARED_LABELS", "as_binary_logits", "as_logits", "calibrate_ensemble", "check_same_labels",
           "collect_ensemble", "concat_embeddings", "ensemble_outputs", "mean_probabilities", "mean_sigmoid",
           "run_temperature"]
