"""Readers for the four DeepFashion benchmarks, exactly as published (layouts in docs/data-formats.md).

Each reader takes the benchmark root (the folder holding ``img/``, ``Anno/``, ``Eval/``) and returns a
:class:`SampleSet`.  Coordinates stay in pixels of the original image.  Category labels in the files are
1-based; ``Sample.category`` is 0-based.  Attribute labels are int8: 1 positive, -1 negative, 0 unknown.
Optional annotation files (attributes, boxes, landmarks) may be absent: those fields are then None.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

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
    if _all_exist(samples):
        return SampleSet(samples, info, 0)
    kept, skipped = check_images(samples, missing)  # names the missing image and its annotation line
    return SampleSet(kept, info, skipped)


def _all_exist(samples: list[Sample]) -> bool:
    """Whether every sample's image file exists, listing each folder once (one stat per image took seconds
    for the 289,222 images of the category benchmark); False sends the samples through ``check_images``."""
    listed: dict[str, set[str] | None] = {}
    for s in samples:
        if s.array is not None:
            continue
        folder, _, name = s.image.rpartition(os.sep)
        if folder not in listed:
            try:
                with os.scandir(folder or os.curdir) as entries:
                    listed[folder] = {e.name for e in entries if e.is_file()}
            except OSError:
                listed[folder] = None
        files = listed[folder]
        if files is None or name not in files:
            return False
    return True


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


# ---------------------------------------------------------------------------------------------- bulk parsing
# The published files are large (list_attr_img.txt: 289,222 rows of 1,000 labels, ~0.9 GB) and reading them
# row by row took about a minute.  Each annotation file is therefore first read in bulk: blocks of whole lines,
# tokenised with NumPy, integer columns decoded digit by digit, every rule checked on whole arrays.  Whatever
# that pass does not handle exactly as the row-by-row code does (a malformed row, a blank line between rows,
# an image listed twice or not at all, non-ASCII bytes, a lone CR ...) makes it decline, and the row-by-row
# code reads the file again: it raises its error naming the file and line, or, where the bulk pass was only
# stricter, returns the same result.  Samples are changed only once the whole file has passed.
class _Decline(Exception):
    """The bulk pass does not handle this file: the row-by-row reader reads it."""


_BLOCK_BYTES = 1 << 22
_SPACE = np.zeros(256, bool)
_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what str.split() splits on, in ASCII
_NOT_DIGIT = np.ones(256, bool)
_NOT_DIGIT[48:58] = False


def _columns_of(m: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``m[:, columns]``, as a strided view when the columns are evenly spaced (the usual case)."""
    if len(columns) > 1:
        step = int(columns[1] - columns[0])
        if step > 0 and (np.diff(columns) == step).all():
            return m[:, int(columns[0]):int(columns[-1]) + 1:step]
    return m[:, columns]


