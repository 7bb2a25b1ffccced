"""The commit protocol of an index directory: generations, atomic commits and the manifest.

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
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

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
    IndexStoreError,
    ReadOnlyIndexError,
)
from index.records import Fingerprint, utc_now
from index.search import Snapshot, make_snapshot

FORMAT_VERSION = 2  # 2: raw vectors stored as meta["raw_vectors"] says (1: always float32)
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "writer.lock"
_LOAD_RETRIES = 5


def write_empty_index(
    path: Path,
    index: Any,
    *,
    fingerprint: Fingerprint,
    factory: str,
    build_params: Mapping[str, Any] | None,
    search_params: Mapping[str, Any] | None,
    raw_vectors: str = "float16",
    staged: Mapping[str, Any] | None = None,
) -> None:
    """Create the index directory ``path`` with the empty ``index`` as generation 0
    (``staged``: the factory it becomes once trained, see ``ReferenceIndex.create``).

    Writes the generation's faiss file, the catalog with its meta, and the manifest.

    Raises:
        IndexExistsError: Something appeared at ``path`` while it was being created.
    """
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
            "raw_vectors": raw_vectors,
            "staged": dict(staged) if staged else None,
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


def _write_manifest(folder: Path, meta: Mapping[str, Any], *, count: int) -> None:
    keys = ("format_version", "fingerprint", "dim", "metric", "factory", "staged", "build_params", "search_params",
            "generation", "faiss_file", "faiss_sha256", "faiss_size", "vectors", "created_at", "updated_at")  # fmt: skip
    manifest = {k: meta[k] for k in keys if k in meta}
    manifest["count"] = count
    manifest["note"] = "mirror of the meta table in records.sqlite, which is authoritative"
    atomic_write_json(folder / MANIFEST_NAME, manifest)


class CommittedIndex:
    """An open index directory at its last committed generation: the base of ReferenceIndex.

    Holds what every operation shares (settings read from meta, the catalog, the writer lock,
    the loaded snapshot) and runs the commit protocol. The steps of a commit are separate
    methods so that tests can crash the process between them.
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
        self.dim: int = int(meta["dim"])
        self.metric: str = meta["metric"]
        self._read_settings(meta)
        self._created_at: str = meta["created_at"]
        self._snap: Snapshot | None = None
        self._generation_on_disk = int(meta["generation"])

    def _read_settings(self, meta: Mapping[str, Any]) -> None:
        """The settings a writer may change with a commit (a rebuild to another factory)."""
        self.factory: str = meta["factory"]
        self._build_params: dict[str, Any] = dict(meta.get("build_params") or {})
        self._search_defaults: dict[str, Any] = dict(meta.get("search_params") or {})
        # A factory that needs training, held as exact Flat until enough vectors are stored.
        self._staged: dict[str, Any] | None = meta.get("staged") or None

    @property
    def staged_factory(self) -> str | None:
        """The factory this index becomes once it holds enough vectors to train it (it is
        exact ``Flat`` until then), or None."""
        return self._staged["factory"] if self._staged else None

    @property
    def search_defaults(self) -> dict[str, Any]:
        """The query-time parameters searches use unless a call overrides them."""
        return dict(self._search_defaults)

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
            self._read_settings(meta)  # a reader reloading after a rebuild searches the new factory as set
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

    # -- committing -----------------------------------------------------------------------------

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten writer must not keep the lock for the life of the process.
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()

    # -- state checks ---------------------------------------------------------------------------

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
