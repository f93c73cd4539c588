"""Untrusted uploads: the request-size limit, reading the file field, and decoding its bytes.

Three lines of defence, cheapest first:

1. :class:`BodyLimitMiddleware` answers 413 before the app runs when ``Content-Length`` announces a
   body over the limit, and counts the bytes actually received (a lying or absent ``Content-Length``,
   chunked uploads) and stops reading with a 413 as soon as the count passes it.
2. :func:`read_upload` reads the ``image`` field in chunks and stops at ``max_upload_bytes``.
3. :func:`decode_upload` decodes with the accepted formats' decoders only (no exotic Pillow plugin
   sees untrusted bytes), checks the pixel count from the header *before* decoding (decompression
   bombs), forces the full decode (truncated files fail here), keeps the first frame and applies the
   EXIF orientation.  Every failure is an :class:`ApiError` (413 / 415 / 422) with a clear message.

The client's file name is never used as a path; it only appears, sanitised, in the ``source`` text.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Sequence

from fastapi import UploadFile
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fashionlens.data.decode import to_rgb
from fashionlens.serving._errors import ApiError, error_response

log = logging.getLogger("fashionlens.serving")

#: Room for the multipart framing and the small text fields next to the image, bytes.
FORM_OVERHEAD = 64 * 1024
#: Magic numbers of formats Pillow knows but the service refuses (to name them in the 415 message).
_REFUSED_MAGIC = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                  (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"%PDF", "PDF"),
                  (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"))
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.3g} MiB" if n >= 2 ** 20 else f"{n} bytes"


class BodyLimitMiddleware:
    """ASGI middleware: refuse request bodies over ``max_body_bytes`` with a 413 JSON error."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_file_bytes: int | None = None):
        self.app, self.max_body_bytes = app, int(max_body_bytes)
        self.note = f" (an image file may have up to {_mib(max_file_bytes)})" if max_file_bytes else ""

    def _too_large(self) -> ApiError:
        return ApiError(413, "payload_too_large",
                        f"request body over the limit of {_mib(self.max_body_bytes)}{self.note}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            err = self._too_large()
            await error_response(err.status_code, err.code, err.message)(scope, receive, send)
            return
        seen, started = 0, False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise self._too_large()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except ApiError as err:  # raised while reading outside an endpoint's error handling
            if started:
                raise
            await error_response(err.status_code, err.code, err.message)(scope, receive, send)


async def read_upload(upload: UploadFile, max_bytes: int, chunk: int = 1 << 20) -> bytes:
    """The uploaded file's bytes; ApiError 413 as soon as more than ``max_bytes`` have been read."""
    parts, total = [], 0
    while block := await upload.read(chunk):
        total += len(block)
        if total > max_bytes:
            raise ApiError(413, "file_too_large", f"the image file is larger than the limit of {_mib(max_bytes)}")
        parts.append(block)
    return b"".join(parts)


def decode_upload(data: bytes, *, max_pixels: int, formats: Sequence[str]) -> tuple[Image.Image, str | None]:
    """Decode uploaded bytes into (RGB image, stored-file extension ``jpg``/``png``/``webp``; None for other
    formats, whose bytes are not kept: the catalog stores their pixels as PNG).

    Raises ApiError: 422 empty or corrupt / truncated data, 415 a refused format or not an image,
    413 more than ``max_pixels`` pixels (checked from the header, before decoding)."""
    if not data:
        raise ApiError(422, "empty_file", "the uploaded image is empty (0 bytes)")
    allowed = [f.upper() for f in formats]  # JPEG's opener also reads MPO (multi-picture) files
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=allowed) as img:
                if img.width * img.height > max_pixels:
                    raise _too_many_pixels(f"{img.width}x{img.height} pixels", max_pixels)
                img.seek(0)  # multi-frame (animated WebP / PNG): the first frame
                img.load()  # the full decode: truncated or corrupt data fails here
                ImageOps.exif_transpose(img, in_place=True)
                return to_rgb(img), _EXTENSIONS.get(str(img.format))
    except ApiError:
        raise
    except Image.DecompressionBombError as e:
        raise _too_many_pixels(str(e), max_pixels) from e
    except UnidentifiedImageError as e:
        raise _unsupported(data, formats) from e
    except Exception as e:  # untrusted bytes: any decoder failure is the file's fault, not the server's
        log.debug("corrupt upload: %r", e)
        raise ApiError(422, "corrupt_image", f"the image could not be decoded (corrupt or truncated data: {e})") from e


def _too_many_pixels(what: str, limit: int) -> ApiError:
    return ApiError(413, "too_many_pixels", f"image too large: {what}, over the limit of {limit} pixels "
                    "(refused as a possible decompression bomb)")


def _unsupported(data: bytes, formats: Sequence[str]) -> ApiError:
    names = ["WebP" if f.upper() == "WEBP" else f.upper() for f in formats]
    accepted = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    known = next((name for magic, name in _REFUSED_MAGIC if data.startswith(magic)), None)
    if known:
        return ApiError(415, "unsupported_format", f"{known} images are not accepted; send {accepted}")
    return ApiError(415, "unsupported_format", f"the upload is not a {accepted} image")


def upload_source(filename: str | None) -> str:
    """``upload:<name>`` for the item's ``source`` text: the client's base name reduced to safe characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", name).strip(" .")[:100]
    return f"upload:{name}" if name else "upload"


__all__ = ["FORM_OVERHEAD", "BodyLimitMiddleware", "decode_upload", "read_upload", "upload_source"]
