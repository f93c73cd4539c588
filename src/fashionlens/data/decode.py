"""Image decoding with Pillow: any file or in-memory array -> an RGB ``PIL.Image``.

One function, :func:`load_image`, used by the dataset, the predictor and the tools.  It applies the
EXIF orientation, keeps the first frame of animations, converts every Pillow mode to 8-bit RGB
(16-bit and float greyscale are rescaled, transparency is composited on white) and turns every way a
file can be broken into a ``ValueError`` that names the file.
"""

from __future__ import annotations

import os
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionlens.data.samples import Sample

#: Default pixel limit (width x height); larger images are refused as possible decompression bombs.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

PathOrSample = Union[str, "os.PathLike[str]", Sample]
_WHITE = (255, 255, 255)


def load_image(path_or_sample: PathOrSample, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file (or a Sample's in-memory ``array``) into an RGB image.

    Args:
        path_or_sample: a file path, or a :class:`Sample` (its ``array`` is used when set, without
            touching the disk; otherwise its ``image`` path).
        max_pixels: refuse images with more than this many pixels (default :data:`MAX_PIXELS`).

    Returns:
        A fully loaded ``PIL.Image`` in mode ``"RGB"``, size (width, height) in pixels of the
        displayed (EXIF-rotated) image.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image, is truncated or corrupt, or is too large; the message
            names the file.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(path_or_sample, Sample):
        if path_or_sample.array is not None:
            where = path_or_sample.source or path_or_sample.image or "<array>"
            return array_to_rgb(path_or_sample.array, where=where)
        path = path_or_sample.image
    else:
        path = os.fspath(path_or_sample)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    return _decode_file(path, limit)


def _decode_file(path: str, limit: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > limit:
                    raise ValueError(
                        f"{path}: image of {img.width}x{img.height} pixels exceeds the limit of {limit} "
                        "pixels (possible decompression bomb; raise max_pixels if it is genuine)"
                    )
                img.seek(0)  # multi-frame (GIF, TIFF, APNG): the first frame
                img.load()  # force the full decode so truncated data fails here, not later
                ImageOps.exif_transpose(img, in_place=True)  # EXIF orientation -> displayed pixels
                return to_rgb(img)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: refused as a possible decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not a readable image file (Pillow cannot identify it)") from e
    except (OSError, SyntaxError, EOFError) as e:  # truncated / corrupt data inside a known format
        raise ValueError(f"{path}: corrupt or truncated image data: {e}") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Greyscale ``L``/``1`` and palette ``P`` images are expanded; ``CMYK``/``YCbCr``/``HSV`` use Pillow's
    conversion; 16-bit (``I;16*``), 32-bit ``I`` and float ``F`` greyscale are rescaled to 0..255
    (Pillow's own conversion would clip them); alpha (``LA``, ``RGBA``, ``PA``, palette transparency)
    is composited on white.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_wide_gray_to_uint8(np.asarray(img)), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, _WHITE)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _wide_gray_to_uint8(a: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit or float greyscale (H, W) -> uint8.

    uint16 data (Pillow ``I;16*``) is always scaled by 255/65535.  For 32-bit ``I`` and float ``F`` the
    range is guessed: floats within [0, 1] are scaled by 255, values up to 255 kept, larger values read
    as 16-bit.
    """
    if a.dtype == np.uint16 or a.dtype == np.dtype(">u2"):
        return np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    a = a.astype(np.float64)
    if a.size == 0:
        return a.astype(np.uint8)
    peak = float(a.max())
    if a.dtype.kind == "f" and peak <= 1.0 and float(a.min()) >= 0.0 and not np.all(np.mod(a, 1) == 0):
        scale = 255.0  # float image in [0, 1]
    elif peak <= 255:
        scale = 1.0  # values already fit 8 bits
    else:
        scale = 255.0 / 65535.0  # 16-bit range (mode "I" from 16-bit files)
    return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)


def array_to_rgb(array: np.ndarray, *, where: str = "<array>") -> Image.Image:
    """In-memory pixels (H, W) or (H, W, 1|3|4), uint8 (or 16-bit/float greyscale) -> RGB image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        if a.dtype != np.uint8:
            a = _wide_gray_to_uint8(a)
        return Image.fromarray(np.ascontiguousarray(a), mode="L").convert("RGB")
    if a.ndim == 3 and a.shape[2] in (3, 4) and a.dtype == np.uint8:
        img = Image.fromarray(np.ascontiguousarray(a), mode="RGB" if a.shape[2] == 3 else "RGBA")
        return to_rgb(img)
    raise ValueError(
        f"{where}: in-memory image must be (H, W) or (H, W, 3|4) uint8, got shape {a.shape} dtype {a.dtype}"
    )


__all__ = ["MAX_PIXELS", "array_to_rgb", "load_image", "to_rgb"]
