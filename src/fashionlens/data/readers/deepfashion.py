"""Readers for the four DeepFashion benchmarks, exactly as published (layouts in docs/data-formats.md).

Each reader takes the benchmark root (the folder holding ``img/``, ``Anno/``, ``Eval/``) and returns a
:class:`SampleSet`.  Coordinates stay in pixels of the original image.  Category labels in the files are
1-based; ``Sample.category`` is 0-based.  Attribute labels are int8: 1 positive, -1 negative, 0 unknown.
Optional annotation files (attributes, boxes, landmarks) may be absent: those fields are then None.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from fashionlens.data.readers import check_images
from fashionlens.data.readers.listfile import (
    ListFile,
    SampleIndex,
    fill_attributes,
    fill_boxes,
    fill_landmarks,
    folder_category,
    parse_bbox,
    parse_int,
    parse_ints,
)
from fashionlens.data.samples import (
    CLOTHES_TYPES,
    SLOTS_BY_TYPE,
    TRUNCATED,
    VISIBLE,
    DataFormatError,
    DatasetInfo,
    Sample,
    SampleSet,
)

CATEGORY_GROUPS = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}
FINE_GROUPS = {1: "texture", 2: "sleeve", 3: "length", 4: "neckline", 5: "fabric", 6: "fit"}
#: The fine variant's 26 attributes in file order, per group (used when list_attr_cloth.txt is absent).
FINE_ATTRIBUTES = {
    1: "floral graphic striped embroidered pleated solid lattice",
    2: "long_sleeve short_sleeve sleeveless",
    3: "maxi_length mini_length no_dress",
    4: "crew_neckline v_neckline square_neckline no_neckline",
    5: "denim chiffon cotton leather faux knit",
    6: "tight loose conventional",
}
#: The 50 categories of list_category_cloth.txt by clothes type (used when the fine variant lacks that file).
CATEGORIES_BY_TYPE = {
    1: "Anorak Blazer Blouse Bomber Button-Down Cardigan Flannel Halter Henley Hoodie Jacket Jersey Parka "
       "Peacoat Poncho Sweater Tank Tee Top Turtleneck",
    2: "Capris Chinos Culottes Cutoffs Gauchos Jeans Jeggings Jodhpurs Joggers Leggings Sarong Shorts Skirt "
       "Sweatpants Sweatshorts Trunks",
    3: "Caftan Cape Coat Coverup Dress Jumpsuit Kaftan Kimono Nightdress Onesie Robe Romper Shirtdress Sundress",
}
ANY_GROUP = range(1, 1000)  # attribute types are group ids: the benchmarks use 1..5 (category) and 1..6 (fine)
CATEGORY_SPLITS = ("train", "val", "test")
INSHOP_SPLITS = ("train", "query", "gallery")


# ---------------------------------------------------------------------------------------------- helpers
def _root(path: str) -> str:
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"DeepFashion benchmark root not found (a folder with Anno/, Eval/, img/): {path}")
    return root


def _required(root: str, rel: str, benchmark: str) -> str:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: annotation file not found (the {benchmark} benchmark needs it)")
    return path


def _optional(root: str, rel: str) -> str | None:
    path = os.path.join(root, rel)
    return path if os.path.isfile(path) else None


def _check_missing(missing: str) -> None:
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")


def _finish(samples: list[Sample], info: DatasetInfo, missing: str) -> SampleSet:
    kept, skipped = check_images(samples, missing)
    return SampleSet(kept, info, skipped)


def _read_names(lf: ListFile, types: range, what: str) -> tuple[list[str], list[int]]:
    """``name  type`` rows where the name may contain spaces: the type is the LAST token (an int in ``types``)."""
    names: list[str] = []
    kinds: list[int] = []
    for lineno, tokens in lf.rows():
        if len(tokens) < 2:
            raise lf.error(lineno, f"expected a name and its {what}, got {' '.join(tokens)!r}")
        kind = parse_int(tokens[-1], lf.path, lineno, what)
        if kind not in types:
            raise lf.error(lineno, f"{what} is {kind}, expected {types.start}..{types.stop - 1}")
        names.append(" ".join(tokens[:-1]))
        kinds.append(kind)
    return names, kinds


def _fill_split(lf: ListFile, index: SampleIndex) -> None:
    for lineno, tokens in lf.rows():
        lf.expect(tokens, 2, lineno, "image_name evaluation_status")
        index.samples[index.find(tokens[0], lf, lineno)].split = _split(tokens[1], CATEGORY_SPLITS, lf, lineno)


def _split(value: str, allowed: tuple[str, ...], lf: ListFile, lineno: int) -> str:
    if value not in allowed:
        raise lf.error(lineno, f"unknown split {value!r}: expected {', '.join(allowed)}")
    return value


def _category_label(token: str, names: list[str], path: str, lineno: int) -> int:
    label = parse_int(token, path, lineno, "category_label")
    if not 1 <= label <= len(names):
        raise DataFormatError(path, lineno, f"unknown category label {label}: expected 1..{len(names)} (1-based, as in "
                               "list_category_cloth.txt)")
    return label - 1


def _category_paths(names: list[str], types: list[int]) -> list[str]:
    return [f"{CLOTHES_TYPES[t]}.{n}" if t in CLOTHES_TYPES else n for n, t in zip(names, types)]


# ---------------------------------------------------------------------------------------------- category
def read_category(path: str, *, missing: str = "error") -> SampleSet:
    """Category and Attribute Prediction benchmark at ``path`` (Anno/list_*.txt, Eval/list_eval_partition.txt).

    Needs list_category_cloth.txt and list_category_img.txt; attributes, boxes, landmarks and the
    partition are read when their files exist.  ``missing``: "error" or "skip" for absent images.
    """
    _check_missing(missing)
    root = _root(path)
    cloth = ListFile(_required(root, "Anno/list_category_cloth.txt", "category"), root)
    names, types = _read_names(cloth, range(1, 4), "category_type")
    index = SampleIndex(ListFile(_required(root, "Anno/list_category_img.txt", "category"), root), root)
    lf = index.primary
    for lineno, tokens in lf.rows():
        lf.expect(tokens, 2, lineno, "image_name category_label")
        cat = _category_label(tokens[1], names, lf.path, lineno)
        sample = Sample(os.path.join(root, tokens[0]), f"{lf.name}:{lineno}", category=cat,
                        category_name=names[cat], clothes_type=types[cat])
        index.add(tokens[0], sample, lineno)
    info = DatasetInfo("deepfashion-category", names, types, _category_paths(names, types),
                       group_names=dict(CATEGORY_GROUPS), root=root)
    if attr_cloth := _optional(root, "Anno/list_attr_cloth.txt"):
        info.attributes, info.attribute_groups = _read_names(ListFile(attr_cloth, root), ANY_GROUP, "attribute_type")
        info.group_names.update({g: f"group {g}" for g in info.attribute_groups if g not in info.group_names})
        fill_attributes(ListFile(_required(root, "Anno/list_attr_img.txt", "category"), root), index,
                         len(info.attributes))
    if bbox := _optional(root, "Anno/list_bbox.txt"):
        fill_boxes(ListFile(bbox, root), index)
    if landmarks := _optional(root, "Anno/list_landmarks.txt"):
        fill_landmarks(ListFile(landmarks, root), index, check_type=False)
    if partition := _optional(root, "Eval/list_eval_partition.txt"):
        _fill_split(ListFile(partition, root), index)
    return _finish(index.samples, info, missing)


# ---------------------------------------------------------------------------------------------- fine
def _fine_dir(root: str) -> str:
    for sub in ("Anno_fine", "Anno", ""):
        if os.path.isfile(os.path.join(root, sub, "train.txt")):
            return os.path.join(root, sub)
    raise FileNotFoundError(f"{root}: no fine-grained split files (train.txt with train_attr.txt ...) in "
                            "Anno_fine/, Anno/ or the root itself")


def _fine_names(root: str, anno: str) -> DatasetInfo:
    """Category and attribute names of the fine variant: from its list files, else the published tables."""
    info = DatasetInfo("deepfashion-fine", group_names=dict(FINE_GROUPS), single_choice_groups=True, root=root)
    cloth = next((p for p in (os.path.join(anno, "list_category_cloth.txt"),
                              os.path.join(root, "Anno", "list_category_cloth.txt")) if os.path.isfile(p)), None)
    if cloth:
        info.categories, info.category_types = _read_names(ListFile(cloth, root), range(1, 4), "category_type")
    else:
        for kind, names in CATEGORIES_BY_TYPE.items():
            info.categories += names.split()
            info.category_types += [kind] * len(names.split())
    info.category_paths = _category_paths(info.categories, info.category_types)
    attr_cloth = os.path.join(anno, "list_attr_cloth.txt")
    if os.path.isfile(attr_cloth):
        info.attributes, info.attribute_groups = _read_names(ListFile(attr_cloth, root), ANY_GROUP, "attribute_type")
        info.group_names.update({g: f"group {g}" for g in info.attribute_groups if g not in info.group_names})
    else:
        for group, names in FINE_ATTRIBUTES.items():
            info.attributes += names.split()
            info.attribute_groups += [group] * len(names.split())
    return info


def _fine_image(root: str, name: str) -> str:
    """The image file; ``img_highres_subset/Folder-img_000.jpg`` falls back to ``img/Folder/img_000.jpg``."""
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        folder, sep, rest = name.rsplit("/", 1)[-1].rpartition("-img_")
        alt = os.path.join(root, "img", folder, "img_" + rest)
        if sep and os.path.isfile(alt):
            return alt
    return path


class _Aligned:
    """``{split}_{kind}.txt``: rows of ``width`` ints, line-aligned with ``{split}.txt``."""

    def __init__(self, path: str, width: int, n: int):
        self.path = path
        lf = ListFile(path, counted=False)
        self.rows: list[tuple[int, np.ndarray]] = []
        for lineno, tokens in lf.rows(maxsplit=0):
            values = parse_ints(tokens[0], path, lineno, "value")
            if len(values) != width:
                raise lf.error(lineno, f"expected {width} integers, got {len(values)}")
            self.rows.append((lineno, values))
        if len(self.rows) != n:
            raise lf.error(None, f"has {len(self.rows)} rows but {os.path.basename(path).split('_')[0]}.txt has "
                                 f"{n}: the files must be line-aligned")


def _fine_fill(sample: Sample, info: DatasetInfo, parts: dict[str, _Aligned], i: int) -> None:
    """Fill one sample from row ``i`` of the aligned ``{split}_*.txt`` files present."""
    if cate := parts.get("cate"):
        lineno, values = cate.rows[i]
        sample.category = _category_label(str(values[0]), info.categories, cate.path, lineno)
        sample.category_name = info.categories[sample.category]
        sample.clothes_type = info.category_types[sample.category]
    if attr := parts.get("attr"):
        lineno, values = attr.rows[i]
        if values.min() < 0 or values.max() > 1:
            labels = sorted(set(values.tolist()))
            raise DataFormatError(attr.path, lineno, f"attribute labels must be 0 or 1, got {labels}")
        sample.attributes = (2 * values - 1).astype(np.int8)
    if bbox := parts.get("bbox"):
        lineno, values = bbox.rows[i]
        sample.bbox = parse_bbox(values, bbox.path, lineno)
    if (landmarks := parts.get("landmarks")) and sample.clothes_type in SLOTS_BY_TYPE:
        xy = landmarks.rows[i][1].reshape(8, 2)[list(SLOTS_BY_TYPE[sample.clothes_type])]
        sample.landmarks = xy.astype(np.float32)
        sample.visibility = np.where((xy == 0).all(axis=1), TRUNCATED, VISIBLE).astype(np.int8)


def read_fine(path: str, *, missing: str = "error") -> SampleSet:
    """Fine-grained attribute variant (26 attributes in 6 single-choice groups, pre-split files).

    Reads ``{split}.txt`` with the line-aligned ``{split}_cate/attr/bbox/landmarks.txt`` (each optional)
    from ``Anno_fine/`` (else ``Anno/`` or the root).  0/1 labels are stored as -1/1; the 16-int
    landmark rows (x1 y1 .. x8 y8 in the full-body slot order, zeros where absent) become the clothes
    type's K landmarks, with visibility 2 where the point is (0, 0).
    """
    _check_missing(missing)
    root = _root(path)
    anno = _fine_dir(root)
    info = _fine_names(root, anno)
    widths = {"cate": 1, "attr": len(info.attributes), "bbox": 4, "landmarks": 16}
    samples: list[Sample] = []
    for split in CATEGORY_SPLITS:
        split_file = os.path.join(anno, f"{split}.txt")
        if not os.path.isfile(split_file):
            continue
        lf = ListFile(split_file, root, counted=False)
        images = list(lf.rows())
        for lineno, tokens in images:
            lf.expect(tokens, 1, lineno, "image_name")
        parts = {kind: _Aligned(p, width, len(images)) for kind, width in widths.items()
                 if os.path.isfile(p := os.path.join(anno, f"{split}_{kind}.txt"))}
        for i, (lineno, tokens) in enumerate(images):
            sample = Sample(_fine_image(root, tokens[0]), f"{lf.name}:{lineno}", split=split)
            _fine_fill(sample, info, parts, i)
            samples.append(sample)
    return _finish(samples, info, missing)


# ---------------------------------------------------------------------------------------------- retrieval
def _folder_categories(index: SampleIndex, info: DatasetInfo) -> None:
    """Categories from image folders (``img/WOMEN/Dresses/...`` -> "WOMEN/Dresses", path "WOMEN.Dresses")."""
    found = [folder_category(name) for name in index.names]
    info.categories = sorted({c for c in found if c is not None})
    lookup = {c: i for i, c in enumerate(info.categories)}
    info.category_paths = [c.replace(".", "_").replace("/", ".") for c in info.categories]
    types: list[Counter] = [Counter() for _ in info.categories]
    for sample, cat in zip(index.samples, found):
        if cat is not None:
            sample.category, sample.category_name = lookup[cat], cat
            if sample.clothes_type is not None:
                types[lookup[cat]][sample.clothes_type] += 1
    # category_types: the most common clothes type of the category's images (0 when none is known)
    info.category_types = [c.most_common(1)[0][0] if c else 0 for c in types]


def read_inshop(path: str, *, missing: str = "error") -> SampleSet:
    """In-shop Clothes Retrieval benchmark: splits train/query/gallery, item ids, boxes, pose, landmarks.

    ``Sample.variation`` is the pose_type of list_bbox_inshop.txt (else the landmark variation_type).
    Categories are the image folders ("WOMEN/Dresses").
    """
    _check_missing(missing)
    root = _root(path)
    index = SampleIndex(ListFile(_required(root, "Eval/list_eval_partition.txt", "in-shop"), root), root)
    lf = index.primary
    for lineno, tokens in lf.rows():
        lf.expect(tokens, 3, lineno, "image_name item_id evaluation_status")
        split = _split(tokens[2], INSHOP_SPLITS, lf, lineno)
        sample = Sample(os.path.join(root, tokens[0]), f"{lf.name}:{lineno}", item_id=tokens[1], domain="shop",
                        split=split)
        index.add(tokens[0], sample, lineno)
    if bbox := _optional(root, "Anno/list_bbox_inshop.txt"):
        poses = fill_boxes(ListFile(bbox, root), index, "pose_type", range(1, 7))
        for sample, pose in zip(index.samples, poses):
            sample.variation = pose or None
    if landmarks := _optional(root, "Anno/list_landmarks_inshop.txt"):
        fill_landmarks(ListFile(landmarks, root), index, check_type=True)
    info = DatasetInfo("deepfashion-inshop", root=root)
    _folder_categories(index, info)
    return _finish(index.samples, info, missing)


def _domain_from_name(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1].lower()
    if base.startswith(("consumer", "comsumer")):
        return "consumer"
    if base.startswith("shop"):
        return "shop"
    return None


def _c2s_pairs(index: SampleIndex) -> list[str]:
    """Read the pair rows into one sample per distinct image; returns each image's domain by pair column."""
    lf = index.primary
    by_column: list[str] = []
    for lineno, tokens in lf.rows():
        lf.expect(tokens, 4, lineno, "image_pair_name_1 image_pair_name_2 item_id evaluation_status")
        split = _split(tokens[3], CATEGORY_SPLITS, lf, lineno)
        for name, column_domain in ((tokens[0], "consumer"), (tokens[1], "shop")):
            pos = index.pos.get(name)
            if pos is None:
                sample = Sample(os.path.join(index.root, name), f"{lf.name}:{lineno}", item_id=tokens[2],
                                domain=_domain_from_name(name), split=split)
                index.add(name, sample, lineno)
                by_column.append(column_domain)
                continue
            first = index.samples[pos]
            if (first.item_id, first.split) != (tokens[2], split):
                raise lf.error(lineno, f"image {name} is in item {tokens[2]} / split {split} here but in item "
                                       f"{first.item_id} / split {first.split} at {first.source}")
    return by_column


