"""Crash-safe file writes: a reader sees the old file or the new one, never a torn mix."""

from __future__ import annotations

import os
from typing import Callable


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> str:
    """Write ``path`` through a temporary file in the same folder, fsync it, then ``os.replace`` it over ``path``.

    ``data`` is the content (``str`` is written as UTF-8) or a function ``write(tmp_path)`` that writes the
    temporary file itself (``torch.save``, an ONNX export, ...).  The temporary file is removed on any
    failure, the old ``path`` then stays as it was.  Returns ``path``."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def fsync_dir(path: str) -> None:
    """Make renames inside ``path`` durable (a no-op where directories can not be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["atomic_write", "fsync_dir"]
