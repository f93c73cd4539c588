"""Model-in-the-loop cleaning of a noisy labelled image set (the seed thesis's loop).

A small trusted subset (images a person checked: :func:`review_sample` + :func:`write_review` draw N per
class into a review CSV, :func:`seed_from_manifest` reads it back once checked; for benchmarks only,
:func:`seed_fraction` simulates one from known-clean labels) trains a classifier; the classifier scores every
other image; images it is confident about are kept (their given label agrees) or relabelled (it confidently
predicts another class; or dropped, ``mode="drop"``), the rest are dropped; the classifier is retrained on
trusted + kept images and the scoring repeats.

The default classifier is a logistic regression on FROZEN image features (``audit.features``,
:func:`feature_scorer`): a fit takes seconds on a CPU, so several rounds over thousands of images stay
cheap, and with good pretrained features it is nearly as accurate as fine-tuning on a few hundred labels.
Any other learner plugs in as a :data:`Scorer`; ``audit.network.NetworkLearner`` fine-tunes the network
itself every round (the seed's deployed system).  Scores are *cross-fitted* (``cross_fit`` folds over the
untrusted images): an image is always scored by a model that was not trained on its own, possibly wrong,
label, so the loop cannot simply confirm the decisions it made in the previous round.  The result can be
written as a manifest CSV (``write_manifest``) that ``fashionlens.read("manifest:FILE")`` and
``fashionlens train --data manifest:FILE`` read.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashionlens.audit.label_audit import blas_threads, make_classifier, stratified_folds
from fashionlens.data.samples import CLOTHES_TYPES, DataFormatError, Sample

MODES = ("relabel", "drop")
SEED, KEPT, RELABELLED, DROPPED = "seed", "kept", "relabelled", "dropped"
#: Default inverse L2 strength of the cleaning classifier (less regularised than the audit's: its
#: probabilities are compared with a fixed relabelling threshold; 0.02 and 0.1 trained equally good models
#: on a held-out part of clothing-small's train split with 30% noise).
CLEAN_C = 0.1


@dataclass
class CleaningResult:
    """Per-image outcome of :func:`clean_labels` (N = number of images)."""

    labels: np.ndarray  # (N,) final class, -1 where dropped
    status: np.ndarray  # (N,) "seed", "kept", "relabelled" or "dropped"
    confidence: np.ndarray  # (N,) last round's probability of the chosen class (of the given one if dropped); seed: nan
    rounds: list[dict[str, Any]] = field(default_factory=list)  # one summary per round
    probabilities: np.ndarray | None = None  # (N, K) the last round's class probabilities; seed rows nan

    @property
    def keep(self) -> np.ndarray:
        """(N,) bool: images in the cleaned set."""
        return self.status != DROPPED


#: A learner of the loop: ``scorer(train_idx, train_labels, score_idx, info) -> (len(score_idx), K)`` class
#: probabilities of the images ``score_idx`` from a model trained on the images ``train_idx`` with
#: ``train_labels`` (indices into the N images being cleaned); ``info`` = {"round", "part", "parts"}: the round
#: (from 1) and which of its cross-fitted models this is (one model per round: part 0 of 1).
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, dict[str, int]], np.ndarray]


def _probabilities(clf: Any, x: np.ndarray, k: int) -> np.ndarray:
    """(M, k) probabilities; columns of classes the classifier never saw are 0."""
    out = np.zeros((len(x), k))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def feature_scorer(features: Any, num_classes: int, C: float = CLEAN_C, seed: int = 0) -> Scorer:
    """The default learner: a logistic regression (``label_audit.make_classifier``) on frozen ``features`` (N, D)."""
    x = np.asarray(features, np.float64)

    def score(train_idx: np.ndarray, train_labels: np.ndarray, score_idx: np.ndarray,
              info: dict[str, int]) -> np.ndarray:
        with blas_threads(1):
            clf = make_classifier(C, seed=seed).fit(x[train_idx], train_labels)
            return _probabilities(clf, x[score_idx], num_classes)

    return score


def _parts(n: int, seed_idx: np.ndarray, train_mask: np.ndarray,
           folds: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(images scored, images trained on) of each model of a round.  The models train on the seed plus the
    ``train_mask`` images; with ``folds`` (cross-fitting), an image is scored by a model trained without the
    images of its own fold; without (or in the first round: seed only), one model scores every image."""
    rest = np.ones(n, bool)
    rest[seed_idx] = False
    if folds is None or not train_mask.any():
        return [(np.flatnonzero(rest), np.concatenate([seed_idx, np.flatnonzero(train_mask)]))]
    return [(np.flatnonzero(rest & (folds == f)), np.concatenate([seed_idx, np.flatnonzero(train_mask & (folds != f))]))
            for f in np.unique(folds[rest])]


