"""ReferenceIndex: a FAISS index + SQLite records + JSON manifest in one directory.

Layout of an index directory::

    manifest.json             human-readable mirror of the metadata (format, fingerprint, factory...)
    records.sqlite            references, their raw vectors and aux blobs, tombstones, meta (WAL)
    vectors.<generation>.faiss  one immutable faiss file per committed generation (last two kept)
    writer.lock               flock'ed by the single writer

Commit protocol (each ``add``/``remove``/``rebuild`` is one commit): write the faiss file of
generation G+1 (temp file, fsync, rename), then commit the SQLite transaction that records
G+1 with the file's sha256, size and vector count, then rewrite the manifest and delete
generations older than G. A crash before the SQLite commit leaves generation G intact (the
orphan file is deleted by the next writer); after it, G+1 is complete. Readers read the
generation from SQLite and the matching immutable file, so they never see a half-written state
and never wait for the writer.

Example:
    >>> idx = ReferenceIndex.create("refs.idx", fingerprint=fp, factory="HNSW32")
    >>> report = idx.add([NewReference(brand="acme", sha256=h, source="a.png")], [vec])
    >>> matches = idx.search(queries, k=5)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index import faiss_ops
from index.atomic import (
    WriterLock,
    atomic_write,
    atomic_write_json,
    fsync_dir,
    generation_file_name,
    list_generation_files,
    remove_temp_files,
    sha256_file,
)
from index.catalog import DB_NAME, Catalog
from index.errors import (
    REPAIR_HINT,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
    ReadOnlyIndexError,
)
from index.export import load_export, read_export, write_export
from index.rebuild import TOMBSTONE_REBUILD_FRACTION, rebuild_from_catalog
from index.records import (
    AddReport,
    Fingerprint,
    IndexInfo,
    Match,
    NewReference,
    Reference,
    utc_now,
)
from index.search import Snapshot, make_snapshot, search_snapshot
from index.validation import as_bytes, reference_attributes_json, validate_queries, validate_vectors

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "writer.lock"
_LOAD_RETRIES = 5


class ReferenceIndex:
    """Brands' reference vectors with their records; one writer, any number of readers.

    Create with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not the constructor.
    Thread-safe: calls on one object may come from several threads.
    """

    def __init__(self, path: Path, catalog: Catalog, lock: WriterLock | None) -> None:
        self.path = path
        self._catalog = catalog
        self._writer_lock = lock
        self._lock = threading.RLock()
        self._closed = False
        meta = catalog.meta()
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise IndexMismatchError(
                f"index at {path} has format version {meta['format_version']}; this code reads "
                f"up to {FORMAT_VERSION}. Upgrade the package."
            )
        self.fingerprint = Fingerprint.from_dict(meta["fingerprint"])
        self.factory: str = meta["factory"]
        self.dim: int = int(meta["dim"])
        self.metric: str = meta["metric"]
        self._build_params: dict[str, Any] = dict(meta.get("build_params") or {})
        self._search_defaults: dict[str, Any] = dict(meta.get("search_params") or {})
        self._created_at: str = meta["created_at"]
        self._snap: Snapshot | None = None
        self._generation_on_disk = int(meta["generation"])

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
    ) -> ReferenceIndex:
        """Create a new, empty index and open it writable.

        Args:
            path: Directory to create (must not exist, or be empty).
            fingerprint: The embedding model's fingerprint; ``dim`` comes from it.
            factory: Any faiss factory string ("Flat", "HNSW32", "IVF1024,PQ64"...), inner product.
            build_params: Optional ``{"efConstruction": int}`` for HNSW factories.
            search_params: Default query-time parameters, e.g. ``{"nprobe": 16}``.

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
        index = faiss_ops.build_index(factory, fingerprint.dim, build_params)
        if search_params:
            faiss_ops.SearchSetup(index, search_params)  # validates names now, not at first search
        # Build in a hidden sibling and rename: a crash mid-create leaves no half index at path.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            gen_name = generation_file_name(0)
            atomic_write(tmp / gen_name, lambda p: faiss_ops.write_index(index, p))
            now = utc_now()
            meta = {
                "format_version": FORMAT_VERSION,
                "fingerprint": fingerprint.to_dict(),
                "dim": int(fingerprint.dim),
                "metric": faiss_ops.METRIC,
                "factory": factory,
                "build_params": dict(build_params or {}),
                "search_params": dict(search_params or {}),
                "created_at": now,
                "updated_at": now,
                "generation": 0,
                "faiss_file": gen_name,
                "faiss_sha256": sha256_file(tmp / gen_name),
                "faiss_size": (tmp / gen_name).stat().st_size,
                "faiss_ntotal": 0,
                "vectors": 0,
                "max_vectors_per_ref": 0,
            }
            catalog = Catalog(tmp / DB_NAME, readonly=False, create=True)
            try:
                catalog.init_schema(meta)
            finally:
                catalog.close()
            _write_manifest(tmp, meta, count=0)
            with contextlib.suppress(FileNotFoundError, OSError):
                path.rmdir()  # an empty directory given by the caller
            try:
                os.rename(tmp, path)
            except OSError as e:
                raise IndexExistsError(f"{path} appeared while creating the index: {e}") from e
            fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        if idx.factory != factory:
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

    # -- properties -----------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._writer_lock is not None

    @property
    def generation(self) -> int:
        """Generation of the faiss state this object searches (see :meth:`reload`)."""
        return self._snapshot.generation if self._snap is not None else self._generation_on_disk

    @property
    def _snapshot(self) -> Snapshot:
        if self._closed:
            raise IndexStoreError(f"index at {self.path} is closed")
        if self._snap is None:
            raise IndexCorruptError(f"index at {self.path} has no loaded faiss state; {REPAIR_HINT}")
        return self._snap

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return self._catalog.count()

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"ReferenceIndex({str(self.path)!r}, factory={self.factory!r}, dim={self.dim}, {mode})"

    # -- loading --------------------------------------------------------------------------------

    def _load(self, *, verify: bool) -> Snapshot:
        """Load the committed generation: meta, tombstones and the matching verified faiss file."""
        for _ in range(_LOAD_RETRIES):
            with self._lock:
                self._catalog.begin_read()  # one consistent view of meta + tombstones
                try:
                    meta = self._catalog.meta()
                    tomb_ids, tomb_vectors = self._catalog.tombstones()
                finally:
                    self._catalog.commit()
            try:
                index = self._read_faiss(meta, verify=verify)
            except IndexCorruptError:
                # A writer may have committed twice and pruned our file meanwhile: retry on a newer
                # generation; if the generation did not move, the file really is broken.
                with self._lock:
                    if self._catalog.generation() != int(meta["generation"]):
                        continue
                raise
            self._generation_on_disk = int(meta["generation"])
            return make_snapshot(
                int(meta["generation"]), index, tomb_ids, tomb_vectors, int(meta["max_vectors_per_ref"])
            )
        raise IndexCorruptError(f"index at {self.path} kept changing while loading; try again")

    def _read_faiss(self, meta: Mapping[str, Any], *, verify: bool) -> Any:
        fpath = self.path / meta["faiss_file"]
        gen = meta["generation"]
        try:
            size = fpath.stat().st_size
        except FileNotFoundError:
            raise IndexCorruptError(
                f"faiss file {fpath.name} of generation {gen} is missing from {self.path}; {REPAIR_HINT}"
            ) from None
        if size != int(meta["faiss_size"]):
            raise IndexCorruptError(
                f"faiss file {fpath.name} has {size} bytes but {meta['faiss_size']} were recorded "
                f"when generation {gen} was saved (truncated or overwritten); {REPAIR_HINT}"
            )
        if verify and sha256_file(fpath) != meta["faiss_sha256"]:
            raise IndexCorruptError(
                f"faiss file {fpath.name} does not match the sha256 recorded when generation {gen} "
                f"was saved (corrupted); {REPAIR_HINT}"
            )
        # Readers map the file (immutable per generation); the writer needs it in memory to modify.
        index = faiss_ops.read_index(fpath, mmap=not self.writable)
        if index.d != self.dim:
            raise IndexCorruptError(f"faiss file {fpath.name} has dim {index.d}, the index {self.dim}")
        if int(index.ntotal) != int(meta["faiss_ntotal"]):
            raise IndexCorruptError(
                f"faiss file {fpath.name} holds {index.ntotal} vectors, SQLite recorded "
                f"{meta['faiss_ntotal']} for generation {gen}; {REPAIR_HINT}"
            )
        return index

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

    # -- writes ---------------------------------------------------------------------------------

    def add(
        self,
        references: Sequence[NewReference],
        vectors: Sequence[np.ndarray] | np.ndarray,
        aux: Sequence[bytes | None] | None = None,
    ) -> AddReport:
        """Add references with their vectors in one atomic, durable commit.

        Args:
            references: Records to add.
            vectors: ``vectors[i]`` is ``(dim,)`` or ``(n_i, dim)`` float32 unit vectors of
                ``references[i]`` (several views of one reference share its id). A 2-D array
                of shape ``(len(references), dim)`` is the one-vector-per-reference fast path.
            aux: Optional opaque bytes per reference (e.g. local features), or None.

        Returns:
            Ids of the added references and the skipped duplicates (same sha256 already stored
            or earlier in this call).

        Raises:
            ValueError: Lengths differ, wrong dim, not unit-norm, not finite, bad attributes.
            IndexTrainingError: The factory needs training and these vectors cannot train it.
            ReadOnlyIndexError: The index was opened read-only.
        """
        return self._add(references, vectors, aux, added_at=None)

    def _add(
        self,
        references: Sequence[NewReference],
        vectors: Sequence[np.ndarray] | np.ndarray,
        aux: Sequence[bytes | None] | None,
        added_at: Sequence[str] | None,
    ) -> AddReport:
        self._require_writable()
        refs = list(references)
        if len(vectors) != len(refs):
            raise ValueError(f"got {len(refs)} references but {len(vectors)} vector entries")
        if aux is not None and len(aux) != len(refs):
            raise ValueError(f"got {len(refs)} references but {len(aux)} aux entries")
        attributes = reference_attributes_json(refs)
        aux_list = [None] * len(refs) if aux is None else [as_bytes(a, i) for i, a in enumerate(aux)]
        matrices = validate_vectors(vectors, self.dim)
        now = utc_now()
        with self._lock:
            self._check_open()
            existing = self._catalog.existing_sha256(r.sha256 for r in refs)
            self._catalog.begin_write()
            mutated = False
            try:
                next_id = self._catalog.next_ref_id()
                seen: dict[str, int] = {}
                rows, added, skipped, id_parts, vec_parts = [], [], [], [], []
                for i, (ref, mat) in enumerate(zip(refs, matrices)):
                    prior = existing.get(ref.sha256, seen.get(ref.sha256))
                    if prior is not None:
                        skipped.append((i, prior, ref.sha256))
                        continue
                    rid, next_id = next_id, next_id + 1
                    seen[ref.sha256] = rid
                    rows.append((
                        rid, ref.brand, ref.kind, ref.product_id, ref.source, ref.sha256,
                        added_at[i] if added_at is not None else now, attributes[i],
                        len(mat), mat.tobytes(), aux_list[i],
                    ))  # fmt: skip
                    added.append(rid)
                    id_parts.append(np.full(len(mat), rid, dtype=np.int64))
                    vec_parts.append(mat)
                if not added:
                    self._catalog.rollback()
                    return AddReport(added=[], skipped=skipped)
                self._catalog.insert_references(rows)
                new_vectors = np.ascontiguousarray(np.concatenate(vec_parts))
                index = self._snapshot.index
                if not index.is_trained:
                    faiss_ops.train_if_needed(index, new_vectors, self.factory)
                mutated = True
                index.add_with_ids(new_vectors, np.concatenate(id_parts))
                self._commit(index)
            except BaseException:
                self._abort(mutated)
                raise
        return AddReport(added=added, skipped=skipped)

    def remove(
        self,
        *,
        ref_ids: Iterable[int] | None = None,
        brand: str | None = None,
        product_id: str | None = None,
    ) -> int:
        """Remove references (records, vectors, aux) in one atomic commit.

        Filters combine with AND: ``remove(brand="acme", product_id="X")`` removes acme's
        product X only. Unknown ids are ignored.

        Returns:
            Number of references removed.

        Raises:
            ValueError: No filter given.
            ReadOnlyIndexError: The index was opened read-only.
        """
        self._require_writable()
        if ref_ids is None and brand is None and product_id is None:
            raise ValueError("remove() needs ref_ids, brand and/or product_id")
        id_list = None if ref_ids is None else [int(i) for i in ref_ids]
        with self._lock:
            self._check_open()
            self._catalog.begin_write()
            mutated = False
            try:
                ids = self._catalog.select_ids(id_list, brand, product_id)
                if not ids:
                    self._catalog.rollback()
                    return 0
                _, dead_before = self._catalog.tombstones()
                counts = self._catalog.delete_references(ids)
                n_vectors = sum(counts.values())
                index = self._snapshot.index
                if faiss_ops.supports_tombstones(index):
                    # HNSW cannot remove: hide the ids at search time, compact when too many are dead.
                    self._catalog.add_tombstones(counts)
                    if dead_before + n_vectors > TOMBSTONE_REBUILD_FRACTION * index.ntotal:
                        index = rebuild_from_catalog(
                            self._catalog, self.factory, self.dim, self._build_params
                        )
                else:
                    mutated = True
                    removed = faiss_ops.try_remove(index, np.array(sorted(counts), dtype=np.int64))
                    if removed is None:
                        index = rebuild_from_catalog(
                            self._catalog, self.factory, self.dim, self._build_params
                        )
                    elif removed != n_vectors:
                        raise IndexCorruptError(
                            f"faiss held {removed} vectors of the removed references, SQLite "
                            f"{n_vectors}; {REPAIR_HINT}"
                        )
                self._commit(index)
            except BaseException:
                self._abort(mutated)
                raise
        return len(counts)

    def rebuild(self, *, factory: str | None = None, build_params: Mapping[str, Any] | None = None) -> None:
        """Rebuild the faiss index from the stored vectors and commit it.

        Compacts removed vectors, retrains (e.g. an IVF trained on a small first batch) or
        converts to another factory string. Search defaults are kept unless the factory changes.
        """
        self._require_writable()
        new_factory = factory or self.factory
        new_params = dict(build_params if build_params is not None else
                          (self._build_params if new_factory == self.factory else {}))  # fmt: skip
        with self._lock:
            self._check_open()
            self._catalog.begin_write()
            try:
                index = rebuild_from_catalog(self._catalog, new_factory, self.dim, new_params)
                extra: dict[str, Any] = {"factory": new_factory, "build_params": new_params}
                if new_factory != self.factory:
                    extra["search_params"] = {}
                self._commit(index, extra_meta=extra)
            except BaseException:
                self._abort(False)
                raise
            self.factory, self._build_params = new_factory, new_params
            if "search_params" in extra:
                self._search_defaults = {}

    def _commit(self, index: Any, extra_meta: Mapping[str, Any] | None = None) -> None:
        """Save ``index`` as the next generation and commit the open SQLite transaction."""
        gen = self._generation_on_disk + 1
        name = generation_file_name(gen)
        self._write_faiss(index, self.path / name)
        total_vectors, max_per_ref = self._catalog.vector_stats()
        tomb_ids, tomb_vectors = self._catalog.tombstones()
        if int(index.ntotal) - tomb_vectors != total_vectors:
            raise IndexCorruptError(
                f"internal inconsistency: faiss would hold {index.ntotal - tomb_vectors} live vectors, "
                f"SQLite {total_vectors}; nothing was committed"
            )
        meta = {
            "generation": gen,
            "faiss_file": name,
            "faiss_sha256": sha256_file(self.path / name),
            "faiss_size": (self.path / name).stat().st_size,
            "faiss_ntotal": int(index.ntotal),
            "vectors": total_vectors,
            "max_vectors_per_ref": max_per_ref,
            "updated_at": utc_now(),
            **(extra_meta or {}),
        }
        self._catalog.set_meta(meta)
        self._commit_catalog()  # the commit point: generation gen is now the state on disk
        self._generation_on_disk = gen
        self._snap = make_snapshot(gen, index, tomb_ids, tomb_vectors, max_per_ref)
        self._write_manifest()
        self._prune_generations(keep_from=gen - 1)

    def _write_faiss(self, index: Any, path: Path) -> None:
        atomic_write(path, lambda tmp: faiss_ops.write_index(index, tmp))

    def _commit_catalog(self) -> None:
        self._catalog.commit()

    def _write_manifest(self) -> None:
        _write_manifest(self.path, self._catalog.meta(), count=self._catalog.count())

    def _prune_generations(self, keep_from: int) -> None:
        # The previous generation stays for readers that read its number but not yet its file.
        for gen, p in list_generation_files(self.path).items():
            if gen < keep_from:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def _remove_stale_files(self) -> None:
        """Writer open: delete temp files and generation files a crashed writer left behind."""
        remove_temp_files(self.path)
        current = self._catalog.generation()
        for gen, p in list_generation_files(self.path).items():
            if gen > current or gen < current - 1:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        meta = self._catalog.meta()
        # The manifest may be one commit behind if a writer died right after committing SQLite.
        try:
            manifest = json.loads((self.path / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("generation") != meta["generation"]:
            _write_manifest(self.path, meta, count=self._catalog.count())

    def _abort(self, mutated: bool) -> None:
        """Undo a failed write: roll back SQLite and, if faiss was modified, reload the last commit."""
        self._catalog.rollback()
        if mutated:
            self._snap = self._load(verify=False)

    # -- reads ----------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k distinct references per query, as arrays (the hot path).

        Args:
            queries: ``(q, dim)`` (or ``(dim,)``) float32 query vectors, unit-norm.
            k: References per query.
            params: Query-time faiss parameters, e.g. ``{"efSearch": 128}`` or ``{"nprobe": 16}``,
                over the defaults given at create time.

        Returns:
            ``(scores, ref_ids)``, both ``(q, k)``: inner products sorted descending (a
            reference's best vector), ids ``-1`` with score ``-inf`` where fewer than k exist.
        """
        q = validate_queries(queries, self.dim)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        snap = self._snapshot
        # The writer modifies its index in place, so its searches wait for writes; readers don't.
        guard = self._lock if self.writable else contextlib.nullcontext()
        return search_snapshot(
            snap, q, int(k), defaults=self._search_defaults, params=params, guard=guard
        )

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

    def import_records(self, src: str | os.PathLike[str]) -> AddReport:
        """Add every reference of an export folder (one atomic commit, duplicates skipped).

        Records keep their fields and ``added_at``; they get new ids (see ``AddReport.added``,
        in export order).

        Raises:
            IndexMismatchError: The export was made with another model.
            IndexCorruptError: ``src`` is not a readable export.
        """
        self._require_writable()
        refs, mats, aux, added_at = load_export(src, self.fingerprint)
        return self._add(refs, mats, aux, added_at=added_at)

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

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock and the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._snap = None
            with contextlib.suppress(Exception):
                self._catalog.rollback()
            self._catalog.close()
            if self._writer_lock is not None:
                self._writer_lock.release()

    def __enter__(self) -> ReferenceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten writer must not keep the lock for the life of the process.
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()

    # -- validation -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise IndexStoreError(f"index at {self.path} is closed")

    @contextlib.contextmanager
    def _read_view(self) -> Iterator[Catalog]:
        """The open catalog inside one read transaction, under the lock: a consistent view."""
        with self._lock:
            self._check_open()
            self._catalog.begin_read()
            try:
                yield self._catalog
            finally:
                self._catalog.commit()

    def _require_writable(self) -> None:
        self._check_open()
        if not self.writable:
            raise ReadOnlyIndexError(f"index at {self.path} is open read-only; open it with writable=True")


def _write_manifest(folder: Path, meta: Mapping[str, Any], *, count: int) -> None:
    keys = ("format_version", "fingerprint", "dim", "metric", "factory", "build_params", "search_params",
            "generation", "faiss_file", "faiss_sha256", "faiss_size", "vectors", "created_at", "updated_at")  # fmt: skip
    manifest = {k: meta[k] for k in keys if k in meta}
    manifest["count"] = count
    manifest["note"] = "mirror of the meta table in records.sqlite, which is authoritative"
    atomic_write_json(folder / MANIFEST_NAME, manifest)
