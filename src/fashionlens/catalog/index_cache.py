"""The catalog's vector index as a cache of its database.

The SQLite store holds every embedding; the index (FAISS files ``vectors.index`` + ``.json``, a milvus-lite
file, or a collection on a Milvus server) is derived from it and can always be rebuilt:

* :meth:`IndexCache.sync` makes the index hold exactly the store's ready ids (removing extras, adding what is
  missing from the stored embeddings), trains an IVF / IVF-PQ index once ``min_train`` vectors exist (on up to
  256 stored vectors per cluster) and tunes its nprobe when the catalog asked for auto (nprobe 0);
* :meth:`IndexCache.refresh` catches up with other processes' writes: the saved index is reloaded when its
  description file changed, then the difference from the database is applied in memory;
* an unreadable or foreign index file is replaced by a new index that ``sync`` fills;
* a model switch (``Catalog.reindex(model)``, :mod:`fashionlens.catalog.reindex`) is seen through the database's
  model epoch: :meth:`IndexCache.follow_model` adopts the new model (run, dim) and replaces the index by the one
  saved for that epoch (``vectors.N.index``) or builds it from the new embeddings.

Locks are the catalog's: it calls these methods holding its state lock (and its writer lock for writes).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fashionlens.catalog.files import file_stamp, unlink
from fashionlens.catalog.store import ItemStore
from fashionlens.index import VectorIndex, create_index, open_index
from fashionlens.index.base import auto_nlist, sidecar_path
from fashionlens.index.milvus_index import drop_collection

INDEX, MILVUS_DB = "vectors.index", "vectors.milvus.db"


class IndexCache:
    """The vector index of the catalog in ``directory`` (``config``: its catalog.json), kept in line with
    ``store``.  ``index`` is the live :class:`~fashionlens.index.VectorIndex`."""

    def __init__(self, directory: str, config: dict[str, Any], store: ItemStore):
        self.directory, self.config, self.store = directory, config, store
        self.adopt_model()  # a switch committed before catalog.json was rewritten (a crash): the database wins
        self.dim = int(config["dim"])
        self.index: VectorIndex = self._load()
        self._stamp = file_stamp(sidecar_path(self.path))
        self.generation = -1  # the store generation the index reflects (-1: not checked yet)

    @property
    def path(self) -> str:
        """``vectors.index``; after the N-th model switch ``vectors.N.index``: an index file is named after the
        model epoch whose vectors it holds, so no process ever loads another model's index."""
        epoch = self.epoch
        return os.path.join(self.directory, INDEX if not epoch else f"vectors.{epoch}.index")

    @property
    def params(self) -> dict[str, Any]:
        return self.config["index"]

    @property
    def epoch(self) -> int:
        """The model epoch the index holds the vectors of (how many times a reindex switched the model)."""
        return int(self.config.get("model_epoch", 0))

    def close(self) -> None:
        self.index.close()

    # -- writes (the catalog holds its writer lock) ----------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.index.is_trained:
            self.index.add(ids, vectors)
        else:
            self.sync(persist=False)  # trains once enough vectors are stored

    def remove(self, ids: np.ndarray) -> None:
        if self.index.is_trained:
            self.index.remove(ids)

    def save(self) -> None:
        """Persist the index (an IVF index awaiting training has nothing to save: searches are exact)."""
        if self.index.is_trained:
            self.index.save(self.path)
            self._stamp = file_stamp(sidecar_path(self.path))

    def rebuild(self) -> None:
        """A new index from the stored embeddings (retrains IVF on the current items), saved."""
        drop = getattr(self.index, "drop", None)  # Milvus: the collection must go before it is re-made
        drop() if drop is not None else self.index.close()
        self.index = self._new()
        for stale in (self.path, sidecar_path(self.path)):
            unlink(stale)
        self.sync(persist=True)

    def discard(self) -> None:
        """Delete the saved index (its description first) before the database switches to another model's
        vectors, so that nothing loads the old model's index afterwards; the in-memory FAISS index still answers
        (the catalog holds its locks until :meth:`follow_model` replaces it), a Milvus collection is dropped."""
        drop = getattr(self.index, "drop", None)
        if drop is not None:
            drop()
        for stale in (sidecar_path(self.path), self.path, self.path + ".ids.npy", self.path + ".exact"):
            unlink(stale)  # (the description first; hnsw's id table and ivfpq's exact vectors beside the index)
        self._stamp = None

    def adopt_model(self) -> bool:
        """Take the model (run, dim, epoch) the database records into ``config`` (in place: the catalog's too)
        when a switch changed it; returns whether it did."""
        record = self.store.model_record()
        if record is None or record["epoch"] == self.epoch:
            return False
        self.config.update(model_run=record["model_run"], dim=record["dim"], model_epoch=record["epoch"])
        return True

    def follow_model(self) -> bool:
        """After a model switch (a reindex, in this process or another): adopt the new model and replace the index
        by the one saved since the switch (the switch deletes the old one before its commit), else by a new one
        that ``sync`` fills from the new embeddings.  Returns whether the model changed."""
        if not self.adopt_model():
            return False
        self.dim = int(self.config["dim"])
        self.index.close()
        self.index = self._load()
        self._stamp = file_stamp(sidecar_path(self.path))
        return True

    def sync(self, persist: bool) -> bool:
        """Make the index hold exactly the ready ids of the database; returns whether it changed."""
        db_ids = self.store.ready_ids()
        changed = trained = False
        if self.index.is_trained:
            extra = np.setdiff1d(np.asarray(self.index.ids(), np.int64), db_ids)
            if extra.size:
                changed = self.index.remove(extra) > 0 or changed
        elif len(db_ids) >= max(1, int(self.params["min_train"])):
            self.index.train(self._training_sample(db_ids))
            changed = trained = True
        if self.index.is_trained:
            missing = np.setdiff1d(db_ids, np.asarray(self.index.ids(), np.int64))
            for ids, vecs in self.store.embeddings(missing if missing.size < len(db_ids) else None):
                self.index.add(ids, vecs)
                changed = True
        if trained and not self.params.get("nprobe"):
            self._tune_nprobe(db_ids)  # nprobe 0 = auto: measured on the catalog's own vectors
        if persist and (changed or not os.path.exists(sidecar_path(self.path))):
            self.save()
        return changed

    # -- reads ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Catch up with other processes' writes: reload the saved index if it changed, then apply the
        difference from the database in memory."""
        with self.store.snapshot():  # one state of the database: ids, embeddings and model agree
            generation = self.store.generation()
            if generation == self.generation:
                return
            stamp = file_stamp(sidecar_path(self.path))  # the description is written after the index
            if not self.follow_model() and stamp != self._stamp:  # (a model switch: nothing of the old index kept)
                self.index.close()
                self.index = self._load()
                self._stamp = stamp
            self.sync(persist=False)
            self.generation = generation

    # -- internals ---------------------------------------------------------------------------------------
    def _new(self) -> VectorIndex:
        p = self.params
        kw: dict[str, Any] = {"backend": self.config["backend"]}
        if p["kind"] in ("ivf", "ivfsq", "ivfpq"):
            kw.update(nlist=p["nlist"], nprobe=p["nprobe"])
        if p["kind"] == "ivfsq":
            kw.update(sq_bits=p.get("sq_bits", 16))
        if p["kind"] == "ivfpq":
            kw.update(pq_m=p["pq_m"], refine=p.get("refine", 0))
        if p["kind"] == "hnsw":
            kw.update(hnsw_m=p["hnsw_m"], ef_construction=p["ef_construction"], ef_search=p["ef_search"])
        if p.get("uri"):  # a Milvus server: a stale collection of this catalog is dropped, the database rebuilds it
            kw.update(uri=p["uri"], collection=p["collection"])
            try:
                return create_index(p["kind"], self.dim, **kw)
            except ValueError as exc:
                if "already exists" not in str(exc):
                    raise
            drop_collection(p["uri"], p["collection"])
        elif self.config["backend"] == "milvus":
            kw["uri"] = os.path.join(self.directory, MILVUS_DB)
        return create_index(p["kind"], self.dim, **kw)

    def _load(self) -> VectorIndex:
        """The saved index, or a new empty one when none is saved or it can not be read (rebuilt by sync)."""
        if os.path.exists(sidecar_path(self.path)):
            try:
                index = open_index(self.path)
                if index.dim == self.dim and index.kind == self.params["kind"]:
                    return index
                index.close()
            except (OSError, ValueError, RuntimeError):
                pass  # a torn or foreign file: the database rebuilds it
        return self._new()

    def _training_sample(self, db_ids: np.ndarray) -> np.ndarray:
        """Up to 256 stored vectors per cluster (FAISS's own k-means sample cap), drawn at random."""
        p = self.params
        limit = 256 * max(int(p["nlist"]) or auto_nlist(len(db_ids)), 256 if p["kind"] == "ivfpq" else 1)
        chosen = db_ids if len(db_ids) <= limit else np.random.default_rng(0).choice(db_ids, limit, replace=False)
        return np.concatenate([v for _, v in self.store.embeddings(chosen)])

    def _tune_nprobe(self, db_ids: np.ndarray, queries: int = 256, k: int = 10) -> None:
        """IVF nprobe 0 (auto): the smallest nprobe reaching recall@10 0.95 for stored vectors as queries,
        against their exact neighbours among the other stored vectors (``VectorIndex.tune_nprobe``)."""
        chosen = np.sort(np.random.default_rng(1).choice(db_ids, min(queries, len(db_ids)), replace=False))
        q = np.concatenate([v for _, v in self.store.embeddings(chosen)])
        k = min(k, len(db_ids) - 1)
        if k < 1:
            return
        best_s = np.full((len(q), k + 1), -np.inf, np.float32)  # + the query itself
        best_i = np.full((len(q), k + 1), -1, np.int64)
        for ids, vecs in self.store.embeddings(None):  # exact top-k, chunk by chunk
            sims = np.concatenate([best_s, q @ vecs.T], axis=1)
            cand = np.concatenate([best_i, np.broadcast_to(ids, (len(q), len(ids)))], axis=1)
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k + 1]
            best_s, best_i = np.take_along_axis(sims, top, 1), np.take_along_axis(cand, top, 1)
        others = np.array([[i for i in row if i != own][:k] for row, own in zip(best_i.tolist(), chosen.tolist())])
        self.index.tune_nprobe(q, others, query_ids=chosen)
