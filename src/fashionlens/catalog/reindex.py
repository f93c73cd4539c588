"""Re-embedding a catalog with a new model while it keeps serving the old one: ``Catalog.reindex(model)``
(``fashionlens catalog reindex CATALOG --model NEW_RUN``).

Design (the catalog's crash-consistency rules, :mod:`fashionlens.catalog.catalog`, carried over):

* **Staging**: the new model embeds every ready item's stored image (``images/<id>.<ext>``; its garment crop with
  ``crop``) into a side table ``embeddings_next(item_id, embedding, error)``, ``batch_size`` items per committed
  transaction; the job (model, dim, crop) is a row of ``reindex_job``.  Both tables exist only while a reindex is
  under way.  Nothing the catalog serves changes meanwhile: ``items.embedding``, ``model_run``, catalog.json and
  the index stay the old model's, so searches (here or in other processes) keep comparing old-model queries
  with old-model vectors, and adds keep working (with the old model).
* **Resume / abort**: a reindex killed at any point leaves committed batches; run again with the same model it
  embeds only what is not staged yet.  Another model while one is staged is refused.  :func:`abort_reindex`
  drops the staging tables: items, embeddings, model_run, catalog.json and index are as they were before it
  started (they were never touched).  One reindex at a time (``reindex.lock``).
* **Items added meanwhile**: each pass re-lists the items not staged yet, so items added during the reindex are
  embedded too; the last pass runs holding the catalog's writer lock, so adds are blocked only during that
  catch-up (the items added since the previous pass) and the switch itself.  An add whose embeddings were made
  before the switch and committed after it is refused (:class:`ModelChangedError`: add it again).
* **The switch**, holding the writer lock: the saved index is deleted (a Milvus collection dropped), then ONE
  SQLite transaction moves the staged embeddings into ``items.embedding``, records the model (run, dim) under a
  new model epoch (table ``models``, meta ``model_epoch``), drops the staging tables and bumps the generation;
  then catalog.json is rewritten (model_run, dim, model_epoch) and the index rebuilt from the new embeddings
  with the new dim and saved as ``vectors.N.index`` (N = the epoch: an index file only ever holds one model's
  vectors).  A crash after the commit is finished by the next ``Catalog.open`` (the database wins over
  catalog.json; the index is rebuilt from it).
* **Other processes** notice the switch through the generation counter, as they notice adds: the database's
  model epoch changed, so they adopt the new model_run and dim, drop their in-memory index for the new epoch's
  (``IndexCache.follow_model``) and their catalog's predictor reloads.  A search whose query was embedded before
  the switch and compared after it raises :class:`ModelChangedError` (never a mixed comparison); the server
  answers 503 and loads the new model (``serving/_service.py``).
* **Bad images**: a stored image that is missing or unreadable (or an item stored without one) stops the reindex
  with an error naming the item and the file (the batches before it stay staged: fix the file and resume);
  with ``skip_bad`` it is reported and the item is REMOVED at the switch (its old-model embedding can not be
  compared with the new model's queries).
* Labels, stored predictions and the taxonomy are kept as they are (the new model's answers are not applied).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fashionlens.catalog.files import WriterLock, unlink
from fashionlens.data.decode import load_image
from fashionlens.export import ModelSpec, load_predictor, model_key, same_model
from fashionlens.files import atomic_write, fsync_dir
from fashionlens.inference import DeviceLike, Predictor
from fashionlens.utils import read_json_file

REINDEX_LOCK = "reindex.lock"
CONFIG, IMAGES = "catalog.json", "images"


class ModelChangedError(ValueError):
    """The catalog's model was switched (a reindex) between embedding a query or items and using them: embed them
    again with the catalog's (new) model."""


