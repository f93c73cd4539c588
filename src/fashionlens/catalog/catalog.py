"""Catalog: a directory of garment items — SQLite rows + a vector index + the stored images.

Layout of a catalog directory::

    catalog.json      format version, model run, embedding dim, index backend / kind / parameters (+ model_epoch
                      after a reindex switched the model)
    items.db          SQLite (WAL): table items(id, sku, title, category, category_path, attributes JSON,
                      image, source, created_at, updated_at, embedding BLOB float32, status, extra JSON);
                      table labels(item_id, category, category_path, attributes JSON, provenance, at, model): every
                      label an item got (predicted / given / confirmed / corrected), appended, the latest current;
                      table models(epoch, model, dim, at): the model switches (the source of truth over catalog.json);
                      while a reindex is under way reindex_job + embeddings_next(item_id, embedding, error)
    images/<id>.<ext> stored copies under names the catalog chooses (never the uploaded file name):
                      JPEG / PNG / WebP / GIF bytes as uploaded, other formats re-encoded as PNG
    vectors.index     the vector index (+ vectors.index.json); vectors.N.index after the N-th model switch;
                      milvus-lite keeps its data in vectors.milvus.db,
                      a Milvus server (``IndexConfig.uri``) in a collection named after the catalog's path
    writer.lock       fcntl lock file: one writer at a time
    reindex.lock      fcntl lock file: one reindex (re-embedding with a new model) at a time

Design:

* **The database is the source of truth** and holds every embedding; the vector index is a derived
  cache, saved after each write batch (``build`` commits the database per batch but saves the index
  every 30 s and at the end, so a large build does not rewrite the whole index per batch).
  ``Catalog.open`` reconciles the two: ids ready in the database but missing from the index are
  re-added from the stored embeddings, ids in the index but not in the database are removed, and rows
  stuck in ``'pending'`` (a process killed during ``add``) are rolled back together with their image
  files; image files no row refers to are deleted.  An unreadable index is rebuilt from the database.
* **Two-phase add**: rows are inserted as ``'pending'``, image files are written atomically (temp
  file + fsync + ``os.replace``), then one transaction flips the rows to ``'ready'``; only then is the
  index updated and ``add`` returns.  A process killed at any point therefore leaves a catalog whose
  database and index agree after ``open`` and in which every acknowledged item (``add`` returned) is
  present.  Bad input (missing, corrupt, truncated or non-image files, bad metadata) is rejected before
  anything is written: no row, no file, index unchanged.
* **Durability**: WAL journal with ``synchronous=FULL`` — an acknowledged add survives power loss
  too; the cost (one fsync per batch) is small next to the network forward of the batch.
* **Concurrency**: readers (other ``Catalog`` objects, threads or processes) keep searching while one
  writer adds: WAL readers see whole batches only, and before each search a reader compares the
  database's ``generation`` counter with its own and, if it changed, reloads the saved index and
  applies the difference from the database in memory.  Writers serialise on an ``fcntl`` file lock
  (the kernel releases it if the writer dies, which is also how ``open`` knows that pending rows are
  abandoned rather than in progress).  The Milvus backend (milvus-lite) allows one process per
  catalog.
* **IVF / IVF-PQ** indexes need training: the catalog trains them on the stored embeddings once
  ``min_train`` vectors exist (default ``256 * nlist``, FAISS's own k-means sample cap: 39 per cluster
  lost 15 points of recall@10 in the benchmark; ``39 * 256`` at least for PQ codebooks); until then
  searches are exact (a matrix product over the stored embeddings), so results are right from the
  first item.  ``reindex()`` retrains from scratch.  **HNSW** needs no training; removed items are
  tombstones until the graph is rebuilt (see ``index.faiss_index``).
* **Garment localisation** (``crop=True``): the predictor's box (original-image pixels) is used to
  crop the garment, with a margin, and the crop is embedded (:meth:`Predictor.analyse`).  A model
  without a box head (``model.use_bbox`` off) makes ``crop=True`` a ValueError before any image is read.
* **Device**: ``Catalog.open(directory, device="cuda")`` / ``build(..., device=...)`` load the catalog's
  model there (default: the CPU); a Predictor passed in runs where it was loaded.
* **Labels and people's answers**: each item's category + attributes carry a provenance — ``predicted`` (the
  model's answer), ``given`` (metadata or an edit, unreviewed), ``confirmed`` / ``corrected`` (a person's answer:
  ``add(..., label=)``, :meth:`Catalog.answer`) — with the time and the model run; the history is kept (rows
  appended in the transaction that changes the item) and ``item["label"]`` is the latest.
  :meth:`Catalog.review_queue` lists the unreviewed predictions by the model's margin, least sure first;
  :func:`fashionlens.catalog.manifest.export_manifest` writes the answers as a training manifest.
* **A new model** (:meth:`Catalog.reindex` with a model, :mod:`fashionlens.catalog.reindex`): every item is
  re-embedded into a staging table while the catalog serves the old model, then one transaction switches
  embeddings, ``model_run`` and ``dim`` (a new model epoch); other objects and processes adopt it on their next
  read (the generation counter), and a query or add embedded before a switch and used after it raises
  :class:`ModelChangedError` instead of comparing two models' vectors.
"""

from __future__ import annotations

import difflib

import dataclasses
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fashionlens.catalog.files import WriterLock, image_entry, sweep_images, unlink, write_images
from fashionlens.catalog.index_cache import IndexCache
from fashionlens.catalog.reindex import ModelChangedError, abort_reindex, reindex_status, run_reindex, sync_config_file
from fashionlens.catalog.words import Vocabulary, matches_all, rank, vocabulary_from_labels
from fashionlens.catalog.store import (
    ItemStore,
    build_jobs,
    first_label,
    label_choices,
    label_row,
    metadata_list,
    normalize_metadata,
)
from fashionlens.config import IndexConfig
from fashionlens.export import ModelSpec, load_predictor, model_key, model_label, same_model
from fashionlens.files import atomic_write, fsync_dir
from fashionlens.index import KINDS, VectorIndex, auto_index
from fashionlens.inference import DeviceLike, Predictor
from fashionlens.rerank import GeometricReranker, rerank_hits
from fashionlens.utils import read_json_file

FORMAT = "fashionlens-catalog"
FORMAT_VERSION = 1
CONFIG, DB, IMAGES, LOCK = "catalog.json", "items.db", "images", "writer.lock"
AUTO = "auto"  # search(category=AUTO): the query's predicted category, widened when unsure (auto_category)
ImageLike = Any  # PIL.Image.Image | str | os.PathLike


