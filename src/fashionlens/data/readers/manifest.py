"""Manifest data sets: one CSV (header row) or JSON Lines file listing images and their labels.

Columns (docs/data-formats.md has the full table): ``image`` (required; relative to the manifest's folder
or absolute), ``category``, ``category_path``, ``attributes``, ``item_id`` (``sku`` when item_id is absent),
``domain``, ``split``, ``bbox``, ``landmarks``, ``clothes_type``.  Other columns (``title`` ...) are accepted
and ignored.  Every malformed row raises DataFormatError naming ``file:line``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from fashionlens.data.readers import check_images
from fashionlens.data.samples import (
    CLOTHES_TYPES,
    DOMAINS,
    SLOTS_BY_TYPE,
    DataFormatError,
    DatasetInfo,
    Sample,
    SampleSet,
)

SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test", "query": "query", "gallery": "gallery"}
CLOTHES_TYPE_NAMES = {"1": 1, "upper": 1, "upper-body": 1, "2": 2, "lower": 2, "lower-body": 2,
                      "3": 3, "full": 3, "full-body": 3}
_SEPARATORS = re.compile(r"[\s,]+")
_ATTRIBUTE_SEPARATORS = re.compile(r"[;|]")


@dataclass
class _Row:
    """A parsed manifest row before the vocabularies are known."""

    line: int
    sample: Sample
    category: str | None
    category_path: str | None
    attributes: list[str] | None


def _text(value: Any) -> str | None:
    """A cell as stripped text; None for absent/empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _numbers(value: Any, path: str, line: int, column: str) -> list[float]:
    if isinstance(value, list):
        flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
    else:
        flat = [t for t in _SEPARATORS.split(str(value).strip()) if t]
    try:
        return [float(v) for v in flat]
    except (TypeError, ValueError):
        raise DataFormatError(path, line, f"{column} must be numbers, got {value!r}") from None


