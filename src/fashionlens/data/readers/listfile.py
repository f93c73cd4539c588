"""Parsing of DeepFashion ``list_*.txt`` annotation files.

Layout (see docs/data-formats.md): line 1 is the number of rows, line 2 the header (column names),
then one row per line.  Columns are separated by runs of spaces (names are padded to a fixed width),
rows may end in trailing spaces, and blank lines may follow the last row.  The fine-grained variant's
pre-split files (``train.txt``, ``train_attr.txt`` ...) have neither count line nor header
(``counted=False``).

Every error is a :class:`DataFormatError` naming ``file:line`` and what was expected.  The second half
joins the secondary files (attributes, boxes, landmarks) onto the samples of the primary file by image name.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from fashionlens.data.samples import CLOTHES_TYPES, SLOTS_BY_TYPE, DataFormatError, Sample

_ENCODING = dict(encoding="utf-8", errors="surrogateescape")


class ListFile:
    """One annotation file: its count line and header (when ``counted``), and an iterator over rows.

    ``name`` is the path relative to ``root`` (used in ``Sample.source``); error messages use the full path.
    """

    def __init__(self, path: str, root: str | None = None, *, counted: bool = True):
        self.path = path
        self.name = os.path.relpath(path, root).replace(os.sep, "/") if root else os.path.basename(path)
        self.counted = counted
        self.count: int | None = None
        self.header: list[str] = []
        if counted:
            self._read_head()

    def _read_head(self) -> None:
        with open(self.path, **_ENCODING) as f:
            first, second = f.readline(), f.readline()
        tokens = first.split()
        if len(tokens) != 1 or not tokens[0].isdigit():
            raise DataFormatError(self.path, 1, f"expected the number of rows, got {first.strip()!r}")
        self.count = int(tokens[0])
        self.header = second.split()
        if not self.header:
            raise DataFormatError(self.path, 2, "expected the header line (column names), got a blank line")

    def rows(self, maxsplit: int = -1) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(line_number, tokens)`` for every row (1-based line numbers, tokens split on whitespace).

        With ``maxsplit=n`` the last token holds the unsplit rest of the line.  Raises DataFormatError
        when the rows do not match the count line, or when a blank line is followed by more rows.
        """
        skip = 2 if self.counted else 0
        n_rows, blank_at = 0, 0
        with open(self.path, **_ENCODING) as f:
            for lineno, line in enumerate(f, 1):
                if lineno <= skip:
                    continue
                tokens = line.split(None, maxsplit)
                if not tokens:
                    blank_at = blank_at or lineno
                    continue
                if blank_at:
                    raise DataFormatError(self.path, blank_at, "blank line between rows")
                n_rows += 1
                if self.count is not None and n_rows > self.count:
                    raise DataFormatError(self.path, lineno, f"more rows than the {self.count} announced on line 1")
                yield lineno, tokens
        if self.count is not None and n_rows != self.count:
            raise DataFormatError(self.path, 1, f"line 1 announces {self.count} rows but the file has {n_rows}")

    def has_column(self, name: str) -> bool:
        return name in self.header

    def error(self, lineno: int | None, message: str) -> DataFormatError:
        return DataFormatError(self.path, lineno, message)

    def expect(self, tokens: list[str], n: int, lineno: int, columns: str) -> None:
        """Raise unless the row has exactly ``n`` columns (``columns`` names them for the message)."""
        if len(tokens) != n:
            raise self.error(lineno, f"expected {n} columns ({columns}), got {len(tokens)}")


def parse_ints(text: str, path: str, lineno: int, what: str = "value") -> np.ndarray:
    """Whitespace-separated integers (``"072"`` reads as 72) -> int64 array; DataFormatError naming the bad token."""
    try:
        return np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        pass
    for i, token in enumerate(text.split(), 1):
        try:
            int(token)
        except ValueError:
            raise DataFormatError(path, lineno, f"{what} {i} is {token!r}, expected an integer") from None
    raise DataFormatError(path, lineno, f"could not read integers from {text.strip()!r}")


