"""The torch Dataset (decode + transform, nothing else) and the P x K batch sampler for metric learning.

Batch contract: every item is a dict of fixed-shape tensors, so the default collate works.  The keys are the
same for every item of one dataset: all of the table below, plus ``landmark_affine`` exactly when the
transform is deterministic (``GarmentTransform.deterministic``: the eval pipeline; a random training
pipeline emits none), so a batch never mixes items with and without it.

=================  =================  ===========================================================
key                dtype, shape       meaning
=================  =================  ===========================================================
image              float32 (3, S, S)  normalised pixels (the transform's mean/std)
category           int64 ()           0-based category, -1 unknown
clothes_type       int64 ()           1 upper, 2 lower, 3 full body, 0 unknown
attributes         float32 (A,)       1 where the attribute is positive, else 0
attribute_mask     float32 (A,)       1 where the label is known (positive or negative)
landmarks          float32 (8, 2)     unified slots, [0, 1] of the OUTPUT image: ((x + 0.5) / S, ...)
visibility         int64 (8,)         0 visible, 1 occluded, 2 truncated (also: pushed out, absent)
landmark_mask      bool (8,)          the slot exists for the clothes type (and was annotated)
bbox               float32 (4,)       x1, y1, x2, y2 / S in the output image (zeros when absent)
has_bbox           bool ()            a box was annotated and some of it is still in the frame
item               int64 ()           index into ``GarmentDataset.items`` (-1 unknown)
domain             int64 ()           0 shop, 1 consumer, -1 unknown
index              int64 ()           position of the sample in the dataset
landmark_affine    float32 (2, 2)     deterministic transforms only: rows (scale, offset) per axis with
                                      original-normalized = landmarks * scale + offset, where
                                      original-normalized = continuous pixel / (W, H) of the ORIGINAL
                                      image (pixel index x -> (x + 0.5) / W): the DeepFashion frame
=================  =================  ===========================================================
"""

from __future__ import annotations

import pickle

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from fashionlens.data.decode import load_image
from fashionlens.data.samples import DOMAINS, NUM_SLOTS, TRUNCATED, Sample, SampleSet
from fashionlens.data.transforms import BatchTransform, JointTransform, landmarks_to_unit


