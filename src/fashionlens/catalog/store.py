"""Storage layer of the catalog: the SQLite item table and the metadata checks.

Internal to :mod:`fashionlens.catalog` (read that module's docstring for the design).  Everything
here is plain I/O: no model, no vector index.

* :class:`ItemStore` wraps ``items.db`` (WAL journal, ``synchronous=FULL``): rows are inserted as
  ``'pending'`` and flipped to ``'ready'`` in a second transaction once their image file is on disk;
  every change to the set of ready rows bumps a ``generation`` counter so other processes can tell
  that their in-memory index is stale with one cheap query.
* :func:`normalize_metadata` validates the metadata a caller passes; :func:`build_jobs` lists what
  ``catalog build`` adds.  Image files and the writer lock: :mod:`fashionlens.catalog.files`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fashionlens.data.decode import load_image
from fashionlens.data.readers import read_source
from fashionlens.data.samples import SampleSet

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale index can not alias a new item
    sku TEXT,
    title TEXT,
    category TEXT,
    category_path TEXT,                    -- dotted taxonomy path, e.g. "upper.tops.tee"
    attributes TEXT NOT NULL DEFAULT '[]', -- JSON list of attribute names
    image TEXT,                            -- stored file name under images/ (chosen by the catalog)
    source TEXT,                           -- path or URL the item was added from
    created_at TEXT NOT NULL,              -- ISO 8601, UTC
    updated_at TEXT NOT NULL,
    embedding BLOB NOT NULL,               -- float32 (D,), L2-normalised
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready')),
    extra TEXT NOT NULL DEFAULT '{}'       -- JSON: other metadata and the model's prediction details
);
CREATE INDEX IF NOT EXISTS items_category ON items(category);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS taxonomy (category TEXT PRIMARY KEY, path TEXT NOT NULL);  -- the model's label paths
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', 0);
"""

