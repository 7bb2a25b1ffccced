"""MilvusReferenceIndex: the reference index kept in a Milvus collection (Lite file or server).

The same public surface as :class:`index.store.ReferenceIndex` that the detector uses
(create/open, add, remove, replace_aux, search, search_vectors, get_references, get_aux,
get_vectors, references, existing_sha256, info, committed_generation/reload, fingerprint,
path, len, close), so :func:`index.open.open_index` can hand out either. Differences:

* the factory is "Flat" (exact) or "HNSW<M>"; no IVF/PQ, no rebuild/export (Milvus builds
  and compacts its own index);
* side data (aux) lives in a content-addressed folder next to the collection
  (:mod:`index.side_store`), not in the collection;
* one writer at a time is the deployment's rule; the lock file in the side folder enforces it
  only between processes that share that folder.

Example:
    >>> idx = MilvusReferenceIndex.create("milvus-lite:refs.db", fingerprint=fp)
    >>> idx.add([NewReference(brand="acme", sha256=h, source="a.png")], [vec])
    >>> matches = idx.search(queries, k=5)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from index.atomic import WriterLock
from index.errors import IndexExistsError, IndexMismatchError, IndexNotFoundError
from index.milvus_base import QUERY_LIMIT, connect, disconnect, pymilvus_types, writer_lock_path
from index.milvus_schema import (
    P_CREATED,
    P_GENERATION,
    P_UPDATED,
    RECORD_FIELDS,
    VIEW_SLOTS,
    build_schema,
    initial_properties,
    literal,
    milvus_index_params,
    milvus_search_params,
    reference_of,
)
from index.milvus_spec import MilvusLocation, parse_milvus_spec
from index.milvus_writes import MilvusWrites
from index.records import Fingerprint, IndexInfo, Match, Reference, utc_now
from index.search import distinct_top_k
from index.validation import validate_queries

QUERY_BATCH = 256  # queries per Milvus search request
FETCH_PER_RESULT = 4  # rows first fetched per wanted reference (references have a few views)


class MilvusReferenceIndex(MilvusWrites):
    """Brands' reference vectors with their records in a Milvus collection.

    Create with :meth:`create`, :meth:`open` or :meth:`open_or_create`. Thread-safe.
    """

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, spec: str, *, fingerprint: Fingerprint, factory: str = "Flat", **_faiss_only: Any
    ) -> MilvusReferenceIndex:
        """Create a new, empty index and open it writable.

        Args:
            spec: ``milvus-lite:PATH`` or ``milvus://HOST:PORT/COLLECTION?side=DIR``.
            fingerprint: The embedding model's fingerprint; ``dim`` comes from it.
            factory: "Flat" (exact) or "HNSW<M>".

        Raises:
            IndexExistsError: The collection already exists.
            ValueError: Unsupported factory, bad dim or malformed spec.
        """
        location = parse_milvus_spec(spec)
        index_type, build = milvus_index_params(factory)
        if int(fingerprint.dim) < 1:
            raise ValueError(f"fingerprint.dim must be >= 1, got {fingerprint.dim}")
        client = connect(location)
        try:
            if client.has_collection(location.collection):
                raise IndexExistsError(f"an index already exists at {spec}; open it instead")
            client_cls, data_type = pymilvus_types()
            params = client.prepare_index_params()
            params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=build)
            location.side_dir.mkdir(parents=True, exist_ok=True)
            client.create_collection(
                location.collection, schema=build_schema(client_cls, data_type, fingerprint.dim),
                properties=initial_properties(fingerprint, factory, utc_now()),
                consistency_level="Strong",  # a reader sees every write the writer has returned from
            )  # fmt: skip
            # Milvus Lite builds the index at once but lacks the call pymilvus waits with (its
            # AllocTimestamp answers "not implemented", logged as an error): don't wait there.
            client.create_index(location.collection, params, sync=not location.lite)
        finally:
            disconnect(location, client)
        return cls.open(spec, writable=True, fingerprint=fingerprint)

    @classmethod
    def open(
        cls,
        spec: str,
        *,
        writable: bool = False,
        fingerprint: Fingerprint | None = None,
        lock_timeout: float = 0.0,
        **_faiss_only: Any,
    ) -> MilvusReferenceIndex:
        """Open an existing index.

        Raises:
            IndexNotFoundError: No index at ``spec``.
            IndexMismatchError: ``fingerprint`` differs from the index's model.
            IndexLockedError: Another writer holds the lock after ``lock_timeout``.
            BackendUnavailableError: pymilvus / milvus-lite are not installed.
        """
        location = parse_milvus_spec(spec)
        if location.lite and not os.path.exists(location.uri):
            raise IndexNotFoundError(f"no reference index at {spec} (no file {location.uri})")
        lock = None
        client = None
        try:
            if writable:
                location.side_dir.mkdir(parents=True, exist_ok=True)
                lock = WriterLock(writer_lock_path(location))
                lock.acquire(lock_timeout)
            client = connect(location)
            idx = cls(location, client, lock)
            idx.check_fingerprint(fingerprint)
            return idx
        except BaseException:
            if client is not None:
                disconnect(location, client)
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def open_or_create(
        cls, spec: str, *, fingerprint: Fingerprint, factory: str = "Flat", lock_timeout: float = 0.0
    ) -> MilvusReferenceIndex:
        """Open ``spec`` writable if it holds an index, else create one there.

        Raises:
            IndexMismatchError: The existing index has another model or another factory.
        """
        try:
            idx = cls.open(spec, writable=True, fingerprint=fingerprint, lock_timeout=lock_timeout)
        except IndexNotFoundError:
            return cls.create(spec, fingerprint=fingerprint, factory=factory)
        if idx.factory != factory:
            idx.close()
            raise IndexMismatchError(f"index at {spec} uses factory {idx.factory!r}, not {factory!r}")
        return idx

    def __len__(self) -> int:
        self._check_open()
        rows = self._client.query(self.location.collection, filter="view == 0", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"MilvusReferenceIndex({self.spec!r}, factory={self.factory!r}, dim={self.dim}, {mode})"

    # -- search ---------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k distinct references per query, as arrays (see ReferenceIndex.search_vectors).

        A reference may own several rows (views): rows are over-fetched and each reference's
        best row kept; a query that got fewer than k references from a full page of rows is
        searched again with a larger page, so every row holds k references when k exist.
        (Milvus' ``group_by_field`` does the same, but made a Milvus Lite search of 2,000 rows
        9x slower: 68 ms against 7.7 ms.)

        Returns:
            ``(scores, ref_ids)``, both ``(q, k)``, scores descending; ``-inf`` / ``-1`` pad.
        """
        q = validate_queries(queries, self.dim)
        k = int(k)
        if k < 1 or k > QUERY_LIMIT:
            raise ValueError(f"k must be in [1, {QUERY_LIMIT}], got {k}")
        milvus_search_params(self.factory, k, params)  # checks the parameter names before searching
        self._check_open()
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        fetch = min(k * FETCH_PER_RESULT, QUERY_LIMIT)
        todo = np.arange(len(q))
        while len(todo):
            d, vid = self._search_rows(q[todo], fetch, milvus_search_params(self.factory, fetch, params))
            d, ref = distinct_top_k(d, np.where(vid >= 0, vid // VIEW_SLOTS, -1), k)
            scores[todo, : d.shape[1]], ids[todo, : d.shape[1]] = d, ref
            page_full = vid[:, -1] >= 0  # more rows may lie beyond this page
            todo = todo[page_full & (ref < 0).any(axis=1)] if fetch < QUERY_LIMIT else todo[:0]
            fetch = min(fetch * 4, QUERY_LIMIT)
        return scores, ids

    def _search_rows(
        self, q: np.ndarray, fetch: int, search_params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``fetch`` rows per query: ``(scores, primary keys)``, padded with -inf / -1."""
        d = np.full((len(q), fetch), -np.inf, dtype=np.float32)
        vid = np.full((len(q), fetch), -1, dtype=np.int64)
        for start in range(0, len(q), QUERY_BATCH):
            hits = self._client.search(self.location.collection, data=list(q[start : start + QUERY_BATCH]),
                                       limit=fetch, anns_field="vector", search_params=search_params)  # fmt: skip
            for row, found in enumerate(hits, start=start):
                n = min(len(found.ids), fetch)
                d[row, :n] = found.distances[:n]
                vid[row, :n] = found.ids[:n]
        return d, vid

    def search(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> list[list[Match]]:
        """Top-k distinct references per query with their records joined, best first."""
        scores, ids = self.search_vectors(queries, k, params=params)
        refs = self.get_references(np.unique(ids[ids >= 0]).tolist())
        out = []
        for row_s, row_i in zip(scores.tolist(), ids.tolist()):
            out.append([
                Match(ref_id=rid, brand=refs[rid].brand, kind=refs[rid].kind, product_id=refs[rid].product_id,
                      score=float(s), source=refs[rid].source)
                for s, rid in zip(row_s, row_i) if rid >= 0 and rid in refs
            ])  # fmt: skip
        return out

    # -- reads ----------------------------------------------------------------------------------

    def get_references(self, ref_ids: Iterable[int]) -> dict[int, Reference]:
        """Records by id (ids not stored are absent from the result)."""
        self._check_open()
        rows = self._rows_of_ids([int(i) for i in ref_ids], RECORD_FIELDS + ["view"])
        return {int(r["ref_id"]): reference_of(r) for r in rows if int(r["view"]) == 0}

    def get_aux(self, ref_ids: Iterable[int]) -> dict[int, bytes]:
        """Side data by ref id (refs without it, or whose blob is missing or damaged, are absent)."""
        self._check_open()
        rows = self._rows_of_ids([int(i) for i in ref_ids], ["ref_id", "view", "aux_key"])
        out = {}
        for row in rows:
            if int(row["view"]) == 0 and row["aux_key"]:
                blob = self.side.get(row["aux_key"])
                if blob is not None:
                    out[int(row["ref_id"])] = blob
        return out

    def get_vectors(self, ref_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored ``(n_views, dim)`` float32 vectors by ref id (ids not stored are absent)."""
        self._check_open()
        rows = self._rows_of_ids([int(i) for i in ref_ids], ["ref_id", "view", "vector"])
        views: dict[int, list[tuple[int, Any]]] = {}
        for row in rows:
            views.setdefault(int(row["ref_id"]), []).append((int(row["view"]), row["vector"]))
        return {rid: np.asarray([v for _, v in sorted(parts, key=lambda p: p[0])], dtype=np.float32)
                for rid, parts in views.items()}  # fmt: skip

    def references(self, brand: str | None = None) -> Iterator[Reference]:
        """All references (of one brand if given), in id order, fetched in pages."""
        self._check_open()
        expr = "view == 0" + (f" and brand == {literal(brand)}" if brand is not None else "")
        for page in self._rows_in_id_ranges(expr, RECORD_FIELDS):
            yield from (reference_of(r) for r in page)

    def info(self) -> IndexInfo:
        """Counts per brand and kind, sizes (the side folder's; a Lite file's too) and times."""
        self._check_open()
        props = self._properties()
        per_brand: dict[str, dict[str, int]] = {}
        count = 0
        for page in self._rows_in_id_ranges("view == 0", ["ref_id", "brand", "kind"]):
            for row in page:
                kinds = per_brand.setdefault(row["brand"], {})
                kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
                count += 1
        vectors = self._client.query(self.location.collection, filter="", output_fields=["count(*)"])
        return IndexInfo(
            path=self.spec, fingerprint=self.fingerprint, factory=self.factory, dim=self.dim, metric=self.metric,
            count=count, vectors=int(vectors[0]["count(*)"]) if vectors else 0, per_brand=per_brand,
            size_bytes=_folder_size(self.location), generation=int(props[P_GENERATION]),
            created_at=props.get(P_CREATED, self._created_at), updated_at=props.get(P_UPDATED, ""),
        )  # fmt: skip


def _folder_size(location: MilvusLocation) -> int:
    """Bytes under the side folder and, for Milvus Lite, the database file or folder."""
    roots = [location.side_dir] + ([location.uri] if location.lite else [])
    total = 0
    for root in roots:
        if os.path.isfile(root):
            total += os.path.getsize(root)
        for folder, _, files in os.walk(root):
            paths = (os.path.join(folder, name) for name in files)
            total += sum(os.path.getsize(p) for p in paths if not os.path.islink(p))
    return total