class _Block:
    """Whole rows of a list file (``data`` ends with a newline): where each row's first token (the image
    name) lies, how many tokens each row has, and the other tokens as integers (:meth:`ints`).

    Rows of equal length whose integer columns line up (the published files pad names to a fixed column and
    write fixed-width numbers) are decoded as a (rows, length) byte matrix, column by column; any other
    block is tokenised byte by byte.
    """

    def __init__(self, data: bytes, first_row: int):
        self.data, self.first_row = data, first_row
        b = self.bytes = np.frombuffer(data, np.uint8)
        if len(b) and b.max() >= 128:
            raise _Decline("non-ASCII bytes")
        newlines = np.flatnonzero(b == 10)
        cr = np.flatnonzero(b == 13)
        if len(cr) and (b[cr + 1] != 10).any():
            raise _Decline("a CR that does not end a line")
        self.rows = len(newlines)
        self._plain = np.count_nonzero(b < 32) == len(newlines) + len(cr)  # no tab or other control byte
        self._values: np.ndarray | None = None
        if not (self._plain and self._columns(newlines)):
            self._tokens(newlines)

    def _tokens(self, newlines: np.ndarray) -> None:
        b = self.bytes
        token = b > 32 if self._plain else ~_SPACE[b]
        starts = np.flatnonzero(token[1:] & ~token[:-1]) + 1
        self.starts = np.concatenate([[0], starts]) if token[0] else starts
        self.ends = np.flatnonzero(token[:-1] & ~token[1:]) + 1  # the last byte is a newline: every token ends
        line_starts = np.concatenate([[0], newlines[:-1] + 1])
        self.first = np.searchsorted(self.starts, line_starts)
        self.counts = np.searchsorted(self.starts, newlines) - self.first
        named = np.minimum(self.first, len(self.starts) - 1)
        self.name_starts, self.name_ends = self.starts[named], self.ends[named]

    def _columns(self, newlines: np.ndarray) -> bool:
        """Decode rows of one length whose integer columns line up; False when they do not."""
        width = int(newlines[0]) + 1
        if width < 2 or (np.diff(newlines) != width).any():
            return False
        m = self.bytes.reshape(self.rows, width)
        head = m[:, :min(width, 512)] > 32  # the names lie in the first 512 columns
        if not head.any(axis=1).all():
            return False  # a blank row
        name_start = head.argmax(axis=1)
        after = ~head & (np.arange(head.shape[1]) >= name_start[:, None])
        if not after.any(axis=1).all():
            return False
        name_end = after.argmax(axis=1)
        lo, c = int(name_end.min()), int(name_end.max())
        if lo < c and (head[:, lo:c] & (np.arange(lo, c) >= name_end[:, None])).any():
            return False  # something between a shorter name and the longest name's end
        v = m[:, c:]
        value = v - np.uint8(48)  # digits 0..9; every other byte wraps to >= 10
        digit = value < 10
        shape = digit[0]
        if (digit != shape).any():
            return False
        edges = np.diff(np.concatenate([[0], shape.view(np.int8), [0]]))
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = run_ends - run_starts
        if len(lengths) and lengths.max() > 9:
            return False
        before = run_starts - 1  # a sign column: before a run, after a blank column (or the name's gap)
        signed = (before >= 0) & ((before == 0) | ~shape[np.maximum(before - 1, 0)])
        sign = np.zeros(len(shape), bool)
        sign[before[signed]] = True
        if not (digit | (v <= 32) | ((v == 45) & sign)).all():
            return False  # another character, or a '-' that is not a number's sign
        values = _columns_of(value, run_starts).astype(np.int64)
        for j in range(1, int(lengths.max()) if len(lengths) else 0):
            more = np.flatnonzero(lengths > j)
            values[:, more] = values[:, more] * 10 + _columns_of(value, run_starts[more] + j)
        if signed.all():
            np.negative(values, out=values, where=_columns_of(v, before) == 45)
        elif signed.any():
            some = np.flatnonzero(signed)
            part = values[:, some]
            np.negative(part, out=part, where=_columns_of(v, before[some]) == 45)
            values[:, some] = part
        offsets = np.arange(self.rows) * width
        self.name_starts, self.name_ends = offsets + name_start, offsets + name_end
        self.counts = np.full(self.rows, len(run_starts) + 1)
        self._values = values.reshape(-1)
        return True

    def names(self) -> list[str]:
        """The first token of every row."""
        data = self.data
        return [data[s:e].decode("ascii") for s, e in zip(self.name_starts.tolist(), self.name_ends.tolist())]

    def words(self) -> list[str]:
        return self.data.decode("ascii").split()

    def ints(self) -> np.ndarray:
        """Every token but the rows' first, decoded as integers (int64), row after row; declines unless each
        one is ``-?[0-9]{1,9}`` (what ``int()`` reads the same way)."""
        if self._values is not None:
            return self._values
        keep = np.ones(len(self.starts), bool)
        keep[self.first[self.counts > 0]] = False
        starts, ends, b = self.starts[keep], self.ends[keep], self.bytes
        if not len(starts):
            return np.zeros(0, np.int64)
        negative = b[starts] == 45
        digits = starts + negative
        length = ends - digits
        if length.min() < 1 or length.max() > 9:
            raise _Decline("not an integer")
        inside = np.zeros(len(b) + 1, np.int8)
        inside[digits], inside[ends] = 1, -1
        if (np.cumsum(inside[:-1], dtype=np.int8).view(bool) & _NOT_DIGIT[b]).any():
            raise _Decline("not an integer")
        values = b[digits].astype(np.int64) - 48
        for j in range(1, int(length.max())):
            more = np.flatnonzero(length > j)
            values[more] = values[more] * 10 + b[digits[more] + j] - 48
        values[negative] *= -1
        return values


