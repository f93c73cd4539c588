"""Small shared helpers: seeding, threads, a safe torchvision import on CPU-only PyTorch, softmax in NumPy."""

from __future__ import annotations

import json
import os
import random
from types import ModuleType
from typing import Any

import numpy as np

_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_torchvision_lib = None  # keeps the operator-schema library alive for the process


def import_torchvision() -> ModuleType:
    """Import torchvision even when its compiled ops do not match the installed (CPU) torch.

    The registry's torchvision wheel is a CUDA build; with a CPU torch its import fails on
    ``torchvision::nms``.  Declaring the two operator schemas first lets the pure-Python parts
    (transforms.v2, tv_tensors, models) import; ``torchvision.io`` and NMS stay unavailable, so
    images are decoded with Pillow.
    """
    global _torchvision_lib
    import torch  # lazy: utils serves torch-free code too (index, readers); torch loads where it is used

    if _torchvision_lib is None:
        _torchvision_lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _TORCHVISION_OPS:
            try:
                _torchvision_lib.define(schema)
            except RuntimeError:  # already defined (a working torchvision build): fine
                pass
    import torchvision  # lazy: only after the operator schemas above are declared

    return torchvision


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""
    import torch  # lazy: see import_torchvision

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(num_threads: int | None) -> None:
    """Set PyTorch intra-op threads (None or 0 leaves the default: one per core)."""
    import torch  # lazy: see import_torchvision

    if num_threads:
        torch.set_num_threads(int(num_threads))


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(spec: str | None = "auto") -> "Any":
    """The ``torch.device`` a ``--device`` / ``train.device`` value names.

    ``auto`` (or empty/None) picks CUDA when a GPU is visible (``cuda:LOCAL_RANK`` under torchrun), else
    Apple's MPS, else the CPU.  A device that is asked for but absent is a ValueError that says what is
    available, never a silent fall-back to the CPU."""
    import torch  # lazy: see import_torchvision

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {spec!r}; choices: {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but this PyTorch sees no CUDA GPU "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {spec!r} asked for, but MPS is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "meta"):
        raise ValueError(f"unsupported device {spec!r}; choices: {DEVICE_CHOICES}")
    return device


def add_device_argument(parser: Any, help_what: str = "run the model") -> None:
    """The shared ``--device`` option of the commands that run a model."""
    parser.add_argument("--device", default="auto",
                        help=f"where to {help_what}: {DEVICE_CHOICES} (auto: a CUDA GPU when present, else the CPU)")


def cache_dir() -> str:
    """Where fashionlens keeps downloads and derived files (``FASHIONLENS_CACHE`` or ~/.cache/fashionlens)."""
    path = os.environ.get("FASHIONLENS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fashionlens")
    os.makedirs(path, exist_ok=True)
    return path


def read_json_file(path: str, what: str) -> Any:
    """Parse the JSON file ``path``; a missing file is FileNotFoundError, bad JSON a ValueError naming ``what``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt {what}: {e}") from e


def log_softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Log-probabilities of ``softmax(logits / temperature)`` over the last axis, computed stably (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Probabilities ``softmax(logits / temperature)`` over the last axis (float64; each row sums to 1)."""
    return np.exp(log_softmax(logits, temperature))