def parse_int(token: str, path: str, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataFormatError(path, lineno, f"{what} is {token!r}, expected an integer") from None


def check_clothes_type(value: int, path: str, lineno: int) -> int:
    if value not in CLOTHES_TYPES:
        raise DataFormatError(path, lineno, f"clothes_type is {value}, expected 1 (upper), 2 (lower) or 3 (full body)")
    return int(value)


def parse_bbox(values: np.ndarray, path: str, lineno: int) -> tuple[float, float, float, float]:
    """Four ints ``x_1 y_1 x_2 y_2`` (pixels) -> tuple of floats."""
    if len(values) != 4:
        raise DataFormatError(path, lineno, f"expected 4 box coordinates (x_1 y_1 x_2 y_2), got {len(values)}")
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def parse_landmarks(
    values: np.ndarray, path: str, lineno: int, *, has_variation: bool
) -> tuple[int, int | None, np.ndarray, np.ndarray]:
    """A landmark row after the image name -> ``(clothes_type, variation, xy (K, 2) float32 px, vis (K,) int8)``.

    ``values`` = ``clothes_type [variation_type] vis_1 x_1 y_1 ...`` with K = 6, 4 or 8 triplets
    for clothes type 1, 2 or 3 (rows padded to 8 triplets with zeros are accepted too).
    """
    base = 2 if has_variation else 1
    if len(values) < base:
        raise DataFormatError(path, lineno, "expected clothes_type" + (" and variation_type" if has_variation else ""))
    clothes_type = check_clothes_type(int(values[0]), path, lineno)
    k = len(SLOTS_BY_TYPE[clothes_type])
    if len(values) == base + 24 and k < 8 and not values[base + 3 * k:].any():
        values = values[: base + 3 * k]  # a row padded with all-zero triplets up to 8 landmarks
    if len(values) != base + 3 * k:
        raise DataFormatError(
            path, lineno,
            f"clothes_type {clothes_type} has {k} landmarks: expected {k} (visibility x y) triplets "
            f"({1 + base + 3 * k} columns), got {len(values) - base} values ({1 + len(values)} columns)",
        )
    triplets = values[base:].reshape(k, 3)
    visibility = triplets[:, 0]
    if visibility.min() < 0 or visibility.max() > 2:
        raise DataFormatError(path, lineno, f"landmark visibility {visibility.tolist()}: expected 0, 1 or 2")
    variation = int(values[1]) if has_variation else None
    return clothes_type, variation, triplets[:, 1:].astype(np.float32), visibility.astype(np.int8)


def folder_category(name: str) -> str | None:
    """The folders between ``img/`` and the item folder: ``img/WOMEN/Dresses/id_1/01.jpg`` -> ``"WOMEN/Dresses"``,
    ``img/Dress/id_1/01.jpg`` -> ``"Dress"``; None for shallower paths."""
    parts = name.split("/")
    if len(parts) >= 4 and parts[0] == "img":
        return "/".join(parts[1:-2])
    return None


# ---------------------------------------------------------------------------------------------- joining
class SampleIndex:
    """Image name -> position in the sample list, for joining the secondary annotation files."""

    def __init__(self, primary: ListFile, root: str):
        self.primary = primary
        self.root = root
        self.samples: list[Sample] = []
        self.names: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, name: str, sample: Sample, lineno: int) -> None:
        if name in self.pos:
            first = self.samples[self.pos[name]].source
            raise self.primary.error(lineno, f"image {name} is listed twice (first at {first})")
        self.pos[name] = len(self.samples)
        self.samples.append(sample)
        self.names.append(name)

    def find(self, name: str, lf: ListFile, lineno: int) -> int:
        pos = self.pos.get(name)
        if pos is None:
            raise lf.error(lineno, f"image {name} is not listed in {self.primary.name}")
        return pos


def fill_attributes(lf: ListFile, index: SampleIndex, num_attributes: int) -> None:
    """list_attr_img.txt: ``image  a_1 .. a_A`` with labels 1 / -1 / 0 -> int8 views into one (N, A) matrix."""
    matrix = np.zeros((len(index.samples), num_attributes), np.int8)
    filled = np.zeros(len(index.samples), bool)
    for lineno, tokens in lf.rows(maxsplit=1):
        values = parse_ints(tokens[1] if len(tokens) > 1 else "", lf.path, lineno, "attribute value")
        if len(values) != num_attributes:
            raise lf.error(lineno, f"expected {num_attributes} attribute values, got {len(values)}")
        if values.min() < -1 or values.max() > 1:
            bad = values[(values < -1) | (values > 1)][0]
            raise lf.error(lineno, f"attribute label {bad}: expected 1 (positive), -1 (negative) or 0 (unknown)")
        pos = index.find(tokens[0], lf, lineno)
        matrix[pos] = values
        filled[pos] = True
    for pos in np.flatnonzero(filled):
        index.samples[pos].attributes = matrix[pos]


def fill_boxes(lf: ListFile, index: SampleIndex, extra: str | None = None, valid: range = range(0)) -> list[int]:
    """Box rows ``image x_1 y_1 x_2 y_2``, or with ``extra`` ``image clothes_type EXTRA x_1 y_1 x_2 y_2``.

    EXTRA is pose_type (in-shop) or source_type (consumer-to-shop) and must lie in ``valid``;
    returns each sample's EXTRA value (0 where the file has no row for it).
    """
    columns = ["image_name"] + (["clothes_type", extra] if extra else []) + ["x_1", "y_1", "x_2", "y_2"]
    before = len(columns) - 5
    extras: list[int] = [0] * len(index.samples)
    for lineno, tokens in lf.rows(maxsplit=1):
        values = parse_ints(tokens[1] if len(tokens) > 1 else "", lf.path, lineno, "column")
        if len(values) != len(columns) - 1:
            raise lf.error(lineno, f"expected {len(columns)} columns ({' '.join(columns)}), got {1 + len(values)}")
        pos = index.find(tokens[0], lf, lineno)
        sample = index.samples[pos]
        sample.bbox = parse_bbox(values[before:], lf.path, lineno)
        if extra:
            sample.clothes_type = check_clothes_type(int(values[0]), lf.path, lineno)
            if values[1] not in valid:
                raise lf.error(lineno, f"{extra} is {values[1]}, expected {valid.start}..{valid.stop - 1}")
            extras[pos] = int(values[1])
    return extras


def fill_landmarks(lf: ListFile, index: SampleIndex, *, check_type: bool) -> None:
    """Landmark rows; variable length (6/4/8 triplets by clothes type), with or without variation_type."""
    has_variation = lf.has_column("variation_type")
    for lineno, tokens in lf.rows(maxsplit=1):
        values = parse_ints(tokens[1] if len(tokens) > 1 else "", lf.path, lineno, "landmark column")
        clothes_type, variation, xy, vis = parse_landmarks(values, lf.path, lineno, has_variation=has_variation)
        sample = index.samples[index.find(tokens[0], lf, lineno)]
        if check_type and sample.clothes_type is not None and sample.clothes_type != clothes_type:
            raise lf.error(lineno, f"clothes_type {clothes_type} differs from {sample.clothes_type} "
                                   f"given for this image in the box file")
        sample.clothes_type, sample.landmarks, sample.visibility = clothes_type, xy, vis
        if sample.variation is None:
            sample.variation = variation
