"""One error shape for every failure: ``{"error": {"code": "<snake_case>", "message": "<clear text>"}}``.

:class:`ApiError` is raised by the endpoints; :func:`install_error_handlers` makes FastAPI's own
errors (request validation, 404 / 405 of the router, body parsing) and unexpected exceptions answer
in the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("fashionlens.serving")

#: Default error code of each status when the raiser gave none.
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 408: "request_timeout", 409: "conflict", 411: "length_required",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
    500: "internal_error", 503: "unavailable", 504: "timeout",
}


class ApiError(StarletteHTTPException):
    """An HTTP error with a machine-readable ``code`` and a message for people.

    Subclassing Starlette's HTTPException lets it pass through FastAPI's body parsing unchanged (a
    413 raised while the multipart body is read stays a 413)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code, self.message = code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    # lone surrogates (from JSON escapes) can not be UTF-8 encoded: never let them break the answer
    return {"error": {"code": code, "message": message.encode("utf-8", "replace").decode("utf-8")}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and detail == "Not Found":
        detail = f"nothing at {request.method} {request.url.path}"
    if status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    if status == 400 and "parsing the body" in detail:
        detail = "the request body could not be parsed (malformed multipart/form-data or JSON)"
    return error_response(status, STATUS_CODES.get(status, "http_error"), detail, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    missing_image = any(tuple(e.get("loc", ()))[-1:] == ("image",) for e in errors)
    if missing_image:
        return error_response(422, "missing_image", "no image uploaded: send the picture as the multipart/form-data "
                              "file field 'image'" + _summary(errors, skip="image"))
    return error_response(422, "invalid_request", "invalid request: " + _summary(errors).lstrip("; "))


def _summary(errors: list[dict[str, Any]], skip: str | None = None) -> str:
    """``loc: msg`` of each validation error (never the offending input itself), '; '-joined."""
    parts = []
    for e in errors[:10]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        if skip is not None and loc[-1:] == [skip]:
            continue
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return "".join(f"; {p}" for p in parts)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error (logged on the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through :func:`error_body`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


__all__ = ["STATUS_CODES", "ApiError", "error_body", "error_response", "install_error_handlers"]