def _blocks(lf: ListFile) -> Iterator[_Block]:
    """The rows of a counted list file in blocks of whole lines; declines on blank lines between rows and
    when the rows do not match the count line (the row-by-row reader words those errors)."""
    rows, blank = 0, False
    with open(lf.path, "rb") as f:
        f.readline(), f.readline()  # count line and header: read (and checked) by ListFile
        rest = b""
        while True:
            chunk = f.read(_BLOCK_BYTES)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            data, rest = data[:cut], data[cut:]
            if data:
                block = _Block(data if data.endswith(b"\n") else data + b"\n", rows)
                filled = block.counts > 0
                if (blank and filled.any()) or (not filled.all() and filled[np.argmin(filled):].any()):
                    raise _Decline("blank line between rows")
                blank = blank or not filled.all()
                if not filled.all():
                    block = _trim(block, int(filled.sum()))
                rows += block.rows
                if block.rows:
                    yield block
            if not chunk:
                break
    if rows != lf.count:
        raise _Decline("row count")


def _trim(block: _Block, rows: int) -> _Block:
    """The block without its trailing blank lines (they hold no tokens: its first ``rows`` rows)."""
    block.first, block.counts, block.rows = block.first[:rows], block.counts[:rows], rows
    block.name_starts, block.name_ends = block.name_starts[:rows], block.name_ends[:rows]
    return block


def _positions(block: _Block, index: SampleIndex) -> np.ndarray:
    """Sample positions of a block's rows (declines on an image the primary file does not list)."""
    names = block.names()
    lo = block.first_row
    if index.names[lo:lo + len(names)] == names:  # the files usually list the images in the same order
        return np.arange(lo, lo + len(names))
    found = [index.pos.get(n, -1) for n in names]
    if -1 in found:
        raise _Decline("unknown image")
    return np.array(found, np.int64)


#: False reads every file row by row (the reference the bulk pass must agree with; tests compare the two).
BULK_PARSING = True


def _bulk(fill: Callable[..., Any], slow: Callable[..., Any], lf: ListFile, *args: Any, **kw: Any) -> Any:
    """``fill(lf, ...)`` (the bulk pass), else ``slow(lf, ...)`` (row by row) when it declines."""
    if BULK_PARSING:
        try:
            return fill(lf, *args, **kw)
        except _Decline:
            pass
    return slow(lf, *args, **kw)


def _rows_of(blocks: list[_Block], columns: int) -> np.ndarray:
    """Values of blocks whose rows all hold ``columns`` integers after the name, as a (rows, columns) array."""
    out = []
    for block in blocks:
        if (block.counts != columns + 1).any():
            raise _Decline("column count")
        out.append(block.ints().reshape(-1, columns))
    return np.concatenate(out) if out else np.zeros((0, columns), np.int64)


def _unique(positions: np.ndarray, n: int) -> None:
    if len(positions) and np.bincount(positions, minlength=n).max() > 1:
        raise _Decline("image listed twice")


def _bulk_attributes(lf: ListFile, index: SampleIndex, num_attributes: int) -> None:
    """fill_attributes in bulk: one (N, A) int8 matrix, rows as views."""
    n = len(index.samples)
    matrix = np.zeros((n, num_attributes), np.int8)
    filled = np.zeros(n, bool)
    for block in _blocks(lf):
        pos = _positions(block, index)
        if (block.counts != num_attributes + 1).any():
            raise _Decline("column count")
        values = block.ints()
        if len(values) and (values.min() < -1 or values.max() > 1):
            raise _Decline("label out of range")
        if filled[pos].any() or len(np.unique(pos)) != len(pos):
            raise _Decline("image listed twice")
        matrix[pos] = values.reshape(-1, num_attributes)
        filled[pos] = True
    for pos in np.flatnonzero(filled).tolist():
        index.samples[pos].attributes = matrix[pos]


