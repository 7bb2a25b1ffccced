"""SQLite side of the reference index: records, raw vectors, aux blobs, tombstones and metadata.

The database is the source of truth: it holds every reference's raw vectors so the faiss file can
always be rebuilt (repair, compaction, retraining, another factory). They are stored as the meta
key ``raw_vectors`` says: ``float16`` in new indexes (half the bytes; the writer adds the
float16-rounded vectors to faiss too, so a rebuild reproduces the index exactly), ``float32`` in
indexes made before that key existed. It runs in WAL mode:
readers never wait for the writer and see the last committed transaction. The ``meta`` table
carries the generation counter that names the faiss file matching the committed state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import IndexCorruptError
from index.records import Reference

DB_NAME = "records.sqlite"
RAW_VECTOR_DTYPES = ("float16", "float32")

# SQLite's bound-parameter limit is 32766 on current builds, 999 on old ones: stay below both.
_CHUNK = 900

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused (faiss ids = ref ids)
    brand TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    attributes TEXT NOT NULL,
    n_vectors INTEGER NOT NULL
);
CREATE INDEX refs_brand_kind ON refs (brand, kind);
CREATE INDEX refs_product ON refs (product_id);
-- Vectors and aux live in their own tables so scans of refs never read large blobs.
CREATE TABLE ref_vectors (ref_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE ref_aux (ref_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
-- Removed refs whose vectors are still in a faiss file that cannot remove (e.g. HNSW).
CREATE TABLE tombstones (ref_id INTEGER PRIMARY KEY, n_vectors INTEGER NOT NULL);
"""

_REF_COLUMNS = "id, brand, kind, product_id, source, sha256, added_at, attributes"


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _renormalised(vectors: np.ndarray) -> np.ndarray:
    """float32 unit rows of ``vectors`` (float16 rounding moves a norm by up to ~1e-4: without
    this an exact copy would score 0.9999, not 1)."""
    out = vectors.astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _row_to_reference(row: tuple[Any, ...]) -> Reference:
    return Reference(
        id=int(row[0]),
        brand=row[1],
        kind=row[2],
        product_id=row[3],
        source=row[4],
        sha256=row[5],
        added_at=row[6],
        attributes=json.loads(row[7]),
    )