def _score(scorer: Scorer, n: int, k: int, seed_idx: np.ndarray, train_mask: np.ndarray, current: np.ndarray,
           folds: np.ndarray | None, round_: int) -> tuple[np.ndarray, int, int]:
    """((N, k) probabilities of every non-seed image (seed rows nan), images scored by a model that trained on
    them, models trained)."""
    probs = np.full((n, k), np.nan)
    parts = _parts(n, seed_idx, train_mask, folds)
    in_sample = 0
    for j, (own, train) in enumerate(parts):
        if not len(own):
            continue
        p = np.asarray(scorer(train, current[train], own, {"round": round_, "part": j, "parts": len(parts)}),
                       np.float64)
        if p.shape != (len(own), k) or not np.isfinite(p).all():
            raise ValueError(f"the learner returned probabilities of shape {p.shape} (finite: "
                             f"{bool(np.isfinite(p).all())}) for {len(own)} images and {k} classes")
        probs[own] = p
        in_sample += int(np.isin(own, train).sum())
    return probs, in_sample, len(parts)


def _decide(probs: np.ndarray, given: np.ndarray, threshold: float, keep_threshold: float,
            mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(status, label (-1 dropped), confidence) of scored images (M rows); a row of zeros (an image the
    learner could not read) is dropped."""
    rows = np.arange(len(given))
    pred = probs.argmax(axis=1)
    p_pred = probs[rows, pred]
    p_given = np.where(given >= 0, probs[rows, np.maximum(given, 0)], 0.0)  # unlabelled (-1): never kept
    status = np.full(len(given), DROPPED, dtype=object)
    scored = probs.sum(axis=1) > 0
    keep = (pred == given) & (p_given >= keep_threshold) & scored
    relabel = (pred != given) & (p_pred >= threshold) & (mode == "relabel") & scored
    status[keep], status[relabel] = KEPT, RELABELLED
    label = np.where(keep, given, np.where(relabel, pred, -1))
    confidence = np.where(relabel, p_pred, p_given)
    return status, label, confidence


def clean_labels(features: Any, labels: Any, seed_mask: Any, *, rounds: int = 3, threshold: float = 0.9,
                 keep_threshold: float = 0.0, mode: str = "relabel", cross_fit: int = 5, C: float = CLEAN_C,
                 seed: int = 0, num_classes: int | None = None, true_labels: Any = None,
                 on_round: Callable[[dict[str, Any], np.ndarray, np.ndarray], None] | None = None,
                 scorer: Scorer | None = None) -> CleaningResult:
    """Clean ``labels`` (N,) of images with ``features`` (N, D), trusting the images where ``seed_mask`` (N,)
    is True (their labels are taken as correct, e.g. after a hand correction).  A label of -1 marks an
    unlabelled image: the loop labels it when the classifier is confident (status "relabelled").

    Every round scores each untrusted image and decides: kept when the classifier's top class is the given
    label with probability >= ``keep_threshold`` (default 0: agreement of an independent model with the
    annotator is already strong evidence; on ImageNet features of clothing-small with 30% noise, 0.5 kept
    fewer correct labels and trained no better model); relabelled to the top class when that has
    probability >= ``threshold`` (``mode="drop"``: dropped instead); dropped otherwise.  Stops after
    ``rounds`` or when no decision changes.  ``true_labels`` (N,), for benchmarks only, adds label accuracies to the round summaries;
    ``on_round(summary, labels, status)`` is called after every round (labels -1 where dropped).

    ``scorer`` (:data:`Scorer`) replaces the classifier: any learner, e.g. the network itself
    (``audit.network.NetworkLearner``); ``features`` may then be None and ``C`` is unused.  ``cross_fit`` folds
    (1 = one model per round) apply to any learner; a round summary's ``scored_in_sample`` counts the images
    scored by a model that was trained on them (their own current label), which only happens without
    cross-fitting.
    """
    y = np.asarray(labels, np.int64)
    seed_mask = np.asarray(seed_mask, bool)
    x = None if features is None else np.asarray(features, np.float64)
    if x is None and scorer is None:
        raise ValueError("clean_labels needs features or a scorer")
    _check_inputs(x, y, seed_mask, rounds, threshold, keep_threshold, mode)
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    scorer = scorer if scorer is not None else feature_scorer(x, k, C, seed)
    seed_idx = np.flatnonzero(seed_mask)
    strata = np.where(y < 0, k, y)  # the unlabelled form their own stratum
    folds = stratified_folds(strata, min(int(cross_fit), len(y)), seed) if cross_fit > 1 else None
    status = np.full(len(y), DROPPED, dtype=object)
    status[seed_mask] = SEED
    current, confidence = np.where(seed_mask, y, -1), np.full(len(y), np.nan)
    probs = np.full((len(y), k), np.nan)
    history: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        train_mask = (status == KEPT) | (status == RELABELLED)
        probs, in_sample, models = _score(scorer, len(y), k, seed_idx, train_mask, current, folds, r)
        rest = ~seed_mask
        new_status, new_label, new_conf = _decide(probs[rest], y[rest], threshold, keep_threshold, mode)
        changed = int(((new_status != status[rest]) | (new_label != current[rest])).sum())  # images
        status[rest], current[rest], confidence[rest] = new_status, new_label, new_conf
        history.append({**_round_summary(r, status, current, y, true_labels, int(train_mask.sum()) + len(seed_idx),
                                         changed), "models": models, "scored_in_sample": in_sample})
        if on_round is not None:
            on_round(history[-1], current.copy(), status.astype(str))
        if changed == 0:
            break
    return CleaningResult(current, status.astype(str), confidence, history, probs)


def _check_inputs(x: np.ndarray | None, y: np.ndarray, seed_mask: np.ndarray, rounds: int, threshold: float,
                  keep_threshold: float, mode: str) -> None:
    if (x is not None and (x.ndim != 2 or len(x) != len(y))) or seed_mask.shape != y.shape or y.ndim != 1:
        raise ValueError(f"features (N, D), labels (N,) and seed_mask (N,) must agree: got "
                         f"{None if x is None else x.shape}, {y.shape}, {seed_mask.shape}")
    if y.size and (y.min() < -1 or (y[seed_mask] < 0).any()):
        raise ValueError("labels must be class indices (or -1 = unlabelled, outside the seed set)")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not (0 <= threshold <= 1 and 0 <= keep_threshold <= 1):
        raise ValueError(f"thresholds are probabilities in [0, 1], got {threshold} and {keep_threshold}")
    if len(np.unique(y[seed_mask])) < 2:
        raise ValueError("the trusted seed set must hold images of at least 2 classes")


def _round_summary(r: int, status: np.ndarray, current: np.ndarray, given: np.ndarray, truth: Any,
                   trained_on: int, changed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"round": r, "trained_on": trained_on,
                           **{s: int((status == s).sum()) for s in (SEED, KEPT, RELABELLED, DROPPED)},
                           "changed": changed}
    if truth is not None:
        t = np.asarray(truth, np.int64)
        keep = status != DROPPED
        out["given_accuracy"] = float((given == t).mean())
        out["kept_accuracy"] = float((current[keep] == t[keep]).mean()) if keep.any() else 0.0
        out["clean_kept_share"] = float((keep & (given == t)).sum() / max((given == t).sum(), 1))
    return out


def seed_fraction(labels: Any, fraction: float, seed: int = 0) -> np.ndarray:
    """(N,) bool: a stratified random ``fraction`` of each class (at least one image per class).

    A SIMULATION of a trusted seed for benchmarks and tests, where the clean labels are known (the benchmarks
    take the fraction among the images whose label was not flipped); on real data a random share of the noisy
    labels is no trusted set: check images by hand (:func:`review_sample`, :func:`seed_from_manifest`)."""
    y = np.asarray(labels, np.int64)
    if not 0 < fraction < 1:
        raise ValueError(f"seed fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False)] = True
    return mask


#: Values of a seed file's ``checked`` column: the row was checked by a person (trusted) / not (ignored).
CHECKED_YES = ("yes", "y", "true", "1", "x", "ok", "checked")
CHECKED_NO = ("", "no", "n", "false", "0")
REVIEW_COLUMNS = ("image", "category", "checked", "given_category")


def review_sample(labels: Any, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of up to ``per_class`` images of every given class (all of a smaller class), drawn at random
    (seeded), sorted by class then index: the images to show a person (``write_review``).  Unlabelled images
    (-1) are not drawn."""
    y = np.asarray(labels, np.int64)
    if per_class < 1:
        raise ValueError(f"--seed-per-class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y[y >= 0]):
        idx = np.flatnonzero(y == c)
        picked.append(np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)))
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def write_review(path: str, samples: Sequence[Sample], indices: Sequence[int], categories: Sequence[str]) -> int:
    """The review file of ``samples[indices]``: a CSV with columns :data:`REVIEW_COLUMNS`; ``category`` is
    prefilled with the given label (empty for an unlabelled image) for the person to confirm or correct,
    ``checked`` is empty until they mark the row ``yes``; ``given_category`` keeps the label as it was.
    Image paths are relative to the file's folder when inside it.  Returns the number of rows."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(REVIEW_COLUMNS)
        for i in indices:
            s = samples[int(i)]
            if s.array is not None:
                raise ValueError(f"{s.source or s.image}: in-memory image; a review file needs image files")
            name = s.category_name or (categories[s.category] if s.category is not None else "")
            out.writerow([_relative(s.image, folder), name, "", name])
    return len(indices)


def _seed_rows(path: str) -> list[tuple[int, str, str, bool | None]]:
    """(line, image path as written, category, checked) of every non-blank row of a seed file: a CSV with a
    header (columns image and category, optionally checked; others ignored) or JSON Lines with those keys.
    ``checked`` is None when the file has no such column (every row counts as checked)."""
    ext = os.path.splitext(path)[1].lower()
    rows: list[tuple[int, str, str, bool | None]] = []
    with open(path, newline="" if ext not in _JSONL else None, encoding="utf-8-sig") as f:
        if ext in _JSONL:
            for line, text in enumerate(f, 1):
                if text.strip():
                    rows.append(_seed_json(path, line, text))
            return rows
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in ("image", "category") if c not in header]
            if missing:
                raise DataFormatError(path, 1, f"the header needs columns image and category (optionally checked), "
                                               f"got {header}")
            start = reader.line_num + 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DataFormatError(path, line, f"expected {len(header)} columns ({', '.join(header)}), "
                                                      f"got {len(cells)}")
                row = dict(zip(header, (c.strip() for c in cells)))
                rows.append((line, row["image"], row["category"],
                             _checked(path, line, row["checked"]) if "checked" in row else None))
        except csv.Error as e:
            raise DataFormatError(path, reader.line_num, f"not a readable CSV row ({e})") from None
    return rows


_JSONL = (".jsonl", ".ndjson", ".json")


def _seed_json(path: str, line: int, text: str) -> tuple[int, str, str, bool | None]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, line, f"bad JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(row, dict):
        raise DataFormatError(path, line, f"expected a JSON object with image and category, got {type(row).__name__}")
    checked = row.get("checked")
    flag = None if "checked" not in row else checked if isinstance(checked, bool) else _checked(path, line, str(checked or ""))
    return line, str(row.get("image") or "").strip(), str(row.get("category") or "").strip(), flag


def _checked(path: str, line: int, value: str) -> bool:
    v = value.strip().lower()
    if v in CHECKED_YES:
        return True
    if v in CHECKED_NO:
        return False
    raise DataFormatError(path, line, f"checked must be yes or no (empty = not checked), got {value!r}")


def seed_from_manifest(samples: Sequence[Sample], manifest: str, categories: Sequence[str], *,
                       category_paths: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Trusted images listed in a seed file of checked images: ``(mask (N,) bool, labels (N,) int, -1 outside
    the seed)``.

    The file (``--seed-clean FILE``): a CSV with a header, columns ``image`` (relative to the file's folder or
    absolute) and ``category`` (the checked label: a name of ``categories`` or its ``category_paths`` entry),
    optionally ``checked`` (yes / no; empty = no): with that column only the rows marked yes are trusted, so the
    review file of ``--seed-per-class`` (:func:`write_review`) can be fed back as it is once a person has gone
    through it; JSON Lines with the same keys work too.  Any manifest CSV is a valid seed file (its other
    columns are ignored).  Images are matched to ``samples`` by absolute path.  A malformed row raises
    DataFormatError (a ValueError) naming ``file:line``, as do an image that is not among the samples
    (FileNotFoundError when it does not exist), an unknown category, the same image with two categories,
    and a file where no row is checked."""
    path = os.path.abspath(os.path.expanduser(manifest))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"seed file not found: {manifest}")
    base = os.path.dirname(path)
    where = {_key(s.image): i for i, s in enumerate(samples)}
    index = {name: i for i, name in enumerate(categories)}
    index.update({p: i for i, p in enumerate(category_paths) if p and p not in index})
    mask, labels = np.zeros(len(samples), bool), np.full(len(samples), -1, np.int64)
    rows, line_of = _seed_rows(manifest), {}
    for line, image, category, checked in rows:
        if not image:
            raise DataFormatError(manifest, line, "empty image")
        if checked is False:
            continue
        if not category:
            raise DataFormatError(manifest, line, f"empty category for {image} (write the right category, or "
                                                  f"leave checked empty to skip the row)")
        full = os.path.join(base, os.path.expanduser(image))
        i = where.get(_key(full))
        if i is None:
            if not os.path.exists(full):
                raise FileNotFoundError(f"{manifest}:{line}: seed image {full} does not exist")
            raise DataFormatError(manifest, line, f"seed image {full} is not among the images being cleaned")
        if category not in index:
            raise DataFormatError(manifest, line, f"seed category {category!r} is not one of the data set's "
                                                  f"categories ({', '.join(categories)})")
        if mask[i] and labels[i] != index[category]:
            raise DataFormatError(manifest, line, f"{image} is listed again with another category "
                                                  f"(line {line_of[i]}: {categories[labels[i]]!r})")
        mask[i], labels[i], line_of[i] = True, index[category], line
    if not mask.any():
        marked = any(c is not None for *_, c in rows)
        raise DataFormatError(manifest, None, "no row is marked checked: set checked to yes on every row you have "
                              "checked (and correct its category)" if marked else "no images listed")
    return mask, labels


