"""Counts that describe a data set (``fashionlens data stats``)."""

from __future__ import annotations

from collections import Counter

from fashionlens.data.samples import SampleSet


def dataset_stats(data: SampleSet) -> dict:
    """Counts over distinct images: splits, categories, attributes, items, landmarks, boxes, domains."""
    images = {s.image for s in data.samples}
    per_category = Counter(s.category_name for s in data.samples if s.category_name is not None)
    domains = Counter(s.domain for s in data.samples if s.domain is not None)
    return {
        "name": data.info.name,
        "root": data.info.root,
        "num_images": len(images),
        "num_samples": len(data.samples),
        "splits": data.splits(),
        "num_categories": data.info.num_categories,
        "num_attributes": data.info.num_attributes,
        "num_items": len({s.item_id for s in data.samples if s.item_id is not None}),
        "num_with_landmarks": len({s.image for s in data.samples if s.landmarks is not None}),
        "num_with_bbox": len({s.image for s in data.samples if s.bbox is not None}),
        "domains": dict(domains),
        "skipped_missing": data.skipped_missing,
        "per_category": dict(sorted(per_category.items())),
    }


def format_stats(stats: dict) -> str:
    """A human-readable block of the counts from :func:`dataset_stats`."""
    lines = [f"data set      {stats['name']}  ({stats['root']})"]
    for key in ("num_images", "num_categories", "num_attributes", "num_items", "num_with_landmarks", "num_with_bbox"):
        lines.append(f"{key:<20} {stats[key]}")
    lines.append("splits               " + ", ".join(f"{k}={v}" for k, v in stats["splits"].items()))
    if stats["domains"]:
        lines.append("domains              " + ", ".join(f"{k}={v}" for k, v in stats["domains"].items()))
    if stats["skipped_missing"]:
        lines.append(f"skipped (missing)    {stats['skipped_missing']}")
    if stats["per_category"]:
        width = max(len(k) for k in stats["per_category"])
        lines.append("per category:")
        lines += [f"  {k:<{width}}  {v}" for k, v in stats["per_category"].items()]
    return "\n".join(lines)
