"""The Milvus backend, through ``pymilvus.MilvusClient``: the same interface as the FAISS backend.

``uri`` chooses where the vectors live:
  ``path/index.db``        milvus-lite (pip package ``milvus-lite``): an in-process server whose data is a
                           folder named ``index.db``; one process per folder (it holds a file lock).
  ``http://host:19530``    a Milvus server (standalone or distributed), for catalogs that outgrow one
                           machine; the server builds and serves the index, this class only talks to it.

Kinds map to Milvus index types with metric ``IP``: ``flat`` -> FLAT, ``ivf`` -> IVF_FLAT (nlist,
nprobe), ``ivfsq`` -> IVF_SQ8 (8 bits only: ``sq_bits=16`` is refused), ``ivfpq`` -> IVF_PQ (nlist, nprobe, m = pq_m, nbits = pq_bits), ``hnsw`` -> HNSW (M = hnsw_m,
efConstruction = ef_construction; search ef = ef_search). milvus-lite 3.x implements
FLAT and IVF_FLAT but not IVF_PQ (its segment index build fails and search silently falls back to
brute force), so ``ivfpq`` is refused for a ``.db`` uri: use the FAISS backend or a server.

Milvus trains the IVF clusters itself, per sealed segment, when ``flush()`` seals it; ``train()`` is
therefore a no-op here and ``is_trained`` is always True. Unflushed rows are searched exactly. With
``nlist`` 0 the index uses 128 clusters (Milvus's default; milvus-lite lowers it for small segments).
``save(path)`` flushes and writes ``path.json`` (uri, collection, kind, dim, nprobe): the vectors stay
in Milvus, the description lets ``open_index(path)`` reconnect.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from fashionlens.index.base import VectorIndex, write_sidecar

INDEX_TYPES = {"flat": "FLAT", "ivf": "IVF_FLAT", "ivfsq": "IVF_SQ8", "ivfpq": "IVF_PQ", "hnsw": "HNSW"}
DEFAULT_NLIST = 128
MAX_K = 16384  # Milvus limit on results per query
_ROW_BYTES_PER_CALL = 8 << 20  # keep each insert / search request well under gRPC's 64 MiB limit
_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}  # milvus-lite folder -> open MilvusIndex objects using it


def is_lite_uri(uri: str) -> bool:
    """True for a milvus-lite local file URI (``something.db``), False for a server URI."""
    return "://" not in uri and not uri.startswith("unix:") and uri.endswith(".db")


def _connect(uri: str) -> Any:
    """A MilvusClient for ``uri`` (an absolute ``.db`` path starts a milvus-lite server in this process)."""
    try:
        from pymilvus import MilvusClient  # lazy: see fashionlens.index (pymilvus loads with the backend)
    except ImportError as e:  # pragma: no cover - pymilvus is a dependency
        raise ImportError("the milvus backend needs pymilvus (and milvus-lite for .db files)") from e
    if not is_lite_uri(uri):
        return MilvusClient(uri=uri)
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    client = MilvusClient(uri=uri)
    with _lite_lock:
        _lite_users[uri] = _lite_users.get(uri, 0) + 1
    return client


def _release_lite(uri: str) -> None:
    """Stop the in-process milvus-lite server of ``uri`` (absolute) once no index of ours uses it."""
    with _lite_lock:
        _lite_users[uri] = _lite_users.get(uri, 1) - 1
        last = _lite_users[uri] <= 0
        if last:
            del _lite_users[uri]
    if last:
        from milvus_lite.server_manager import server_manager_instance  # lazy: local .db files only

        server_manager_instance.release_server(uri)


def _wait_for_lite_index(uri: str, collection: str) -> None:
    """Block until milvus-lite has built the index of the segments a flush sealed.

    milvus-lite builds segment indexes on a background thread and offers no RPC to wait for it
    (describe_index reports them finished at once); until then it searches those rows exactly. Its
    private drain point is used when present, so searches after ``flush()`` measure the IVF index.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance  # lazy: local .db files only

        _server, db, _port = server_manager_instance._servers[uri]
        db.get_collection(collection)._wait_for_bg()
    except (ImportError, KeyError, AttributeError, TypeError, ValueError):
        pass  # another milvus-lite version: searches stay correct, possibly exact until the build ends


