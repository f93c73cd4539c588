"""Fashion-MNIST reader: the Debian files, small IDX files written here, and the download path (offline)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import time
import urllib.error

import numpy as np
import pytest

import fashionlens
from fashionlens.data.readers import fashion_mnist as fm
from fashionlens.data.samples import DataFormatError

HAVE_DEBIAN = all(os.path.isfile(os.path.join(fm.DEBIAN_DIR, name)) for name in fm.FILES)
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"{fm.DEBIAN_DIR} is absent "
                                  "(apt-get install dataset-fashion-mnist)")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic (2051 images / 2049 labels), big-endian dimensions, uint8 data."""
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_files(seed: int = 0) -> dict[str, bytes]:
    """Official file name -> gzip bytes of a tiny set: 5 train and 3 test images."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        out[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.arange(n) % 10))
    return out


def write_files(directory, files: dict[str, bytes], *, unpack: bool = False) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        if unpack:
            (directory / name[:-3]).write_bytes(gzip.decompress(data))
        else:
            (directory / name).write_bytes(data)


@needs_debian
def test_debian_files_all_samples_quickly():
    start = time.perf_counter()
    data = fashionlens.read("fashion-mnist")
    elapsed = time.perf_counter() - start
    assert len(data) == 70000 and data.splits() == {"train": 60000, "test": 10000}
    assert elapsed < 5.0, f"reading Fashion-MNIST took {elapsed:.2f} s"
    first = data.samples[0]
    assert first.array.shape == (28, 28) and first.array.dtype == np.uint8 and first.array.flags.writeable
    assert first.category == 9 and first.category_name == "Ankle boot"  # the first training label of the set
    assert first.image == os.path.join(fm.DEBIAN_DIR, "train-images-idx3-ubyte.gz") + "#0"
    assert data.samples[-1].image.endswith("t10k-images-idx3-ubyte.gz#9999")
    assert np.bincount([s.category for s in data]).tolist() == [7000] * 10
    assert data.info.categories == fm.CLASSES and data.info.category_paths[9] == "footwear.Ankle boot"
    assert 0 < first.array.mean() < 255


def test_dir_with_gz_or_unpacked_files(tmp_path):
    files = small_files()
    write_files(tmp_path / "gz", files)
    write_files(tmp_path / "raw", files, unpack=True)
    for sub in ("gz", "raw"):
        data = fashionlens.read(f"fashion-mnist:{tmp_path / sub}")
        assert data.splits() == {"train": 5, "test": 3}
        assert [s.category for s in data] == [0, 1, 2, 3, 4, 0, 1, 2]
        expected = np.frombuffer(gzip.decompress(files["t10k-images-idx3-ubyte.gz"])[16:], np.uint8).reshape(3, 28, 28)
        np.testing.assert_array_equal(data.samples[6].array, expected[1])


def test_bad_idx_files(tmp_path):
    files = small_files()
    files["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.arange(5).reshape(5, 1, 1)))  # image magic
    write_files(tmp_path / "magic", files)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte.gz: not an IDX label file: magic number 2051"):
        fm.read_fashion_mnist(str(tmp_path / "magic"))
    files = small_files()
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.array([1, 2, 12])))
    write_files(tmp_path / "label", files)
    with pytest.raises(DataFormatError, match="label 12 out of range"):
        fm.read_fashion_mnist(str(tmp_path / "label"))
    files = small_files()
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.array([1, 2])))
    write_files(tmp_path / "count", files)
    with pytest.raises(DataFormatError, match="2 labels for 3 images"):
        fm.read_fashion_mnist(str(tmp_path / "count"))
    files = small_files()
    files["train-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros((5, 28, 28)))[:-10])
    write_files(tmp_path / "short", files)
    with pytest.raises(DataFormatError, match="header announces shape"):
        fm.read_fashion_mnist(str(tmp_path / "short"))
    os.remove(tmp_path / "short" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="missing Fashion-MNIST file"):
        fm.read_fashion_mnist(str(tmp_path / "short"))


class FakeWeb:
    """Stands in for urlopen: serves ``files`` from the mirror ``working``; other mirrors fail."""

    def __init__(self, files: dict[str, bytes], working: str):
        self.files, self.working, self.calls = files, working, []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if not url.startswith(self.working):
            raise urllib.error.URLError("no network here")
        return io.BytesIO(self.files[url.rsplit("/", 1)[1]])


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Debian files, an empty cache, and published MD5 sums equal to those of the small files."""
    files = small_files()
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "FILES", {name: hashlib.md5(data).hexdigest() for name, data in files.items()})
    return files


def test_download_with_good_checksums(offline, tmp_path, monkeypatch):
    web = FakeWeb(offline, fm.MIRRORS[1])  # the first mirror fails: the second one serves
    monkeypatch.setattr(fm, "urlopen", web)
    data = fm.read_fashion_mnist()
    assert data.splits() == {"train": 5, "test": 3}
    cached = tmp_path / "cache" / "fashion-mnist"
    assert sorted(os.listdir(cached)) == sorted(offline)  # no .part file left
    assert len(web.calls) == 8
    data = fm.read_fashion_mnist()  # the second read uses the cache
    assert len(web.calls) == 8 and len(data) == 8


def test_download_with_bad_checksum_deletes_the_file(offline, tmp_path, monkeypatch):
    served = dict(offline)
    served["train-images-idx3-ubyte.gz"] = small_files(seed=1)["train-images-idx3-ubyte.gz"]
    monkeypatch.setattr(fm, "urlopen", FakeWeb(served, "https://"))
    with pytest.raises(DataFormatError, match="MD5 .* does not match the published"):
        fm.read_fashion_mnist()
    assert not os.path.exists(tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    assert not os.path.exists(tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz.part")


def test_download_without_network(offline, monkeypatch):
    monkeypatch.setattr(fm, "urlopen", FakeWeb(offline, "nowhere://"))
    with pytest.raises(OSError, match="could not download train-images-idx3-ubyte.gz.*dataset-fashion-mnist"):
        fm.read_fashion_mnist()

