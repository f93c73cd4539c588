import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CLOTHING_SMALL = SHARED_DATA / "clothing-small"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def require_clothing_small() -> Path:
    if not (CLOTHING_SMALL / "train").is_dir():
        pytest.skip(f"real photos not found at {CLOTHING_SMALL} (a fresh clone has no ../shared)")
    return CLOTHING_SMALL


@pytest.fixture
def clothing_small() -> Path:
    return require_clothing_small()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the tiny models' forwards are milliseconds, and on a shared, busy 2-core
    machine two threads spin against each other (measured: 0.8 s instead of 0.01 s per forward)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    """A tiny rendered garment set (24 items x 3 views, 64 px) as a data spec, for trainer tests."""
    from fashionlens.data.garments import render_dataset

    root = tmp_path_factory.mktemp("garments")
    render_dataset(str(root), items=24, views=3, size=64, seed=0, progress=False)
    return f"garments:{root}"
