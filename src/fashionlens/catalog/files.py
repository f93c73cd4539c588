"""Files and locks of a catalog directory: the stored images and the writer lock.

* :func:`image_entry` decodes an input image (bad files fail here, before anything is written) and
  :func:`write_images` stores it as ``images/<id>.<ext>`` atomically; :func:`sweep_images` deletes files no
  row refers to (what a crash left).
* :class:`WriterLock` is an exclusive ``fcntl.flock`` on ``writer.lock``; the kernel drops it when the
  holder dies, so holding it proves that no other writer is half-way through an operation.
* :func:`file_stamp` tells whether a file changed (the index description another process saved).
"""

from __future__ import annotations

import fcntl
import io
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fashionlens.data.decode import array_to_rgb, load_image, to_rgb
from fashionlens.files import atomic_write, fsync_dir


class WriterLock:
    """Exclusive inter-process lock (``fcntl.flock``) on a file; released by the kernel if the holder dies."""

    def __init__(self, path: str, *, timeout: float = 600.0):
        self.path, self.timeout = path, timeout
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking`` wait up to ``timeout`` seconds (TimeoutError after that)."""
        assert self._fd is None, "WriterLock is not re-entrant"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except BlockingIOError:
                if not blocking or time.monotonic() > deadline:
                    os.close(fd)
                    if blocking:
                        raise TimeoutError(f"{self.path}: another writer held the catalog lock for "
                                           f"{self.timeout:.0f} s") from None
                    return False
                time.sleep(0.02)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# -- input images ------------------------------------------------------------------------------------------
#: Formats whose original bytes are stored as they are (browsers show them); others are re-encoded as PNG.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


@dataclass
class ImageEntry:
    """A decoded input image and what will be stored for it."""

    image: Image.Image  # decoded RGB pixels (what the model sees)
    payload: bytes | None  # original file bytes to store as they are; None: store ``image`` as PNG
    ext: str  # stored file extension, from the decoded format (never from the caller's file name)
    source: str | None  # absolute path it came from (None for in-memory images)


def image_entry(image: Any, position: int, *, keep_bytes: bool = True) -> ImageEntry:
    """Decode a PIL image, a file path or an (H, W[, C]) uint8 array.

    Raises FileNotFoundError (missing file) or ValueError (not an image, corrupt, truncated) naming the file.
    An :class:`ImageEntry` (already decoded, e.g. an upload the server checked) is taken as it is."""
    if isinstance(image, ImageEntry):
        return image
    if isinstance(image, Image.Image):
        return ImageEntry(to_rgb(image), None, "png", None)
    if isinstance(image, np.ndarray):
        return ImageEntry(array_to_rgb(image, where=f"image {position}"), None, "png", None)
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"image {position}: expected a PIL image, an array or a file path, got {type(image).__name__}")
    path = os.path.abspath(os.fspath(image))
    rgb = load_image(path)
    if not keep_bytes:
        return ImageEntry(rgb, None, "png", path)
    with Image.open(path) as im:
        fmt = im.format
    if fmt not in KEPT_FORMATS:
        return ImageEntry(rgb, None, "png", path)
    with open(path, "rb") as f:
        return ImageEntry(rgb, f.read(), KEPT_FORMATS[fmt], path)


def write_images(folder: str, ids: Sequence[int], entries: Sequence[ImageEntry]) -> list[str]:
    """Store each entry as ``folder/<id>.<ext>`` atomically; returns the stored file names."""
    names = []
    for item_id, entry in zip(ids, entries):
        name = f"{int(item_id)}.{entry.ext}"
        data = entry.payload
        if data is None:
            buffer = io.BytesIO()
            entry.image.save(buffer, format="PNG")
            data = buffer.getvalue()
        atomic_write(os.path.join(folder, name), data)
        names.append(name)
    fsync_dir(folder)
    return names


def sweep_images(folder: str, keep: set[str]) -> int:
    """Delete every file in ``folder`` not named in ``keep`` (orphans, temporary files); returns the count."""
    removed = 0
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name not in keep:
            os.remove(entry.path)
            removed += 1
    return removed


# -- metadata ----------------------------------------------------------------------------------------------
def file_stamp(path: str) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of a file, None when absent: tells a reader that a writer replaced it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def unlink(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
