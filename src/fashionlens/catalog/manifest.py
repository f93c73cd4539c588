"""People's answers as training data: a catalog's labelled items written as a training manifest.

:func:`export_manifest` writes one row per item whose current label has a chosen provenance (default: the
labels a person gave, ``confirmed`` and ``corrected``) in the format of the ``manifest:`` reader
(:mod:`fashionlens.data.readers.manifest`): ``image`` (the stored image file, absolute), ``category``,
``category_path``, ``attributes``, ``sku`` (the reader's item id: images of one SKU stay on one side of a
validation split), ``split``, and, ignored by the reader, ``provenance``, ``labelled_at``, ``model``,
``catalog_item``, ``title``.  ``fashionlens train --init-from SERVED_RUN --data manifest:FILE --recipe
finetune`` then fine-tunes the served model on them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Sequence

from fashionlens.catalog.catalog import Catalog
from fashionlens.catalog.store import ANSWERED, PROVENANCES
from fashionlens.data.readers.manifest import label_space_path
from fashionlens.export import model_labels
from fashionlens.files import atomic_write

COLUMNS = ("image", "category", "category_path", "attributes", "sku", "split", "provenance", "labelled_at",
           "model", "catalog_item", "title")
#: Data-set splits an item keeps (from its ``extra.split``); every other item is a training image.
KEPT_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_CSV_SEPARATORS = ";|"  # the reader splits a CSV attributes cell on these


def parse_provenances(labels: str | Sequence[str]) -> list[str]:
    """``"confirmed,corrected"`` (or a list) checked against the known provenances."""
    names = [n.strip() for n in (labels.split(",") if isinstance(labels, str) else labels) if n.strip()]
    unknown = [n for n in names if n not in PROVENANCES]
    if unknown or not names:
        raise ValueError(f"labels {', '.join(map(repr, unknown)) or '(none)'}: choose among "
                         f"{', '.join(PROVENANCES)} (comma-separated)")
    return list(dict.fromkeys(names))


def export_manifest(catalog: Catalog | str, out: str | os.PathLike,
                    labels: str | Sequence[str] = ANSWERED) -> dict[str, Any]:
    """Write the training manifest of ``catalog`` (a :class:`Catalog` or its directory) to ``out`` (``.csv``,
    or ``.jsonl`` / ``.json`` / ``.ndjson`` for JSON Lines), written atomically.

    Only items whose current label's provenance is in ``labels`` are written; items without a stored image
    (or whose image file is gone) or without a category are skipped and counted.  Raises ValueError, leaving
    ``out`` as it was, when no row would be written, for an unknown provenance or output type, and for a CSV
    whose attribute names hold ``;`` or ``|`` (write JSON Lines then).

    Next to it, ``NAME.labels.json`` declares the catalog model's label space (its categories in its order, their
    taxonomy paths, its attributes), which the ``manifest:`` reader then uses: a model fine-tuned on answers that
    name only some categories keeps all of them, and ``--init-from`` continues the served model's heads.  Not
    written when the model cannot be read or the answers name a category it lacks.

    Returns ``{"manifest": path, "rows": n, "by_provenance": {provenance: n}, "skipped": {reason: n},
    "label_space": sidecar path or None}``."""
    wanted = parse_provenances(labels)
    out = os.path.abspath(os.fspath(out))
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".csv", ".jsonl", ".json", ".ndjson"):
        raise ValueError(f"{out}: unknown manifest type {ext!r}: use .csv or .jsonl")
    if isinstance(catalog, Catalog):
        items = catalog.labelled(wanted)
        where, run = catalog.directory, catalog.model_run
    else:
        with Catalog.open(os.fspath(catalog)) as opened:
            items, where, run = opened.labelled(wanted), opened.directory, opened.model_run
    skipped = {"no_image": 0, "no_category": 0}
    rows = _rows(items, skipped)
    if not rows:
        raise ValueError(f"catalog {where}: no item with a {' or '.join(wanted)} label, a category and a stored "
                         f"image (skipped: {_said(skipped) or 'none'}); {out} not written")
    if ext == ".csv":
        text = _csv_text(rows, out)
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    space = _label_space(run, rows)
    if space is not None:
        atomic_write(label_space_path(out), json.dumps(space, indent=1, ensure_ascii=False))
    atomic_write(out, text)
    by: dict[str, int] = {p: 0 for p in wanted}
    for r in rows:
        by[r["provenance"]] += 1
    return {"manifest": out, "rows": len(rows), "by_provenance": by, "skipped": skipped,
            "label_space": label_space_path(out) if space is not None else None}


def _label_space(run: Any, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The catalog model's label space (categories in its order, taxonomy paths, attributes) for the manifest's
    sidecar, so a model fine-tuned on the answers keeps every category of the served one (and its heads); None
    when the model cannot be read or the answers name a category or attribute it lacks (people may add new ones:
    the manifest's own vocabulary is used then)."""
    if not run:
        return None
    try:
        labels = model_labels(run)
    except (OSError, ValueError, KeyError):
        return None
    names = list(labels.get("categories") or [])
    paths = list(labels.get("category_paths") or []) or names
    attributes = list(labels.get("attributes") or [])
    if not names or len(paths) != len(names):
        return None
    known = dict(zip(names, paths))
    for r in rows:
        if r["category"] not in known or (r["category_path"] and r["category_path"] != known[r["category"]]) \
                or set(r["attributes"]) - set(attributes):
            return None
    return {"categories": names, "category_paths": paths, "attributes": attributes, "model": str(run)}


def _rows(items: list[dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
    """Manifest rows of labelled items (``skipped`` counts those left out, by reason)."""
    rows: list[dict[str, Any]] = []
    paths: dict[str, str] = {}  # one taxonomy path per category (the reader insists)
    for item in items:
        label = item["label"]
        if not label.get("category"):
            skipped["no_category"] += 1
            continue
        if not item.get("image") or not os.path.isfile(item["image"]):
            skipped["no_image"] += 1
            continue
        if label.get("category_path"):
            paths.setdefault(label["category"], label["category_path"])
        split = (item.get("extra") or {}).get("split")
        rows.append({"image": item["image"], "category": label["category"], "category_path": None,
                     "attributes": list(label.get("attributes") or []), "sku": item.get("sku"),
                     "split": KEPT_SPLITS.get(str(split).lower(), "train") if split else "train",
                     "provenance": label["provenance"], "labelled_at": label["at"], "model": label.get("model"),
                     "catalog_item": item["item_id"], "title": item.get("title")})
    for r in rows:
        r["category_path"] = paths.get(r["category"])
    return rows


def _csv_text(rows: list[dict[str, Any]], out: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        bad = [a for a in r["attributes"] if any(c in a for c in _CSV_SEPARATORS)]
        if bad:
            raise ValueError(f"{out}: attribute {bad[0]!r} (item {r['catalog_item']}) holds ';' or '|', which a CSV "
                             "manifest uses between names: export to a .jsonl file instead")
        writer.writerow([_cell(c, r[c]) for c in COLUMNS])
    return buffer.getvalue()


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column == "attributes":
        return ";".join(value)
    return json.dumps(value) if isinstance(value, list) else value  # an ensemble's model paths


def _said(counts: dict[str, int]) -> str:
    words = {"no_image": "without a stored image", "no_category": "without a category"}
    return ", ".join(f"{n} {words[k]}" for k, n in counts.items() if n)


__all__ = ["export_manifest", "parse_provenances"]
