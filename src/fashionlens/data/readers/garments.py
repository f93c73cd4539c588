"""Reader for what :func:`fashionlens.data.garments.render_dataset` wrote (spec ``garments:PATH``).

The render holds three DeepFashion roots over the same images.  This reader returns every image once:
the Category-benchmark samples (category, attributes, landmarks, box, split train/val/test) joined
by image name with the item id, domain (shop/consumer) and variation type of the consumer-to-shop
files, checked against the in-shop files.  ``DatasetInfo`` carries the taxonomy (``category_paths``,
e.g. ``upper.tops.tee``) and the attribute groups from ``garments.json``.
"""

from __future__ import annotations

import json
import os

from fashionlens.data.readers.deepfashion import read_c2s, read_category, read_inshop
from fashionlens.data.samples import DataFormatError, DatasetInfo, Sample, SampleSet


def _relative(samples: list[Sample], root: str) -> dict[str, Sample]:
    """Image name relative to its benchmark root (``img/...``) -> sample."""
    return {os.path.relpath(s.image, root).replace(os.sep, "/"): s for s in samples}


def _load_meta(root: str) -> dict:
    path = os.path.join(root, "garments.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found; is {root} a render of fashionlens.data.garments.render_dataset?")
    with open(path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    for key in ("categories", "attribute_groups"):
        if not isinstance(meta.get(key), list):
            raise DataFormatError(path, None, f"expected a list under {key!r}")
    return meta


def _info(meta: dict, meta_path: str, base: DatasetInfo, root: str) -> DatasetInfo:
    """DatasetInfo of the render: the category reader's names plus taxonomy and attribute groups."""
    paths = {c["name"]: c["path"] for c in meta["categories"]}
    missing = [n for n in base.categories if n not in paths]
    if missing:
        raise DataFormatError(meta_path, None, f"categories {missing} of list_category_cloth.txt have no taxonomy path")
    groups = {int(g["type"]): str(g["name"]) for g in meta["attribute_groups"]}
    unknown = sorted(set(base.attribute_groups) - set(groups))
    if unknown:
        raise DataFormatError(meta_path, None, f"attribute types {unknown} of list_attr_cloth.txt have no group name")
    return DatasetInfo("garments", list(base.categories), list(base.category_types),
                       [paths[n] for n in base.categories], list(base.attributes), list(base.attribute_groups),
                       groups, single_choice_groups=True, root=root)


def _join(samples: list[Sample], cat_root: str, c2s: SampleSet, inshop: SampleSet) -> None:
    """Copy item_id, domain and variation from the retrieval samples onto the category samples (in place)."""
    by_name = _relative(c2s.samples, c2s.info.root)
    shop = _relative(inshop.samples, inshop.info.root)
    partition = os.path.join(c2s.info.root, "Eval", "list_eval_partition.txt")
    for s in samples:
        name = os.path.relpath(s.image, cat_root).replace(os.sep, "/")
        other = by_name.get(name)
        if other is None:
            raise DataFormatError(partition, None, f"image {name} of {s.source} is in no consumer/shop pair")
        if name in shop and shop[name].item_id != other.item_id:
            raise DataFormatError(partition, None, f"image {name} is item {other.item_id} here but "
                                                   f"{shop[name].item_id} at {shop[name].source}")
        s.item_id, s.domain, s.variation = other.item_id, other.domain, other.variation


def read_garments(path: str, *, missing: str = "error") -> SampleSet:
    """Every image of a garments render at ``path`` (the folder holding category/, inshop/, c2s/).

    Returns one Sample per image with category, clothes_type, attributes (1/-1), landmarks (pixels) with
    visibility, bbox (pixels), split (train/val/test), item_id, domain ("shop"/"consumer") and variation.
    ``missing``: "error" (FileNotFoundError naming image and line) or "skip" for absent image files.
    """
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"garments render not found: {path}")
    meta = _load_meta(root)
    cat = read_category(os.path.join(root, "category"), missing=missing)
    c2s = read_c2s(os.path.join(root, "c2s"), missing=missing)
    inshop = read_inshop(os.path.join(root, "inshop"), missing=missing)
    _join(cat.samples, cat.info.root, c2s, inshop)
    info = _info(meta, os.path.join(root, "garments.json"), cat.info, root)
    return SampleSet(cat.samples, info, cat.skipped_missing)