#: Columns a caller may set through metadata / ``update``; anything else goes into ``extra``.
TEXT_FIELDS = ("sku", "title", "category", "category_path", "source")
PUBLIC_COLUMNS = "id, sku, title, category, category_path, attributes, image, source, created_at, updated_at, extra"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ItemStore:
    """The ``items`` table.  Not thread-safe by itself: the catalog serialises calls with its own lock."""

    def __init__(self, path: str, *, timeout: float = 30.0):
        self.path = path
        self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        # WAL: readers never block the writer nor see a half-committed batch.  FULL: a commit is on
        # disk before add() returns, so an acknowledged item survives power loss, not only a killed
        # process (NORMAL would only risk the last commits on power loss); one fsync per batch is small
        # next to the network forward that produced the embeddings.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- transactions -------------------------------------------------------------------------------
    def _txn(self) -> "_Transaction":
        return _Transaction(self.db)

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key='generation'")

    # -- writes -------------------------------------------------------------------------------------
    def insert_pending(self, records: Sequence[dict[str, Any]], vectors: np.ndarray) -> list[int]:
        """Insert rows in state 'pending' (one transaction); returns their new ids in order."""
        stamp = now_iso()
        ids = []
        with self._txn():
            for rec, vec in zip(records, np.asarray(vectors, np.float32)):
                cur = self.db.execute(
                    "INSERT INTO items(sku, title, category, category_path, attributes, source, created_at,"
                    " updated_at, embedding, status, extra) VALUES (?,?,?,?,?,?,?,?,?,'pending',?)",
                    (rec.get("sku"), rec.get("title"), rec.get("category"), rec.get("category_path"),
                     json.dumps(list(rec.get("attributes") or [])), rec.get("source"), stamp, stamp,
                     np.ascontiguousarray(vec).tobytes(), json.dumps(rec.get("extra") or {})))
                ids.append(int(cur.lastrowid))
        return ids

    def mark_ready(self, ids: Sequence[int], images: Sequence[str | None]) -> None:
        """Record each row's stored image name and flip it to 'ready' (one transaction)."""
        with self._txn():
            self.db.executemany("UPDATE items SET image=?, status='ready' WHERE id=? AND status='pending'",
                                [(name, int(i)) for i, name in zip(ids, images)])
            self._bump()

    def delete(self, ids: Iterable[int]) -> list[tuple[int, str | None]]:
        """Delete rows (any status); returns (id, stored image name) of the rows that existed."""
        ids = [int(i) for i in ids]
        gone: list[tuple[int, str | None]] = []
        with self._txn():
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                gone += [(int(r[0]), r[1]) for r in
                         self.db.execute(f"SELECT id, image FROM items WHERE id IN ({marks})", chunk)]
                self.db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
            if gone:
                self._bump()
        return gone

    def update(self, item_id: int, fields: dict[str, Any]) -> bool:
        """Set metadata columns (already validated) of a ready row; False when the id is unknown."""
        sets = ", ".join(f"{k}=?" for k in fields)
        values = [json.dumps(v) if k in ("attributes", "extra") else v for k, v in fields.items()]
        with self._txn():
            cur = self.db.execute(f"UPDATE items SET {sets}, updated_at=? WHERE id=? AND status='ready'",
                                  [*values, now_iso(), int(item_id)])
        return cur.rowcount > 0

    # -- reads --------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE status='ready'").fetchone()[0])

    def ready_ids(self) -> np.ndarray:
        """Ids of every ready row, (N,) int64, ascending."""
        rows = self.db.execute("SELECT id FROM items WHERE status='ready' ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def pending(self) -> list[tuple[int, str | None]]:
        return [(int(r[0]), r[1]) for r in self.db.execute("SELECT id, image FROM items WHERE status='pending'")]

    def image_names(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT image FROM items WHERE image IS NOT NULL")}

    def rows(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Ready rows by id (public columns, JSON decoded); unknown ids are absent."""
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT {PUBLIC_COLUMNS} FROM items WHERE status='ready' AND id IN ({marks})",
                                     chunk):
                out[int(r["id"])] = _decode_row(r)
        return out

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {PUBLIC_COLUMNS} FROM items WHERE status='ready' ORDER BY id LIMIT ? OFFSET ?",
                               (int(limit), int(offset)))
        return [_decode_row(r) for r in rows]

    def embeddings(self, ids: Sequence[int] | None = None, *,
                   chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stored embeddings of ready rows (all, or ``ids``) in chunks of ``(ids (n,), vectors (n, D) float32)``."""
        if ids is None:
            cur = self.db.execute("SELECT id, embedding FROM items WHERE status='ready' ORDER BY id")
            while rows := cur.fetchmany(chunk):
                yield _unpack(rows)
            return
        for part in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT id, embedding FROM items WHERE status='ready' AND id IN ({marks})"
                                   " ORDER BY id", part).fetchall()
            if rows:
                yield _unpack(rows)

    def filter_ids(self, category: str | None = None, attribute: str | None = None) -> np.ndarray:
        """Ids of ready rows whose category (name, path, or path prefix) and attribute match; (n,) int64."""
        sql, args = "SELECT id FROM items WHERE status='ready'", []
        if category is not None:
            sql += (" AND (category = ? OR category_path = ?"
                    " OR substr(category_path, 1, length(?) + 1) = ? || '.')")
            args += [category] * 4
        if attribute is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(items.attributes) WHERE json_each.value = ?)"
            args.append(attribute)
        rows = self.db.execute(sql, args).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def stored_sources(self, sources: Sequence[str]) -> set[str]:
        """Which of ``sources`` a ready row already came from (the build's resume check)."""
        found: set[str] = set()
        for chunk in _chunks(list(sources), 500):
            marks = ",".join("?" * len(chunk))
            found |= {r[0] for r in self.db.execute(
                f"SELECT source FROM items WHERE status='ready' AND source IN ({marks})", chunk)}
        return found

    def remember_paths(self, categories: Sequence[str], paths: Sequence[str]) -> None:
        """Record a model's category name -> taxonomy path list (kept for metadata given by name)."""
        if not paths or len(paths) != len(categories):
            return
        known = {r[0] for r in self.db.execute("SELECT category FROM taxonomy")}
        if set(categories) - known:
            with self._txn():
                self.db.executemany("INSERT OR IGNORE INTO taxonomy(category, path) VALUES (?, ?)",
                                    list(zip(categories, paths)))

    def category_path_of(self, category: str) -> str | None:
        """The taxonomy path of a category name: from a model's label list, else from an existing item."""
        row = self.db.execute("SELECT path FROM taxonomy WHERE category=?", (category,)).fetchone()
        row = row or self.db.execute("SELECT category_path FROM items WHERE category=? AND category_path IS NOT NULL"
                                     " LIMIT 1", (category,)).fetchone()
        return row[0] if row else None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception, KeyboardInterrupt included)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _decode_row(r: sqlite3.Row) -> dict[str, Any]:
    row = {k: r[k] for k in r.keys()}
    row["attributes"] = json.loads(row["attributes"] or "[]")
    row["extra"] = json.loads(row["extra"] or "{}")
    return row


