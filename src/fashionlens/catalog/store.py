"""Storage layer of the catalog: the SQLite item table and the metadata checks.

Internal to :mod:`fashionlens.catalog` (read that module's docstring for the design).  Everything
here is plain I/O: no model, no vector index.

* :class:`ItemStore` wraps ``items.db`` (WAL journal, ``synchronous=FULL``): rows are inserted as
  ``'pending'`` and flipped to ``'ready'`` in a second transaction once their image file is on disk;
  every change to the set of ready rows bumps a ``generation`` counter so other processes can tell
  that their in-memory index is stale with one cheap query.
* Model switches (``Catalog.reindex`` with a new model): the staging tables of a re-embedding under way and the
  ``models`` record of each switch, made in one transaction (:meth:`ItemStore.switch_model`).
* :func:`normalize_metadata` validates the metadata a caller passes; :func:`build_jobs` lists what
  ``catalog build`` adds.  Image files and the writer lock: :mod:`fashionlens.catalog.files`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
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
-- Label history (added after format 1 shipped: created on open, so older catalogs gain it empty).  One row per
-- label an item got, never updated; the item's current label is its row with the largest id.
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL,              -- items.id (rows go with their item)
    category TEXT,
    category_path TEXT,
    attributes TEXT NOT NULL DEFAULT '[]', -- JSON list of attribute names
    provenance TEXT NOT NULL CHECK (provenance IN ('predicted', 'given', 'confirmed', 'corrected')),
    at TEXT NOT NULL,                      -- ISO 8601, UTC
    model TEXT                             -- the model run that predicted / was answered (NULL for 'given')
);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item_id, id);
-- The label audit's suspects (``Catalog.audit``; created on open too): items whose stored category the audit
-- found probably wrong.  Replaced as a whole by each audit; a person's answer to an item removes its row.
CREATE TABLE IF NOT EXISTS suspects (
    item_id INTEGER PRIMARY KEY,           -- items.id
    category TEXT NOT NULL,                -- the stored category the audit judged
    suggested TEXT NOT NULL,               -- the audit's most probable other category
    confidence REAL NOT NULL,              -- p(suggested) - p(category), out of fold: 1 = surely wrong
    p_given REAL NOT NULL,                 -- the audit's probability of the stored category
    at TEXT NOT NULL
);
"""