def read_c2s(path: str, *, missing: str = "error") -> SampleSet:
    """Consumer-to-shop Clothes Retrieval benchmark: one Sample per distinct image of the pair list.

    ``domain`` comes from the file name (``comsumer_01.jpg`` / ``shop_01.jpg``), else the bbox file's
    source_type (1 shop, 2 consumer), else the pair column.  Categories are the image folders ("TOPS/T_Shirt").
    """
    _check_missing(missing)
    root = _root(path)
    index = SampleIndex(ListFile(_required(root, "Eval/list_eval_partition.txt", "consumer-to-shop"), root), root)
    by_column = _c2s_pairs(index)
    if bbox := _optional(root, "Anno/list_bbox_consumer2shop.txt"):
        sources = fill_boxes(ListFile(bbox, root), index, "source_type", range(1, 3))
        for sample, source_type in zip(index.samples, sources):
            if sample.domain is None and source_type:
                sample.domain = "shop" if source_type == 1 else "consumer"
    if landmarks := _optional(root, "Anno/list_landmarks_consumer2shop.txt"):
        fill_landmarks(ListFile(landmarks, root), index, check_type=True)
    for sample, column_domain in zip(index.samples, by_column):
        sample.domain = sample.domain or column_domain
    info = DatasetInfo("deepfashion-c2s", root=root)
    _folder_categories(index, info)
    return _finish(index.samples, info, missing)
