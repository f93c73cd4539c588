"""Fashion-MNIST: 70,000 28x28 grayscale product images in 10 classes (60k train / 10k test).

Reads the four original IDX files (``.gz`` or uncompressed) from, in order: the folder given, the Debian
package path ``/usr/share/datasets/fashion-mnist/``, or a download into ``cache_dir()/fashion-mnist`` from
the official mirrors, verified against the MD5 sums published in zalando's README.  The Debian package
re-compresses the files (other MD5 sums), so local files are checked by their IDX headers, not by MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from urllib.request import urlopen

import numpy as np

from fashionlens.data.readers import check_images
from fashionlens.data.samples import DataFormatError, DatasetInfo, Sample, SampleSet
from fashionlens.utils import cache_dir

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MIRRORS = (
    "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
#: file -> MD5 of the official .gz (zalando/fashion-mnist README)
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
#: clothes type per class (DeepFashion numbering; 0 = not a garment) and a small taxonomy for hedging
CLASS_TYPES = [1, 2, 1, 3, 3, 0, 1, 0, 0, 0]
CLASS_PATHS = [
    "clothing.upper-body.T-shirt/top", "clothing.lower-body.Trouser", "clothing.upper-body.Pullover",
    "clothing.full-body.Dress", "clothing.full-body.Coat", "footwear.Sandal", "clothing.upper-body.Shirt",
    "footwear.Sneaker", "accessories.Bag", "footwear.Ankle boot",
]
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def _find(directory: str, name: str) -> str | None:
    """``name`` (.gz) or its uncompressed twin inside ``directory``."""
    for candidate in (name, name[:-3]):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, directory: str, *, timeout: float = 60.0) -> str:
    """Fetch one official file into ``directory`` (trying each mirror) and verify its MD5.

    A checksum mismatch deletes the partial file and raises DataFormatError; network failures on
    every mirror raise OSError.  Returns the file path.
    """
    os.makedirs(directory, exist_ok=True)
    target, partial = os.path.join(directory, name), os.path.join(directory, name + ".part")
    errors: list[str] = []
    mismatch = False
    for mirror in MIRRORS:
        try:
            with urlopen(mirror + name, timeout=timeout) as response, open(partial, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
        except OSError as e:  # URLError and socket errors are OSErrors
            errors.append(f"{mirror + name}: {e}")
            if os.path.exists(partial):
                os.remove(partial)
            continue
        got = _md5(partial)
        if got == FILES[name]:
            os.replace(partial, target)
            return target
        os.remove(partial)
        mismatch = True
        errors.append(f"{mirror + name}: MD5 {got} does not match the published {FILES[name]} (file deleted)")
    if mismatch:
        raise DataFormatError(target, None, "download failed checksum verification: " + "; ".join(errors))
    raise OSError(f"could not download {name}: {'; '.join(errors)}. Pass a folder holding the four IDX files "
                  "(fashion-mnist:DIR) or install the Debian package dataset-fashion-mnist.")


def locate(path: str | None = None) -> dict[str, str]:
    """Official file name -> local path: from ``path``, else the Debian folder, else downloaded (see module doc)."""
    if path is not None:
        directory = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Fashion-MNIST folder not found: {path}")
        found = {name: _find(directory, name) for name in FILES}
        absent = [name for name, p in found.items() if p is None]
        if absent:
            raise FileNotFoundError(f"{directory}: missing Fashion-MNIST file(s) {', '.join(absent)} (.gz or unpacked)")
        return found  # type: ignore[return-value]
    if all(_find(DEBIAN_DIR, name) for name in FILES):
        return {name: _find(DEBIAN_DIR, name) for name in FILES}  # type: ignore[misc]
    directory = os.path.join(cache_dir(), "fashion-mnist")
    return {name: _find(directory, name) or download(name, directory) for name in FILES}


def read_idx(path: str, magic: int) -> np.ndarray:
    """An IDX file (gzip or raw) -> uint8 array: (N, 28, 28) images for magic 2051, (N,) labels for 2049."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataFormatError(path, None, f"corrupt gzip data: {e}") from None
    ndim = 3 if magic == _IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataFormatError(path, None, f"not an IDX {'image' if ndim == 3 else 'label'} file: magic number "
                                          f"{found}, expected {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataFormatError(path, None, f"header announces shape {shape} ({int(np.prod(shape))} bytes) but "
                                          f"{len(raw) - header} bytes follow")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()  # writable


def _split_samples(files: dict[str, str], split: str) -> list[Sample]:
    prefix = SPLIT_PREFIX[split]
    images_path, labels_path = files[f"{prefix}-images-idx3-ubyte.gz"], files[f"{prefix}-labels-idx1-ubyte.gz"]
    images, labels = read_idx(images_path, _IMAGES_MAGIC), read_idx(labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataFormatError(labels_path, None, f"{len(labels)} labels for {len(images)} images in {images_path}")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataFormatError(labels_path, None, f"label {labels.max()} out of range 0..{len(CLASSES) - 1}")
    return [
        Sample(image=f"{images_path}#{i}", source=f"{labels_path}#{i}", category=label, category_name=CLASSES[label],
               split=split, array=images[i])
        for i, label in enumerate(labels.tolist())
    ]


def read_fashion_mnist(path: str | None = None, *, missing: str = "error") -> SampleSet:
    """All 70,000 samples; ``Sample.array`` holds the (28, 28) uint8 pixels, ``image`` is ``"<idx file>#<index>"``.

    ``missing`` is accepted for the common reader signature (every sample has its pixels in memory).
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")
    files = locate(path)
    samples = _split_samples(files, "train") + _split_samples(files, "test")
    info = DatasetInfo("fashion-mnist", categories=list(CLASSES), category_types=list(CLASS_TYPES),
                       category_paths=list(CLASS_PATHS), root=os.path.dirname(next(iter(files.values()))))
    kept, skipped = check_images(samples, missing)
    return SampleSet(kept, info, skipped)