class Catalog:
    """Items with embeddings, searchable by image or vector.  Open with :meth:`create` / :meth:`open`."""

    def __init__(self, directory: str, config: dict[str, Any]):
        self.directory = os.path.abspath(directory)
        self.config = config  # dim and model_run live here (a reindex switch changes them: see model_epoch)
        os.makedirs(os.path.join(self.directory, IMAGES), exist_ok=True)
        self.store = ItemStore(os.path.join(self.directory, DB))
        self._writer_lock = WriterLock(os.path.join(self.directory, LOCK))  # one writing process at a time
        self._state_lock = threading.RLock()  # this object's threads: index, predictor and generation
        self._predictor: Predictor | None = None
        self._predictor_epoch = 0  # the model epoch _predictor was loaded for
        self.device: DeviceLike = None  # where the catalog's own model is loaded (None: the CPU)
        self._reranker: GeometricReranker | None = None
        self._cache = IndexCache(self.directory, config, self.store)  # the vector index, derived from the store

    @property
    def dim(self) -> int:
        """The embedding size of the catalog's model."""
        return int(self.config["dim"])

    @property
    def model_run(self) -> str | list[str] | None:
        """The model whose embeddings the catalog holds (a run's path; a list of them for an ensemble)."""
        return self.config.get("model_run")

    @property
    def model_epoch(self) -> int:
        """How many times a reindex switched the catalog's model, read from the database (another process's
        switch is adopted here: ``model_run``, ``dim`` and the index follow it).  Pass the epoch a query vector
        was embedded at to :meth:`search` (``model_epoch=``) to have a switch in between refused."""
        with self._state_lock:
            self._cache.refresh()
            return self._cache.epoch

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, *, dim: int, model_run: str | None = None,
               index: IndexConfig | None = None) -> "Catalog":
        """Make a new, empty catalog in ``directory`` (created; must not hold a catalog yet).

        ``dim`` is the embedding size; ``model_run`` the run directory whose model embeds images (kept so
        that ``search`` by image needs no model argument); ``index`` the vector index (default: exact flat
        search on FAISS; see :class:`~fashionlens.config.IndexConfig`)."""
        cfg = index or IndexConfig()
        backend, kind, nlist, nprobe, pq_m = cfg.backend, cfg.kind, cfg.nlist, cfg.nprobe, cfg.pq_m
        directory = os.path.abspath(directory)
        if os.path.exists(os.path.join(directory, CONFIG)):
            raise ValueError(f"{directory} already holds a catalog (open it instead)")
        if backend not in ("faiss", "milvus"):
            raise ValueError(f"unknown backend {backend!r}; choose faiss or milvus")
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)} "
                             "('auto' is resolved by build from the number of images)")
        if kind == "ivfpq" and (backend == "milvus" or pq_m < 1 or dim % pq_m):
            raise ValueError(f"ivfpq needs the faiss backend and pq_m dividing dim {dim} (pq_m={pq_m})")
        min_train = cfg.min_train
        if min_train < 0:
            # k-means on 256 vectors per cluster (FAISS's own sample cap): 39 per cluster cost 15 points of
            # recall@10 at nprobe 1 in benchmarks/bench_index.py's 100k catalog (0.810 vs 0.963)
            min_train = 0 if kind in ("flat", "hnsw") else max(256 * nlist, 39 * 256 if kind == "ivfpq" else 1)
        params = {"kind": kind, "nlist": int(nlist), "nprobe": int(nprobe), "pq_m": int(pq_m), "min_train": int(min_train)}
        if kind == "hnsw":
            params.update(hnsw_m=int(cfg.hnsw_m), ef_construction=int(cfg.ef_construction), ef_search=int(cfg.ef_search))
        if kind == "ivfsq":
            if cfg.sq_bits not in (0, 16, 8) or (backend == "milvus" and cfg.sq_bits == 16):
                raise ValueError(f"sq_bits={cfg.sq_bits}: ivfsq stores 16 (float16, faiss) or 8 bits per dimension")
            params["sq_bits"] = int(cfg.sq_bits or (8 if backend == "milvus" else 16))
        if cfg.refine and kind != "ivfpq":
            raise ValueError(f"refine (exact re-ranking of PQ candidates) applies to ivfpq, not {kind}")
        if kind == "ivfpq":
            params["refine"] = int(cfg.refine)
        if cfg.uri and backend != "milvus":
            raise ValueError(f"an index uri ({cfg.uri}) needs the milvus backend")
        if cfg.uri:  # a Milvus server holds the vectors; SQLite here stays the source of truth
            default = cfg.collection == IndexConfig.collection
            params.update(uri=cfg.uri, collection=_collection_for(directory) if default else cfg.collection)
        config = {"format": FORMAT, "version": FORMAT_VERSION, "dim": int(dim),
                  "model_run": model_key(model_run), "backend": backend,
                  "index": params}
        os.makedirs(os.path.join(directory, IMAGES), exist_ok=True)
        atomic_write(os.path.join(directory, CONFIG), json.dumps(config, indent=2).encode())
        fsync_dir(directory)
        return cls.open(directory)

    @classmethod
    def open(cls, directory: str, *, device: DeviceLike = None) -> "Catalog":
        """Open an existing catalog and reconcile its index with its database (see the module docstring).

        ``device``: where the catalog's model (:attr:`predictor`) runs when loaded (None: the CPU)."""
        path = os.path.join(directory, CONFIG)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no catalog in {directory} ({CONFIG} not found)")
        config = read_json_file(path, "catalog description")
        if not isinstance(config, dict) or config.get("format") != FORMAT or "dim" not in config:
            raise ValueError(f"{path}: not a fashionlens catalog description")
        if config.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: catalog format {config['version']} is newer than this fashionlens supports")
        catalog = cls(directory, config)
        catalog.device = device
        if catalog._writer_lock.acquire(blocking=False):  # no writer alive: repair what a crash may have left
            try:
                catalog._recover()
            finally:
                catalog._writer_lock.release()
        else:  # a writer is at work: its pending rows are in progress, not abandoned
            catalog._cache.refresh()
        return catalog

    def close(self) -> None:
        self._cache.close()
        self.store.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def predictor(self) -> "Predictor":
        """The catalog's model (``model_run``), loaded on first use on :attr:`device` (again after a reindex
        switched the model)."""
        epoch = self._cache.epoch
        if self._predictor is None or self._predictor_epoch != epoch:
            if not self.model_run:
                raise ValueError(f"catalog {self.directory} records no model run; pass a predictor")

            # a run directory, an exported .onnx (ONNX Runtime) or a list of them (an ensemble, in order)
            self._predictor = load_predictor(self.model_run, device=self.device)
            self._predictor_epoch = epoch
        return self._predictor

    # -- writes --------------------------------------------------------------------------------------
    def add(self, images: Sequence[ImageLike], metadata: Sequence[dict[str, Any]] | None = None,
            predictor: "Predictor | None" = None, *, crop: bool = False,
            answers: Sequence[dict[str, Any]] | None = None,
            label: str | Sequence[str | None] | None = None, model_epoch: int | None = None) -> list[int]:
        """Add items from images (PIL images, file paths, uint8 arrays or decoded :class:`ImageEntry`
        uploads); returns their new ids, in order.

        The predictor (default: the catalog's model) predicts category and attributes — unless an item's
        metadata gives them — and embeds the image (its garment crop with ``crop=True``).  ``answers``
        (one :meth:`Predictor.analyse` answer per image, e.g. from the server's batched forward) are used
        instead of running the model again.  Metadata keys ``sku``, ``title``, ``category``,
        ``category_path``, ``attributes`` (names), ``source`` fill the columns; other JSON values are kept
        in ``extra``.  Raises FileNotFoundError / ValueError naming the file for missing or unreadable
        images; nothing is written then.

        Every item starts with a label (see :meth:`answer`): ``label="confirmed"`` (a person agreed with the
        category / attributes stored: the metadata's, else the model's) or ``"corrected"`` (a person gave them:
        the metadata must hold a category or attributes), for every item or one (or None) per item; None:
        ``given`` when the metadata has a category, else ``predicted`` (the model's answer).

        ``model_epoch``: the catalog's :attr:`model_epoch` when the ``answers`` / ``predictor`` were chosen
        (default: when ``add`` starts); a reindex that switched the model since is a :class:`ModelChangedError`,
        nothing written (add them again: the catalog's model is the new one)."""
        return self._add_items(images, metadata, predictor, crop, save=True, answers=answers, label=label,
                               model_epoch=model_epoch)

    def _add_items(self, images: Sequence[ImageLike], metadata: Sequence[dict[str, Any]] | None,
                   predictor: "Predictor | None", crop: bool, save: bool,
                   answers: Sequence[dict[str, Any]] | None = None,
                   label: str | Sequence[str | None] | None = None, model_epoch: int | None = None) -> list[int]:
        epoch = self.model_epoch if model_epoch is None else model_epoch  # the model the embeddings come from
        self._check_model(epoch)
        records = [normalize_metadata(m, i) for i, m in enumerate(metadata_list(metadata, len(images)))]
        choices = label_choices(label, records)
        had_category = ["category" in r for r in records]  # before the model fills it in
        entries = [image_entry(img, i) for i, img in enumerate(images)]  # decodes: bad files fail here
        if answers is not None and len(answers) != len(entries):
            raise ValueError(f"got {len(answers)} answers for {len(entries)} images")
        if not entries:
            return []
        for rec, entry in zip(records, entries):
            rec.setdefault("source", entry.source)
        if answers is None:
            predictor = predictor or self.predictor
            if crop:
                predictor.require_box()  # no box head: an error, not whole-image embeddings
            answers = self._analyse(predictor, [e.image for e in entries], records, crop)
        vectors = self._apply_answers(predictor, records, answers)
        model = self._model_id(predictor)
        labels = [first_label(r, c, h, model) for r, c, h in zip(records, choices, had_category)]
        return self._commit(records, vectors, entries, save, labels, epoch)

    def add_embeddings(self, vectors: np.ndarray, metadata: Sequence[dict[str, Any]] | None = None,
                       images: Sequence[ImageLike] | None = None) -> list[int]:
        """Add items from pre-computed embeddings (N, dim) (L2-normalised here), with optional metadata
        and images to store; returns the new ids."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"embeddings must have shape (N, {self.dim}), got {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.isfinite(vectors).all() or (norms <= 1e-12).any():
            raise ValueError("embeddings must be finite and non-zero")
        records = [normalize_metadata(m, i) for i, m in enumerate(metadata_list(metadata, len(vectors)))]
        entries = None
        if images is not None:
            if len(images) != len(vectors):
                raise ValueError(f"{len(images)} images for {len(vectors)} embeddings")
            entries = [image_entry(img, i) for i, img in enumerate(images)]
            for rec, entry in zip(records, entries):
                rec.setdefault("source", entry.source)
        labels = [first_label(r, None, True, None) for r in records]  # no model here: a category is given
        return self._commit(records, vectors / norms, entries, True, labels) if len(vectors) else []

    def remove(self, ids: Sequence[int]) -> int:
        """Delete items (rows, image files, index entries); unknown ids are ignored.  Returns the count."""
        with self._write():
            gone = self.store.delete(ids)
            for _, name in gone:
                if name:
                    unlink(os.path.join(self.directory, IMAGES, name))
            if gone:
                self._cache.remove(np.array([i for i, _ in gone], np.int64))
                self._cache.save()
            return len(gone)

    def update(self, item_id: int, **fields: Any) -> dict[str, Any]:
        """Change an item's metadata (not its image or embedding; None clears a field; ``extra`` keys are
        merged); returns the updated item.  KeyError for an unknown id, ValueError for reserved fields.

        A new category or attributes are a ``given`` label (an edit, not a review: :meth:`answer` records
        a person's verdict)."""
        record = normalize_metadata(fields, 0, keep_none=True)
        with self._write():
            old = self.get(item_id)  # KeyError when unknown
            if record.get("category") and "category_path" not in record:
                record["category_path"] = self.store.category_path_of(record["category"])
            if "extra" in record:
                record["extra"] = {**old["extra"], **record["extra"]}
            label = None
            if "category" in record or "attributes" in record:
                label = label_row({**old, **record}, "given", None)
            if record:
                self.store.update(int(item_id), record, label)
        return self.get(item_id)

    def answer(self, item_id: int, verdict: str, *, category: str | None = None,
               attributes: Sequence[str] | str | None = None) -> dict[str, Any]:
        """Record a person's answer to an item's label; returns the updated item.

        ``verdict="yes"``: the stored category and attributes are right (a ``confirmed`` label; a category or
        attributes passed must be the stored ones).  ``"no"``: they are not, and ``category`` and / or
        ``attributes`` (names, or ``"a,b"``) are the right ones (a ``corrected`` label; the item's category,
        taxonomy path and attributes change, what is not given stays).  The label names the model whose
        answer was judged (the one of the item's previous label, else the catalog's ``model_run``).
        KeyError for an unknown id, ValueError (nothing written) for a bad verdict or fields."""
        if verdict not in ("yes", "no"):
            raise ValueError(f"verdict must be 'yes' (the label is right) or 'no' (with the right category / "
                             f"attributes), got {verdict!r}")
        given = _answer_fields(category, attributes)
        with self._write():
            old = self.get(item_id)  # KeyError when unknown
            previous = old.get("label") or {}
            model = previous.get("model") or self.model_run
            if verdict == "yes":
                if not old["category"] and not old["attributes"]:
                    raise ValueError(f"item {item_id} has no category or attributes to confirm: send verdict 'no' "
                                     "with the right ones")
                wrong = [k for k in ("category", "attributes") if k in given
                         and (given[k] != old[k] if k == "category" else set(given[k]) != set(old[k] or []))]
                if wrong:
                    raise ValueError(f"verdict 'yes' confirms the stored {' and '.join(wrong)} "
                                     f"({', '.join(repr(old[k]) for k in wrong)}): send verdict 'no' to correct them")
                self.store.update(int(item_id), {}, label_row(old, "confirmed", model))
                self.store.drop_suspect(int(item_id))  # a person looked at it: the audit's doubt is answered
                return self.get(item_id)
            if not given:
                raise ValueError("verdict 'no' needs the right category or attributes")
            record = dict(given)
            if "category" in record and record["category"] != old["category"]:
                record["category_path"] = self.store.category_path_of(record["category"])
            merged = {**old, **record}
            same_attributes = set(merged["attributes"] or []) == set(old["attributes"] or [])
            if merged["category"] == old["category"] and same_attributes:
                raise ValueError("verdict 'no' with the stored category and attributes corrects nothing: send the "
                                 "right ones, or verdict 'yes' to confirm them")
            self.store.update(int(item_id), record, label_row(merged, "corrected", model))
            self.store.drop_suspect(int(item_id))
        return self.get(item_id)

    def reindex(self, model: "Predictor | ModelSpec | None" = None, *, batch_size: int = 32, crop: bool = False,
                skip_bad: bool = False, switch: bool = True, progress: bool = True,
                device: DeviceLike = None) -> dict[str, Any] | None:
        """Without ``model``: rebuild the vector index from the stored embeddings (retrains IVF on the current
        items).

        With ``model`` (a Predictor loaded from a run, or a model spec: run directory, .onnx, a list of them, loaded
        on ``device``, default the catalog's): re-embed every item's stored image (its garment crop with ``crop``)
        with it while the catalog keeps serving the old model, ``batch_size`` items per committed batch, then switch
        to it atomically — embeddings, ``model_run``, ``dim`` (the new model's), catalog.json and the index
        (:mod:`fashionlens.catalog.reindex`).  An interrupted reindex resumes when run again with the same model;
        :meth:`abort_reindex` forgets it.  ``switch=False`` stages only.  A missing or unreadable stored image is
        an error naming the item, or with ``skip_bad`` reported in ``skipped`` and the item removed at the switch.

        Returns ``{"catalog", "model_run", "previous_model_run", "dim", "previous_dim", "switched", "epoch",
        "items", "reembedded" (this run), "resumed" (staged by an earlier run), "skipped" (messages), "removed"
        (ids), "seconds"}``."""
        if model is None:
            with self._write():
                self._cache.rebuild()
            return None
        return run_reindex(self, model, batch_size=batch_size, crop=crop, skip_bad=skip_bad, switch=switch,
                           progress=progress, device=device)

    def abort_reindex(self) -> dict[str, Any] | None:
        """Forget an unfinished reindex (its staged embeddings): the catalog is exactly as before it started.
        Returns the job dropped (:meth:`reindex_status`), None when there was none."""
        return abort_reindex(self)

    def reindex_status(self) -> dict[str, Any] | None:
        """The unfinished reindex (``model_run``, ``dim``, ``crop``, ``started_at``, ``staged``, ``failed``,
        ``items``), None when there is none."""
        return reindex_status(self)

    # -- reads ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._state_lock:
            return self.store.count()

    def get(self, item_id: int) -> dict[str, Any]:
        """One item as a dict (``item_id``, metadata columns, ``image`` = stored file path); KeyError if unknown."""
        with self._state_lock:
            row = self.store.rows([int(item_id)]).get(int(item_id))
        if row is None:
            raise KeyError(f"no item {item_id} in catalog {self.directory}")
        return self._public(row)

    def list(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Items ordered by id: ``limit`` of them starting at position ``offset``."""
        with self._state_lock:
            return [self._public(r) for r in self.store.page(offset, limit)]

    def labels(self, item_id: int) -> list[dict[str, Any]]:
        """An item's label history, oldest first (its ``label`` is the last); KeyError if unknown."""
        self.get(item_id)
        with self._state_lock:
            return self.store.label_history(int(item_id))

    def labelled(self, provenances: Sequence[str] = ("confirmed", "corrected")) -> list[dict[str, Any]]:
        """The items whose current label has one of ``provenances``, by id."""
        with self._state_lock:
            return [self._public(row) for row, _ in self.store.labelled(list(provenances))]

    def review_queue(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The items a person should look at first: those whose label is still the model's answer
        (``predicted``; items stored before labels existed count when their category is the stored
        prediction), least sure first — by ``margin``, the probability of the model's best category minus
        its second best (from ``extra.prediction.category_scores``).  Confirmed, corrected and given items
        are left out.  Each entry: ``item``, ``margin``, ``guesses`` (the stored top categories and scores)."""
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
        with self._state_lock:
            page = self.store.review_page(int(offset), int(limit))
        return [{"item": self._public(row), "margin": None if margin is None else round(margin, 5),
                 "guesses": list((row["extra"].get("prediction") or {}).get("category_scores") or []),
                 "reason": "suspect" if suspect else "unsure",
                 "suspect": None if not suspect else {
                     "score": round(float(suspect["p_given"]), 5), "model_category": suspect["suggested"],
                     "confidence": round(float(suspect["confidence"]), 5), "at": suspect["at"]}}
                for row, margin, suspect in page]

    def audit(self, *, labels: Sequence[str] = ("given", "predicted"), folds: int = 5,
              seed: int = 0) -> dict[str, Any]:
        """Audit the stored categories (confident learning on out-of-fold probabilities of a logistic regression on
        the items' stored embeddings, ``audit.label_audit``) and put the suspects into the review queue, first.

        ``labels``: the provenances audited (default: given and predicted; a person's answers are not questioned).
        Categories with fewer than ``folds`` audited items take no part (the folds need one of each).  Replaces
        the previous audit's suspects; a person's answer to an item removes it.  Returns the audit's summary with
        ``suspects`` (the flagged items, most certainly wrong first)."""
        from fashionlens.audit.label_audit import audit_labels  # lazy: scikit-learn only when auditing

        wanted = set(labels)
        if not wanted or wanted - {"predicted", "given", "confirmed", "corrected"}:
            raise ValueError(f"labels must be some of predicted, given, confirmed, corrected; got {sorted(labels)}")
        with self._write():
            ids = self.store.ready_ids()
            current = self.store.latest_labels([int(i) for i in ids])
            rows = self.store.rows([int(i) for i in ids])
            chosen = [int(i) for i in ids if rows.get(int(i), {}).get("category")
                      and (current.get(int(i)) or {}).get("provenance", "given") in wanted]
            counts: dict[str, int] = {}
            for i in chosen:
                counts[rows[i]["category"]] = counts.get(rows[i]["category"], 0) + 1
            names = sorted(c for c, n in counts.items() if n >= folds)
            chosen = [i for i in chosen if rows[i]["category"] in names]
            if len(names) < 2:
                raise ValueError(f"the audit needs at least two categories with {folds} or more items of labels "
                                 f"{', '.join(sorted(wanted))}; this catalog has {counts or 'none'}")
            vectors = {}
            for part_ids, part in self.store.embeddings(chosen):
                vectors.update(zip(part_ids.tolist(), part))
            x = np.stack([vectors[i] for i in chosen])
            y = np.array([names.index(rows[i]["category"]) for i in chosen])
            result = audit_labels(x, y, folds=folds, seed=seed, class_names=names, compare_cleanlab=False)
            suspects = [{"item_id": chosen[r["index"]], "category": r["given"], "suggested": r["suggested"],
                         "confidence": r["confidence"], "p_given": r["p_given"]} for r in result.suspects]
            self.store.replace_suspects(suspects)
        summary = result.summary()
        return {**summary, "audited": len(chosen), "categories": names, "labels": sorted(wanted),
                "suspects": suspects}

    def review_count(self) -> int:
        """How many items :meth:`review_queue` holds in all."""
        with self._state_lock:
            return self.store.review_count()

    def ids(self) -> np.ndarray:
        """Ids of every item, (N,) int64 ascending."""
        with self._state_lock:
            return self.store.ready_ids()

    def index_ids(self) -> np.ndarray:
        """Ids held by the vector index (after bringing it up to date), (N,) int64 ascending."""
        with self._state_lock:
            self._cache.refresh()
            return np.sort(np.asarray(self._cache.index.ids(), np.int64))

    def search(self, query: ImageLike | np.ndarray, k: int = 10, *, category: str | None = None,
               attribute: str | None = None, crop: bool = False, predictor: "Predictor | None" = None,
               nprobe: int | None = None, rerank: int = 0, image: ImageLike | None = None,
               group_sku: bool = False, model_epoch: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` items most similar to an image (PIL / path) or an embedding (dim,), best first.

        ``category`` keeps items whose category name, taxonomy path or path prefix (``"upper"``) matches;
        ``attribute`` items with that attribute.  Each result: item_id, score (cosine similarity),
        category, category_path, attributes, image (stored file path), source, sku, title, extra.

        ``rerank`` > 0: the top ``max(k, rerank)`` by embedding are re-ranked by geometric verification of
        local features (:mod:`fashionlens.rerank`; near-duplicates first) and each result also gets
        ``inliers`` and ``verified``; it needs the query image (``query`` itself, or ``image`` when
        ``query`` is an embedding).

        ``category="auto"``: the query's predicted category, widened when the model is unsure or too few
        items remain (:meth:`auto_category`).

        ``group_sku``: one result per SKU (its best-ranked item; items without a SKU stand alone), each with
        ``same_sku``: the ids of that SKU's other items among the candidates (4k searched).

        ``model_epoch``: the catalog's :attr:`model_epoch` when an embedding ``query`` was made (an image query is
        embedded here, at the current one); a reindex that switched the model since is a
        :class:`ModelChangedError`: a query is never compared with another model's vectors."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise ValueError(f"rerank must be an integer >= 0 (candidates to verify), got {rerank!r}")
        if model_epoch is not None or not isinstance(query, np.ndarray):
            current = self.model_epoch  # (refreshed: a switch in another process is adopted before anything)
            model_epoch = current if model_epoch is None else model_epoch
            self._check_model(model_epoch)
        if crop and not isinstance(query, np.ndarray):  # an embedding query is not cropped: nothing to check
            (predictor or self.predictor).require_box()
        picture = None  # the decoded query image, where one is needed (re-ranking, category "auto")
        if rerank or category == AUTO:
            source = query if image is None else image
            if isinstance(source, np.ndarray):
                raise ValueError('rerank and category="auto" need the query image: pass image= with an '
                                 'embedding query')
            picture = source if isinstance(source, Image.Image) else image_entry(source, 0, keep_bytes=False).image
            query = query if isinstance(query, np.ndarray) else picture  # decoded once
        if category == AUTO:
            predictor = predictor or self.predictor
            answer = predictor.analyse([picture], crop=crop)[0]
            category = self.auto_category(answer, int(k), predictor=predictor)["category"]
            query = query if isinstance(query, np.ndarray) else answer["embedding"]
        vector = self._query_vector(query, crop, predictor)
        with self._state_lock, self.store.snapshot():  # one database state: index, vectors, rows
            self._cache.refresh()
            self._check_model(model_epoch, vector)  # the model switched while the query was embedded: refused
            allowed = None
            if category is not None or attribute is not None:
                allowed = self.store.filter_ids(category, attribute)
                if not len(allowed):
                    return []
            found = self._nearest(vector, max(int(k) * (4 if group_sku else 1), int(rerank)), allowed, nprobe)
        return self._finish(found, int(k), picture if rerank else None, group_sku)

    def auto_category(self, answer: dict[str, Any], k: int = 10, target_accuracy: float = 0.9,
                      predictor: "Predictor | None" = None) -> dict[str, Any]:
        """The filter ``search(category="auto")`` uses for a query the model answered (``answer``: one
        :meth:`Predictor.analyse` answer, with ``"probabilities"``): the query's predicted category when the
        model is sure of it, widened up its taxonomy path when it is not, and to the whole catalog when
        fewer than ``k`` items remain.

        "Sure" is the hedged answer at ``target_accuracy`` when the run is calibrated (the DARTS node of
        ``fashionlens calibrate``), else the most specific node whose categories' summed probability
        reaches it.  Returns ``{"category": filter or None (everything), "probability", "items",
        "hedged"}``."""
        predictor = predictor or self.predictor
        probs = np.asarray(answer["probabilities"], np.float64)
        chain = scope_chain(probs, predictor.categories, predictor.paths)
        start, hedged = next((i for i, (_, p) in enumerate(chain) if p >= target_accuracy), len(chain) - 1), False
        try:
            node = predictor.hedge(probs, target_accuracy)
            names = [f for f, _ in chain]
            wanted = node["name"] if node["name"] in names else ".".join(node["path"])
            if wanted in names:
                start, hedged = names.index(wanted), True
        except (FileNotFoundError, ValueError):  # not calibrated (for this target): summed probabilities
            pass
        with self._state_lock:
            for where, p in chain[start:]:
                count = len(self.store.filter_ids(where)) if where is not None else len(self.store.ready_ids())
                if where is None or count >= k:
                    return {"category": where, "probability": round(float(p), 5), "items": int(count),
                            "hedged": hedged}
        raise AssertionError("unreachable: the chain ends with the whole catalog")

    @property
    def index(self) -> VectorIndex:
        """The live vector index (derived from the database; see :mod:`fashionlens.catalog.index_cache`)."""
        return self._cache.index

    @property
    def reranker(self) -> GeometricReranker:
        """The geometric re-ranker of ``search(rerank=...)`` (its keypoint cache lives with the catalog)."""
        with self._state_lock:
            if self._reranker is None:
                self._reranker = GeometricReranker()
            return self._reranker

    # -- words (catalog/words.py) -------------------------------------------------------------------
    def vocabulary(self, predictor: "Predictor | None" = None) -> Vocabulary:
        """The labels a words query can name: the model's (``predictor``, else the catalog's model when it is
        loaded: categories, taxonomy, attributes with their groups), the stored taxonomy and what items store.
        Never loads a model."""
        labels = getattr(predictor or self._predictor, "labels", None) or {}
        with self._state_lock:
            categories, attributes = self.store.known_labels()
        key = (*(tuple(labels.get(k) or ()) for k in ("categories", "category_paths", "attributes", "attribute_groups")),
               tuple(sorted((labels.get("group_names") or {}).items())), tuple(categories), tuple(attributes))
        cached = getattr(self, "_words_vocabulary", None)  # (key, Vocabulary): rebuilt when the labels change
        if cached is None or cached[0] != key:
            cached = (key, vocabulary_from_labels(labels, categories, attributes))
            self._words_vocabulary = cached
        return cached[1]

    def find_words(self, text: str, offset: int = 0, limit: int = 50, *, sku: str | None = None,
                   predictor: "Predictor | None" = None) -> dict[str, Any]:
        """Items for a words query such as ``"red striped dress"``, best first
        (:func:`fashionlens.catalog.words.rank`: the items whose stored labels match most terms, then by the
        stored predictions' log-probabilities of the terms).

        Returns ``{"query": what was understood (matched / unknown / ignored words, suggestions),
        "items": the ``limit`` items from position ``offset``, each with ``match`` (exact, matched_terms,
        terms, log_probability), "total": items ranked}``; ``sku`` keeps that SKU's items only."""
        vocabulary = self.vocabulary(predictor)
        parsed = vocabulary.parse(text)
        terms = parsed.terms
        with self._state_lock:
            ids = self.store.sku_ids(sku) if sku is not None else None
            rows = self.store.label_rows(ids) if terms and (ids is None or len(ids)) else []
        ranked = rank(rows, terms, vocabulary)
        page = ranked[int(offset):int(offset) + int(limit)]
        with self._state_lock:
            full = self.store.rows([r.item_id for r in page])
        items = [{**self._public(full[r.item_id]), "match": r.as_dict()} for r in page if r.item_id in full]
        return {"query": parsed.as_dict(), "items": items, "total": len(ranked)}

    def list_sku(self, sku: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """The items with exactly this SKU, by id: ``{"items": limit of them from position offset, "total"}``."""
        with self._state_lock:
            ids = [int(i) for i in self.store.sku_ids(sku)]
            page = ids[int(offset):int(offset) + int(limit)]
            rows = self.store.rows(page)
        return {"items": [self._public(rows[i]) for i in page if i in rows], "total": len(ids)}

    def search_words(self, query: np.ndarray, k: int, text: str, *, category: str | None = None,
                     attribute: str | None = None, predictor: "Predictor | None" = None, nprobe: int | None = None,
                     rerank: int = 0, image: ImageLike | None = None, group_sku: bool = False,
                     model_epoch: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """:meth:`search` by an embedding ``query``, among the items whose stored labels match every term of
        the words ``text`` (:func:`fashionlens.catalog.words.matches_all`) and the ``category`` / ``attribute``
        filters: (what was understood of the words, the hits).  Words that name no label leave no term, and then
        no item matches.  ``rerank`` needs the query ``image``; ``model_epoch`` as in :meth:`search`."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if rerank and image is None:
            raise ValueError("rerank needs the query image: pass image=")
        if model_epoch is not None and model_epoch != self.model_epoch:  # (refreshed: a switch elsewhere adopted)
            self._check_model(model_epoch)
        parsed = self.vocabulary(predictor).parse(text)
        vector = self._query_vector(np.asarray(query, np.float32), False, predictor)
        with self._state_lock, self.store.snapshot():  # one database state: index, vectors, rows
            self._cache.refresh()
            self._check_model(model_epoch, vector)
            rows = self.store.label_rows() if parsed.terms else []
            allowed = np.array([r["item_id"] for r in rows if matches_all(r, parsed.terms)], np.int64)
            if len(allowed) and (category is not None or attribute is not None):
                allowed = np.intersect1d(allowed, self.store.filter_ids(category, attribute))
            if not len(allowed):
                return parsed.as_dict(), []
            found = self._nearest(vector, max(int(k) * (4 if group_sku else 1), int(rerank)), allowed, nprobe)
        picture = None
        if rerank:
            picture = image if isinstance(image, Image.Image) else image_entry(image, 0, keep_bytes=False).image
        return parsed.as_dict(), self._finish(found, int(k), picture, group_sku)

    def filter_hint(self, category: str | None = None, attribute: str | None = None) -> dict[str, Any] | None:
        """Why a ``category`` / ``attribute`` filter matches no stored item, with close names the catalog knows
        (None when it matches some): ``{"category": name, "known": bool, "suggestions": [...]}`` and / or the
        same for ``"attribute"``.  "known" = the model or an item has that label, but no item stored has it now."""
        with self._state_lock:
            if not len(self.store.filter_ids(category, attribute)):
                categories, attributes = self.store.known_labels()
            else:
                return None
        labels = getattr(self._predictor, "labels", None) or {}
        names = {c for c, _ in categories} | set(labels.get("categories") or [])
        for _, path in categories:  # every taxonomy node is a valid filter too ("upper", "upper.tops")
            parts = str(path or "").split(".")
            names |= {".".join(parts[: i + 1]) for i in range(len(parts)) if path}
        attrs = set(attributes) | set(labels.get("attributes") or [])
        hint: dict[str, Any] = {}
        for field, wanted, pool in (("category", category, names), ("attribute", attribute, attrs)):
            if wanted is not None:
                close = difflib.get_close_matches(wanted, sorted(pool), n=5, cutoff=0.5)
                folded = [n for n in sorted(pool) if n.lower() == wanted.lower() and n != wanted]
                hint[field] = {"name": wanted, "known": wanted in pool,
                               "suggestions": list(dict.fromkeys(folded + close))}
        return hint

    def _nearest(self, vector: np.ndarray, wanted: int, allowed: np.ndarray | None,
                 nprobe: int | None) -> list[dict[str, Any]]:
        """The ``wanted`` stored items nearest ``vector`` among ``allowed`` ids (None: all), as result dicts;
        the caller holds the state lock and a database snapshot (index, vectors and rows of one state)."""
        if self._cache.index.is_trained:
            scores, ids = self._cache.index.search(vector[None], wanted, allowed_ids=allowed, nprobe=nprobe)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        else:
            hits = self._exact_search(vector, wanted, allowed)
        rows = self.store.rows([i for i, _ in hits])
        return [{"item_id": i, "score": s, **_result_fields(self._public(rows[i]))} for i, s in hits if i in rows]

    def _finish(self, found: list[dict[str, Any]], k: int, picture: Image.Image | None,
                group_sku: bool) -> list[dict[str, Any]]:
        """Re-ranked by geometric verification against ``picture`` (when given), one per SKU, the first ``k``."""
        if picture is not None:
            found = rerank_hits(self.reranker, picture, found)
        if group_sku:
            found = group_by_sku(found)
        return found[:k]

    # -- internals: analysis -------------------------------------------------------------------------
    def _analyse(self, predictor: "Predictor", images: list[Image.Image], records: list[dict[str, Any]],
                 crop: bool) -> list[dict[str, Any]]:
        """One answer per image with at least ``"embedding"``: the full :meth:`Predictor.analyse` answer when
        a record lacks its category or attributes (or ``crop``), else the embedding alone (cheaper)."""
        need = crop or any("category" not in r or "attributes" not in r for r in records)
        answers: list[dict[str, Any]] = []
        for start in range(0, len(images), 32):
            part = images[start:start + 32]
            if need:  # one call gives the predictions and the embedding (of the garment crop with crop=True)
                answers += predictor.analyse(part, crop=crop)
            else:
                answers += [{"embedding": v} for v in predictor.embed(part)]
        return answers

    def _apply_answers(self, predictor: "Predictor | None", records: list[dict[str, Any]],
                       answers: Sequence[dict[str, Any]]) -> np.ndarray:
        """Fill predicted category/attributes into ``records`` (where absent); return the (N, dim) embeddings."""
        if predictor is not None:
            with self._state_lock:
                self.store.remember_paths(list(getattr(predictor, "categories", [])),
                                          list(getattr(predictor, "paths", [])))
        for rec, answer in zip(records, answers):
            if answer.keys() - {"embedding"}:  # a prediction, not just an embedding
                _apply_prediction(rec, answer)
            if rec.get("category") and "category_path" not in rec:
                with self._state_lock:
                    rec["category_path"] = self.store.category_path_of(rec["category"])
        out = np.stack([np.asarray(a["embedding"], np.float32).reshape(-1) for a in answers])
        if out.shape[1] != self.dim:
            raise ValueError(f"the model embeds into {out.shape[1]} dimensions but catalog {self.directory} "
                             f"holds {self.dim}-dimensional embeddings (built with another model?)")
        return out

    def _query_vector(self, query: Any, crop: bool, predictor: "Predictor | None") -> np.ndarray:
        if isinstance(query, np.ndarray):
            v = np.asarray(query, np.float32).reshape(-1)
            if v.size != self.dim or not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
                raise ValueError(f"query embedding must be {self.dim} finite values, not all zero")
            return v / np.linalg.norm(v)
        image = query if isinstance(query, Image.Image) else image_entry(query, 0, keep_bytes=False).image
        return (predictor or self.predictor).embed([image], crop=crop)[0].astype(np.float32)

    def _exact_search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """Brute force over the stored embeddings (used while an IVF index awaits training)."""
        best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
        for ids, vecs in self.store.embeddings(None if allowed is None else allowed):
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, vecs @ vector])
            if len(best_ids) > k:
                keep = np.argpartition(-best_scores, k)[:k]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        order = np.lexsort((best_ids, -best_scores))[:k]
        return [(int(best_ids[j]), float(best_scores[j])) for j in order]

    def _check_model(self, epoch: int | None, vector: np.ndarray | None = None) -> None:
        """ModelChangedError when a reindex switched the catalog's model since ``epoch`` (the model epoch a query
        or items were embedded at; None: unknown, not checked) or ``vector`` does not fit the catalog's model (the
        caller holds the state lock, after a refresh)."""
        if (epoch is not None and epoch != self._cache.epoch) or (vector is not None and vector.size != self.dim):
            raise ModelChangedError(f"catalog {self.directory} switched to model {model_label(self.model_run)} "
                                    f"({self.dim}-dimensional embeddings, reindex) after these embeddings were "
                                    "made: embed them again with the catalog's model")

    def _model_id(self, predictor: "Predictor | None") -> str | list[str] | None:
        """The model a new label names: the predictor's run (absolute path; a list of them for an ensemble), else
        the catalog's ``model_run``."""
        run = getattr(predictor, "run", None)
        return (model_key(run) if run else None) or self.model_run

    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored row as the library returns it: ``item_id`` (the key search results use too), the image's
        full path."""
        out = dict(row)
        out["item_id"] = out.pop("id")
        if out.get("image"):
            out["image"] = os.path.join(self.directory, IMAGES, out["image"])
        return out

    # -- internals: writing --------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        """Thread lock + inter-process writer lock, with the in-memory index brought up to date."""
        with self._state_lock:
            self._writer_lock.acquire()
            try:
                self._cache.refresh()
                yield
                self._cache.generation = self.store.generation()
            finally:
                self._writer_lock.release()

    def _commit(self, records: list[dict[str, Any]], vectors: np.ndarray, entries: list | None,
                save: bool, labels: Sequence[dict[str, Any] | None] | None = None,
                epoch: int | None = None) -> list[int]:
        """Two-phase insert (pending rows + their first labels, image files, ready) then the index; returns
        the new ids.  ``epoch``: the model epoch the vectors were embedded at (a switch since: refused)."""
        with self._write():
            self._check_model(epoch)
            ids = self.store.insert_pending(records, vectors, labels)
            try:
                names = (write_images(os.path.join(self.directory, IMAGES), ids, entries)
                         if entries is not None else [None] * len(ids))
                self.store.mark_ready(ids, names)
            except BaseException:  # undo: nothing half-written (KeyboardInterrupt included)
                self.store.delete(ids)
                sweep_images(os.path.join(self.directory, IMAGES), self.store.image_names())
                raise
            self._cache.add(np.asarray(ids, np.int64), vectors)
            if save:
                self._cache.save()
            return ids

    def _recover(self) -> None:
        """After a crash (called holding the writer lock): roll back pending rows, delete orphan image
        files, and bring the index in line with the database, saving it."""
        with self._state_lock:
            self._cache.follow_model()  # a reindex switched the model since this object was made
            sync_config_file(self.directory, self.config)  # catalog.json behind the database's model: a crash
            pending = self.store.pending()
            if pending:
                self.store.delete([i for i, _ in pending])
            sweep_images(os.path.join(self.directory, IMAGES), self.store.image_names())
            self._cache.sync(persist=True)
            self._cache.generation = self.store.generation()


# -- garment localisation --------------------------------------------------------------------------------
def _collection_for(directory: str) -> str:
    """The Milvus collection of the catalog at ``directory`` on a shared server: named after its absolute path."""
    return "fashionlens_" + hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:16]


# -- building from a data set or a folder --------------------------------------------------------------
def build(directory: str, predictor: "Predictor | ModelSpec", source: Any, *, split: str | None = None,
          model_run: ModelSpec | None = None, batch_size: int = 32, progress: bool = True, crop: bool = False,
          index: IndexConfig | None = None, skip_bad: bool = False, device: DeviceLike = None) -> dict[str, Any]:
    """Embed a data set into the catalog at ``directory`` (created when absent), ``batch_size`` images per
    committed batch, with a progress bar.

    ``source`` is a data spec (``garments:DIR``, ``folder:DIR``, ...; ``split`` keeps some splits,
    comma-separated), a ``SampleSet``, or a folder of image files (searched recursively).  Data-set
    labels (category, attributes, item id as ``sku``) are stored where the data set has them, model
    predictions otherwise.  ``predictor`` is a Predictor or a model spec (a run directory, an exported .onnx,
    or a list of them: an ensemble; then it is also the catalog's ``model_run``, loaded on ``device``: default
    the CPU).  ``crop`` with a model without a box
    head is a ValueError before anything is done.  An interrupted build resumes: sources already stored
    are skipped.  A bad image stops the build (its batch is not written) unless ``skip_bad``, which
    reports and skips it.

    Returns a summary: catalog, added, already_present, bad (list of "file: error"), items."""
    if isinstance(predictor, (str, os.PathLike, list, tuple)):
        model_run = model_key(predictor)
        predictor = load_predictor(predictor, device=device)
    if crop:  # before the catalog is created or any image read
        predictor.require_box()
    jobs = build_jobs(source, split)
    if index is not None and index.kind == "auto":  # chosen by the number of images (a new catalog only)
        index = dataclasses.replace(index, **auto_index(len(jobs)))
    catalog = _open_for_build(directory, predictor, model_run, index)

    try:
        done = catalog.store.stored_sources([src for src, _, _ in jobs])
        todo = [j for j in dict((j[0], j) for j in jobs).values() if j[0] not in done]  # resume: skip stored
        added, bad, last_save = 0, [], time.monotonic()
        with tqdm(total=len(todo), desc="catalog build", unit="img", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                save = time.monotonic() - last_save > 30  # the index is a cache: saved every 30 s and at the end
                added += _build_batch(catalog, predictor, todo[start:start + batch_size], crop, skip_bad, bad, save)
                last_save = time.monotonic() if save else last_save
                bar.update(len(todo[start:start + batch_size]))
        with catalog._write():
            catalog._cache.save()
        return {"catalog": catalog.directory, "added": added, "already_present": len(done), "bad": bad,
                "items": len(catalog), "index": catalog.config["index"]["kind"]}
    finally:
        catalog.close()


def _build_batch(catalog: Catalog, predictor: "Predictor", batch: list, crop: bool, skip_bad: bool,
                 bad: list[str], save: bool) -> int:
    """Add one batch of (source, image, metadata) jobs; with ``skip_bad`` a failing batch is retried one
    image at a time and the bad images are recorded in ``bad``.  Returns the number added."""
    try:
        return len(catalog._add_items([j[1] for j in batch], [j[2] for j in batch], predictor, crop, save))
    except (ValueError, FileNotFoundError):
        if not skip_bad:
            raise
    count = 0
    for _, image, meta in batch:
        try:
            count += len(catalog._add_items([image], [meta], predictor, crop, save))
        except (ValueError, FileNotFoundError) as exc:
            bad.append(str(exc))
    return count


def _open_for_build(directory: str, predictor: "Predictor", model_run: str | None,
                    index: IndexConfig | None) -> Catalog:
    """The catalog at ``directory`` (checked to use ``model_run``), or a new one for the predictor's embeddings."""
    if os.path.exists(os.path.join(directory, CONFIG)):
        catalog = Catalog.open(directory)
        known = catalog.model_run
        if not same_model(known, model_run):
            catalog.close()
            raise ValueError(f"catalog {directory} was built with model {_models_text(known)}, not "
                             f"{_models_text(model_run)}: its embeddings would not be comparable "
                             f"({_reorder_hint(known, model_run)}use a new catalog)")
        return catalog
    dim = predictor.embedding_dim
    return Catalog.create(directory, dim=dim, model_run=model_run, index=index)


def _models_text(model: ModelSpec | None) -> str:
    """A recorded model for a message: the path, or an ensemble's paths joined by `` + `` (in order)."""
    if model is None:
        return "no model"
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else " + ".join(map(os.fspath, model))


def _reorder_hint(known: ModelSpec | None, given: ModelSpec | None) -> str:
    """For two specs naming the same ensemble members in another order, the sentence saying the order matters."""
    listed = [m for m in (known, given) if m is not None and not isinstance(m, (str, os.PathLike))]
    if len(listed) == 2 and sorted(map(os.path.realpath, listed[0])) == sorted(map(os.path.realpath, listed[1])):
        return ("the same models in another order: an ensemble's embeddings are concatenated in order; give them "
                f"as --model {' --model '.join(map(os.fspath, listed[0]))}, or ")
    return ""


def scope_chain(probabilities: np.ndarray, categories: Sequence[str],
                paths: Sequence[str]) -> list[tuple[str | None, float]]:
    """From the most likely category up to the whole catalog: ``[(filter, probability), ...]`` — the
    category's name, then every prefix of its dotted taxonomy path (longest first; the probability summed
    over the categories under it), then ``(None, 1.0)``."""
    best = int(np.argmax(probabilities))
    chain: list[tuple[str | None, float]] = [(categories[best], float(probabilities[best]))]
    if paths and len(paths) == len(categories):
        parts = paths[best].split(".")
        for depth in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:depth])
            under = [j for j, p in enumerate(paths) if p == prefix or p.startswith(prefix + ".")]
            chain.append((prefix, float(np.sum(probabilities[under]))))
    chain.append((None, 1.0))
    return chain


def group_by_sku(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked hits -> the best-ranked hit of every SKU, in rank order, each with ``same_sku`` (the other
    item ids of its SKU, in rank order); hits without a SKU are kept as they are (``same_sku`` empty)."""
    out: list[dict[str, Any]] = []
    first: dict[str, dict[str, Any]] = {}
    for hit in hits:
        sku = hit.get("sku")
        if sku and sku in first:
            first[sku]["same_sku"].append(hit["item_id"])
            continue
        hit = {**hit, "same_sku": []}
        if sku:
            first[sku] = hit
        out.append(hit)
    return out


def _apply_prediction(record: dict[str, Any], answer: dict[str, Any]) -> None:
    """Fill category / path / attributes the caller did not give from the model's answer."""
    if "category" not in record and answer.get("category") is not None:
        record["category"] = answer["category"]
        if answer.get("category_path"):
            record.setdefault("category_path", answer["category_path"])
    if "attributes" not in record:
        record["attributes"] = [a["name"] for a in answer.get("attributes") or []]
    record.setdefault("extra", {})["prediction"] = {
        "category": answer.get("category"), "category_scores": answer.get("category_scores"),
        "attributes": [{"name": a["name"], "score": a["score"]} for a in answer.get("attributes") or []],
        "bbox": answer.get("bbox")}


def _answer_fields(category: Any, attributes: Any) -> dict[str, Any]:
    """The category / attributes of :meth:`Catalog.answer`, checked (ValueError naming the field)."""
    out: dict[str, Any] = {}
    if category is not None:
        if not isinstance(category, str) or not category.strip():
            raise ValueError(f"category must be a non-blank name, got {category!r}")
        out["category"] = category.strip()
    if attributes is not None:
        if isinstance(attributes, str):
            attributes = [a for a in attributes.split(",")]
        if not isinstance(attributes, (list, tuple)) or not all(isinstance(a, str) for a in attributes):
            raise ValueError(f"attributes must be a list of names or 'a,b,c', got {attributes!r}")
        out["attributes"] = list(dict.fromkeys(a.strip() for a in attributes if a.strip()))
    return out


def _result_fields(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("category", "category_path", "attributes", "image", "source", "sku", "title", "extra")
    return {k: item.get(k) for k in keys}


__all__ = ["Catalog", "ModelChangedError", "build"]