def _key(image: str) -> str:
    return os.path.normcase(os.path.abspath(image))


def _relative(image: str, folder: str) -> str:
    """``image`` relative to ``folder`` when inside it, else absolute."""
    image = os.path.abspath(image)
    rel = os.path.relpath(image, folder)
    return image if rel.startswith("..") else rel


def write_manifest(path: str, samples: Sequence[Sample], labels: Sequence[int], categories: Sequence[str], *,
                   category_paths: Sequence[str] = (), attributes: Sequence[str] = (),
                   extra: dict[str, Sequence[Any]] | None = None, splits: Sequence[str] | None = None) -> int:
    """Write the samples with ``labels[i] >= 0`` as a manifest CSV (docs/data-formats.md): image (relative to
    the manifest's folder), category (``categories[label]``), category_path, split, item_id, domain, bbox,
    clothes_type, landmarks, attributes (positive names of the data set's ``attributes``) where known, plus
    the ``extra`` columns, one value per sample (ignored by the reader).  ``splits`` (one per sample), when
    given, replaces the samples' own split names.

    Returns the number of rows written.  Images held only in memory (Fashion-MNIST) cannot be listed."""
    folder = os.path.dirname(os.path.abspath(path))
    names = _attribute_names(samples, attributes)
    extra = extra or {}
    header = ["image", "category", "category_path", "split", "item_id", "domain", "bbox", "clothes_type",
              "landmarks", "attributes", *extra]
    os.makedirs(folder, exist_ok=True)
    written = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i, (s, label) in enumerate(zip(samples, labels)):
            if label < 0:
                continue
            if s.array is not None:
                raise ValueError(f"{s.source or s.image}: in-memory image; a manifest needs image files")
            row = _row(s, folder, categories[int(label)], category_paths[int(label)] if category_paths else "", names)
            if splits is not None:
                row[3] = splits[i] or ""
            out.writerow(row + [_cell(extra[k][i]) for k in extra])
            written += 1
    return written


