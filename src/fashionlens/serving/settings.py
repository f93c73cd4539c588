"""Settings of the HTTP service: one dataclass, no environment or file reading at import time.

The API key that guards writes is resolved by :func:`resolve_api_key` when the app is created:
``ServeSettings.api_key``, else the ``FASHIONLENS_API_KEY`` environment variable, else the first line
of ``api_key_file``.  With no key at all, writes are refused with 403 (a secure default: a server
started without thinking about keys can not be written to by anyone).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # torch is imported when the device is resolved, not with the settings
    import torch

#: Environment variable read for the API key when the settings give none.
API_KEY_ENV = "FASHIONLENS_API_KEY"
#: Image formats (Pillow names) the service decodes; MPO (multi-picture camera JPEG) counts as JPEG.
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass
class ServeSettings:
    """What :func:`fashionlens.serving.create_app` serves and with which limits."""

    # run directory / checkpoint / exported .onnx of the model, or a list of them (an ensemble: one answer from
    # their mean calibrated probabilities, concatenated embeddings); None: the catalog's model_run
    model_run: str | list[str] | None = None
    catalog_dir: str | None = None  # catalog directory; None: /v1/search and /v1/items answer 503
    api_key: str | None = None  # write key; None: $FASHIONLENS_API_KEY, else api_key_file
    api_key_file: str | None = None  # file whose first line is the key (read when the app is created)
    public_reads: bool = True  # False: classify / search / item reads need the key too
    max_upload_bytes: int = 10 * 1024 * 1024  # largest accepted image file, bytes
    max_pixels: int = 40_000_000  # largest accepted image, width x height pixels (decompression bombs)
    formats: tuple[str, ...] = DEFAULT_FORMATS  # accepted image formats (Pillow format names)
    request_timeout_s: float = 30.0  # longest wait for the model (queue + forward) before a 504
    batch_max: int = 16  # most images in one forward pass of the micro-batcher
    batch_wait_ms: float = 10.0  # how long the batcher waits for more images after the first
    inference_threads: int = 1  # worker threads running forward passes
    static_dir: str | None = None  # the web page's folder; None: fashionlens/serving/static
    device: str = "cpu"  # where the model runs: auto, cpu, cuda, cuda:N or mps (fashionlens.utils.resolve_device)
    # "imagenet": every answer says whether the photo shows a kind of thing the model knows (openworld); None: not
    guide: str | None = None
    # the target accuracy the page asks hedged answers for first (one of /v1/labels' targets); None: best guess
    target_accuracy: float | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        checks = {
            "max_upload_bytes": self.max_upload_bytes >= 1, "max_pixels": self.max_pixels >= 1,
            "request_timeout_s": self.request_timeout_s > 0, "batch_max": self.batch_max >= 1,
            "batch_wait_ms": self.batch_wait_ms >= 0, "inference_threads": self.inference_threads >= 1,
            "guide": self.guide in (None, "imagenet"),
            "target_accuracy": self.target_accuracy is None or 0 < self.target_accuracy < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ServeSettings.{name} out of range: {getattr(self, name)!r}")

        Image.init()
        if not self.formats or any(not isinstance(f, str) or f.upper() not in Image.OPEN for f in self.formats):
            raise ValueError(f"ServeSettings.formats must name image formats Pillow reads (e.g. JPEG, PNG, WEBP), "
                             f"got {self.formats!r}")
        if self.model_run is None and self.catalog_dir is None:
            raise ValueError("ServeSettings needs a model_run or a catalog_dir (whose catalog names its model)")
        if self.model_run is not None:  # a GPU asked of an .onnx model: said before what the machine lacks
            from fashionlens.export import check_device  # lazy: torch and ONNX Runtime, not with the settings

            try:
                check_device(self.model_run, self.device)
            except ValueError as e:
                raise ValueError(f"ServeSettings.device: {e}") from e
        self.resolved_device()

    def resolved_device(self) -> "torch.device":
        """The ``torch.device`` of :attr:`device`; ValueError (saying what is missing) when it is absent."""
        from fashionlens.utils import resolve_device  # lazy: no torch import with the settings

        try:
            return resolve_device(self.device)
        except ValueError as e:
            raise ValueError(f"ServeSettings.device: {e}") from e


def resolve_api_key(settings: ServeSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The write key: ``settings.api_key``, else ``$FASHIONLENS_API_KEY``, else ``api_key_file``'s first line.

    Returns None when none is configured (writes are then refused).  Raises ValueError for an empty
    explicit key or key file, FileNotFoundError for a missing key file."""
    environ = os.environ if environ is None else environ
    if settings.api_key is not None:
        if not settings.api_key.strip():
            raise ValueError("ServeSettings.api_key is empty; give a key or None")
        return settings.api_key.strip()
    from_env = environ.get(API_KEY_ENV, "").strip()
    if from_env:
        return from_env
    if settings.api_key_file:
        if not os.path.isfile(settings.api_key_file):
            raise FileNotFoundError(f"API key file not found: {settings.api_key_file}")
        with open(settings.api_key_file, encoding="utf-8") as f:
            key = f.readline().strip()
        if not key:
            raise ValueError(f"{settings.api_key_file}:1: the API key file is empty")
        return key
    return None


__all__ = ["API_KEY_ENV", "DEFAULT_FORMATS", "ServeSettings", "resolve_api_key"]
