"""The sample record every reader produces, and the metadata that comes with a data set.

Coordinates are pixels in the ORIGINAL image (as DeepFashion writes them), never normalised here.
Landmarks follow DeepFashion: 6 for upper-body, 4 for lower-body, 8 for full-body garments, each
with a visibility flag (0 visible, 1 occluded, 2 truncated).  ``unified_landmarks`` maps them onto
the 8 slots of the full-body layout, where left/right partners are adjacent (0-1, 2-3, 4-5, 6-7),
which is what models and transforms use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

UPPER, LOWER, FULL = 1, 2, 3
CLOTHES_TYPES = {UPPER: "upper-body", LOWER: "lower-body", FULL: "full-body"}

VISIBLE, OCCLUDED, TRUNCATED = 0, 1, 2

LANDMARK_SLOTS = (
    "left_collar", "right_collar", "left_sleeve", "right_sleeve",
    "left_waistline", "right_waistline", "left_hem", "right_hem",
)
NUM_SLOTS = len(LANDMARK_SLOTS)
#: Which of the 8 unified slots the DeepFashion landmarks of each clothes type occupy, in file order.
SLOTS_BY_TYPE = {
    UPPER: (0, 1, 2, 3, 6, 7),
    LOWER: (4, 5, 6, 7),
    FULL: (0, 1, 2, 3, 4, 5, 6, 7),
}
#: Slot permutation applied after a horizontal flip (a person's left becomes the image's other side).
FLIP_PERMUTATION = (1, 0, 3, 2, 5, 4, 7, 6)

DOMAINS = ("shop", "consumer")


class DataFormatError(ValueError):
    """A data file does not follow its format; the message names the file and line."""

    def __init__(self, path: str, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass
class Sample:
    """One annotated image.  Every field except ``image`` and ``source`` may be absent (None)."""

    image: str  # absolute path of the image file
    source: str = ""  # "file:line" of the annotation this sample came from
    category: int | None = None  # 0-based index into DatasetInfo.categories
    category_name: str | None = None
    clothes_type: int | None = None  # 1 upper-body, 2 lower-body, 3 full-body
    attributes: np.ndarray | None = None  # (A,) int8: 1 positive, -1 negative, 0 unknown
    landmarks: np.ndarray | None = None  # (K, 2) float32 pixels, K = len(SLOTS_BY_TYPE[clothes_type])
    visibility: np.ndarray | None = None  # (K,) int8: 0 visible, 1 occluded, 2 truncated
    bbox: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in pixels
    item_id: str | None = None  # garment identity (retrieval ground truth)
    domain: str | None = None  # "shop" or "consumer"
    split: str | None = None  # "train", "val", "test", "query", "gallery", ...
    variation: int | None = None  # DeepFashion variation_type / pose_type where given
    array: np.ndarray | None = None  # in-memory pixels (H, W) or (H, W, 3) uint8 for formats without image files

    def unified_landmarks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Landmarks on the 8 unified slots: ``(xy (8, 2) float32, visibility (8,) int64, present (8,) bool)``.

        Slots the clothes type does not have are zero with ``present`` False.
        """
        xy = np.zeros((NUM_SLOTS, 2), np.float32)
        vis = np.full(NUM_SLOTS, TRUNCATED, np.int64)
        present = np.zeros(NUM_SLOTS, bool)
        if self.landmarks is None or self.clothes_type not in SLOTS_BY_TYPE:
            return xy, vis, present
        slots = list(SLOTS_BY_TYPE[self.clothes_type])
        xy[slots] = self.landmarks
        vis[slots] = self.visibility if self.visibility is not None else VISIBLE
        present[slots] = True
        return xy, vis, present


@dataclass
class DatasetInfo:
    """What a data set declares about itself (names, groups, hierarchy)."""

    name: str
    categories: list[str] = field(default_factory=list)  # index -> name
    category_types: list[int] = field(default_factory=list)  # index -> clothes type (0 when unknown)
    category_paths: list[str] = field(default_factory=list)  # index -> dotted taxonomy path ("upper.tops.tee")
    attributes: list[str] = field(default_factory=list)  # index -> name
    attribute_groups: list[int] = field(default_factory=list)  # index -> group id
    group_names: dict[int, str] = field(default_factory=dict)  # group id -> name
    single_choice_groups: bool = False  # True when exactly one attribute per group is positive
    root: str = ""  # directory the data set was read from

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)


@dataclass
class SampleSet:
    """A reader's result: samples plus the data set's metadata."""

    samples: list[Sample]
    info: DatasetInfo
    skipped_missing: int = 0  # samples dropped because their image file was missing (missing="skip")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def split(self, *names: str) -> "SampleSet":
        """The samples whose split is one of ``names``."""
        wanted = set(names)
        return SampleSet([s for s in self.samples if s.split in wanted], self.info, self.skipped_missing)

    def splits(self) -> dict[str, int]:
        """Split name -> number of samples."""
        out: dict[str, int] = {}
        for s in self.samples:
            key = s.split or "unsplit"
            out[key] = out.get(key, 0) + 1
        return out

    def where(self, keep: Sequence[bool]) -> "SampleSet":
        return SampleSet([s for s, k in zip(self.samples, keep) if k], self.info, self.skipped_missing)
