"""Prometheus metrics of one app (its own registry, so several apps in one process do not clash).

``fashionlens_http_requests_total{endpoint,method,status}``, ``fashionlens_http_request_duration_seconds``
``{endpoint,method}`` (histogram), ``fashionlens_catalog_items``, ``fashionlens_batch_size`` (histogram of
images per forward pass), ``fashionlens_batch_seconds`` (forward time per batch) and
``fashionlens_batch_queue`` (images waiting).  ``endpoint`` is the route template (``/v1/items/{item_id}``),
``static`` for the web page's files and ``unmatched`` otherwise, so that label values stay few.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The app's metric objects and the text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fashionlens_http_requests", "HTTP requests answered, by endpoint and status",
                                ("endpoint", "method", "status"), registry=r)
        self.latency = Histogram("fashionlens_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ("endpoint", "method"), buckets=LATENCY_BUCKETS, registry=r)
        self.catalog_items = Gauge("fashionlens_catalog_items", "Items in the catalog (-1: no catalog)", registry=r)
        self.batch_size = Histogram("fashionlens_batch_size", "Images per forward pass of the micro-batcher",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("fashionlens_batch_seconds", "Forward time of one batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("fashionlens_batch_queue", "Images waiting for the model", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self, catalog_items: int | None, queued: int) -> bytes:
        """The Prometheus text exposition, with the gauges read now."""
        self.catalog_items.set(-1 if catalog_items is None else catalog_items)
        self.queue.set(queued)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request and timing it (errors included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, clock: Callable[[], float] = time.perf_counter):
        self.app, self.metrics, self.clock = app, metrics, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = self.clock(), 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            endpoint, method = _endpoint(scope), scope.get("method", "")
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint, method).observe(self.clock() - start)


def _endpoint(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)  # the API route the router chose
    if isinstance(path, str) and path:
        return path
    return "static" if isinstance(scope.get("endpoint"), StaticFiles) else "unmatched"


__all__ = ["Metrics", "MetricsMiddleware"]
