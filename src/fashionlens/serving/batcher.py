"""Micro-batching: concurrent single-image requests share one forward pass.

A request calls :meth:`MicroBatcher.submit` (any thread, any event loop) and gets a
``concurrent.futures.Future``; worker threads take the first waiting image, wait up to ``max_wait_s``
for more (at most ``max_batch``), run ``fn`` on the whole batch once and hand every caller its own
answer.  Requests whose caller gave up (a cancelled future: the request timed out) are skipped
before the forward.  Thread based rather than asyncio based, so it works whatever event loop (or
none) the caller runs in.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_STOP = object()


class QueueFull(RuntimeError):
    """More requests are waiting than the batcher accepts."""


class MicroBatcher:
    """Batch calls of ``fn(items) -> one result per item`` across threads."""

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 16, max_wait_s: float = 0.01,
                 workers: int = 1, max_queue: int = 1024,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError(f"bad batcher settings: max_batch={max_batch} workers={workers} max_wait_s={max_wait_s}")
        self.fn, self.max_batch, self.max_wait_s = fn, int(max_batch), float(max_wait_s)
        self.workers, self.max_queue, self.on_batch = int(workers), int(max_queue), on_batch
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, item: Any) -> Future:
        """Queue one item; the future resolves to ``fn``'s result for it (or its exception).

        Raises QueueFull when ``max_queue`` items are already waiting."""
        self._start()
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.max_queue} requests are already waiting for the model")
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def pending(self) -> int:
        """Items waiting for a worker (approximate)."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued items, then stop the workers (a later submit starts them again)."""
        with self._lock:
            threads, self._threads = self._threads, []
            for _ in threads:
                self._queue.put(_STOP)
        for thread in threads:
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if not self._threads:
                self._threads = [threading.Thread(target=self._work, name=f"fashionlens-batcher-{i}", daemon=True)
                                 for i in range(self.workers)]
                for thread in self._threads:
                    thread.start()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            self._run(batch)
            if stop:
                return

    def _collect(self, first: tuple[Any, Future]) -> tuple[list[tuple[Any, Future]], bool]:
        """``first`` plus what arrives within ``max_wait_s`` (at most ``max_batch``); and whether to stop."""
        batch, deadline = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self, batch: list[tuple[Any, Future]]) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        start = time.perf_counter()
        try:
            results = list(self.fn([item for item, _ in live]))
            if len(results) != len(live):
                raise RuntimeError(f"batched function returned {len(results)} results for {len(live)} items")
        except Exception as exc:  # noqa: BLE001 - whatever fn raises is handed to its callers
            if len(live) == 1:
                live[0][1].set_exception(exc)
            else:  # isolate the item that fails: the others still get their answers
                for item, fut in live:
                    _resolve_alone(self.fn, item, fut)
            return
        if self.on_batch is not None:
            self.on_batch(len(live), time.perf_counter() - start)
        for (_, fut), result in zip(live, results):
            fut.set_result(result)


def _resolve_alone(fn: Callable[[list[Any]], Sequence[Any]], item: Any, fut: Future) -> None:
    try:
        fut.set_result(next(iter(fn([item]))))
    except Exception as exc:  # noqa: BLE001 - handed to the caller
        fut.set_exception(exc)


__all__ = ["MicroBatcher", "QueueFull"]
