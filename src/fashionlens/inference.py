"""Predictor: a trained run loaded for use — classify, locate landmarks and the box, embed.

``Predictor.load(RUN_DIR)`` reads the self-describing checkpoint (weights-only), rebuilds the model and
the deterministic eval transform, and answers in the ORIGINAL image's pixels.  When the run holds a
``calibration.json`` (``fashionlens calibrate``), ``predict(images, target_accuracy=0.95)`` also gives each
answer a ``"hedged"`` node: the most specific taxonomy node meeting that accuracy (hierarchy.hedging).

``device`` (``Predictor.load(run, device="cuda")``; any ``--device`` value, see
:func:`fashionlens.utils.resolve_device`) is where the model runs: the CPU unless asked.  Each input batch
is moved there and the outputs come back as float32 NumPy arrays.  ``crop=True`` needs the model's box head
(``model.use_bbox``): without it :meth:`Predictor.analyse` / :meth:`Predictor.embed` raise ValueError
instead of quietly embedding the whole image.

:class:`EnsemblePredictor` puts several Predictors sharing one label set behind the same interface (the mean
of their calibrated probabilities, the normalised concatenation of their embeddings; ``runs.ensemble``);
``export.load_predictor`` builds a Predictor, an ONNX Runtime one or an ensemble from paths.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from fashionlens.config import RunConfig
from fashionlens.data.decode import load_image
from fashionlens.data.samples import LANDMARK_SLOTS, NUM_SLOTS, SLOTS_BY_TYPE
from fashionlens.data.transforms import build_transforms, eval_size
from fashionlens.openworld import ImageNetGuide, fuse, guide_backbone
from fashionlens.runs.calibrate import (
    calibration_path,
    find_ensemble_calibration,
    load_calibration,
    load_ensemble_calibration,
    load_ensemble_hedger,
    load_hedger,
)
from fashionlens.runs.ensemble import check_same_labels, concat_embeddings
from fashionlens.runs.familiarity import load_familiarity
from fashionlens.training.checkpoint import load_model
from fashionlens.utils import resolve_device, softmax

VISIBILITY_NAMES = ("visible", "occluded", "truncated")
#: What a crop asked of a model without a box head is told (after the model's name).
NO_BOX_HEAD = "this model has no box head (model.use_bbox is off): {option} cannot localise the garment"
SINGLE_TRANSFORM = ("an ensemble has no single eval transform (its members may see different inputs): use predict / "
                    "embed / analyse on images, or each member for a whole data set")
DeviceLike = str | torch.device | None


def as_device(device: DeviceLike) -> torch.device:
    """The ``torch.device`` a ``--device`` string or a ``torch.device`` names (checked by ``resolve_device``:
    an absent device is a ValueError that says so); None is the CPU."""
    return torch.device("cpu") if device is None else resolve_device(str(device))


class Predictor:
    """Classify / locate / embed images with a trained model (on the CPU unless ``device`` says otherwise)."""

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, labels: dict[str, Any], *,
                 attribute_threshold: float = 0.5, batch_size: int = 16, device: DeviceLike = None):
        self.device = as_device(device)
        self.model, self.cfg, self.labels = model.eval().to(self.device), cfg, labels
        self.transform = build_transforms(cfg.data, train=False)
        self.size = eval_size(cfg.data)
        self.attribute_threshold, self.batch_size = attribute_threshold, batch_size
        self.categories: list[str] = list(labels["categories"])
        self.paths: list[str] = list(labels.get("category_paths") or [])
        self.attributes: list[str] = list(labels["attributes"])
        self.groups: list[int] = list(labels.get("attribute_groups") or [])
        self.group_names: dict[str, str] = dict(labels.get("group_names") or {})
        self.channels_last = bool(cfg.train.channels_last)
        self.run: str | None = None  # the run directory / checkpoint it was loaded from, when known
        self.hedger: Any = None  # hierarchy.hedging.HedgedClassifier, read from the run's calibration.json on first use
        self.guide: Any = None  # openworld.ImageNetGuide (attach_guide): answers get "scope" (known / outside / unknown)
        self._familiarity: Any = False  # openworld.Familiarity of the run (its familiarity.npz), read on first use

    @classmethod
    def load(cls, run: str, *, device: DeviceLike = None, guide: Any = None, **kw: Any) -> "Predictor":
        """The model of a run directory or checkpoint, on ``device`` (default: the CPU); ``guide="imagenet"``
        attaches the open-world guide (:meth:`attach_guide`); ``kw`` as the constructor."""
        model, cfg, labels = load_model(run)
        predictor = cls(model, cfg, labels, device=device, **kw)
        predictor.run = run
        return predictor.attach_guide(guide) if guide else predictor

    def attach_guide(self, guide: Any = "imagenet") -> "Predictor":
        """Give every answer a ``"scope"`` (``openworld``): whether the photo shows a kind of thing this model
        has categories for (``known``), a wardrobe thing it lacks (``outside``: "shoes (sandal): not among this
        model's categories") or something else (``unknown``: "not a garment I know").  ``"imagenet"``: the
        offline ImageNet classifier of the model's EfficientNet-Lite (Lite0 for other backbones); or an
        ``ImageNetGuide``; None detaches.  Photos as close to the training photos as the validation photos
        (the run's ``familiarity.npz``, ``fashionlens calibrate --familiarity``) always stay ``known``."""
        if isinstance(guide, str):
            if guide != "imagenet":
                raise ValueError(f"unknown guide {guide!r}: the one guide is 'imagenet'")
            guide = ImageNetGuide(guide_backbone(str(self.cfg.model.backbone)), device=self.device)
        self.guide = guide
        return self

    def familiarity(self) -> Any:
        """The run's ``openworld.Familiarity`` (its familiarity.npz), None when it has none."""
        if self._familiarity is False:
            self._familiarity = load_familiarity(self.run) if self.run else None
        return self._familiarity

    def add_scope(self, images: Sequence[Image.Image], answers: list[dict[str, Any]]) -> None:
        """Set ``answer["scope"]`` of every answer (needs :meth:`attach_guide`).  A photo of a kind the model knows
        but not familiar to it (far from its training photos: a real photo for a model trained on renders) gets
        its category from the model's probabilities mixed with ImageNet's reading of them (``openworld.fuse``);
        ``scope.fused`` is ImageNet's weight and ``scope.model_category`` the model's own answer."""
        scopes = self.guide.scope(list(images), self.categories, self.paths, self.familiarity())
        for answer, scope in zip(answers, scopes):
            mass = scope.pop("category_mass")
            scope["fused"], scope["model_category"] = 0.0, answer.get("category")
            if scope["verdict"] == "known" and not scope["familiar"] and "probabilities" in answer:
                probs, scope["fused"] = fuse(answer["probabilities"], mass)
                answer.update(self._category_fields(probs))
            scope["fused"] = round(scope["fused"], 4)
            answer["scope"] = scope

    @property
    def embedding_dim(self) -> int:
        """Width of the search vectors :meth:`embed` returns: the model's ``search_dim`` (the embedding, wider
        by the pooled backbone features with ``model.search_pooled``); what an index over them must hold."""
        return int(getattr(self.model, "search_dim", self.cfg.model.embedding_dim))

    @property
    def has_box(self) -> bool:
        """Whether the model predicts a garment box (``model.use_bbox``): what ``crop`` needs."""
        return bool(self.cfg.model.use_bbox)

    def require_box(self, option: str = "crop=True") -> None:
        """Raise ValueError naming the model when it has no box head, so ``option`` (a crop) cannot be done."""
        if not self.has_box:
            raise ValueError(f"model {self.run or type(self.model).__name__}: " + NO_BOX_HEAD.format(option=option))

    def check_target(self, target_accuracy: float) -> None:
        """Raise (FileNotFoundError: not calibrated; ValueError: a target without a fitted lambda) before any work."""
        if self.hedger is None:  # read on first use, so a calibration written after loading is picked up
            self.hedger = self._load_hedger()
        self.hedger.lambda_for(target_accuracy)

    def _load_hedger(self) -> Any:
        """The run's HedgedClassifier (FileNotFoundError: "run fashionlens calibrate first")."""
        if self.run is None:
            raise ValueError("hedged answers need a calibrated run: load the Predictor with Predictor.load(RUN_DIR) "
                             "after `fashionlens calibrate --model RUN_DIR --data SPEC`")
        return load_hedger(self.run, self.labels)

    def calibration(self) -> dict[str, Any] | None:
        """The run's calibration state (its calibration.json, see ``fashionlens calibrate``), None when it has none."""
        if self.run is None or not os.path.isfile(calibration_path(self.run)):
            return None
        return load_calibration(self.run)

    @property
    def temperature(self) -> float:
        """The calibrated temperature T (``softmax(logits / T)``), 1.0 for a model without a calibration."""
        state = self.calibration()
        return float(state["temperature"]) if state else 1.0

    def hedge(self, probabilities: np.ndarray, target_accuracy: float) -> dict[str, Any]:
        """The hedged answer {"name", "path", "probability", "target_accuracy"} for one image's (C,) category
        probabilities (the uncalibrated softmax of ``predict``'s ``"probabilities"``)."""
        self.check_target(target_accuracy)
        logits = np.log(np.maximum(np.asarray(probabilities, np.float64), np.finfo(np.float64).tiny))
        return self.hedger.answers(self.hedger.calibrate(logits[None]), target_accuracy)[0]

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        """(network input (3, S, S), per-axis affine (a, b) with out_pixel = a * in_pixel + b, shape (2, 2)).

        Two probe points ride through the same deterministic transform as landmarks, which gives the
        exact mapping back to the original image."""
        w, h = image.size
        probe = np.zeros((NUM_SLOTS, 2), np.float32)
        probe[1] = (max(w - 1, 1), max(h - 1, 1))
        present = np.zeros(NUM_SLOTS, bool)
        present[:2] = True
        target = {"landmarks": probe, "visibility": np.zeros(NUM_SLOTS, np.int64), "present": present, "bbox": None}
        tensor, out = self.transform(image, target)
        moved = np.asarray(out["landmarks"], np.float64)[:2]
        scale = (moved[1] - moved[0]) / np.maximum(probe[1] - probe[0], 1)
        return tensor, np.stack([scale, moved[0]])

    def _to_original(self, unit_xy: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """[0, 1] coordinates of the network input (..., 2) -> original-image pixels."""
        out_pixels = unit_xy * self.size - 0.5
        return (out_pixels - affine[1]) / affine[0]

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A (B, 3, S, S) input batch on the predictor's device, in its memory format."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """(the model's outputs as float32 NumPy arrays, one input affine per image) for a batch of images."""
        tensors, affines = zip(*(self.preprocess(im) for im in images))
        out = self.model(self.to_device(torch.stack(tensors)))
        keep = {k: to_numpy(v) for k, v in out.items() if isinstance(v, torch.Tensor)}
        if out.get("levels"):
            keep["levels"] = [to_numpy(v) for v in out["levels"]]
        return keep, list(affines)

    def embed(self, images: Sequence[Image.Image], *, crop: bool = False, margin: float = 0.1) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings.

        ``crop=True`` localises the garment first: the model's predicted box (widened by ``margin`` of its
        size on each side) is cut out of the original image and that crop is embedded (two passes); a model
        without a box head raises ValueError (:meth:`require_box`)."""
        if crop:
            return np.stack([a["embedding"] for a in self.analyse(images, crop=True, margin=margin)])
        return self._embeddings(images)

    def _embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32 embeddings of the whole images (one forward pass)."""
        return self.forward(images)[0]["embedding"].astype(np.float32)

    def analyse(self, images: Sequence[Image.Image], *, crop: bool | Sequence[bool] = False, margin: float = 0.1,
                target_accuracy: float | None = None) -> list[dict[str, Any]]:
        """What the catalog and the server need of an image, in one call: :meth:`predict`'s answer for the
        whole image, whose ``"embedding"`` is that of the garment crop where ``crop`` asks for it (one bool,
        or one per image).  The crop is the predicted box widened by ``margin`` (:func:`crop_box`); only
        images whose crop differs from the whole image take the second forward pass.  Each answer gets
        ``"crop"``: the [left, top, right, bottom] pixels embedded, or None for the whole image.  A crop asked
        of a model without a box head is a ValueError, raised before any image is run (:meth:`require_box`)."""
        flags = [bool(crop)] * len(images) if isinstance(crop, (bool, np.bool_)) else [bool(c) for c in crop]
        if len(flags) != len(images):
            raise ValueError(f"got {len(flags)} crop flags for {len(images)} images")
        if any(flags) or crop is True:
            self.require_box()
        answers = self.predict(list(images), target_accuracy) if len(images) else []
        regions: dict[int, Image.Image] = {}
        for i, (image, answer, wanted) in enumerate(zip(images, answers, flags)):
            answer["crop"] = None
            region = crop_box(image, answer.get("bbox"), margin) if wanted else image
            if region is not image:
                regions[i] = region
                answer["crop"] = [int(v) for v in _crop_rectangle(image, answer["bbox"], margin)]
        if regions:
            vectors = self._embeddings(list(regions.values()))
            for i, vector in zip(regions, vectors):
                answers[i]["embedding"] = vector
        return answers

    def crop_garments(self, images: Sequence[Image.Image], *,
                      margin: float = 0.1) -> tuple[list[Image.Image], list[dict[str, Any]]]:
        """(each image cut to its predicted garment box plus ``margin``, the answers for the whole images)."""
        return crop_garments(self, images, margin=margin)

    def predict(self, images: Sequence[Image.Image], target_accuracy: float | None = None) -> list[dict[str, Any]]:
        """One answer dict per image (category, top-5 scores, attributes, landmarks, box, embedding norm);
        with ``target_accuracy`` also ``"hedged"`` (see :meth:`hedge`)."""
        if target_accuracy is not None:
            self.check_target(target_accuracy)
        out, affines = self.forward(images)
        answers = [self._answer(out, i, affines[i], images[i].size) for i in range(len(images))]
        if self.guide is not None:  # first: it may mix ImageNet into the probabilities the hedged answer reads
            self.add_scope(images, answers)
        if target_accuracy is not None:
            for answer in answers:
                answer["hedged"] = self.hedge(answer["probabilities"], target_accuracy)
        return answers

    def _answer(self, out: dict[str, Any], i: int, affine: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
        return self._format(self._decode(out, i, affine), size)

    def _decode(self, out: dict[str, Any], i: int, affine: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
        """Row ``i`` of the model's outputs as numbers in the ORIGINAL image: category ``probabilities``
        (``softmax(logits / temperature)``), ``attribute_scores`` (sigmoid), ``landmarks`` (K, 2) pixels and
        ``visibility`` (K, 3) probabilities, ``bbox`` (4,) pixels (not clipped), ``embedding``.  What an
        ensemble averages over its members before :meth:`_format` words it."""
        parts: dict[str, Any] = {}
        if "category" in out:
            parts["probabilities"] = softmax(out["category"][i], temperature)
        if "attributes" in out:
            parts["attribute_scores"] = 1.0 / (1.0 + np.exp(-np.asarray(out["attributes"][i], np.float64)))
        if "landmarks" in out:
            parts["landmarks"] = self._to_original(out["landmarks"][i].astype(np.float64), affine)
            parts["visibility"] = (softmax(out["visibility"][i]) if "visibility" in out
                                   else np.tile([1.0, 0, 0], (NUM_SLOTS, 1)))
        if "embedding" in out:
            parts["embedding"] = out["embedding"][i].astype(np.float32)
        if "bbox" in out:
            parts["bbox"] = self._to_original(out["bbox"][i].reshape(2, 2).astype(np.float64), affine).reshape(4)
        return parts

    def _format(self, parts: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """The answer dict of one image from its :meth:`_decode` numbers (``size``: the image's (width, height))."""
        answer: dict[str, Any] = {"width": size[0], "height": size[1]}
        if "probabilities" in parts:
            answer.update(self._category_fields(parts["probabilities"]))
        if "attribute_scores" in parts:
            answer["attributes"] = self._attributes_from_scores(parts["attribute_scores"])
        if "landmarks" in parts:
            xy, vis = parts["landmarks"], parts["visibility"]
            answer["landmarks"] = [
                {"name": LANDMARK_SLOTS[k], "x": round(float(xy[k, 0]), 1), "y": round(float(xy[k, 1]), 1),
                 "visibility": VISIBILITY_NAMES[int(vis[k].argmax())], "visible_prob": round(float(vis[k, 0]), 4)}
                for k in self._slots(answer.get("category_index"))]
        if "embedding" in parts:
            answer["embedding"] = parts["embedding"]
        if "bbox" in parts:
            box = np.clip(parts["bbox"], 0, [size[0], size[1], size[0], size[1]])
            answer["bbox"] = [round(float(v), 1) for v in box]
        return answer

    def _category_fields(self, probs: np.ndarray) -> dict[str, Any]:
        """category, category_index, category_path, category_scores (top 5) and probabilities of (C,) ``probs``."""
        order = np.argsort(-probs)[:5]
        best = int(order[0])
        fields: dict[str, Any] = {"category": self.categories[best], "category_index": best}
        if self.paths:
            fields["category_path"] = self.paths[best]
        fields["category_scores"] = [{"name": self.categories[j], "score": round(float(probs[j]), 5)} for j in order]
        fields["probabilities"] = probs
        return fields

    def _slots(self, category: int | None) -> tuple[int, ...]:
        """The landmark slots of the predicted category's clothes type (all 8 when unknown)."""
        types = self.labels.get("category_types") or []
        if category is not None and category < len(types) and types[category] in SLOTS_BY_TYPE:
            return SLOTS_BY_TYPE[types[category]]
        return tuple(range(NUM_SLOTS))

    def _attributes(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """Attributes over the threshold; with single-choice groups, the best one of every group."""
        return self._attributes_from_scores(1.0 / (1.0 + np.exp(-logits)))

    def _attributes_from_scores(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """:meth:`_attributes` of (A,) sigmoid scores."""
        if self.labels.get("single_choice_groups") and self.groups:
            chosen = [int(max(np.flatnonzero(np.array(self.groups) == g), key=lambda j: scores[j]))
                      for g in sorted(set(self.groups))]
        else:
            chosen = [int(j) for j in np.flatnonzero(scores >= self.attribute_threshold)]
        chosen.sort(key=lambda j: -scores[j])
        return [{"name": self.attributes[j], "score": round(float(scores[j]), 4),
                 "group": self.group_names.get(str(self.groups[j]), str(self.groups[j])) if self.groups else None}
                for j in chosen]

    def predict_paths(self, paths: Iterable[str], target_accuracy: float | None = None) -> Iterator[dict[str, Any]]:
        """Answers for image files, in input order; an unreadable image yields ``{"image", "error"}``."""
        if target_accuracy is not None:
            self.check_target(target_accuracy)
        batch: list[tuple[str, Image.Image]] = []
        for path in paths:
            try:
                batch.append((path, load_image(path)))
            except (ValueError, FileNotFoundError, OSError) as exc:
                yield from self._flush(batch, target_accuracy)
                batch = []
                yield {"image": path, "error": str(exc)}
                continue
            if len(batch) >= self.batch_size:
                yield from self._flush(batch, target_accuracy)
                batch = []
        yield from self._flush(batch, target_accuracy)

    def _flush(self, batch: list[tuple[str, Image.Image]], target_accuracy: float | None) -> Iterator[dict[str, Any]]:
        if not batch:
            return
        for (path, _), answer in zip(batch, self.predict([im for _, im in batch], target_accuracy)):
            answer.pop("probabilities", None)
            answer.pop("embedding", None)
            yield {"image": path, **answer}


class EnsemblePredictor(Predictor):
    """Several models sharing one label set (runs or exported .onnx files), answering as one Predictor.

    ``EnsemblePredictor([Predictor.load(A), Predictor.load(B)])`` (or ``export.load_predictor([A, B])``)
    has the interface the catalog and the server use: :meth:`predict`, :meth:`embed`, :meth:`analyse`,
    :meth:`predict_paths`, :attr:`has_box`, :meth:`require_box`, ``categories`` / ``paths`` / ``labels`` and
    :attr:`embedding_dim` (the members' widths summed).  Every image runs through each member with that
    member's own eval transform; then (``runs.ensemble``, the one place of the rule):

    * ``probabilities`` (and the category, its scores): the mean of the members' CALIBRATED probabilities
      ``softmax(logits / T_m)``, ``T_m`` the temperature of the member's calibration (its run's
      calibration.json or the .onnx metadata; read when the ensemble is made; 1 for an uncalibrated member).
      A single Predictor's ``probabilities`` are its plain softmax: an ensemble of one calibrated run is
      not the run itself.
    * attributes: the mean sigmoid score; landmarks, their visibility and the box: the mean over the
      members that predict them, in original-image pixels (so members may differ in input size).
    * ``embedding``: the members' L2-normalised embeddings concatenated in member order, then L2-normalised
      (dimension = the sum; cosine similarity = the mean of the members').  A catalog must be built with
      the same ensemble (same runs, same order).

    Hedged answers (``target_accuracy``) use the ensemble's own calibration, fitted on its averaged probabilities
    by ``fashionlens calibrate --model A --model B --data SPEC`` (``runs.ensemble.calibrate_ensemble``; a file in
    a member's run directory keyed by the member set, found again whatever their order); without it they are the
    FileNotFoundError naming that command (the members' lambda tables fit their own probabilities, not the
    average).  Members whose label names (categories, their paths, attributes) differ are a ValueError naming them.
    """

    def __init__(self, members: Sequence[Predictor], *, batch_size: int | None = None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one model")
        names = [str(m.run or f"model {i}") for i, m in enumerate(members)]
        check_same_labels([m.labels for m in members], names)
        first = members[0]
        self.members = members
        self.device = first.device
        self.labels = first.labels
        self.attribute_threshold = first.attribute_threshold
        self.batch_size = batch_size or first.batch_size
        self.categories, self.paths, self.attributes = list(first.categories), list(first.paths), list(first.attributes)
        self.groups, self.group_names = list(first.groups), dict(first.group_names)
        self.temperatures = [m.temperature for m in members]
        self.cfg = copy.deepcopy(first.cfg)
        self.cfg.model.embedding_dim = sum(m.embedding_dim for m in members)
        self.cfg.model.use_bbox = any(m.has_box for m in members)
        self.run: Any = [m.run for m in members]  # the members' runs / .onnx paths, in order
        self.hedger = None
        self.guide = None

    @property
    def embedding_dim(self) -> int:
        """The members' search vectors side by side."""
        return sum(m.embedding_dim for m in self.members)

    @property
    def has_box(self) -> bool:
        """Whether some member predicts a box (the ensemble's box is the mean of theirs)."""
        return any(m.has_box for m in self.members)

    def require_box(self, option: str = "crop=True") -> None:
        if not self.has_box:
            raise ValueError(f"ensemble {', '.join(map(str, self.run))}: none of its models has a box head "
                             f"(model.use_bbox is off): {option} cannot localise the garment")

    def _load_hedger(self) -> Any:
        """The ensemble's HedgedClassifier (FileNotFoundError: "run fashionlens calibrate --model A --model B")."""
        if any(run is None for run in self.run):
            raise ValueError("hedged answers need a calibrated ensemble of runs: build it with "
                             "export.load_predictor([A, B]) after `fashionlens calibrate --model A --model B --data SPEC`")
        return load_ensemble_hedger(self.run, self.labels, self.temperatures)

    def calibration(self) -> dict[str, Any] | None:
        """The ensemble's own calibration state (``fashionlens calibrate --model A --model B``), None without."""
        if any(run is None for run in self.run) or find_ensemble_calibration(self.run) is None:
            return None
        return load_ensemble_calibration(self.run)

    @property
    def temperature(self) -> float:
        return 1.0  # the averaged probabilities are already the members' calibrated ones

    def forward(self, images: Sequence[Image.Image]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        raise TypeError("an ensemble has no single forward pass (its members may see different inputs): "
                        "use predict / embed / analyse, or the members' forward")

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        raise TypeError(SINGLE_TRANSFORM)

    @property
    def transform(self) -> Any:  # what batch embedding of a data set (embedding.embed_spec) would take
        raise TypeError(SINGLE_TRANSFORM)

    def _embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        return concat_embeddings([m._embeddings(images) for m in self.members])

    def predict(self, images: Sequence[Image.Image], target_accuracy: float | None = None) -> list[dict[str, Any]]:
        """One answer dict per image, as :meth:`Predictor.predict`, from the members' averaged outputs."""
        if target_accuracy is not None:
            self.check_target(target_accuracy)
        images = list(images)
        decoded = []
        for member, temperature in zip(self.members, self.temperatures):
            out, affines = member.forward(images)
            decoded.append([member._decode(out, i, affines[i], temperature) for i in range(len(images))])
        answers = [self._format(self._combine([d[i] for d in decoded]), image.size) for i, image in enumerate(images)]
        if self.guide is not None:
            self.add_scope(images, answers)
        if target_accuracy is not None:  # the ensemble's own lambda table, fitted to these averaged probabilities
            for answer in answers:
                answer["hedged"] = self.hedge(answer["probabilities"], target_accuracy)
        return answers

    def familiarity(self) -> Any:
        """The first member's familiarity file (guide features: the same for members of one backbone)."""
        return next((f for f in (m.familiarity() for m in self.members) if f is not None), None)

    @staticmethod
    def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """One image's :meth:`Predictor._decode` numbers of every member -> the ensemble's."""
        out: dict[str, Any] = {}
        for key in ("probabilities", "attribute_scores", "landmarks", "visibility", "bbox", "embedding"):
            having = [p[key] for p in parts if key in p]  # the members that predict it
            if not having:
                continue
            if key == "embedding":
                out[key] = concat_embeddings([e[None] for e in having])[0]
            else:  # probabilities: already calibrated per member (runs.ensemble.mean_probabilities)
                out[key] = np.mean(having, axis=0)
        return out


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A model output (any device, any float dtype) as a float32 NumPy array on the CPU."""
    return tensor.detach().float().cpu().numpy()


def _crop_rectangle(image: Image.Image, bbox: Sequence[float] | None,
                    margin: float) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) pixels :func:`crop_box` cuts, or None for the whole image."""
    if bbox is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in bbox)
    w, h = x2 - x1, y2 - y1
    if not (w >= 2 and h >= 2):
        return None
    left, top = max(0, round(x1 - margin * w)), max(0, round(y1 - margin * h))
    right, bottom = min(image.width, round(x2 + margin * w)), min(image.height, round(y2 + margin * h))
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def crop_box(image: Image.Image, bbox: Sequence[float] | None, margin: float = 0.1) -> Image.Image:
    """Crop ``image`` to ``bbox`` (x1, y1, x2, y2 in original-image pixels) grown by ``margin`` of the box's
    width/height on every side and clipped to the image; the whole image itself when the box is absent or
    smaller than 2 pixels."""
    rect = _crop_rectangle(image, bbox, margin)
    return image if rect is None else image.crop(rect)


def crop_garments(predictor: "Predictor", images: Sequence[Image.Image], *,
                  margin: float = 0.1) -> tuple[list[Image.Image], list[dict[str, Any]]]:
    """Localise the garment in each image with the predictor's box and crop it (see :func:`crop_box`).

    Returns (crops, the predictor's answers for the whole images).  A model without a box head is a
    ValueError (:meth:`Predictor.require_box`), not a list of uncropped images."""
    if isinstance(predictor, Predictor):
        predictor.require_box("crop_garments")
    answers = predictor.predict(list(images))
    if answers and all("bbox" not in a for a in answers):  # a duck-typed predictor without boxes
        raise ValueError(NO_BOX_HEAD.format(option="crop_garments").replace("this model", "the predictor"))
    return [crop_box(im, a.get("bbox"), margin) for im, a in zip(images, answers)], answers

