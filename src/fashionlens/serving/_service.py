"""The service behind the endpoints: the model (behind the micro-batcher), the catalog, the API key.

Nothing here blocks the event loop: forward passes run on the batcher's worker threads, catalog
reads in Starlette's thread pool and catalog writes on one writer thread (so writes are serialised
and reads run concurrently with them; the catalog's own locks keep each operation whole).

The model follows the catalog's: when a reindex (``fashionlens catalog reindex``, any process) switches the
catalog to a new model, the next request loads it (the catalog's new ``model_run``, on the configured device;
requests wait for it) and uses it from then on.  Each answer's embedding is tagged with the catalog's model epoch
it was made for, and a search (or add) whose embedding was made before a switch and used after it is refused
with 503 ``model_changed`` (retry) instead of comparing two models' vectors.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from fashionlens.catalog import Catalog, ImageEntry, ModelChangedError
from fashionlens.export import load_predictor, model_label, same_model
from fashionlens.inference import NO_BOX_HEAD
from fashionlens.serving._errors import ApiError
from fashionlens.serving._metrics import Metrics
from fashionlens.serving._viewer import matched_key
from fashionlens.serving.batcher import MicroBatcher, QueueFull
from fashionlens.serving.settings import API_KEY_ENV, ServeSettings, resolve_api_key

T = TypeVar("T")
log = logging.getLogger("fashionlens.serving")
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
        self._model_lock = threading.Lock()  # one load of the catalog's new model after a reindex switch
        self._model_epoch = 0  # the catalog's model epoch the predictor embeds for
        self._epochs: dict[int, int] = {}  # id(answer embedding) -> the model epoch it was made at (while alive)
        self.start()
        try:
            self._model_epoch = self._catalog.model_epoch if self._catalog is not None else 0
            run = settings.model_run or (self._catalog.model_run if self._catalog is not None else None)
            if not run:
                raise ValueError(f"catalog {settings.catalog_dir} records no model run: give ServeSettings.model_run")
            # a run directory, an exported .onnx (ONNX Runtime, the CPU) or a list of them (an ensemble)
            self._predictor = self._load(run)
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

    def _load(self, run: Any) -> Any:
        """The predictor of ``run`` on the settings' device, with the open-world guide when the settings ask."""
        predictor = load_predictor(run, device=self.settings.device)
        return predictor.attach_guide(self.settings.guide) if self.settings.guide else predictor

    def _check_catalog_model(self) -> None:
        """The catalog's embeddings must come from this model: same run and same embedding size."""
        catalog = self._catalog
        if catalog is None:
            return
        dim = self._predictor.embedding_dim
        if dim != catalog.dim:
            raise ValueError(f"the model {self._predictor.run} embeds into {dim} dimensions but catalog "
                             f"{catalog.directory} holds {catalog.dim}-dimensional embeddings")
        known, run = catalog.model_run, self._predictor.run
        if not same_model(known, run):
            raise ValueError(f"catalog {catalog.directory} was built with model {known}, not {run}: "
                             "its embeddings would not be comparable")

    @property
    def predictor(self) -> Any:
        """The model: the catalog's current one (see the module docstring)."""
        return self._current_model()[0]

    @predictor.setter
    def predictor(self, predictor: Any) -> None:
        self._predictor = predictor

    def _current_model(self) -> tuple[Any, int]:
        """(predictor, the catalog's model epoch it embeds for); after a reindex switched the catalog's model, its
        new model is loaded first (once: concurrent requests wait for it)."""
        catalog = self._catalog
        if catalog is None:
            return self._predictor, self._model_epoch
        epoch = catalog.model_epoch  # one cheap query (the catalog's generation), unless a switch is adopted
        if epoch != self._model_epoch:
            with self._model_lock:
                if epoch != self._model_epoch:
                    run = catalog.model_run
                    try:
                        predictor = self._load(run)
                    except (OSError, ValueError) as e:
                        raise ApiError(503, "model_unavailable", f"the catalog switched to model {model_label(run)} "
                                       f"(reindex), which this server can not load: {e}") from e
                    dim = predictor.embedding_dim
                    if dim != catalog.dim:
                        raise ApiError(503, "model_changed", f"the catalog switched to model {model_label(run)}, "
                                       f"which embeds into {dim} dimensions, not {catalog.dim}")
                    log.info("catalog %s switched to model %s (epoch %d): loaded it", catalog.directory, run, epoch)
                    self._predictor, self._model_epoch = predictor, epoch
        return self._predictor, self._model_epoch

    def _tag(self, vector: Any, epoch: int) -> None:
        """Remember the model epoch an answer's embedding was made at (forgotten with the array)."""
        if isinstance(vector, np.ndarray):
            key = id(vector)
            self._epochs[key] = epoch
            weakref.finalize(vector, self._epochs.pop, key, None)

    def _epoch_of(self, vector: Any) -> int | None:
        return self._epochs.get(id(vector)) if isinstance(vector, np.ndarray) else None

    @property
    def model_name(self) -> str:
        return model_label(self.predictor.run)

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
        if given == matched_key():  # ViewerMiddleware found this request's key right (one comparison per request)
            return
        if not hmac.compare_digest(given.encode("utf-8"), self.api_key.encode("utf-8")):
            raise ApiError(401, "invalid_api_key", "the API key is not valid", challenge)

    def holds_key(self, given: str | None) -> bool:
        """Whether ``given`` is the configured API key (constant-time compare; never raises): such a request
        sees private values such as server paths (:mod:`fashionlens.serving._viewer`)."""
        if self.api_key is None or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.api_key.encode("utf-8"))

    # -- model -------------------------------------------------------------------------------------------
    def check_crop(self, crop: bool) -> None:
        """422 ``no_box_head`` when a crop is asked of a model without a box head (never ignored)."""
        if crop and not self.predictor.has_box:
            raise ApiError(422, "no_box_head", f"model {self.model_name}: "
                           + NO_BOX_HEAD.format(option="crop") + "; search without crop")

    def _analyse(self, requests: list[tuple[Image.Image, bool]]) -> list[dict[str, Any]]:
        """The batcher's work: one :meth:`Predictor.analyse` call for a batch of (image, crop) requests (each
        embedding tagged with the catalog's model epoch it was made for)."""
        predictor, epoch = self._current_model()
        answers = predictor.analyse([image for image, _ in requests], crop=[crop for _, crop in requests])
        for answer in answers:
            self._tag(answer.get("embedding"), epoch)
        return answers

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
        """Run a catalog read in the thread pool; KeyError becomes 404.  A search by an answer's embedding is
        checked against the catalog's model (503 ``model_changed`` when a reindex switched it since)."""
        epoch = next((e for e in map(self._epoch_of, args) if e is not None), None)
        if epoch is not None and getattr(fn, "__name__", "") in ("search", "search_words"):
            kw.setdefault("model_epoch", epoch)
        try:
            return await run_in_threadpool(fn, *args, **kw)
        except KeyError as e:
            raise ApiError(404, "not_found", _key_message(e)) from e
        except ModelChangedError as e:
            raise _model_changed(e) from e

    async def write(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a catalog write on the writer thread; KeyError 404, ValueError 422, TimeoutError 503."""
        self.start()
        assert self._writer is not None
        try:
            return await asyncio.wrap_future(self._writer.submit(fn, *args, **kw))
        except KeyError as e:
            raise ApiError(404, "not_found", _key_message(e)) from e
        except ModelChangedError as e:
            raise _model_changed(e) from e
        except ValueError as e:
            raise ApiError(422, "invalid_item", str(e)) from e
        except TimeoutError as e:  # the catalog's inter-process writer lock
            raise ApiError(503, "catalog_busy", f"the catalog is locked by another writer: {e}") from e

    def add_item(self, data: bytes, picture: Image.Image, ext: str | None, metadata: dict[str, Any],
                 answer: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        """Store one validated, decoded upload with ``metadata`` and the model's ``answer`` for it (from
        :meth:`infer`: nothing is decoded or run again); returns the new item.  ``label``: a person's
        ``confirmed`` / ``corrected`` (see :meth:`Catalog.add`).

        JPEG / PNG / WebP bytes are kept as uploaded (``ext``; None: other formats, stored as PNG), under a
        name the catalog chooses; the client's file name plays no part."""
        entry = ImageEntry(picture, data if ext else None, ext or "png", None)
        item_id = self.catalog.add([entry], [metadata], self.predictor, answers=[answer], label=label,
                                   model_epoch=self._epoch_of(answer.get("embedding")))[0]
        return self.catalog.get(item_id)

    def remove_item(self, item_id: int) -> None:
        """Delete one item; KeyError when unknown."""
        if not self.catalog.remove([item_id]):
            raise KeyError(f"no item {item_id}")

    def count(self) -> int | None:
        return len(self.catalog) if self.settings.catalog_dir else None


def _model_changed(error: ModelChangedError) -> ApiError:
    return ApiError(503, "model_changed", "the catalog switched to a new model while this request ran (reindex): "
                    "retry", {"Retry-After": "1"})


def _key_message(error: KeyError) -> str:
    text = str(error.args[0]) if error.args else "unknown item"
    return text.split(" in catalog ")[0]  # no server paths in answers


__all__ = ["Service"]