def _unpack(rows: list) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    return ids, np.stack([np.frombuffer(r[1], np.float32) for r in rows])


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


RESERVED = {"id", "item_id", "image", "embedding", "status", "created_at", "updated_at", "score"}


def normalize_metadata(meta: dict[str, Any] | None, position: int, *, keep_none: bool = False) -> dict[str, Any]:
    """Validate one item's metadata into column values plus ``extra`` (other JSON values).

    ``attributes`` may be a list of names or a comma-separated string.  None values are dropped (so the
    model fills them) unless ``keep_none`` (``update``: clear the field).  Raises ValueError naming the
    item's position and the key."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"metadata {position}: expected a dict, got {type(meta).__name__}")
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in meta.items():
        if key in RESERVED:
            raise ValueError(f"metadata {position}: {key!r} is set by the catalog, not by metadata")
        if value is None and not keep_none:
            continue
        if key in TEXT_FIELDS:
            if value is not None and not isinstance(value, (str, int, float)):
                raise ValueError(f"metadata {position}: {key} must be text, got {type(value).__name__}")
            out[key] = None if value is None else str(value)
        elif key == "attributes":
            out[key] = _attribute_names(value, position)
        elif key == "extra":
            if not isinstance(value, dict):
                raise ValueError(f"metadata {position}: extra must be a dict")
            extra.update(value)
        else:
            extra[key] = value
    if extra:
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata {position}: values must be JSON (text, numbers, lists, dicts): {e}") from e
        out["extra"] = extra
    return out


def _attribute_names(value: Any, position: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [a.strip() for a in value.split(",") if a.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
        return list(value)
    raise ValueError(f"metadata {position}: attributes must be a list of names or 'a,b,c', got {value!r}")


def metadata_list(metadata: Sequence[dict[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    """``metadata`` checked to have one entry per item (``[{}] * n`` when None)."""
    if metadata is None:
        return [{} for _ in range(n)]
    if len(metadata) != n:
        raise ValueError(f"{len(metadata)} metadata entries for {n} items")
    return list(metadata)


# -- build inputs ------------------------------------------------------------------------------------------
def build_jobs(source: Any, split: str | None) -> list[tuple[str, Any, dict[str, Any]]]:
    """(source key, image (path or PIL), metadata) for every image of a data spec, SampleSet or folder."""
    if isinstance(source, SampleSet):
        data = source.split(*split.split(",")) if split else source
    else:
        data = read_source(os.fspath(source), split)
    if not len(data):
        raise ValueError(f"{source}: no images" + (f" in split(s) {split!r}" if split else ""))
    if data.info.name == "images":  # a plain folder: no labels, the model's predictions fill them in
        return [(s.image, s.image, {}) for s in data]
    return [_sample_job(s, data.info) for s in data]


def _sample_job(sample: Any, info: Any) -> tuple[str, Any, dict[str, Any]]:
    """Data-set labels become metadata: category (+ path), positive attributes, item id as sku."""
    meta: dict[str, Any] = {"sku": sample.item_id, "domain": sample.domain, "split": sample.split,
                            "category": sample.category_name}
    if sample.category is not None and sample.category < len(info.category_paths):
        meta["category_path"] = info.category_paths[sample.category]
    if sample.attributes is not None and info.attributes:
        meta["attributes"] = [info.attributes[j] for j in np.flatnonzero(np.asarray(sample.attributes) > 0)]
    if sample.array is not None:  # in-memory pixels (e.g. Fashion-MNIST): stored as PNG
        key = sample.source or sample.image
        return key, load_image(sample), {**meta, "source": key}
    return os.path.abspath(sample.image), sample.image, meta