def _bulk_boxes(lf: ListFile, index: SampleIndex, extra: str | None = None, valid: range = range(0)) -> list[int]:
    """fill_boxes in bulk."""
    blocks = list(_blocks(lf))
    pos = np.concatenate([_positions(b, index) for b in blocks]) if blocks else np.zeros(0, np.int64)
    values = _rows_of(blocks, 6 if extra else 4)
    _unique(pos, len(index.samples))
    extras = [0] * len(index.samples)
    if extra:
        types, kinds = values[:, 0], values[:, 1]
        if ((types < 1) | (types > 3)).any() or ((kinds < valid.start) | (kinds >= valid.stop)).any():
            raise _Decline("clothes_type or " + extra)
        for p, t, k in zip(pos.tolist(), types.tolist(), kinds.tolist()):
            index.samples[p].clothes_type = t
            extras[p] = k
        values = values[:, 2:]
    for p, box in zip(pos.tolist(), values.astype(np.float64).tolist()):
        index.samples[p].bbox = tuple(box)
    return extras


_SLOT_COUNT = np.array([0] + [len(SLOTS_BY_TYPE[t]) for t in (1, 2, 3)])


def _bulk_landmarks(lf: ListFile, index: SampleIndex, *, check_type: bool) -> None:
    """fill_landmarks in bulk: per clothes type, one (rows, K, 2) float32 array, rows as views."""
    base = 2 if lf.has_column("variation_type") else 1
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (positions, values, offsets, counts)
    for block in _blocks(lf):
        counts = block.counts - 1
        values = block.ints()
        if counts.min() < base:
            raise _Decline("too few columns")
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        parts.append((_positions(block, index), values, offsets, counts))
    if not parts:
        return
    pos = np.concatenate([p[0] for p in parts])
    _unique(pos, len(index.samples))
    shift = np.cumsum([0] + [len(p[1]) for p in parts[:-1]])
    values = np.concatenate([p[1] for p in parts])
    offsets = np.concatenate([p[2] + s for p, s in zip(parts, shift)])
    counts = np.concatenate([p[3] for p in parts])
    types = values[offsets]
    if ((types < 1) | (types > 3)).any():
        raise _Decline("clothes_type")
    k = _SLOT_COUNT[types]
    padded = (counts == base + 24) & (k < 8)
    if ((counts != base + 3 * k) & ~padded).any():
        raise _Decline("landmark count")
    if padded.any():
        tail = offsets[padded, None] + base + np.arange(24)
        if (values[tail] * (np.arange(24) >= 3 * k[padded, None])).any():
            raise _Decline("padding not zero")
    if check_type:
        known = np.array([index.samples[p].clothes_type or 0 for p in pos.tolist()])
        if ((known != 0) & (known != types)).any():
            raise _Decline("clothes_type differs from the box file")
    groups = []
    for t in (1, 2, 3):
        rows = np.flatnonzero(types == t)
        kt = int(_SLOT_COUNT[t])
        triplets = values[(offsets[rows] + base)[:, None] + np.arange(3 * kt)].reshape(len(rows), kt, 3)
        if len(rows) and (triplets[:, :, 0].min() < 0 or triplets[:, :, 0].max() > 2):
            raise _Decline("visibility")
        variation = values[offsets[rows] + 1].tolist() if base == 2 else [None] * len(rows)
        groups.append((t, pos[rows].tolist(), triplets[:, :, 1:].astype(np.float32),
                       triplets[:, :, 0].astype(np.int8), variation))
    samples = index.samples
    for t, positions, xy, vis, variation in groups:
        for i, (p, v) in enumerate(zip(positions, variation)):
            sample = samples[p]
            sample.clothes_type, sample.landmarks, sample.visibility = t, xy[i], vis[i]
            if sample.variation is None:
                sample.variation = v


def _bulk_split(lf: ListFile, index: SampleIndex) -> None:
    """_fill_split in bulk."""
    found: list[tuple[np.ndarray, list[str]]] = []
    for block in _blocks(lf):
        if (block.counts != 2).any():
            raise _Decline("column count")
        words = block.words()
        if not set(words[1::2]) <= set(CATEGORY_SPLITS):
            raise _Decline("unknown split")
        found.append((_positions(block, index), words[1::2]))
    samples = index.samples
    for pos, splits in found:
        for p, split in zip(pos.tolist(), splits):
            samples[p].split = split