def drop_collection(uri: str, collection: str) -> None:
    """Delete ``collection`` on the Milvus at ``uri`` (nothing when it does not exist)."""
    client = _connect(uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    finally:
        client.close()
        if is_lite_uri(uri):
            _release_lite(uri)


class MilvusIndex(VectorIndex):
    """A Milvus collection (int64 primary key ``id``, float vector ``vector``) behind the VectorIndex API."""

    backend = "milvus"

    def __init__(
        self,
        kind: str,
        dim: int,
        *,
        uri: str,
        collection: str = "fashionlens",
        nlist: int = 0,
        nprobe: int = 0,
        pq_m: int = 16,
        pq_bits: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 0,
        sq_bits: int = 8,
        create: bool = True,
    ) -> None:
        super().__init__(kind, dim, nlist=nlist or DEFAULT_NLIST, nprobe=nprobe, ef_search=ef_search)
        if kind == "ivfsq" and sq_bits != 8:
            raise ValueError(f"sq_bits={sq_bits}: Milvus scalar quantisation is IVF_SQ8 (8 bits); use sq_bits=8, "
                             "or backend='faiss' for float16 lists")
        if not uri:
            raise ValueError("the milvus backend needs a uri: 'path/index.db' (milvus-lite) or 'http://host:19530'")
        if kind == "ivfpq" and is_lite_uri(uri):
            raise ValueError(
                f"{uri}: milvus-lite does not implement IVF_PQ; use backend='faiss' for ivfpq or a Milvus server uri"
            )
        if kind == "ivfpq" and (pq_m < 1 or dim % pq_m):
            raise ValueError(f"pq_m={pq_m} must divide the vector size {dim}")
        self.uri = os.path.abspath(uri) if is_lite_uri(uri) else uri
        self.collection = collection
        self.pq_m, self.pq_bits = int(pq_m), int(pq_bits)
        self.hnsw_m, self.ef_construction = int(hnsw_m), int(ef_construction)
        self._client: Any = _connect(self.uri)
        try:
            self._create() if create else self._check_existing()
        except Exception:
            self.close()
            raise

    # -- collection ---------------------------------------------------------------------------
    def _index_params(self) -> dict[str, Any]:
        if self.kind == "flat":
            return {}
        if self.kind == "hnsw":
            return {"M": self.hnsw_m, "efConstruction": self.ef_construction}
        params = {"nlist": self.nlist}
        if self.kind == "ivfpq":
            params.update(m=self.pq_m, nbits=self.pq_bits)
        return params

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient  # lazy: see fashionlens.index

        if self._client.has_collection(self.collection):
            raise ValueError(
                f"{self.uri}: collection {self.collection!r} already exists; open it with open_index(path), "
                "drop it, or choose another collection name"
            )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        build = self._index_params()
        # pymilvus 3 sends build parameters as top-level keys, milvus-lite 3.2 reads only the JSON "params"
        # key (older clients' format, which servers accept too): send both so each side finds nlist.
        index_params.add_index(
            field_name="vector", index_type=INDEX_TYPES[self.kind], metric_type="IP",
            params={**build, "params": build} if build else {},
        )
        self._client.create_collection(self.collection, schema=schema, index_params=index_params)

    def _check_existing(self) -> None:
        where = f"{self.uri}: collection {self.collection!r}"
        if not self._client.has_collection(self.collection):
            raise ValueError(f"{where} not found")
        fields = {f["name"]: f for f in self._client.describe_collection(self.collection)["fields"]}
        dim = int(fields.get("vector", {}).get("params", {}).get("dim", -1))
        if dim != self.dim:
            raise ValueError(f"{where} holds vectors of size {dim}, expected {self.dim}")
        index_type = self._client.describe_index(self.collection, "vector").get("index_type")
        if index_type != INDEX_TYPES[self.kind]:
            raise ValueError(f"{where} has a {index_type} index, expected {INDEX_TYPES[self.kind]} ({self.kind})")
        self._client.load_collection(self.collection)

    def drop(self) -> None:
        """Delete the collection and everything in it, then close the connection."""
        self._client.drop_collection(self.collection)
        self.close()

    def close(self) -> None:
        if self._client is None:
            return
        self._client.close()
        self._client = None
        if is_lite_uri(self.uri):
            _release_lite(self.uri)

    # -- state -------------------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return True  # Milvus trains each sealed segment's IVF itself

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        it = self._client.query_iterator(self.collection, batch_size=4096, filter="", output_fields=["id"])
        found: list[int] = []
        try:
            while batch := it.next():
                found.extend(row["id"] for row in batch)
        finally:
            it.close()
        return np.sort(np.asarray(found, dtype=np.int64))

    # -- writes ------------------------------------------------------------------------------
    def _train(self, x: np.ndarray) -> None:
        """Nothing to do: Milvus fits the clusters of each segment when it seals it."""

    def _rows_per_call(self) -> int:
        return max(1, _ROW_BYTES_PER_CALL // (4 * self.dim))

    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        step = self._rows_per_call()
        for start in range(0, len(ids), step):
            rows = [{"id": i, "vector": v} for i, v in zip(ids[start : start + step].tolist(), x[start : start + step])]
            self._client.upsert(self.collection, rows)  # upsert: an existing id is replaced

    def _present(self, ids: np.ndarray) -> np.ndarray:
        found: list[int] = []
        for start in range(0, len(ids), MAX_K):
            chunk = ids[start : start + MAX_K].tolist()
            found.extend(row["id"] for row in self._client.get(self.collection, ids=chunk, output_fields=["id"]))
        return np.asarray(found, dtype=np.int64)

    def _remove(self, ids: np.ndarray) -> int:
        present = self._present(ids)
        if len(present):
            self._client.delete(self.collection, ids=present.tolist())
        return len(present)

    def flush(self, timeout: float = 600.0) -> None:
        """Seal written rows into segments and wait (up to ``timeout`` s) until their index is built."""
        self._client.flush(self.collection)
        if is_lite_uri(self.uri):
            _wait_for_lite_index(self.uri, self.collection)
            return
        deadline = time.monotonic() + timeout
        while self._client.describe_index(self.collection, "vector").get("pending_index_rows", 0) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.uri}: index of {self.collection!r} still building after {timeout:.0f} s")
            time.sleep(0.2)

    # -- search ------------------------------------------------------------------------------
    def _search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_K:
            raise ValueError(f"k={k}: Milvus returns at most {MAX_K} results per query")
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.kind == "hnsw":
            params["params"] = {"ef": nprobe}  # the search effort: ef_search for hnsw (base.VectorIndex.search)
        elif self.kind != "flat":
            params["params"] = {"nprobe": nprobe}
        expr = "" if allowed is None else "id in [" + ",".join(map(str, allowed.tolist())) + "]"
        scores = np.full((len(q), k), -np.inf, np.float32)
        found = np.full((len(q), k), -1, np.int64)
        step = max(1, min(1024, self._rows_per_call()))
        for start in range(0, len(q), step):
            hits = self._client.search(
                self.collection, data=q[start : start + step], limit=k, filter=expr,
                search_params=params, output_fields=["id"],
            )
            for row, result in enumerate(hits, start=start):
                found[row, : len(result)] = [h["id"] for h in result]
                scores[row, : len(result)] = [h["distance"] for h in result]
        return scores, found

    # -- persistence -------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        extra = {"pq_m": self.pq_m, "pq_bits": self.pq_bits} if self.kind == "ivfpq" else {}
        if self.kind == "ivfsq":
            extra = {"sq_bits": 8}
        if self.kind == "hnsw":
            extra = {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction}
        return {**super().metadata(), **extra, "uri": self.uri, "collection": self.collection}

    def save(self, path: str | os.PathLike) -> None:
        """Flush, then write ``path.json``; a milvus-lite uri inside that folder is stored relative to it."""
        self.flush()
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        meta = self.metadata()
        if is_lite_uri(self.uri):
            rel = os.path.relpath(os.path.abspath(self.uri), folder)
            meta["uri"] = rel if not rel.startswith("..") else os.path.abspath(self.uri)
        write_sidecar(path, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, meta: dict[str, Any]) -> "MilvusIndex":
        """Reconnect to the collection described by ``path.json`` (``meta``)."""
        uri = str(meta.get("uri", ""))
        if is_lite_uri(uri) and not os.path.isabs(uri):
            uri = os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), uri)
        if is_lite_uri(uri) and not os.path.exists(uri):
            raise FileNotFoundError(f"{uri}: milvus-lite data not found (named by {os.fspath(path)}.json)")
        return cls(
            meta["kind"], int(meta["dim"]), uri=uri, collection=str(meta.get("collection", "fashionlens")),
            nlist=int(meta.get("nlist", 0)), nprobe=int(meta.get("nprobe", 0)),
            pq_m=int(meta.get("pq_m", 16)), pq_bits=int(meta.get("pq_bits", 8)),
            hnsw_m=int(meta.get("hnsw_m", 32)), ef_construction=int(meta.get("ef_construction", 80)),
            ef_search=int(meta.get("ef_search", 0)), create=False,
        )
