"""ReferenceIndex: a FAISS index + SQLite records + JSON manifest in one directory.

This module creates, opens, searches and reads indexes. The write operations are in
:mod:`index.writes`; the directory layout and the commit protocol that keeps it crash-safe
are in :mod:`index.commit`.

Example:
    >>> idx = ReferenceIndex.create("refs.idx", fingerprint=fp, factory="HNSW32")
    >>> report = idx.add([NewReference(brand="acme", sha256=h, source="a.png")], [vec])
    >>> matches = idx.search(queries, k=5)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from index import faiss_ops
from index.atomic import WriterLock
from index.catalog import DB_NAME, RAW_VECTOR_DTYPES, Catalog
from index.commit import LOCK_NAME, MANIFEST_NAME, write_empty_index
from index.errors import IndexExistsError, IndexMismatchError, IndexNotFoundError
from index.export import read_export, write_export
from index.records import AddReport, Fingerprint, IndexInfo, Match, Reference
from index.search import REFINE_BATCH, REFINE_FACTOR, REFINE_PARAM, is_lossy, refine, search_snapshot
from index.validation import validate_queries
from index.writes import IndexWrites

# AddReport and IndexInfo live in index.records; callers may import them from here too.
__all__ = ["AddReport", "IndexInfo", "ReferenceIndex"]


class ReferenceIndex(IndexWrites):
    """Brands' reference vectors with their records; one writer, any number of readers.

    Create with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not the constructor.
    Thread-safe: calls on one object may come from several threads.

    Built in layers: :class:`~index.commit.CommittedIndex` holds the open state and runs the
    commit protocol, :class:`~index.writes.IndexWrites` adds ``add``, ``remove``, ``rebuild``
    and ``import_records``, and this class adds creating, opening, searching and reading.
    """

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        fingerprint: Fingerprint,
        factory: str = "Flat",
        build_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        raw_vectors: str = "float16",
        train_after_vectors: int = 0,
    ) -> ReferenceIndex:
        """Create a new, empty index and open it writable.

        Args:
            path: Directory to create (must not exist, or be empty).
            fingerprint: The embedding model's fingerprint; ``dim`` comes from it.
            factory: Any faiss factory string ("Flat", "HNSW32", "IVF1024,PQ64"...), inner product.
            build_params: Optional ``{"efConstruction": int}`` for HNSW factories.
            search_params: Default query-time parameters, e.g. ``{"nprobe": 16}``.
            raw_vectors: How the database keeps each vector for rebuilds: ``"float16"`` (half
                the bytes: 17.9 KB instead of 35.8 KB for 7 views of 1,280 floats; the faiss
                index then holds the same float16-rounded vectors) or ``"float32"``.
            train_after_vectors: For a factory that needs training (IVF, PQ): keep the vectors
                in an exact ``Flat`` index until this many are stored, then train the factory on
                them and convert, in one commit of the add that reached it (so each add commits
                at once, and the factory trains on a sample of the library, not on the first
                add). 0: train on the first add's vectors.

        Raises:
            IndexExistsError: An index or other files already exist at ``path``.
            ValueError: Invalid factory string, dim or parameters.
        """
        path = Path(path)
        if (path / MANIFEST_NAME).exists():
            raise IndexExistsError(f"an index already exists at {path}; open it with ReferenceIndex.open")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexExistsError(f"{path} exists and is not an empty directory; choose another path")
        if int(fingerprint.dim) < 1:
            raise ValueError(f"fingerprint.dim must be >= 1, got {fingerprint.dim}")
        if raw_vectors not in RAW_VECTOR_DTYPES:
            raise ValueError(f"raw_vectors must be one of {RAW_VECTOR_DTYPES}, got {raw_vectors!r}")
        index = faiss_ops.build_index(factory, fingerprint.dim, build_params)
        if search_params:
            faiss_ops.SearchSetup(index, search_params)  # validates names now, not at first search
        staged = None
        if train_after_vectors > 0 and not index.is_trained:
            staged = {"factory": factory, "build_params": dict(build_params or {}),
                      "search_params": dict(search_params or {}), "train_after_vectors": int(train_after_vectors)}
            factory, build_params, search_params = "Flat", None, None
            index = faiss_ops.build_index(factory, fingerprint.dim, None)
        write_empty_index(path, index, fingerprint=fingerprint, factory=factory, build_params=build_params,
                          search_params=search_params, raw_vectors=raw_vectors, staged=staged)  # fmt: skip
        return cls.open(path, writable=True, fingerprint=fingerprint)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        fingerprint: Fingerprint | None = None,
        lock_timeout: float = 0.0,
        verify: bool = True,
    ) -> ReferenceIndex:
        """Open an existing index.

        Args:
            path: Index directory.
            writable: Take the writer lock (one writer at a time). Readers never wait.
            fingerprint: If given, must be compatible with the index's model.
            lock_timeout: Seconds to wait for another writer to finish.
            verify: Check the faiss file's sha256 against the one recorded at save time.

        Raises:
            IndexNotFoundError: No index at ``path``.
            IndexMismatchError: ``fingerprint`` differs from the index's model.
            IndexLockedError: Another writer holds the lock after ``lock_timeout``.
            IndexCorruptError: Files missing, truncated or inconsistent (message says how to repair).
        """
        return cls._open(Path(path), writable, fingerprint, lock_timeout, load=True, verify=verify)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        *,
        fingerprint: Fingerprint,
        factory: str = "Flat",
        lock_timeout: float = 0.0,
    ) -> ReferenceIndex:
        """Open ``path`` writable if it holds an index, else create one there.

        Raises:
            IndexMismatchError: The existing index has another model or another factory.
        """
        path = Path(path)
        if not (path / MANIFEST_NAME).exists():
            try:
                return cls.create(path, fingerprint=fingerprint, factory=factory)
            except IndexExistsError:
                if not (path / MANIFEST_NAME).exists():
                    raise  # not an index, just a non-empty directory
        idx = cls.open(path, writable=True, fingerprint=fingerprint, lock_timeout=lock_timeout)
        if factory not in (idx.factory, idx.staged_factory):
            idx.close()
            raise IndexMismatchError(
                f"index at {path} uses factory {idx.factory!r}, not {factory!r}; open it with "
                f"factory={idx.factory!r} or convert it with rebuild(factory={factory!r})"
            )
        return idx

    @classmethod
    def repair(cls, path: str | os.PathLike[str], *, lock_timeout: float = 0.0) -> ReferenceIndex:
        """Rebuild the faiss file from the vectors stored in SQLite and commit it; open writable.

        Use when open() reports a missing, truncated or inconsistent faiss file.
        """
        idx = cls._open(Path(path), True, None, lock_timeout, load=False, verify=False)
        try:
            idx.rebuild()
        except BaseException:
            idx.close()
            raise
        return idx

    @classmethod
    def _open(
        cls,
        path: Path,
        writable: bool,
        fingerprint: Fingerprint | None,
        lock_timeout: float,
        *,
        load: bool,
        verify: bool,
    ) -> ReferenceIndex:
        if not path.is_dir() or not (path / MANIFEST_NAME).exists():
            raise IndexNotFoundError(
                f"no reference index at {path} (no {MANIFEST_NAME}); create one with ReferenceIndex.create"
            )
        lock = None
        catalog = None
        try:
            if writable:
                lock = WriterLock(path / LOCK_NAME)
                lock.acquire(lock_timeout)
            catalog = Catalog(path / DB_NAME, readonly=not writable)
            idx = cls(path, catalog, lock)
            if fingerprint is not None and not fingerprint.is_compatible(idx.fingerprint):
                raise IndexMismatchError(
                    f"index at {path} was built with another model "
                    f"({fingerprint.describe_difference(idx.fingerprint)}; given != index). "
                    "Vectors of different models cannot be mixed: rebuild the index with this model "
                    f"(new index, re-add the references) or embed with the index's model "
                    f"({idx.fingerprint.preset or idx.fingerprint.arch})."
                )
            if writable:
                idx._remove_stale_files()
            if load:
                idx._snap = idx._load(verify=verify)
            return idx
        except BaseException:
            if catalog is not None:
                catalog.close()
            if lock is not None:
                lock.release()
            raise

    # -- size and generations -------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return self._catalog.count()

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"ReferenceIndex({str(self.path)!r}, factory={self.factory!r}, dim={self.dim}, {mode})"

    def committed_generation(self) -> int:
        """Latest generation committed on disk (one SQLite read; cheap enough to poll)."""
        self._check_open()
        with self._lock:
            return int(self._catalog.generation())

    def reload(self) -> bool:
        """Pick up a generation committed by another process since this one was loaded.

        Returns:
            True if a newer generation was loaded. A writer always has the latest: False.
        """
        self._check_open()
        if self.writable and self._snap is not None:
            return False
        with self._lock:
            current = self._catalog.generation()
        if self._snap is not None and current == self._snap.generation:
            return False
        self._snap = self._load(verify=True)
        return True

    # -- reads ----------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k distinct references per query, as arrays (the hot path).

        Args:
            queries: ``(q, dim)`` (or ``(dim,)``) float32 query vectors, unit-norm.
            k: References per query.
            params: Query-time faiss parameters, e.g. ``{"efSearch": 128}`` or ``{"nprobe": 16}``,
                over the defaults given at create time; ``{"refine": n}``: a lossy (PQ, SQ)
                index's over-fetch for exact re-scoring (default 4; 1 keeps its own scores).

        Returns:
            ``(scores, ref_ids)``, both ``(q, k)``: inner products sorted descending (a
            reference's best vector), ids ``-1`` with score ``-inf`` where fewer than k exist.
        """
        q = validate_queries(queries, self.dim)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        params = dict(params or {})
        factor = int(params.pop(REFINE_PARAM, REFINE_FACTOR if is_lossy(self.factory) else 1))
        if factor < 1:
            raise ValueError(f"search parameter {REFINE_PARAM!r} must be >= 1, got {factor}")
        snap = self._snapshot
        # The writer modifies its index in place, so its searches wait for writes; readers don't.
        guard = self._lock if self.writable else contextlib.nullcontext()
        scores, ids = search_snapshot(
            snap, q, int(k) * factor, defaults=self._search_defaults, params=params, guard=guard
        )
        if factor == 1 or not len(q):
            return scores[:, : int(k)], ids[:, : int(k)]
        parts = []
        for start in range(0, len(q), REFINE_BATCH):
            block = ids[start : start + REFINE_BATCH]
            vectors = self.get_vectors(np.unique(block[block >= 0]).tolist())
            parts.append(refine(q[start : start + REFINE_BATCH], block, vectors, int(k)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def search(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> list[list[Match]]:
        """Top-k distinct references per query with their records joined.

        A reference removed by another process after this object loaded its generation is
        left out (its record is gone), so a row may hold fewer than k matches until :meth:`reload`.

        Returns:
            One list of :class:`Match` per query, best first.
        """
        scores, ids = self.search_vectors(queries, k, params=params)
        refs = self.get_references(np.unique(ids[ids >= 0]).tolist())
        out = []
        for row_s, row_i in zip(scores.tolist(), ids.tolist()):
            matches = []
            for s, rid in zip(row_s, row_i):
                ref = refs.get(rid)
                if rid >= 0 and ref is not None:
                    matches.append(Match(ref_id=rid, brand=ref.brand, kind=ref.kind,
                                         product_id=ref.product_id, score=float(s), source=ref.source))  # fmt: skip
            out.append(matches)
        return out

    def existing_sha256(self, shas: Iterable[str]) -> dict[str, int]:
        """sha256 -> ref id for the given content hashes that are already stored."""
        with self._lock:
            self._check_open()
            return self._catalog.existing_sha256(shas)

    def get_references(self, ref_ids: Iterable[int]) -> dict[int, Reference]:
        """Records by id (ids not stored are absent from the result)."""
        with self._lock:
            self._check_open()
            return self._catalog.get_references(ref_ids)

    def get_aux(self, ref_ids: Iterable[int]) -> dict[int, bytes]:
        """Aux blobs by ref id (refs without aux are absent)."""
        with self._lock:
            self._check_open()
            return self._catalog.get_aux(ref_ids)

    def get_vectors(self, ref_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored ``(n_views, dim)`` float32 vectors by ref id (ids not stored are absent)."""
        with self._lock:
            self._check_open()
            return self._catalog.get_vectors(ref_ids, self.dim)

    def references(self, brand: str | None = None) -> Iterator[Reference]:
        """All references (of one brand if given), in id order, fetched in pages."""
        self._check_open()
        pages = self._catalog.iter_references(brand)
        while True:
            with self._lock:
                ref = next(pages, None)
            if ref is None:
                return
            yield ref

    def info(self) -> IndexInfo:
        """Counts per brand and kind, sizes and times of the committed state."""
        with self._read_view() as catalog:
            meta = catalog.meta()
            count = catalog.count()
            per_brand = catalog.per_brand()
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return IndexInfo(
            path=str(self.path), fingerprint=self.fingerprint, factory=meta["factory"], dim=self.dim,
            metric=self.metric, count=count, vectors=int(meta["vectors"]), per_brand=per_brand,
            size_bytes=size, generation=int(meta["generation"]), created_at=meta["created_at"],
            updated_at=meta["updated_at"],
        )  # fmt: skip

    # -- export / import ------------------------------------------------------------------------

    def export_records(self, dest: str | os.PathLike[str]) -> int:
        """Write records, vectors and aux to a new folder that :meth:`import_records` reads.

        The folder holds ``export.json`` (format, fingerprint, factory, counts),
        ``records.jsonl`` (one record per line with its row range in the vectors file and
        aux as base64) and ``vectors.npy`` (float32, ``(total vectors, dim)``). No pickle.

        Returns:
            Number of references exported.

        Raises:
            IndexExistsError: ``dest`` already exists.
        """
        return write_export(dest, self._read_view, fingerprint=self.fingerprint, dim=self.dim,
                            metric=self.metric)  # fmt: skip

    @classmethod
    def create_from_export(
        cls, src: str | os.PathLike[str], path: str | os.PathLike[str], *, factory: str | None = None
    ) -> ReferenceIndex:
        """Create a new index at ``path`` from an export (same fingerprint; factory as exported
        unless given) and open it writable."""
        meta, _, _ = read_export(Path(src))
        idx = cls.create(path, fingerprint=Fingerprint.from_dict(meta["fingerprint"]),
                         factory=factory or meta["factory"])  # fmt: skip
        try:
            idx.import_records(src)
        except BaseException:
            idx.close()
            raise
        return idx