def _row(s: Sample, folder: str, category: str, category_path: str, names: list[str] | None) -> list[str]:
    image = _relative(s.image, folder)
    bbox = " ".join(f"{v:g}" for v in s.bbox) if s.bbox is not None else ""
    landmarks, ctype = "", ""
    if s.landmarks is not None and s.clothes_type in CLOTHES_TYPES:
        vis = s.visibility if s.visibility is not None else np.zeros(len(s.landmarks), np.int64)
        landmarks = " ".join(f"{x:g} {y:g} {int(v)}" for (x, y), v in zip(s.landmarks, vis))
        ctype = str(s.clothes_type)
    attributes = ""
    if names is not None and s.attributes is not None:
        attributes = ";".join(names[j] for j in np.flatnonzero(np.asarray(s.attributes) == 1))
    return [image, category, category_path if category_path != category else "", s.split or "", s.item_id or "",
            s.domain or "", bbox, ctype, landmarks, attributes]


def _attribute_names(samples: Sequence[Sample], names: Sequence[str]) -> list[str] | None:
    """The attribute names when the samples carry attributes of that length and no name holds ';' or '|'
    (the manifest's separators); None otherwise (the column stays empty)."""
    if not names or any((";" in n or "|" in n) for n in names):
        return None
    if any(s.attributes is not None and len(s.attributes) != len(names) for s in samples):
        raise ValueError(f"samples carry attribute vectors of another length than the {len(names)} attribute names")
    return list(names)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


__all__ = ["CHECKED_NO", "CHECKED_YES", "MODES", "REVIEW_COLUMNS", "CleaningResult", "Scorer", "clean_labels",
           "feature_scorer", "review_sample", "seed_fraction", "seed_from_manifest", "write_manifest", "write_review"]