class PackedSamples(Sequence[Sample]):
    """The samples pickled into one NumPy byte buffer with an offset table: a read-only sequence of
    :class:`Sample` (each access unpickles a fresh copy).

    DataLoader workers are forked from the training process.  Reading a Python object writes its reference
    count, so a worker that walks a list of samples copies every memory page it touches (copy-on-write), and
    over an epoch each worker ends up with a private copy of the data set's objects: +367 MB over 2,000
    batches of the full-size category benchmark with 2 workers (benchmarks/bench_scale.py).  Pages of one
    NumPy buffer are only read, so they stay shared (detectron2 serialises its data lists the same way)."""

    def __init__(self, samples: Sequence[Sample]):
        blobs = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in samples]
        self._offsets = np.zeros(len(blobs) + 1, np.int64)
        np.cumsum([len(b) for b in blobs], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(blobs), np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        start, stop = self._offsets[i], self._offsets[i + 1]
        return pickle.loads(self._buffer[start:stop].tobytes())

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


def build_item_index(samples: Sequence[Sample]) -> dict[str, int]:
    """Item id -> contiguous index, in sorted id order (stable across runs); samples without id are left out."""
    return {item: i for i, item in enumerate(sorted({s.item_id for s in samples if s.item_id is not None}))}


class GarmentDataset(Dataset):
    """Decode a sample's image, apply ``transform`` and return the batch-contract dict (module docstring).

    Args:
        samples: a :class:`SampleSet` or a list of :class:`Sample`.
        transform: ``(PIL image, target) -> (tensor, target)``, e.g. ``build_transforms(cfg, train)``.
        num_attributes: length A of the attribute vectors (default: the data set's attribute count,
            else the longest ``Sample.attributes``, else 0).
        item_index: item id -> index table to use (e.g. the training set's, for a query set); built from
            the samples when None.  Ids missing from a given table map to -1.
        use_categories: False sets every ``category`` target to -1 (unknown): for data whose category
            indices mean other classes than the model's (e.g. a retrieval benchmark's folders).
    """

    def __init__(
        self,
        samples: SampleSet | Sequence[Sample],
        transform: JointTransform,
        *,
        num_attributes: int | None = None,
        item_index: Mapping[str, int] | None = None,
        use_categories: bool = True,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        self.use_categories = bool(use_categories)
        self.batch_transform = batch_transform
        listed: list[Sample] = list(samples.samples if isinstance(samples, SampleSet) else samples)
        self.transform = transform
        self.num_attributes = self._attribute_count(samples, listed, num_attributes)
        self.item_index: dict[str, int] = dict(item_index) if item_index is not None else build_item_index(listed)
        self.items: list[str] = sorted(self.item_index, key=self.item_index.__getitem__)
        for s in listed:
            if s.attributes is not None and len(s.attributes) != self.num_attributes:
                raise ValueError(f"{s.source}: {len(s.attributes)} attributes, expected {self.num_attributes}")
        self._item_labels = np.array([self._item(s) for s in listed], np.int64)
        self._category_labels = np.array([self._category(s) for s in listed], np.int64)
        self.samples: PackedSamples = PackedSamples(listed)  # workers read them without copying pages

    def _attribute_count(self, samples: Any, listed: list[Sample], given: int | None) -> int:
        if given is not None:
            return int(given)
        if isinstance(samples, SampleSet) and samples.info.num_attributes:
            return samples.info.num_attributes
        return max((len(s.attributes) for s in listed if s.attributes is not None), default=0)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def item_labels(self) -> np.ndarray:
        """(N,) int64 item index of every sample (-1 unknown): the labels for :class:`PKSampler`."""
        return self._item_labels.copy()

    @property
    def category_labels(self) -> np.ndarray:
        """(N,) int64 category of every sample (-1 unknown): P x K by kind (``loss.metric_labels: category``)."""
        return self._category_labels.copy()

    def _item(self, s: Sample) -> int:
        return self.item_index.get(s.item_id, -1) if s.item_id is not None else -1

    def load(self, index: int) -> Image.Image:
        """The decoded RGB image of sample ``index``; errors name the image and the annotation line."""
        s = self.samples[index]
        try:
            return load_image(s)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{s.source}: {e}") from e
        except ValueError as e:
            raise ValueError(f"{s.source}: {e}") from e

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        xy, vis, present = s.unified_landmarks()
        target = {"landmarks": xy, "visibility": vis, "present": present, "bbox": s.bbox}
        image, target = self.transform(self.load(index), target)
        return self._item_dict(index, s, image, target)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The items of one batch (the DataLoader calls this instead of ``__getitem__`` per index): with a
        ``batch_transform`` and a batch whose images all have the training size and no landmarks or box
        (Fashion-MNIST), the images are augmented together in one pass; otherwise item by item."""
        indices = [int(i) for i in indices]
        bt = self.batch_transform
        samples = [self.samples[i] for i in indices]
        if bt is None or any(s.bbox is not None or s.unified_landmarks()[2].any() for s in samples):
            return [self[i] for i in indices]
        pixels = [np.asarray(self.load(i)) for i in indices]
        if any(a.shape != (bt.size, bt.size, 3) for a in pixels):
            return [self[i] for i in indices]
        images = bt(torch.from_numpy(np.stack(pixels)))
        nothing = {"landmarks": torch.zeros(NUM_SLOTS, 2), "visibility": torch.full((NUM_SLOTS,), TRUNCATED),
                   "present": torch.zeros(NUM_SLOTS, dtype=torch.bool), "bbox": None}
        return [self._item_dict(i, s, image, nothing) for i, s, image in zip(indices, samples, images)]

    def _item_dict(self, index: int, s: Sample, image: torch.Tensor, target: dict) -> dict[str, torch.Tensor]:
        """One item of the batch contract (module docstring) from the transformed image and target."""
        height, width = image.shape[-2:]
        out = {"image": image, "index": torch.tensor(index, dtype=torch.int64)}
        out.update(self._labels(s))
        present = torch.as_tensor(target["present"], dtype=torch.bool)
        out["landmarks"] = landmarks_to_unit(target["landmarks"], height, width) * present[:, None]  # absent: 0
        out["visibility"] = torch.as_tensor(target["visibility"], dtype=torch.int64)
        out["landmark_mask"] = present
        box = target.get("bbox")
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        out["bbox"] = torch.zeros(4) if box is None else (torch.as_tensor(box).float() / scale).clamp_(0, 1)
        out["has_bbox"] = torch.tensor(box is not None)
        if "affine" in target:
            out["landmark_affine"] = torch.as_tensor(target["affine"], dtype=torch.float32).reshape(2, 2)
        return out

    def _category(self, s: Sample) -> int:
        """The sample's category target: its 0-based category, -1 when unknown or ``use_categories`` is off."""
        return int(s.category) if self.use_categories and s.category is not None else -1

    def _labels(self, s: Sample) -> dict[str, torch.Tensor]:
        """Category, clothes type, attributes, item and domain tensors of one sample."""
        attrs = np.zeros(self.num_attributes, np.float32)
        mask = np.zeros(self.num_attributes, np.float32)
        if s.attributes is not None:
            a = np.asarray(s.attributes)
            attrs, mask = (a > 0).astype(np.float32), (a != 0).astype(np.float32)
        return {
            "category": torch.tensor(self._category(s), dtype=torch.int64),
            "clothes_type": torch.tensor(s.clothes_type or 0, dtype=torch.int64),
            "attributes": torch.from_numpy(attrs),
            "attribute_mask": torch.from_numpy(mask),
            "item": torch.tensor(self._item(s), dtype=torch.int64),
            "domain": torch.tensor(DOMAINS.index(s.domain) if s.domain in DOMAINS else -1, dtype=torch.int64),
        }


class PKSampler(Sampler[list[int]]):
    """Batch sampler for metric learning: every batch holds ``p`` distinct items x ``k`` images each.

    Use as ``DataLoader(dataset, batch_sampler=PKSampler(dataset.item_labels, p, k))``.

    * Items with a single image cannot form a positive pair and are never sampled; neither are
      unknown items (label < 0).
    * Items with 2..k-1 images: with ``replace=True`` (default) all their images are used and the rest
      of the k slots repeat random ones (each repeat gets its own augmentation); with ``replace=False``
      such items are skipped.
    * An epoch walks the eligible items in a random order, ``p`` at a time (a new shuffled pass starts
      when fewer than ``p`` remain).  ``length`` batches per epoch (default: one pass, ``n_items // p``).
    * Deterministic for ``(seed, epoch)``; call :meth:`set_epoch` each epoch for fresh batches.

    pytorch-metric-learning's ``MPerClassSampler`` was considered: it draws from a process-global NumPy
    generator (no per-sampler seed, no ``set_epoch``), keeps single-image classes (batches without a
    positive for them) and yields flat indices, so this small sampler is used instead.
    """

    def __init__(
        self,
        item_labels: Sequence[int] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        *,
        seed: int = 0,
        length: int | None = None,
        replace: bool = True,
    ) -> None:
        if p < 1 or k < 2:
            raise ValueError(f"PKSampler needs p >= 1 and k >= 2 (a positive pair), got p={p}, k={k}")
        labels = np.asarray(item_labels.cpu() if isinstance(item_labels, torch.Tensor) else item_labels, np.int64)
        order = np.argsort(labels, kind="stable")
        items, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        min_count = k if not replace else 2
        self.groups = [order[s : s + c] for item, s, c in zip(items, starts, counts) if item >= 0 and c >= min_count]
        if len(self.groups) < p:
            raise ValueError(
                f"PKSampler: only {len(self.groups)} items have >= {min_count} images, "
                f"need p={p} distinct items per batch"
            )
        self.p, self.k, self.seed, self.replace = int(p), int(k), int(seed), replace
        self.length = int(length) if length is not None else len(self.groups) // self.p
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (same epoch, same batches)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queue: list[int] = []
        for _ in range(self.length):
            if len(queue) < self.p:
                queue = rng.permutation(len(self.groups)).tolist()
            chosen, queue = queue[: self.p], queue[self.p :]
            yield [int(i) for g in chosen for i in self._pick(self.groups[g], rng)]

    def _pick(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """k image indices of one item: distinct when possible, topped up with repeats otherwise."""
        if len(images) >= self.k:
            return rng.choice(images, self.k, replace=False)
        extra = rng.choice(images, self.k - len(images), replace=True)
        return rng.permutation(np.concatenate([images, extra]))


class TolerantImageDataset(Dataset):
    """Decode + (eval) transform only, for embedding and feature extraction: item ``i`` is
    ``(i, image (3, S, S), "")``, or ``(i, None, error message)`` when the image cannot be read, so one bad
    file is reported instead of stopping a whole pass.  Use with :func:`collate_tolerant`."""

    def __init__(self, samples: Sequence[Sample], transform: JointTransform):
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        s = self.samples[index]
        try:
            image = load_image(s)
        except (ValueError, FileNotFoundError, OSError) as exc:
            return index, None, str(exc)
        target = {"landmarks": np.zeros((NUM_SLOTS, 2), np.float32), "visibility": np.zeros(NUM_SLOTS, np.int64),
                  "present": np.zeros(NUM_SLOTS, bool), "bbox": s.bbox}
        return index, self.transform(image, target)[0], ""


def collate_tolerant(batch: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list]:
    """(row indices read, images (b, 3, S, S) or None, [(index, error)] of the unreadable ones)."""
    good = [(i, x) for i, x, _ in batch if x is not None]
    bad = [(i, err) for i, x, err in batch if x is None]
    return [i for i, _ in good], (torch.stack([x for _, x in good]) if good else None), bad


def encode_tolerant(samples: Sequence[Sample], transform: JointTransform,
                    encode: Callable[[torch.Tensor], np.ndarray], *, batch_size: int = 32, num_workers: int = 0,
                    progress: bool = False, desc: str = "encode") -> tuple[list[np.ndarray], list[int], list]:
    """One eval pass over ``samples`` that skips unreadable images: ``(chunks of encode(batch) as float32,
    rows read, [(index, error)] of the unreadable ones)``."""
    loader = DataLoader(TolerantImageDataset(samples, transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_tolerant)
    rows: list[int] = []
    chunks: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for index, images, bad in loader:
            failed += bad
            if images is not None:
                chunks.append(np.asarray(encode(images), dtype=np.float32))
                rows += index
            bar.update(len(index) + len(bad))
    return chunks, rows, failed


__all__ = ["GarmentDataset", "PKSampler", "TolerantImageDataset", "build_item_index", "collate_tolerant",
           "encode_tolerant"]