def run_reindex(catalog: Any, model: Predictor | ModelSpec, *, batch_size: int = 32, crop: bool = False,
                skip_bad: bool = False, switch: bool = True, progress: bool = True,
                device: DeviceLike = None) -> dict[str, Any]:
    """Re-embed every item of ``catalog`` (a :class:`~fashionlens.catalog.Catalog`) with ``model`` and switch to
    it (see the module docstring); ``switch=False`` stages only (the catalog keeps serving the old model; a
    later run switches).  Returns the summary (see :meth:`Catalog.reindex`)."""
    started = time.monotonic()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(model, (str, os.PathLike, list, tuple)):
        key, predictor = model_key(model), load_predictor(model, device=device or catalog.device)
    else:
        predictor, key = model, model_key(getattr(model, "run", None))
        if not key:
            raise ValueError("reindex needs a model the catalog can record: a run directory (or .onnx, or a list "
                             "of them), or a Predictor loaded from one")
    if crop:
        predictor.require_box()
    dim = predictor.embedding_dim
    params = catalog.config["index"]
    if params["kind"] == "ivfpq" and dim % int(params["pq_m"]):  # found now, not after the switch's commit
        raise ValueError(f"catalog {catalog.directory} has an ivfpq index with pq_m={params['pq_m']}, which does not "
                         f"divide the new model's embedding size {dim}: build a new catalog for it")
    lock = WriterLock(os.path.join(catalog.directory, REINDEX_LOCK))
    if not lock.acquire(blocking=False):
        raise ValueError(f"catalog {catalog.directory}: another reindex is running ({REINDEX_LOCK} is held); wait "
                         "for it to finish or stop it")
    try:
        _ = catalog.model_epoch  # (refreshed: a switch by another process is adopted first)
        previous = {"model_run": catalog.model_run, "dim": catalog.dim}
        with catalog._state_lock:
            job = catalog.store.reindex_job()
            if job is None:
                catalog.store.start_reindex(key, dim, crop)
                job = catalog.store.reindex_job()
        if not same_model(job["model_run"], key) or job["crop"] != bool(crop) or job["dim"] != dim:
            raise ValueError(
                f"catalog {catalog.directory}: a reindex to model {job['model_run']} (dim {job['dim']}"
                f"{', crop' if job['crop'] else ''}) is under way ({job['staged']} item(s) staged): run it again "
                f"with that model{' and --crop' if job['crop'] else ''} to resume it, or abort it first "
                "(fashionlens catalog reindex CATALOG --abort)")
        resumed, failed = job["staged"], {}  # failed: item id -> why (this run)
        with catalog._state_lock:
            total = len(catalog.store.unstaged_ids())
        with tqdm(total=total, desc="catalog reindex", unit="img", disable=not progress) as bar:
            count = _stage_pending(catalog, predictor, dim, crop, skip_bad, batch_size, failed, bar)
            if switch:
                with catalog._write():  # adds wait from here: the items added since the last pass, then the switch
                    count += _stage_pending(catalog, predictor, dim, crop, skip_bad, batch_size, failed, bar)
                    removed, epoch = _switch(catalog, predictor, key, dim)
            else:
                removed, epoch = [], catalog.model_epoch
        return {"catalog": catalog.directory, "model_run": catalog.model_run if switch else key,
                "previous_model_run": previous["model_run"], "dim": dim, "previous_dim": previous["dim"],
                "switched": bool(switch), "epoch": epoch, "items": len(catalog), "reembedded": count,
                "resumed": resumed, "skipped": [f"{why}" for _, why in sorted(failed.items())],
                "removed": removed, "seconds": round(time.monotonic() - started, 3)}
    finally:
        lock.release()


def _stage_pending(catalog: Any, predictor: Predictor, dim: int, crop: bool, skip_bad: bool, batch_size: int,
                   failed: dict[int, str], bar: Any) -> int:
    """Embed and stage every ready item that has no new embedding yet (passes until none is left: items added
    meanwhile too), except those that failed in this run; returns how many were staged."""
    count = 0
    while True:
        with catalog._state_lock:
            todo = [int(i) for i in catalog.store.unstaged_ids() if int(i) not in failed]
        if not todo:
            return count
        if bar.n + len(todo) != bar.total:  # items added meanwhile
            bar.total = bar.n + len(todo)
            bar.refresh()
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            count += _stage_batch(catalog, predictor, dim, crop, skip_bad, part, failed)
            bar.update(len(part))