# ---------------------------------------------------------------------------------------------- category
def _category_images(lf: ListFile, index: SampleIndex, names: list[str], types: list[int]) -> None:
    """list_category_img.txt row by row: one Sample per image."""
    for lineno, tokens in lf.rows():
        lf.expect(tokens, 2, lineno, "image_name category_label")
        cat = _category_label(tokens[1], names, lf.path, lineno)
        sample = Sample(os.path.join(index.root, tokens[0]), f"{lf.name}:{lineno}", category=cat,
                        category_name=names[cat], clothes_type=types[cat])
        index.add(tokens[0], sample, lineno)


def _bulk_category_images(lf: ListFile, index: SampleIndex, names: list[str], types: list[int]) -> None:
    """_category_images in bulk (the rows are checked before the first Sample is made)."""
    images: list[str] = []
    labels = []
    for block in _blocks(lf):
        if (block.counts != 2).any():
            raise _Decline("column count")
        images += block.names()
        labels.append(block.ints())
    label = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if len(label) and (label.min() < 1 or label.max() > len(names)):
        raise _Decline("unknown category label")
    if len(set(images)) != len(images):
        raise _Decline("image listed twice")
    root, where = index.root, lf.name
    for lineno, (image, cat) in enumerate(zip(images, (label - 1).tolist()), 3):
        index.add(image, Sample(os.path.join(root, image), f"{where}:{lineno}", category=cat,
                                category_name=names[cat], clothes_type=types[cat]), lineno)


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
    _bulk(_bulk_category_images, _category_images, index.primary, index, names, types)
    info = DatasetInfo("deepfashion-category", names, types, _category_paths(names, types),
                       group_names=dict(CATEGORY_GROUPS), root=root)
    if attr_cloth := _optional(root, "Anno/list_attr_cloth.txt"):
        info.attributes, info.attribute_groups = _read_names(ListFile(attr_cloth, root), ANY_GROUP, "attribute_type")
        info.group_names.update({g: f"group {g}" for g in info.attribute_groups if g not in info.group_names})
        _bulk(_bulk_attributes, fill_attributes, ListFile(_required(root, "Anno/list_attr_img.txt", "category"),
                                                          root), index, len(info.attributes))
    if bbox := _optional(root, "Anno/list_bbox.txt"):
        _bulk(_bulk_boxes, fill_boxes, ListFile(bbox, root), index)
    if landmarks := _optional(root, "Anno/list_landmarks.txt"):
        _bulk(_bulk_landmarks, fill_landmarks, ListFile(landmarks, root), index, check_type=False)
    if partition := _optional(root, "Eval/list_eval_partition.txt"):
        _bulk(_bulk_split, _fill_split, ListFile(partition, root), index)
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
        poses = _bulk(_bulk_boxes, fill_boxes, ListFile(bbox, root), index, "pose_type", range(1, 7))
        for sample, pose in zip(index.samples, poses):
            sample.variation = pose or None
    if landmarks := _optional(root, "Anno/list_landmarks_inshop.txt"):
        _bulk(_bulk_landmarks, fill_landmarks, ListFile(landmarks, root), index, check_type=True)
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
        sources = _bulk(_bulk_boxes, fill_boxes, ListFile(bbox, root), index, "source_type", range(1, 3))
        for sample, source_type in zip(index.samples, sources):
            if sample.domain is None and source_type:
                sample.domain = "shop" if source_type == 1 else "consumer"
    if landmarks := _optional(root, "Anno/list_landmarks_consumer2shop.txt"):
        _bulk(_bulk_landmarks, fill_landmarks, ListFile(landmarks, root), index, check_type=True)
    for sample, column_domain in zip(index.samples, by_column):
        sample.domain = sample.domain or column_domain
    info = DatasetInfo("deepfashion-c2s", root=root)
    _folder_categories(index, info)
    return _finish(index.samples, info, missing)
