"""The service behind the endpoints: the model (behind the micro-batcher), the catalog, the API key.

Nothing here blocks the event loop: forward passes run on the batcher's worker threads, catalog
reads in Starlette's thread pool and catalog writes on one writer thread (so writes are serialised
and reads run concurrently with them; the catalog's own locks keep each operation whole).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PIL import Image
from starlette.concurrency import run_in_threadpool

from fashionlens.catalog import Catalog, ImageEntry
from fashionlens.inference import NO_BOX_HEAD, Predictor
from fashionlens.serving._errors import ApiError
from fashionlens.serving._metrics import Metrics
from fashionlens.serving.batcher import MicroBatcher, QueueFull
from fashionlens.serving.settings import API_KEY_ENV, ServeSettings, resolve_api_key

T = TypeVar("T")
NO_KEY_HELP = (f"no API key is configured on this server: set the {API_KEY_ENV} environment variable "
               "(or ServeSettings.api_key / api_key_file) and restart it")


class Service:
    """Loads the model and opens the catalog when created; :meth:`close` releases them (reopened on use)."""

    def __init__(self, settings: ServeSettings):
        settings.validate()
        self.settings = settings
        self.api_key = resolve_api_key(settings)
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._catalog: Any = None
        self._writer: ThreadPoolExecutor | None = None
        self.start()
        try:
            run = settings.model_run or (self._catalog.model_run if self._catalog is not None else None)
            if not run:
                raise ValueError(f"catalog {settings.catalog_dir} records no model run: give ServeSettings.model_run")
            self.predictor = Predictor.load(run, device=settings.resolved_device())
            self._check_catalog_model()
        except BaseException:
            self.close()
            raise
        self.batcher = MicroBatcher(self._analyse, max_batch=settings.batch_max,
                                    max_wait_s=settings.batch_wait_ms / 1000.0, workers=settings.inference_threads,
                                    on_batch=self.metrics.observe_batch)

    # -- life cycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the catalog and the writer thread (a no-op when open)."""
        with self._lock:
            if self.settings.catalog_dir and self._catalog is None:
                self._catalog = Catalog.open(self.settings.catalog_dir, device=self.settings.device)
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="fashionlens-writer")

    def close(self) -> None:
        """Finish queued work, then stop the threads and close the catalog."""
        if getattr(self, "batcher", None) is not None:
            self.batcher.close()
        with self._lock:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None

    def _check_catalog_model(self) -> None:
        """The catalog's embeddings must come from this model: same run and same embedding size."""
        catalog = self._catalog
        if catalog is None:
            return
        dim = int(self.predictor.cfg.model.embedding_dim)
        if dim != catalog.dim:
            raise ValueError(f"the model {self.predictor.run} embeds into {dim} dimensions but catalog "
                             f"{catalog.directory} holds {catalog.dim}-dimensional embeddings")
        known, run = catalog.model_run, self.predictor.run
        if known and run and os.path.realpath(known) != os.path.realpath(run):
            raise ValueError(f"catalog {catalog.directory} was built with model {known}, not {run}: "
                             "its embeddings would not be comparable")

    @property
    def model_name(self) -> str:
        return os.path.basename(os.path.normpath(self.predictor.run or "model"))

    @property
    def catalog(self) -> Any:
        """The open catalog; ApiError 503 when none is configured."""
        if not self.settings.catalog_dir:
            raise ApiError(503, "no_catalog", "no catalog configured: start the server with a catalog directory "
                           "(ServeSettings.catalog_dir) to search and store items")
        self.start()
        return self._catalog

    # -- access control ----------------------------------------------------------------------------------
    def check_key(self, given: str | None, action: str) -> None:
        """Raise 403 when no key is configured, 401 when ``given`` is missing or wrong (constant-time compare)."""
        if self.api_key is None:
            raise ApiError(403, "no_api_key_configured", f"{action} need an API key, but {NO_KEY_HELP}")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not given:
            raise ApiError(401, "missing_api_key", f"{action} need an API key: send 'Authorization: Bearer KEY' "
                           "or 'X-API-Key: KEY'", challenge)
        if not hmac.compare_digest(given.encode("utf-8"), self.api_key.encode("utf-8")):
            raise ApiError(401, "invalid_api_key", "the API key is not valid", challenge)

    # -- model -------------------------------------------------------------------------------------------
    def check_crop(self, crop: bool) -> None:
        """422 ``no_box_head`` when a crop is asked of a model without a box head (never ignored)."""
        if crop and not self.predictor.has_box:
            raise ApiError(422, "no_box_head", f"model {self.model_name}: "
                           + NO_BOX_HEAD.format(option="crop") + "; search without crop")

    def _analyse(self, requests: list[tuple[Image.Image, bool]]) -> list[dict[str, Any]]:
        """The batcher's work: one :meth:`Predictor.analyse` call for a batch of (image, crop) requests."""
        return self.predictor.analyse([image for image, _ in requests], crop=[crop for _, crop in requests])

    async def infer(self, image: Image.Image, crop: bool = False) -> dict[str, Any]:
        """The :meth:`Predictor.analyse` answer for one image (its embedding of the garment crop with
        ``crop``), batched with concurrent requests; 422 a crop the model cannot do, 503 busy, 504 timeout."""
        self.check_crop(crop)
        try:
            future = self.batcher.submit((image, bool(crop)))
        except QueueFull as e:
            raise ApiError(503, "busy", f"the server is busy ({e}); retry shortly", {"Retry-After": "1"}) from e
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError as e:
            raise ApiError(504, "timeout", f"the model did not answer within {timeout:g} s; retry later",
                           {"Retry-After": "5"}) from e

    def hedge(self, answer: dict[str, Any], target_accuracy: float) -> dict[str, Any]:
        """The answer with ``"hedged"`` at ``target_accuracy``; 422 when the model is not calibrated for it."""
        try:
            return {**answer, "hedged": self.predictor.hedge(answer["probabilities"], target_accuracy)}
        except FileNotFoundError as e:
            raise ApiError(422, "not_calibrated", "target_accuracy needs a calibrated model: run `fashionlens "
                           "calibrate --model RUN_DIR --data SPEC` for the served run") from e
        except ValueError as e:
            raise ApiError(422, "invalid_target_accuracy", f"target_accuracy: {e}") from e


    # -- catalog -----------------------------------------------------------------------------------------
    async def read(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a catalog read in the thread pool; KeyError becomes 404."""
        try:
            return await run_in_threadpool(fn, *args, **kw)
        except KeyError as e:
            raise ApiError(404, "not_found", _key_message(e)) from e

    async def write(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a catalog write on the writer thread; KeyError 404, ValueError 422, TimeoutError 503."""
        self.start()
        assert self._writer is not None
        try:
            return await asyncio.wrap_future(self._writer.submit(fn, *args, **kw))
        except KeyError as e:
            raise ApiError(404, "not_found", _key_message(e)) from e
        except ValueError as e:
            raise ApiError(422, "invalid_item", str(e)) from e
        except TimeoutError as e:  # the catalog's inter-process writer lock
            raise ApiError(503, "catalog_busy", f"the catalog is locked by another writer: {e}") from e

    def add_item(self, data: bytes, picture: Image.Image, ext: str | None, metadata: dict[str, Any],
                 answer: dict[str, Any]) -> dict[str, Any]:
        """Store one validated, decoded upload with ``metadata`` and the model's ``answer`` for it (from
        :meth:`infer`: nothing is decoded or run again); returns the new item.

        JPEG / PNG / WebP bytes are kept as uploaded (``ext``; None: other formats, stored as PNG), under a
        name the catalog chooses; the client's file name plays no part."""
        entry = ImageEntry(picture, data if ext else None, ext or "png", None)
        item_id = self.catalog.add([entry], [metadata], self.predictor, answers=[answer])[0]
        return self.catalog.get(item_id)

    def remove_item(self, item_id: int) -> None:
        """Delete one item; KeyError when unknown."""
        if not self.catalog.remove([item_id]):
            raise KeyError(f"no item {item_id}")

    def count(self) -> int | None:
        return len(self.catalog) if self.settings.catalog_dir else None


def _key_message(error: KeyError) -> str:
    text = str(error.args[0]) if error.args else "unknown item"
    return text.split(" in catalog ")[0]  # no server paths in answers


__all__ = ["Service"]