def _stage_batch(catalog: Any, predictor: Predictor, dim: int, crop: bool, skip_bad: bool, ids: list[int],
                 failed: dict[int, str]) -> int:
    """Read the stored images of ``ids``, embed them, stage the embeddings (one committed transaction).  A bad
    image raises (naming item and file) after the good ones are staged, unless ``skip_bad``: then it is recorded
    (``failed`` and the staging table) and the item left out."""
    with catalog._state_lock:
        names = catalog.store.stored_images(ids)
    good, images, errors = [], [], {}
    for item_id in ids:
        if item_id not in names:  # removed since it was listed
            continue
        if names[item_id] is None:
            errors[item_id] = (f"item {item_id}: stored without an image (added from an embedding), so it can not "
                               "be re-embedded")
            continue
        path = os.path.join(catalog.directory, IMAGES, names[item_id])
        try:
            images.append(load_image(path))
            good.append(item_id)
        except FileNotFoundError:
            errors[item_id] = f"item {item_id}: its stored image {path} is missing"
        except (ValueError, OSError) as exc:
            errors[item_id] = f"item {item_id}: its stored image can not be read: {exc}"
    vectors = np.asarray(predictor.embed(images, crop=crop), np.float32) if images else np.empty((0, dim), np.float32)
    if len(good) and vectors.shape != (len(good), dim):
        raise ValueError(f"the new model gave embeddings of shape {vectors.shape}, expected ({len(good)}, {dim})")
    with catalog._state_lock:
        catalog.store.stage_embeddings(good, vectors, errors if skip_bad else {})
    if errors and not skip_bad:
        first = next(iter(errors.values()))
        more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
        kind = FileNotFoundError if "missing" in first else ValueError
        raise kind(f"{first}{more}: restore it and run the reindex again (it resumes), or pass --skip-bad to leave "
                   "such items out (they are removed from the catalog at the switch)")
    failed.update(errors)
    return len(good)


def _switch(catalog: Any, predictor: Predictor, key: Any, dim: int) -> tuple[list[int], int]:
    """The switch (the caller holds the catalog's state and writer locks): saved index deleted, one transaction
    in the database, catalog.json rewritten, index rebuilt from the new embeddings; returns (removed ids, the
    new model epoch)."""
    cache = catalog._cache
    cache.discard()
    try:
        epoch, gone = catalog.store.switch_model(key, dim)
    except BaseException:  # nothing switched: the old model's index back from the database
        cache.rebuild()
        raise
    cache.follow_model()  # config (shared with the catalog): model_run, dim, model_epoch; an empty new index
    write_config(catalog.directory, catalog.config)
    catalog._predictor, catalog._predictor_epoch = predictor, epoch  # the catalog's model now
    cache.sync(persist=True)
    for _, name in gone:
        if name:
            unlink(os.path.join(catalog.directory, IMAGES, name))
    return [i for i, _ in gone], epoch


def abort_reindex(catalog: Any) -> dict[str, Any] | None:
    """Drop the staged re-embedding of ``catalog``: it is exactly as before the reindex started.  Returns the job
    dropped (see :func:`reindex_status`), None when there was none; ValueError while a reindex is running."""
    lock = WriterLock(os.path.join(catalog.directory, REINDEX_LOCK))
    if not lock.acquire(blocking=False):
        raise ValueError(f"catalog {catalog.directory}: a reindex is running ({REINDEX_LOCK} is held); stop it "
                         "before aborting")
    try:
        with catalog._state_lock:
            job = catalog.store.reindex_job()
            if job is not None:
                catalog.store.drop_reindex()
        return job
    finally:
        lock.release()


def reindex_status(catalog: Any) -> dict[str, Any] | None:
    """The reindex under way (staged, maybe interrupted): ``{"model_run", "dim", "crop", "started_at", "staged",
    "failed", "items"}``; None when there is none."""
    with catalog._state_lock:
        job = catalog.store.reindex_job()
        return None if job is None else {**job, "items": catalog.store.count()}


def write_config(directory: str, config: dict[str, Any]) -> None:
    """catalog.json (atomically, durably)."""
    atomic_write(os.path.join(directory, CONFIG), json.dumps(config, indent=2).encode())
    fsync_dir(directory)


def sync_config_file(directory: str, config: dict[str, Any]) -> bool:
    """Rewrite catalog.json when it lags the database's model (a crash after a switch's commit; the caller holds
    the writer lock and ``config`` has adopted the database's model).  Returns whether it was rewritten."""
    path = os.path.join(directory, CONFIG)
    on_disk = read_json_file(path, "catalog description")
    if isinstance(on_disk, dict) and int(on_disk.get("model_epoch", 0)) == int(config.get("model_epoch", 0)):
        return False
    write_config(directory, config)
    return True


__all__ = ["ModelChangedError", "abort_reindex", "reindex_status", "run_reindex"]