#: Where a label comes from: the model's answer stored as it is (``predicted``), the caller's metadata without a
#: review (``given``: a data set's annotation, an edit), a person's answer to the model (``confirmed``: "yes,
#: that's right"; ``corrected``: a different category / attributes).
PROVENANCES = ("predicted", "given", "confirmed", "corrected")
ANSWERED = ("confirmed", "corrected")
LABEL_FIELDS = "category, category_path, attributes, provenance, at, model"

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

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: the reads inside see one committed state (WAL), whatever commits meanwhile
        (e.g. a model switch between reading the ids and their embeddings).  Nested: the outer one holds."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key='generation'")

    # -- writes -------------------------------------------------------------------------------------
    def insert_pending(self, records: Sequence[dict[str, Any]], vectors: np.ndarray,
                       labels: Sequence[dict[str, Any] | None] | None = None) -> list[int]:
        """Insert rows in state 'pending' (one transaction), each with its first label (``labels``: one
        :func:`label_row` or None per record); returns their new ids in order."""
        stamp = now_iso()
        ids = []
        labels = list(labels) if labels is not None else [None] * len(records)
        with self._txn():
            for rec, vec, label in zip(records, np.asarray(vectors, np.float32), labels):
                cur = self.db.execute(
                    "INSERT INTO items(sku, title, category, category_path, attributes, source, created_at,"
                    " updated_at, embedding, status, extra) VALUES (?,?,?,?,?,?,?,?,?,'pending',?)",
                    (rec.get("sku"), rec.get("title"), rec.get("category"), rec.get("category_path"),
                     json.dumps(list(rec.get("attributes") or [])), rec.get("source"), stamp, stamp,
                     np.ascontiguousarray(vec).tobytes(), json.dumps(rec.get("extra") or {})))
                ids.append(int(cur.lastrowid))
                if label is not None:
                    self._insert_label(ids[-1], {**label, "at": label.get("at") or stamp})
        return ids

    def _insert_label(self, item_id: int, label: dict[str, Any]) -> None:
        """Append one label row (inside the caller's transaction)."""
        self.db.execute(f"INSERT INTO labels(item_id, {LABEL_FIELDS}) VALUES (?,?,?,?,?,?,?)",
                        (int(item_id), label.get("category"), label.get("category_path"),
                         json.dumps(list(label.get("attributes") or [])), label["provenance"],
                         label.get("at") or now_iso(), _model_text(label.get("model"))))

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
                self.db.execute(f"DELETE FROM labels WHERE item_id IN ({marks})", chunk)
            if gone:
                self._bump()
        return gone

    def update(self, item_id: int, fields: dict[str, Any], label: dict[str, Any] | None = None) -> bool:
        """Set metadata columns (already validated) of a ready row and append ``label`` (a :func:`label_row`)
        to its history, in one transaction; False when the id is unknown (nothing written)."""
        sets = "".join(f"{k}=?, " for k in fields)
        values = [json.dumps(v) if k in ("attributes", "extra") else v for k, v in fields.items()]
        stamp = now_iso()
        with self._txn():
            cur = self.db.execute(f"UPDATE items SET {sets}updated_at=? WHERE id=? AND status='ready'",
                                  [*values, stamp, int(item_id)])
            if cur.rowcount > 0 and label is not None:
                self._insert_label(item_id, {**label, "at": stamp})
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
        return self._with_labels(out)

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {PUBLIC_COLUMNS} FROM items WHERE status='ready' ORDER BY id LIMIT ? OFFSET ?",
                               (int(limit), int(offset)))
        return list(self._with_labels({int(r["id"]): _decode_row(r) for r in rows}).values())

    # -- labels -------------------------------------------------------------------------------------
    def _with_labels(self, rows: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """``rows`` with each one's current ``label`` (None: the item has none, e.g. added before labels existed)."""
        latest = self.latest_labels(list(rows))
        for item_id, row in rows.items():
            row["label"] = latest.get(item_id)
        return rows

    def latest_labels(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The current label (the latest row) of each of ``ids`` that has one."""
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT item_id, {LABEL_FIELDS} FROM labels WHERE id IN (SELECT MAX(id) FROM"
                                     f" labels WHERE item_id IN ({marks}) GROUP BY item_id)", chunk):
                out[int(r["item_id"])] = _decode_label(r)
        return out

    def label_history(self, item_id: int) -> list[dict[str, Any]]:
        """Every label of one item, oldest first."""
        rows = self.db.execute(f"SELECT {LABEL_FIELDS} FROM labels WHERE item_id=? ORDER BY id", (int(item_id),))
        return [_decode_label(r) for r in rows]

    def labelled(self, provenances: Sequence[str]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(item row, current label) of every ready item whose current label has one of ``provenances``, by id."""
        marks = ",".join("?" * len(provenances))
        cur = self.db.execute(
            f"SELECT i.id AS id, l.id AS label_id FROM items i JOIN labels l ON l.id ="
            f" (SELECT MAX(id) FROM labels WHERE item_id = i.id) WHERE i.status='ready' AND l.provenance IN ({marks})"
            " ORDER BY i.id", list(provenances))
        while chunk := cur.fetchmany(500):
            rows = self.rows([r["id"] for r in chunk])
            for r in chunk:
                if int(r["id"]) in rows:
                    row = rows[int(r["id"])]
                    yield row, row["label"]

    # The review queue: items whose current label is the model's answer (or, for items stored before labels
    # existed, whose category is the stored prediction's), by the margin between the model's two best
    # categories (the stored ``extra.prediction.category_scores``, best first).
    _REVIEW = ("FROM (SELECT i.id AS id, i.category AS category, i.extra AS extra,"
               " json_extract(i.extra, '$.prediction.category_scores[0].score')"
               " - coalesce(json_extract(i.extra, '$.prediction.category_scores[1].score'), 0) AS margin,"
               " (SELECT provenance FROM labels WHERE item_id = i.id ORDER BY id DESC LIMIT 1) AS provenance"
               " FROM items i WHERE i.status='ready')"
               " WHERE margin IS NOT NULL AND (provenance = 'predicted' OR (provenance IS NULL"
               " AND category = json_extract(extra, '$.prediction.category')))")

    #: The review queue: the audit's suspects first (most certainly wrong first), then the model's own unreviewed
    #: answers, least sure first; an item in both is listed once, as a suspect.
    _QUEUE = ("SELECT s.item_id AS id, 0 AS kind, -s.confidence AS rank FROM suspects s JOIN items i"
              " ON i.id = s.item_id AND i.status='ready'"
              f" UNION ALL SELECT id, 1 AS kind, margin AS rank {_REVIEW}"
              " AND id NOT IN (SELECT item_id FROM suspects)")

    def review_page(self, offset: int, limit: int) -> list[tuple[dict[str, Any], float | None,
                                                                 dict[str, Any] | None]]:
        """(item row, margin or None, suspect row or None) of the review queue (:attr:`_QUEUE`)."""
        found = self.db.execute(f"SELECT id, kind FROM ({self._QUEUE}) ORDER BY kind, rank, id LIMIT ? OFFSET ?",
                                (int(limit), int(offset))).fetchall()
        rows = self.rows([r["id"] for r in found])
        suspects = self.suspects([int(r["id"]) for r in found if r["kind"] == 0])
        out = []
        for r in found:
            row = rows.get(int(r["id"]))
            if row is None:
                continue
            scores = (row["extra"].get("prediction") or {}).get("category_scores") or []
            margin = (float(scores[0]["score"]) - (float(scores[1]["score"]) if len(scores) > 1 else 0.0)
                      if scores else None)
            out.append((row, margin, suspects.get(int(r["id"]))))
        return out

    def review_count(self) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM ({self._QUEUE})").fetchone()[0])

    def replace_suspects(self, rows: Sequence[dict[str, Any]]) -> None:
        """The audit's suspects (item_id, category, suggested, confidence, p_given) replace the old ones at once."""
        stamp = now_iso()
        with self._txn():
            self.db.execute("DELETE FROM suspects")
            self.db.executemany("INSERT INTO suspects(item_id, category, suggested, confidence, p_given, at)"
                                " VALUES (?,?,?,?,?,?)",
                                [(int(r["item_id"]), r["category"], r["suggested"], float(r["confidence"]),
                                  float(r["p_given"]), stamp) for r in rows])
            self._bump()

    def drop_suspect(self, item_id: int) -> None:
        self.db.execute("DELETE FROM suspects WHERE item_id=?", (int(item_id),))

    def suspects(self, ids: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        """item id -> suspect row (category, suggested, confidence, p_given, at); all of them without ``ids``."""
        if ids is None:
            found = self.db.execute("SELECT * FROM suspects").fetchall()
        else:
            found = []
            for part in _chunks([int(i) for i in ids], 500):
                found += self.db.execute(f"SELECT * FROM suspects WHERE item_id IN ({','.join('?' * len(part))})",
                                         part).fetchall()
        return {int(r["item_id"]): dict(r) for r in found}

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

    # -- words queries (catalog.words) --------------------------------------------------------------
    def known_labels(self) -> tuple[list[tuple[str, str | None]], list[str]]:
        """(category, taxonomy path) pairs of the model's label paths and of the stored items, and the attribute
        names items store: what a words query can name besides the model's own labels."""
        categories = [(r[0], r[1]) for r in self.db.execute("SELECT category, path FROM taxonomy")]
        categories += [(r[0], r[1]) for r in self.db.execute(
            "SELECT DISTINCT category, category_path FROM items WHERE status='ready' AND category IS NOT NULL")]
        attributes = [r[0] for r in self.db.execute(
            "SELECT DISTINCT json_each.value FROM items, json_each(items.attributes) WHERE items.status='ready'"
            " AND json_each.type = 'text'")]
        return categories, attributes

    def label_rows(self, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The labels of every ready row (or of ``ids``), by id: ``item_id``, ``category``, ``category_path``,
        ``attributes`` and ``extra`` holding only the stored ``prediction`` -- what a words query ranks."""
        sql = ("SELECT id, category, category_path, attributes, json_extract(extra, '$.prediction') AS prediction"
               " FROM items WHERE status='ready'")
        parts = [None] if ids is None else list(_chunks([int(i) for i in ids], 500))
        out = []
        for part in parts:
            where = "" if part is None else f" AND id IN ({','.join('?' * len(part))})"
            for r in self.db.execute(sql + where + " ORDER BY id", part or []):
                prediction = json.loads(r["prediction"]) if r["prediction"] else None
                out.append({"item_id": int(r["id"]), "category": r["category"], "category_path": r["category_path"],
                            "attributes": json.loads(r["attributes"] or "[]"),
                            "extra": {"prediction": prediction} if isinstance(prediction, dict) else {}})
        return out

    def sku_ids(self, sku: str) -> np.ndarray:
        """Ids of the ready rows with exactly this SKU, ascending; (n,) int64."""
        rows = self.db.execute("SELECT id FROM items WHERE status='ready' AND sku=? ORDER BY id", (str(sku),)).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    # -- model switches and re-embedding (catalog.reindex) ---------------------------------------------
    # The staging tables exist only while a re-embedding is under way (created when it starts, dropped by the
    # switch or an abort); ``models`` and meta 'model_epoch' from the first switch on.
    def model_epoch(self) -> int:
        """How many times the catalog's model was switched (0: never)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='model_epoch'").fetchone()
        return int(row[0]) if row else 0

    def model_record(self) -> dict[str, Any] | None:
        """The model of the catalog since its last switch, ``{"epoch", "model_run", "dim", "at"}``: the source of
        truth over catalog.json (written after the switch's commit); None when the model was never switched."""
        epoch = self.model_epoch()
        if not epoch:
            return None
        row = self.db.execute("SELECT model, dim, at FROM models WHERE epoch=?", (epoch,)).fetchone()
        return {"epoch": epoch, "model_run": _model_value(row["model"]), "dim": int(row["dim"]), "at": row["at"]}

    def reindex_job(self) -> dict[str, Any] | None:
        """The re-embedding under way: ``{"model_run", "dim", "crop", "started_at", "staged", "failed"}``
        (``staged``: ready items with a new embedding, ``failed``: ready items whose image could not be
        embedded, skipped); None when there is none."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='reindex_job'").fetchone():
            return None
        row = self.db.execute("SELECT model, dim, crop, started_at FROM reindex_job WHERE id=1").fetchone()
        if row is None:
            return None
        counts = self.db.execute(
            "SELECT SUM(n.embedding IS NOT NULL), SUM(n.embedding IS NULL) FROM embeddings_next n"
            " JOIN items i ON i.id = n.item_id WHERE i.status='ready'").fetchone()
        return {"model_run": _model_value(row["model"]), "dim": int(row["dim"]), "crop": bool(row["crop"]),
                "started_at": row["started_at"], "staged": int(counts[0] or 0), "failed": int(counts[1] or 0)}

    def start_reindex(self, model: str | Sequence[str] | None, dim: int, crop: bool) -> None:
        """Create the staging tables and record the job (one transaction)."""
        with self._txn():
            self.db.execute("CREATE TABLE IF NOT EXISTS reindex_job (id INTEGER PRIMARY KEY CHECK (id = 1),"
                            " model TEXT, dim INTEGER NOT NULL, crop INTEGER NOT NULL, started_at TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS embeddings_next (item_id INTEGER PRIMARY KEY,"
                            " embedding BLOB, error TEXT)")  # embedding NULL: the image failed (error says why)
            self.db.execute("INSERT INTO reindex_job(id, model, dim, crop, started_at) VALUES (1, ?, ?, ?, ?)",
                            (_model_text(model), int(dim), int(bool(crop)), now_iso()))

    def unstaged_ids(self) -> np.ndarray:
        """Ready ids without a new embedding yet (never embedded, or failed), ascending; (n,) int64."""
        rows = self.db.execute("SELECT id FROM items WHERE status='ready' AND id NOT IN (SELECT item_id FROM"
                               " embeddings_next WHERE embedding IS NOT NULL) ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def stored_images(self, ids: Sequence[int]) -> dict[int, str | None]:
        """Stored image file name (None: stored without an image) of each of ``ids`` that is a ready row."""
        out: dict[int, str | None] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            out.update((int(r[0]), r[1]) for r in self.db.execute(
                f"SELECT id, image FROM items WHERE status='ready' AND id IN ({marks})", chunk))
        return out

    def stage_embeddings(self, ids: Sequence[int], vectors: np.ndarray, errors: dict[int, str]) -> None:
        """Record new embeddings (and the items that failed, with why) in one committed transaction."""
        with self._txn():
            self.db.executemany("INSERT OR REPLACE INTO embeddings_next(item_id, embedding, error) VALUES (?,?,NULL)",
                                [(int(i), np.ascontiguousarray(v, np.float32).tobytes())
                                 for i, v in zip(ids, np.asarray(vectors, np.float32))])
            self.db.executemany("INSERT OR REPLACE INTO embeddings_next(item_id, embedding, error) VALUES (?,NULL,?)",
                                [(int(i), str(e)) for i, e in errors.items()])

    def drop_reindex(self) -> None:
        """Forget the re-embedding under way (its staged embeddings): the catalog is as before it started."""
        with self._txn():
            self.db.execute("DROP TABLE IF EXISTS embeddings_next")
            self.db.execute("DROP TABLE IF EXISTS reindex_job")

    def switch_model(self, model: str | Sequence[str] | None, dim: int) -> tuple[int, list[tuple[int, str | None]]]:
        """The switch, one transaction: every ready item's embedding becomes its staged one, ready items without
        one are deleted (with their labels), the model is recorded under a new epoch, the staging tables are
        dropped and the generation bumped.  Returns (the new epoch, (id, image name) of the deleted items)."""
        with self._txn():
            self.db.execute("UPDATE items SET embedding = (SELECT n.embedding FROM embeddings_next n WHERE"
                            " n.item_id = items.id) WHERE status='ready' AND id IN (SELECT item_id FROM"
                            " embeddings_next WHERE embedding IS NOT NULL)")
            gone = [(int(r[0]), r[1]) for r in self.db.execute(
                "SELECT id, image FROM items WHERE status='ready' AND id NOT IN (SELECT item_id FROM"
                " embeddings_next WHERE embedding IS NOT NULL)")]
            for chunk in _chunks([i for i, _ in gone], 500):
                marks = ",".join("?" * len(chunk))
                self.db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM labels WHERE item_id IN ({marks})", chunk)
            self.db.execute("CREATE TABLE IF NOT EXISTS models (epoch INTEGER PRIMARY KEY, model TEXT,"
                            " dim INTEGER NOT NULL, at TEXT NOT NULL)")
            self.db.execute("INSERT INTO meta(key, value) VALUES ('model_epoch', 1)"
                            " ON CONFLICT(key) DO UPDATE SET value = value + 1")
            epoch = self.model_epoch()
            self.db.execute("INSERT INTO models(epoch, model, dim, at) VALUES (?,?,?,?)",
                            (epoch, _model_text(model), int(dim), now_iso()))
            self.db.execute("DROP TABLE embeddings_next")
            self.db.execute("DROP TABLE reindex_job")
            self._bump()
        return epoch, gone


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


def _decode_label(r: sqlite3.Row) -> dict[str, Any]:
    return {"category": r["category"], "category_path": r["category_path"],
            "attributes": json.loads(r["attributes"] or "[]"), "provenance": r["provenance"], "at": r["at"],
            "model": json.loads(r["model"]) if (r["model"] or "").startswith("[") else r["model"]}


def _model_text(model: str | Sequence[str] | None) -> str | None:
    """A label's model as stored: a run's path, or an ensemble's paths as a JSON list."""
    if model is None or isinstance(model, str):
        return model
    return json.dumps([str(m) for m in model])


def _model_value(text: str | None) -> str | list[str] | None:
    """A model stored by :func:`_model_text`: a run's path, or an ensemble's list of them."""
    return json.loads(text) if (text or "").startswith("[") else text


def label_choices(label: str | Sequence[str | None] | None, records: Sequence[dict[str, Any]]) -> list[str | None]:
    """``add(..., label=)`` checked: None (automatic), ``"confirmed"`` / ``"corrected"`` for every item, or one
    of those (or None) per item.  ``corrected`` needs the person's category or attributes in the item's
    metadata; ValueError naming the item otherwise."""
    choices = [label] * len(records) if label is None or isinstance(label, str) else list(label)
    if len(choices) != len(records):
        raise ValueError(f"{len(choices)} labels for {len(records)} items")
    for i, (choice, rec) in enumerate(zip(choices, records)):
        if choice is not None and choice not in ANSWERED:
            raise ValueError(f"label {i}: {choice!r} is not a person's answer: expected confirmed or corrected "
                             "(or none: predicted, or given when the metadata has a category)")
        if choice == "corrected" and not ("category" in rec or "attributes" in rec):
            raise ValueError(f"label {i}: 'corrected' needs the right category or attributes in the metadata")
    return choices


def first_label(record: dict[str, Any], choice: str | None, had_category: bool,
                model: str | None) -> dict[str, Any] | None:
    """The label a new item starts with: the caller's answer (``choice``), else ``given`` when its metadata
    had a category, else ``predicted``; None when it has neither category nor (for answers) attributes."""
    provenance = choice or ("given" if had_category else "predicted")
    if not record.get("category") and not (choice and record.get("attributes")):
        return None
    return label_row(record, provenance, model)


def label_row(record: dict[str, Any], provenance: str, model: str | None) -> dict[str, Any]:
    """The label an item's record carries: its category (+ path) and attributes, where they came from and
    which model run predicted them or was answered (None for ``given`` labels)."""
    if provenance not in PROVENANCES:
        raise ValueError(f"unknown label provenance {provenance!r}; expected one of {', '.join(PROVENANCES)}")
    return {"category": record.get("category"), "category_path": record.get("category_path"),
            "attributes": list(record.get("attributes") or []), "provenance": provenance,
            "model": None if provenance == "given" else model}


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


