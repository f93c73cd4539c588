"""Who is asking: a request that carries the write key sees the server's private values, every other one the
public view.

The catalog records where an item came from (``source``): for files added on the server, that is a server
path (``/home/x/photos/a.jpg``).  Readers see only the file's name (``a.jpg``); URLs stay as they are; a
request with the API key (``X-API-Key`` or ``Authorization: Bearer``; checked in constant time, a wrong key is
a reader) sees the full value.  :class:`ViewerMiddleware` decides once per request, before any route runs, so
every answer that shapes items (:mod:`fashionlens.serving._schemas`) follows it without each route passing it
on; outside a request the view is the public one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_matched: ContextVar[str | None] = ContextVar("fashionlens_request_key", default=None)  # the key, when it is right
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def sees_private() -> bool:
    """Whether the request being answered carries the API key (False outside a request)."""
    return _matched.get() is not None


def matched_key() -> str | None:
    """The API key this request carries when it is the right one (the middleware's one constant-time
    comparison per request; the write guard reuses it), else None."""
    return _matched.get()


def public_source(value: str | None) -> str | None:
    """An item's ``source`` as a reader sees it: a filesystem path (or ``file://`` URL) cut to its last part;
    other URLs and ``upload:NAME`` unchanged."""
    if not value or (_URL.match(value) and not value.lower().startswith("file:")):
        return value
    name = re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return name or None


def request_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request carries (``X-API-Key``, else an ``Authorization: Bearer`` token)."""
    found: dict[bytes, bytes] = {}
    for k, v in headers:  # the first of repeated headers, as Starlette's request.headers reads them
        found.setdefault(k.lower(), v)
    if b"x-api-key" in found:
        return found[b"x-api-key"].decode("latin-1").strip() or None
    scheme, _, token = found.get(b"authorization", b"").decode("latin-1").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class ViewerMiddleware:
    """Pure ASGI middleware: marks the request as holding the key (``holds_key(given) -> bool``) or not."""

    def __init__(self, app: ASGIApp, holds_key: Callable[[str | None], bool]):
        self.app = app
        self.holds_key = holds_key

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = request_key(scope.get("headers") or [])
        token = _matched.set(given if self.holds_key(given) else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _matched.reset(token)


__all__ = ["ViewerMiddleware", "matched_key", "public_source", "request_key", "sees_private"]