class Catalog:
    """One SQLite connection to an index's database.

    Transactions are explicit (``begin_write``/``commit``/``rollback``); outside them every
    statement autocommits, which for readers means each query sees the latest committed state.
    Not thread-safe by itself: :class:`index.store.ReferenceIndex` serialises access.
    """

    def __init__(self, db_path: Path, *, readonly: bool, create: bool = False) -> None:
        self.path = Path(db_path)
        if not create and not self.path.exists():
            raise IndexCorruptError(f"{self.path} is missing: the index's record database is gone")
        mode = "ro" if readonly else ("rwc" if create else "rw")
        try:
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode={mode}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
            if create:
                # 16 KiB pages hold several 2 KiB vector blobs each (4 KiB pages hold one: 2x space).
                self._conn.execute("PRAGMA page_size=16384")
                self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is durable when it returns (NORMAL may lose the last one on power loss).
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=OFF")
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(f"cannot open record database {self.path}: {e}") from e

    def close(self) -> None:
        self._conn.close()

    @cached_property
    def vector_dtype(self) -> np.dtype:
        """How raw vectors are stored (meta ``raw_vectors``; absent in older indexes: float32)."""
        name = self.meta().get("raw_vectors", "float32")
        if name not in RAW_VECTOR_DTYPES:
            raise IndexCorruptError(f"{self.path}: unknown raw vector type {name!r}")
        return np.dtype(name)

    def stored_form(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` unit ``vectors`` as they will read back once inserted (rounded to
        :attr:`vector_dtype`, then the same decoding), float32: what the writer adds to faiss,
        so that a rebuild gives the same index bit for bit."""
        if self.vector_dtype == np.float32:
            return np.ascontiguousarray(vectors, dtype=np.float32)
        return _renormalised(np.asarray(vectors, dtype=self.vector_dtype))

    def _decode_vectors(self, data: bytes, dim: int) -> np.ndarray:
        vectors = np.frombuffer(data, dtype=self.vector_dtype)
        if vectors.size == 0 or vectors.size % dim:
            raise IndexCorruptError(f"stored vectors have {vectors.size} values, not a multiple of {dim}")
        vectors = vectors.reshape(-1, dim)
        return vectors if self.vector_dtype == np.float32 else _renormalised(vectors)

    # -- transactions ---------------------------------------------------------------------------

    def begin_write(self) -> None:
        """Start a write transaction (IMMEDIATE: takes SQLite's write lock now, not at first write)."""
        self._conn.execute("BEGIN IMMEDIATE")

    def begin_read(self) -> None:
        """Start a read transaction: later queries see one snapshot until ``commit``."""
        self._conn.execute("BEGIN")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    # -- meta -----------------------------------------------------------------------------------

    def init_schema(self, meta: dict[str, Any]) -> None:
        self._conn.executescript(_SCHEMA)
        self.begin_write()
        self.set_meta(meta)
        self.commit()

    def set_meta(self, values: dict[str, Any]) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def meta(self) -> dict[str, Any]:
        try:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(f"cannot read metadata from {self.path}: {e}") from e
        return {k: json.loads(v) for k, v in rows}

    def generation(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        if row is None:
            raise IndexCorruptError(f"{self.path} has no generation counter")
        return int(json.loads(row[0]))

    # -- writes ---------------------------------------------------------------------------------

    def next_ref_id(self) -> int:
        """First id the next insert will use (call inside the write transaction)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'refs'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def insert_references(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``(id, brand, kind, product_id, source, sha256, added_at, attributes_json,
        n_vectors, vectors, aux_bytes_or_None)`` rows (``vectors``: the float32 vectors as given,
        stored as :attr:`vector_dtype`; they read back as :meth:`stored_form`)."""
        self._conn.executemany(
            "INSERT INTO refs (id, brand, kind, product_id, source, sha256, added_at, attributes,"
            " n_vectors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [r[:9] for r in rows],
        )
        self._conn.executemany(
            "INSERT INTO ref_vectors (ref_id, data) VALUES (?, ?)",
            [(r[0], np.ascontiguousarray(r[9], dtype=self.vector_dtype).tobytes()) for r in rows],
        )
        self._conn.executemany(
            "INSERT INTO ref_aux (ref_id, data) VALUES (?, ?)",
            [(r[0], r[10]) for r in rows if r[10] is not None],
        )

    def delete_references(self, ref_ids: Sequence[int]) -> dict[int, int]:
        """Delete refs with their vectors and aux; returns ref id -> number of vectors it had."""
        counts: dict[int, int] = {}
        for chunk in _chunks(list(ref_ids)):
            marks = ",".join("?" * len(chunk))
            for rid, n in self._conn.execute(
                f"SELECT id, n_vectors FROM refs WHERE id IN ({marks})", chunk
            ):
                counts[int(rid)] = int(n)
            for table, col in (("refs", "id"), ("ref_vectors", "ref_id"), ("ref_aux", "ref_id")):
                self._conn.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)
        return counts

    def replace_aux(self, updates: Mapping[int, bytes | None]) -> int:
        """Replace (None: delete) the aux bytes of existing refs; unknown ids are ignored.
        Returns how many refs were updated (call inside the write transaction)."""
        live = set(self.select_ids(list(updates), None, None))
        for rid in live:
            self._conn.execute("DELETE FROM ref_aux WHERE ref_id = ?", (rid,))
        self._conn.executemany(
            "INSERT INTO ref_aux (ref_id, data) VALUES (?, ?)",
            [(rid, updates[rid]) for rid in sorted(live) if updates[rid] is not None],
        )
        return len(live)

    def add_tombstones(self, counts: dict[int, int]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO tombstones (ref_id, n_vectors) VALUES (?, ?)", counts.items()
        )

    def clear_tombstones(self) -> None:
        self._conn.execute("DELETE FROM tombstones")

    # -- reads ----------------------------------------------------------------------------------

    def tombstones(self) -> tuple[np.ndarray, int]:
        """Tombstoned ref ids (int64 array) and how many faiss vectors they still occupy."""
        rows = self._conn.execute("SELECT ref_id, n_vectors FROM tombstones").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, int(sum(r[1] for r in rows))

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])

    def vector_stats(self) -> tuple[int, int]:
        """(total stored vectors, max vectors of one reference) over live references."""
        total, most = self._conn.execute(
            "SELECT COALESCE(SUM(n_vectors), 0), COALESCE(MAX(n_vectors), 0) FROM refs"
        ).fetchone()
        return int(total), int(most)

    def existing_sha256(self, shas: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(shas))
        found: dict[str, int] = {}
        for chunk in _chunks(wanted):
            marks = ",".join("?" * len(chunk))
            for sha, rid in self._conn.execute(
                f"SELECT sha256, id FROM refs WHERE sha256 IN ({marks})", chunk
            ):
                found[sha] = int(rid)
        return found

    def select_ids(
        self, ref_ids: Sequence[int] | None, brand: str | None, product_id: str | None
    ) -> list[int]:
        """Ids of refs matching every given filter (None filters are ignored)."""
        clauses, params = [], []
        if brand is not None:
            clauses.append("brand = ?")
            params.append(brand)
        if product_id is not None:
            clauses.append("product_id = ?")
            params.append(product_id)
        where = " AND ".join(clauses) or "1"
        if ref_ids is None:
            return [int(r[0]) for r in self._conn.execute(f"SELECT id FROM refs WHERE {where}", params)]
        found = []
        for chunk in _chunks(sorted(set(ref_ids))):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id FROM refs WHERE id IN ({marks}) AND {where}"
            found.extend(int(r[0]) for r in self._conn.execute(sql, [*chunk, *params]))
        return found

    def get_references(self, ref_ids: Iterable[int]) -> dict[int, Reference]:
        out: dict[int, Reference] = {}
        for chunk in _chunks(sorted({int(i) for i in ref_ids})):
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT {_REF_COLUMNS} FROM refs WHERE id IN ({marks})", chunk
            ):
                ref = _row_to_reference(row)
                out[ref.id] = ref
        return out

    def get_aux(self, ref_ids: Iterable[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for chunk in _chunks(sorted({int(i) for i in ref_ids})):
            marks = ",".join("?" * len(chunk))
            for rid, data in self._conn.execute(
                f"SELECT ref_id, data FROM ref_aux WHERE ref_id IN ({marks})", chunk
            ):
                out[int(rid)] = bytes(data)
        return out

    def get_vectors(self, ref_ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """Stored ``(n_i, dim)`` vectors by ref id."""
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(sorted({int(i) for i in ref_ids})):
            marks = ",".join("?" * len(chunk))
            for rid, data in self._conn.execute(
                f"SELECT ref_id, data FROM ref_vectors WHERE ref_id IN ({marks})", chunk
            ):
                out[int(rid)] = self._decode_vectors(data, dim)
        return out

    def iter_references(self, brand: str | None = None, page: int = 1000) -> Iterator[Reference]:
        """All references in id order, fetched page by page (no cursor held between pages)."""
        last = 0
        while True:
            if brand is None:
                rows = self._conn.execute(
                    f"SELECT {_REF_COLUMNS} FROM refs WHERE id > ? ORDER BY id LIMIT ?", (last, page)
                ).fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {_REF_COLUMNS} FROM refs WHERE brand = ? AND id > ? ORDER BY id LIMIT ?",
                    (brand, last, page),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_to_reference(row)
            last = int(rows[-1][0])

    def iter_vectors(self, dim: int, page: int = 2000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stored vectors in ref id order as ``(ref_ids per vector (n,), vectors (n, dim))`` pages."""
        last = 0
        while True:
            rows = self._conn.execute(
                "SELECT ref_id, data FROM ref_vectors WHERE ref_id > ? ORDER BY ref_id LIMIT ?",
                (last, page),
            ).fetchall()
            if not rows:
                return
            ids, vecs = [], []
            for rid, data in rows:
                try:
                    v = self._decode_vectors(data, dim)
                except IndexCorruptError as e:
                    raise IndexCorruptError(f"reference {rid}: {e}") from e
                vecs.append(v)
                ids.append(np.full(len(v), rid, dtype=np.int64))
            yield np.concatenate(ids), np.concatenate(vecs)
            last = int(rows[-1][0])

    def per_brand(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for brand, kind, n in self._conn.execute(
            "SELECT brand, kind, COUNT(*) FROM refs GROUP BY brand, kind ORDER BY brand, kind"
        ):
            out.setdefault(brand, {})[kind] = int(n)
        return out

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA quick_check").fetchone()[0])
