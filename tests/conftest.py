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
