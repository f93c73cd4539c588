"""A run's outputs on a data spec: the model's predictions and the data's targets, row by row.

Any model can be run on any data: retrieval, landmarks and boxes need no shared label space.  Category and
attribute targets only mean something when the data names the same classes as the model, in the same
order; :func:`compare_labels` says which do, and with ``mismatched="drop"`` the others are left out (the
category targets become -1, the attribute targets keep the data's own length) instead of refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from fashionlens.data.dataset import GarmentDataset
from fashionlens.data.readers import read
from fashionlens.data.samples import DatasetInfo, Sample, SampleSet
from fashionlens.data.transforms import build_transforms
from fashionlens.evaluation.protocol import AUTO, Protocol, evaluation_protocol
from fashionlens.training.checkpoint import load_model
from fashionlens.training.loop import collect_outputs
from fashionlens.utils import resolve_device

MISMATCHED = ("error", "drop")


@dataclass
class LabelAgreement:
    """Which of the data's label spaces are the model's: ``categories`` / ``attributes`` True where the names
    are identical (same order); ``notes`` says why each one that is not is skipped, e.g. "category metrics
    skipped: the data's 17 categories differ from the model's 50 (...)"."""

    categories: bool
    attributes: bool
    notes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # both name classes, differently: what mismatched="error" refuses


def _difference(what: str, data_names: Sequence[str], model_names: Sequence[str]) -> str:
    """"the data's 17 categories differ from the model's 50 (first difference: data 'A', model 'B')"."""
    pairs = zip(list(data_names) + [None], list(model_names) + [None])
    a, b = next((a, b) for a, b in pairs if a != b)
    show = lambda v: "none" if v is None else repr(v)  # noqa: E731
    return (f"the data's {len(data_names)} {what} differ from the model's {len(model_names)} "
            f"(first difference: data {show(a)}, model {show(b)})")


def _agree(one: str, many: str, data_names: Sequence[str],
           model_names: Sequence[str]) -> tuple[bool, str | None, str | None]:
    """(same label space, why not as a note, the difference when both name classes and the names differ);
    ``one`` / ``many``: "category" / "categories"."""
    data_names, model_names = list(data_names), list(model_names)
    if not model_names:
        return False, None, None  # the model predicts none: nothing to skip
    if not data_names:
        return False, f"{one} metrics skipped: the data has no {one} labels", None
    if data_names != model_names:
        difference = _difference(many, data_names, model_names)
        return False, f"{one} metrics skipped: {difference}", difference
    return True, None, None


def compare_labels(info: DatasetInfo, labels: dict[str, Any]) -> LabelAgreement:
    """The :class:`LabelAgreement` of a data set (``info``) and a model (its checkpoint ``labels``)."""
    categories, cat_note, cat_conflict = _agree("category", "categories", info.categories,
                                                labels.get("categories") or [])
    attributes, attr_note, attr_conflict = _agree("attribute", "attributes", info.attributes,
                                                  labels.get("attributes") or [])
    notes = [n for n in (cat_note, attr_note) if n]
    conflicts = [c for c in (cat_conflict, attr_conflict) if c]
    return LabelAgreement(categories, attributes, notes, conflicts)


def _measurable(part: SampleSet, agreement: LabelAgreement) -> bool:
    """Whether anything at all can be measured on ``part`` without the label spaces that disagree."""
    return agreement.categories or agreement.attributes or any(
        s.item_id is not None or s.landmarks is not None or s.bbox is not None for s in part.samples)


@dataclass
class RunOutputs:
    """What :func:`collect_run` returns: arrays as ``training.loop.collect_outputs`` gives them, the sample of
    each row, the model's label names, the whole data set, the protocol evaluated and the label agreement."""

    preds: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    samples: list[Sample]
    labels: dict[str, Any]
    data: SampleSet
    protocol: Protocol
    agreement: LabelAgreement


def _device(device: str | torch.device | None) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device or "cpu")


def collect_run(run: str, spec: str, *, split: str = AUTO, batch_size: int = 64, progress: bool = True,
                num_workers: int = 0, tta: bool | None = None, eval_scale: float | None = None,
                device: str | torch.device | None = "cpu", mismatched: str = "error") -> RunOutputs:
    """The :class:`RunOutputs` of ``run`` on ``spec``'s ``split`` ("auto": the split its benchmark evaluates,
    ``evaluation.protocol``), the model and the batches on ``device`` ("auto", "cpu", "cuda", ... or a
    ``torch.device``; pinned host memory for CUDA).

    ``mismatched``: what to do when the data's categories or attributes are not the model's: "error" raises
    ValueError naming the data (what calibration needs), "drop" leaves those targets out and notes it in
    ``agreement.notes``; "drop" still raises when nothing at all could be measured (no shared labels, no item
    ids, landmarks or boxes in the split).  ``tta``: mirror test-time augmentation on/off (None = as the run
    was configured, ``model.tta_flip``); ``eval_scale``: input side = image_size x this (None = the run's)."""
    if mismatched not in MISMATCHED:
        raise ValueError(f"mismatched must be one of {MISMATCHED}, got {mismatched!r}")
    target = _device(device)  # an absent device fails before the model and the data are read
    model, cfg, labels = load_model(run)
    if tta is not None:
        model.tta_flip = bool(tta)
    if eval_scale is not None:
        cfg.data.eval_scale = float(eval_scale)
    data = read(spec)
    agreement = compare_labels(data.info, labels)
    if mismatched == "error" and agreement.conflicts:
        raise ValueError(f"{data.info.root or spec}: " + "; ".join(agreement.conflicts)
                         + " (this needs the model's label space)")
    protocol = evaluation_protocol(data, split)
    part = data.split(*protocol.split.split(","))
    if mismatched == "drop" and not _measurable(part, agreement):
        raise ValueError(f"{data.info.root or spec} (split {protocol.split}): nothing to measure with model {run}: "
                         + "; ".join(agreement.notes + ["and the split has no item ids, landmarks or boxes"]))
    strict = mismatched == "error"
    ds = GarmentDataset(part, build_transforms(cfg.data, train=False),
                        num_attributes=len(labels["attributes"]) if strict or agreement.attributes else None,
                        use_categories=strict or agreement.categories)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, pin_memory=target.type == "cuda")
    preds, targets, _ = collect_outputs(model.to(target), loader, device=target, channels_last=cfg.train.channels_last,
                                        progress=progress)
    return RunOutputs(preds, targets, [ds.samples[i] for i in targets["index"]], labels, data, protocol, agreement)


def run_outputs(run: str, spec: str, *, split: str = AUTO, batch_size: int = 64, progress: bool = True,
                num_workers: int = 0, tta: bool | None = None, eval_scale: float | None = None,
                device: str | torch.device | None = "cpu",
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list, dict[str, Any], SampleSet]:
    """(predictions, targets, sample of each row, the model's labels, the data) of ``run`` on ``spec``'s ``split``;
    the data must use the model's label space (ValueError otherwise).  See :func:`collect_run` for the
    arguments and ``training.loop.collect_outputs`` for the arrays."""
    out = collect_run(run, spec, split=split, batch_size=batch_size, progress=progress, num_workers=num_workers,
                      tta=tta, eval_scale=eval_scale, device=device, mismatched="error")
    return out.preds, out.targets, out.samples, out.labels, out.data


__all__ = ["LabelAgreement", "RunOutputs", "collect_run", "compare_labels", "run_outputs"]