def _bbox(value: Any, path: str, line: int) -> tuple[float, float, float, float]:
    nums = _numbers(value, path, line, "bbox")
    if len(nums) != 4:
        raise DataFormatError(path, line, f"bbox must be 4 numbers 'x1 y1 x2 y2' (pixels), got {value!r}")
    x1, y1, x2, y2 = nums
    if not (x1 < x2 and y1 < y2):
        raise DataFormatError(path, line, f"bbox {value!r} is empty or inverted: need x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


def _clothes_type(value: Any, path: str, line: int) -> int:
    kind = CLOTHES_TYPE_NAMES.get(str(value).strip().lower())
    if kind is None:
        raise DataFormatError(path, line, f"clothes_type {value!r}: expected 1/2/3 or upper/lower/full")
    return kind


def _landmarks(value: Any, clothes_type: int | None, path: str, line: int) -> tuple[np.ndarray, np.ndarray]:
    """``"x y v x y v ..."`` (or a list) -> xy (K, 2) float32 pixels and visibility (K,) int8."""
    if clothes_type is None:
        raise DataFormatError(path, line, "landmarks need a clothes_type column (1/2/3 or upper/lower/full)")
    k = len(SLOTS_BY_TYPE[clothes_type])
    nums = _numbers(value, path, line, "landmarks")
    if len(nums) != 3 * k:
        raise DataFormatError(path, line, f"clothes_type {clothes_type} ({CLOTHES_TYPES[clothes_type]}) has {k} "
                                          f"landmarks: expected {3 * k} numbers 'x y v ...', got {len(nums)}")
    triplets = np.asarray(nums, np.float64).reshape(k, 3)
    if not np.isin(triplets[:, 2], (0, 1, 2)).all():
        raise DataFormatError(path, line, "landmark visibility must be 0 (visible), 1 (occluded) or 2 (truncated)")
    return triplets[:, :2].astype(np.float32), triplets[:, 2].astype(np.int8)


def _attribute_names(value: Any, path: str, line: int) -> list[str]:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise DataFormatError(path, line, f"attributes must be a list of names, got {value!r}")
        names = value
    else:
        names = _ATTRIBUTE_SEPARATORS.split(str(value))
    return [n.strip() for n in names if n.strip()]


def _choice(value: Any, allowed: dict[str, str] | tuple[str, ...], column: str, path: str, line: int) -> str | None:
    text = _text(value)
    if text is None:
        return None
    key = text.lower()
    if key not in allowed:
        raise DataFormatError(path, line, f"unknown {column} {text!r}: expected {', '.join(allowed)}")
    return allowed[key] if isinstance(allowed, dict) else key


def _parse_row(row: dict[str, Any], base: str, path: str, line: int) -> _Row:
    image = _text(row.get("image"))
    if image is None:
        raise DataFormatError(path, line, "missing value in the required 'image' column")
    sample = Sample(os.path.join(base, os.path.expanduser(image)), f"{path}:{line}")
    sample.item_id = _text(row.get("item_id")) or _text(row.get("sku"))
    sample.domain = _choice(row.get("domain"), DOMAINS, "domain", path, line)
    sample.split = _choice(row.get("split"), SPLITS, "split", path, line)
    if _text(row.get("clothes_type")) is not None:
        sample.clothes_type = _clothes_type(row["clothes_type"], path, line)
    if _text(row.get("bbox")) is not None:
        sample.bbox = _bbox(row["bbox"], path, line)
    if _text(row.get("landmarks")) is not None:
        sample.landmarks, sample.visibility = _landmarks(row["landmarks"], sample.clothes_type, path, line)
    attributes = row.get("attributes")
    names = None if attributes is None else _attribute_names(attributes, path, line)
    return _Row(line, sample, _text(row.get("category")), _text(row.get("category_path")), names)


# ---------------------------------------------------------------------------------------------- file formats
def _csv_rows(path: str) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "image" not in header:
            raise DataFormatError(path, 1, f"the header needs an 'image' column, got {header}")
        if len(set(header)) != len(header):
            raise DataFormatError(path, 1, f"duplicate column names in the header {header}")
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise DataFormatError(path, line, f"expected {len(header)} columns ({', '.join(header)}), "
                                                  f"got {len(cells)}")
            yield line, dict(zip(header, cells))


def _jsonl_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                hint = " (a JSON array? write one object per line: JSON Lines)" if text.lstrip().startswith("[") else ""
                raise DataFormatError(path, line, f"bad JSON: {e.msg} at column {e.colno}{hint}") from None
            if not isinstance(row, dict):
                raise DataFormatError(path, line, f"expected a JSON object per line, got {type(row).__name__}")
            yield line, row


def _rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return _csv_rows(path)
    if ext in (".jsonl", ".json", ".ndjson"):
        return _jsonl_rows(path)
    raise ValueError(f"{path}: unknown manifest type {ext!r}: use .csv (header row) or .jsonl (one object per line)")


# ---------------------------------------------------------------------------------------------- reader
def _category_vocabulary(rows: list[_Row], path: str) -> tuple[list[str], list[str]]:
    """Sorted category names and their dotted paths (the name itself when no row gives a path)."""
    paths: dict[str, str | None] = {}
    for row in rows:
        name = row.category or row.category_path
        if name is None:
            continue
        known = paths.get(name)
        if row.category_path and known and known != row.category_path:
            raise DataFormatError(path, row.line, f"category {name!r} has category_path {row.category_path!r} "
                                                   f"here but {known!r} on an earlier row")
        paths[name] = known or row.category_path
    names = sorted(paths)
    return names, [paths[n] or n for n in names]


def _category_types(rows: list[_Row], n: int) -> list[int]:
    """Each category's most common clothes type among its rows (0 when none is given)."""
    counts = np.zeros((n, 4), np.int64)
    for row in rows:
        if row.sample.category is not None and row.sample.clothes_type is not None:
            counts[row.sample.category, row.sample.clothes_type] += 1
    return [int(c.argmax()) if c.any() else 0 for c in counts]


def label_space_path(manifest: str) -> str:
    """``answers.csv`` -> ``answers.labels.json``: the file that declares a manifest's label space."""
    return os.path.splitext(os.path.abspath(manifest))[0] + ".labels.json"


def read_label_space(manifest: str) -> dict[str, list[str]] | None:
    """The label space a manifest's sidecar declares (``{"categories", "category_paths", "attributes"}``, in the
    model's order), None when it has none; DataFormatError naming the file when it is malformed."""
    path = label_space_path(manifest)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            space = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(path, getattr(e, "lineno", None), f"not a JSON label space: {e}") from None
    names = space.get("categories") if isinstance(space, dict) else None
    paths = space.get("category_paths") or [] if isinstance(space, dict) else []
    attrs = space.get("attributes") or [] if isinstance(space, dict) else []
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        raise DataFormatError(path, None, "expected {\"categories\": [distinct names, ...], \"category_paths\": "
                                          "[...], \"attributes\": [...]}")
    if paths and (len(paths) != len(names) or not all(isinstance(p, str) and p for p in paths)):
        raise DataFormatError(path, None, f"category_paths: {len(paths)} paths for {len(names)} categories")
    if not all(isinstance(a, str) and a for a in attrs) or len(set(attrs)) != len(attrs):
        raise DataFormatError(path, None, "attributes: expected distinct names")
    return {"categories": list(names), "category_paths": list(paths) or list(names), "attributes": list(attrs)}


def _declared(space: dict[str, list[str]], rows: list[_Row], path: str) -> tuple[list[str], list[str], list[str]]:
    """The declared label space, checked against the rows: every category and attribute a row names must be in it,
    with the same taxonomy path (DataFormatError naming the row)."""
    names, paths = space["categories"], dict(zip(space["categories"], space["category_paths"]))
    attributes = set(space["attributes"])
    for row in rows:
        name = row.category or row.category_path
        if name is not None and name not in paths:
            raise DataFormatError(path, row.line, f"category {name!r} is not in the label space of "
                                                  f"{label_space_path(path)}")
        if name is not None and row.category_path and row.category_path != paths[name]:
            raise DataFormatError(path, row.line, f"category {name!r} has category_path {row.category_path!r}, the "
                                                  f"label space {paths[name]!r}")
        unknown = [a for a in row.attributes or () if a not in attributes]
        if unknown:
            raise DataFormatError(path, row.line, f"attribute {unknown[0]!r} is not in the label space of "
                                                  f"{label_space_path(path)}")
    return names, [paths[n] for n in names], list(space["attributes"])


def read_manifest(path: str, *, missing: str = "error") -> SampleSet:
    """Read a CSV / JSONL manifest into samples.

    Attribute names form a sorted vocabulary; a row's ``attributes`` array is 1 for the names it lists and
    -1 for the others (None when the row has no attributes value at all: JSON key absent or null).
    Category names are sorted; a row with only ``category_path`` is named by that path.  A sidecar
    ``NAME.labels.json`` (:func:`read_label_space`; ``catalog export`` writes it) declares the label space instead:
    its categories, taxonomy paths and attributes in its order, even those no row names, so a model fine-tuned on
    the manifest keeps every category of the served one.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    base = os.path.dirname(path)
    rows = [_parse_row(row, base, path, line) for line, row in _rows(path)]
    if not rows:
        raise DataFormatError(path, None, "no rows: the manifest lists no images")
    categories, category_paths = _category_vocabulary(rows, path)
    attributes = sorted({a for row in rows for a in row.attributes or ()})
    declared = read_label_space(path)
    if declared is not None:
        categories, category_paths, attributes = _declared(declared, rows, path)
    cat_index = {c: i for i, c in enumerate(categories)}
    att_index = {a: i for i, a in enumerate(attributes)}
    for row in rows:
        name = row.category or row.category_path
        if name is not None:
            row.sample.category, row.sample.category_name = cat_index[name], name
        if row.attributes is not None:
            row.sample.attributes = np.full(len(attributes), -1, np.int8)
            row.sample.attributes[[att_index[a] for a in row.attributes]] = 1
    info = DatasetInfo("manifest", categories=categories, category_types=_category_types(rows, len(categories)),
                       category_paths=category_paths, attributes=attributes,
                       attribute_groups=[0] * len(attributes), root=base)
    kept, skipped = check_images([row.sample for row in rows], missing)
    return SampleSet(kept, info, skipped)
