"""Catalog: a directory of garment items — SQLite rows + a vector index + the stored images.

Layout of a catalog directory::

    catalog.json      format version, model run, embedding dim, index backend / kind / parameters
    items.db          SQLite (WAL): table items(id, sku, title, category, category_path, attributes JSON,
                      image, source, created_at, updated_at, embedding BLOB float32, status, extra JSON)
    images/<id>.<ext> stored copies under names the catalog chooses (never the uploaded file name):
                      JPEG / PNG / WebP / GIF bytes as uploaded, other formats re-encoded as PNG
    vectors.index     the vector index (+ vectors.index.json); milvus-lite keeps its data in vectors.milvus.db,
                      a Milvus server (``IndexConfig.uri``) in a collection named after the catalog's path
    writer.lock       fcntl lock file: one writer at a time

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
"""

from __future__ import annotations

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
from fashionlens.catalog.store import ItemStore, build_jobs, metadata_list, normalize_metadata
from fashionlens.config import IndexConfig
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
        self.config = config
        self.dim = int(config["dim"])
        self.model_run: str | None = config.get("model_run")
        os.makedirs(os.path.join(self.directory, IMAGES), exist_ok=True)
        self.store = ItemStore(os.path.join(self.directory, DB))
        self._writer_lock = WriterLock(os.path.join(self.directory, LOCK))  # one writing process at a time
        self._state_lock = threading.RLock()  # this object's threads: index, predictor and generation
        self._predictor: Predictor | None = None
        self.device: DeviceLike = None  # where the catalog's own model is loaded (None: the CPU)
        self._reranker: GeometricReranker | None = None
        self._cache = IndexCache(self.directory, config, self.store)  # the vector index, derived from the store

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
                  "model_run": os.path.abspath(model_run) if model_run else None, "backend": backend,
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
        """The catalog's model (``model_run``), loaded on first use on :attr:`device`."""
        if self._predictor is None:
            if not self.model_run:
                raise ValueError(f"catalog {self.directory} records no model run; pass a predictor")

            self._predictor = Predictor.load(self.model_run, device=self.device)
        return self._predictor

    # -- writes --------------------------------------------------------------------------------------
    def add(self, images: Sequence[ImageLike], metadata: Sequence[dict[str, Any]] | None = None,
            predictor: "Predictor | None" = None, *, crop: bool = False,
            answers: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """Add items from images (PIL images, file paths, uint8 arrays or decoded :class:`ImageEntry`
        uploads); returns their new ids, in order.

        The predictor (default: the catalog's model) predicts category and attributes — unless an item's
        metadata gives them — and embeds the image (its garment crop with ``crop=True``).  ``answers``
        (one :meth:`Predictor.analyse` answer per image, e.g. from the server's batched forward) are used
        instead of running the model again.  Metadata keys ``sku``, ``title``, ``category``,
        ``category_path``, ``attributes`` (names), ``source`` fill the columns; other JSON values are kept
        in ``extra``.  Raises FileNotFoundError / ValueError naming the file for missing or unreadable
        images; nothing is written then."""
        return self._add_items(images, metadata, predictor, crop, save=True, answers=answers)

    def _add_items(self, images: Sequence[ImageLike], metadata: Sequence[dict[str, Any]] | None,
                   predictor: "Predictor | None", crop: bool, save: bool,
                   answers: Sequence[dict[str, Any]] | None = None) -> list[int]:
        records = [normalize_metadata(m, i) for i, m in enumerate(metadata_list(metadata, len(images)))]
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
        return self._commit(records, vectors, entries, save)

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
        return self._commit(records, vectors / norms, entries, True) if len(vectors) else []

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
        merged); returns the updated item.  KeyError for an unknown id, ValueError for reserved fields."""
        record = normalize_metadata(fields, 0, keep_none=True)
        with self._write():
            old = self.get(item_id)  # KeyError when unknown
            if record.get("category") and "category_path" not in record:
                record["category_path"] = self.store.category_path_of(record["category"])
            if "extra" in record:
                record["extra"] = {**old["extra"], **record["extra"]}
            if record:
                self.store.update(int(item_id), record)
        return self.get(item_id)

    def reindex(self) -> None:
        """Rebuild the vector index from the stored embeddings (retrains IVF on the current items)."""
        with self._write():
            self._cache.rebuild()

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
               group_sku: bool = False) -> list[dict[str, Any]]:
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
        ``same_sku``: the ids of that SKU's other items among the candidates (4k searched)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise ValueError(f"rerank must be an integer >= 0 (candidates to verify), got {rerank!r}")
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
        with self._state_lock:
            self._cache.refresh()
            allowed = None
            if category is not None or attribute is not None:
                allowed = self.store.filter_ids(category, attribute)
                if not len(allowed):
                    return []
            wanted = max(int(k) * (4 if group_sku else 1), int(rerank))
            if self._cache.index.is_trained:
                scores, ids = self._cache.index.search(vector[None], wanted, allowed_ids=allowed, nprobe=nprobe)
                hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            else:
                hits = self._exact_search(vector, wanted, allowed)
            rows = self.store.rows([i for i, _ in hits])
        found = [{"item_id": i, "score": s, **_result_fields(self._public(rows[i]))} for i, s in hits if i in rows]
        if rerank:
            found = rerank_hits(self.reranker, picture, found)
        if group_sku:
            found = group_by_sku(found)
        return found[: int(k)]

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
                save: bool) -> list[int]:
        """Two-phase insert (pending rows, image files, ready) then the index; returns the new ids."""
        with self._write():
            ids = self.store.insert_pending(records, vectors)
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
def build(directory: str, predictor: "Predictor | str", source: Any, *, split: str | None = None,
          model_run: str | None = None, batch_size: int = 32, progress: bool = True, crop: bool = False,
          index: IndexConfig | None = None, skip_bad: bool = False, device: DeviceLike = None) -> dict[str, Any]:
    """Embed a data set into the catalog at ``directory`` (created when absent), ``batch_size`` images per
    committed batch, with a progress bar.

    ``source`` is a data spec (``garments:DIR``, ``folder:DIR``, ...; ``split`` keeps some splits,
    comma-separated), a ``SampleSet``, or a folder of image files (searched recursively).  Data-set
    labels (category, attributes, item id as ``sku``) are stored where the data set has them, model
    predictions otherwise.  ``predictor`` is a Predictor or a run directory (then it is also the
    catalog's ``model_run``, loaded on ``device``: default the CPU).  ``crop`` with a model without a box
    head is a ValueError before anything is done.  An interrupted build resumes: sources already stored
    are skipped.  A bad image stops the build (its batch is not written) unless ``skip_bad``, which
    reports and skips it.

    Returns a summary: catalog, added, already_present, bad (list of "file: error"), items."""
    if isinstance(predictor, (str, os.PathLike)):
        model_run = os.fspath(predictor)
        predictor = Predictor.load(model_run, device=device)
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
        if model_run and known and os.path.realpath(known) != os.path.realpath(model_run):
            catalog.close()
            raise ValueError(f"catalog {directory} was built with model {known}, not {model_run}: "
                             "its embeddings would not be comparable (use a new catalog)")
        return catalog
    dim = int(predictor.cfg.model.embedding_dim)
    return Catalog.create(directory, dim=dim, model_run=model_run, index=index)


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


def _result_fields(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("category", "category_path", "attributes", "image", "source", "sku", "title", "extra")
    return {k: item.get(k) for k in keys}


__all__ = ["Catalog", "build"]
