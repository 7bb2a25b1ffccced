"""The write operations of a reference index: add, remove, rebuild and import.

Each call is one commit (see :mod:`index.commit`): inputs are checked first, then the SQLite
write transaction and the in-memory faiss index are changed together and committed as the
next generation, or rolled back together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from index import faiss_ops
from index.commit import CommittedIndex
from index.errors import REPAIR_HINT, IndexCorruptError
from index.export import load_export
from index.rebuild import TOMBSTONE_REBUILD_FRACTION, TRAIN_SAMPLE_MAX, rebuild_from_catalog
from index.records import AddReport, NewReference, utc_now
from index.validation import as_bytes, reference_attributes_json, validate_vectors


class IndexWrites(CommittedIndex):
    """Adds the write operations to :class:`~index.commit.CommittedIndex`; a base of ReferenceIndex.

    Every operation needs the index opened writable (it holds the writer lock).
    """

    def add(
        self,
        references: Sequence[NewReference],
        vectors: Sequence[np.ndarray] | np.ndarray,
        aux: Sequence[bytes | None] | None = None,
        *,
        aux_updates: Mapping[int, bytes | None] | None = None,
    ) -> AddReport:
        """Add references with their vectors in one atomic, durable commit.

        Args:
            references: Records to add.
            vectors: ``vectors[i]`` is ``(dim,)`` or ``(n_i, dim)`` float32 unit vectors of
                ``references[i]`` (several views of one reference share its id). A 2-D array
                of shape ``(len(references), dim)`` is the one-vector-per-reference fast path.
            aux: Optional opaque bytes per reference (e.g. local features), or None.
            aux_updates: New aux bytes of references already stored (None deletes theirs),
                replaced in the same commit (:meth:`replace_aux`): e.g. the side data a new
                logo changes for its brand's product photos. Unknown ids are ignored.

        Returns:
            Ids of the added references and the skipped duplicates (same sha256 already stored
            or earlier in this call).

        Raises:
            ValueError: Lengths differ, wrong dim, not unit-norm, not finite, bad attributes.
            IndexTrainingError: The factory needs training and these vectors cannot train it.
            ReadOnlyIndexError: The index was opened read-only.
        """
        return self._add(references, vectors, aux, added_at=None, aux_updates=aux_updates)

    def _add(
        self,
        references: Sequence[NewReference],
        vectors: Sequence[np.ndarray] | np.ndarray,
        aux: Sequence[bytes | None] | None,
        added_at: Sequence[str] | None,
        aux_updates: Mapping[int, bytes | None] | None = None,
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
        updates = _checked_updates(aux_updates)
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
                        len(mat), mat, aux_list[i],
                    ))  # fmt: skip
                    added.append(rid)
                    id_parts.append(np.full(len(mat), rid, dtype=np.int64))
                    vec_parts.append(self._catalog.stored_form(mat))  # what a rebuild will read back
                if not added:
                    if updates and self._catalog.replace_aux(updates):
                        self._commit(self._snapshot.index)
                    else:
                        self._catalog.rollback()
                    return AddReport(added=[], skipped=skipped)
                self._catalog.replace_aux(updates)  # before the insert: new ids are not updated
                self._catalog.insert_references(rows)
                new_vectors = np.ascontiguousarray(np.concatenate(vec_parts))
                index = self._snapshot.index
                if not index.is_trained:  # empty: trained afresh from the factory, because faiss
                    # saves an untrained OPQ as a plain linear map that cannot train any more
                    index = faiss_ops.build_index(self.factory, self.dim, self._build_params)
                    faiss_ops.train_if_needed(index, new_vectors, self.factory)
                mutated = True
                index.add_with_ids(new_vectors, np.concatenate(id_parts))
                self._commit(index)
            except BaseException:
                self._abort(mutated)
                raise
            self._train_staged_factory()
        return AddReport(added=added, skipped=skipped)

    def _train_staged_factory(self) -> None:
        """Convert a staged index (exact Flat so far) to its factory once it holds enough
        vectors: trained on a sample of everything stored, one commit (a crash before it leaves
        the Flat index, converted at the next add)."""
        staged = self._staged
        if staged is None or self._catalog.vector_stats()[0] < int(staged["train_after_vectors"]):
            return
        self._rebuild(staged["factory"], staged["build_params"], dict(staged["search_params"]), {"staged": None},
                      train_vectors=max(TRAIN_SAMPLE_MAX, int(staged["train_after_vectors"])))

    def remove(
        self,
        *,
        ref_ids: Iterable[int] | None = None,
        brand: str | None = None,
        product_id: str | None = None,
        aux_updates: Mapping[int, bytes | None] | None = None,
    ) -> int:
        """Remove references (records, vectors, aux) in one atomic commit.

        Filters combine with AND: ``remove(brand="acme", product_id="X")`` removes acme's
        product X only. Unknown ids are ignored. ``aux_updates`` replaces the aux bytes of
        references that stay, in the same commit (see :meth:`add`; removed ids are ignored).

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
        updates = _checked_updates(aux_updates)
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
                self._catalog.replace_aux({rid: b for rid, b in updates.items() if rid not in counts})
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

    def replace_aux(self, updates: Mapping[int, bytes | None]) -> int:
        """Replace the aux bytes (side data) of stored references in one atomic commit; None
        deletes a reference's. Records and vectors are unchanged; the generation advances,
        so readers drop side data they decoded from the old bytes. Unknown ids are ignored.

        Returns:
            How many references were updated (0: nothing committed).

        Raises:
            ValueError: A value is neither bytes nor None.
            ReadOnlyIndexError: The index was opened read-only.
        """
        self._require_writable()
        checked = _checked_updates(updates)
        if not checked:
            return 0
        with self._lock:
            self._check_open()
            self._catalog.begin_write()
            try:
                n = self._catalog.replace_aux(checked)
                if not n:
                    self._catalog.rollback()
                    return 0
                self._commit(self._snapshot.index)
            except BaseException:
                self._abort(False)
                raise
        return n

    def rebuild(self, *, factory: str | None = None, build_params: Mapping[str, Any] | None = None) -> None:
        """Rebuild the faiss index from the stored vectors and commit it.

        Compacts removed vectors, retrains (e.g. an IVF trained on a small first batch) or
        converts to another factory string. Search defaults are kept unless the factory changes.
        """
        self._require_writable()
        new_factory = factory or self.factory
        new_params = dict(build_params if build_params is not None else
                          (self._build_params if new_factory == self.factory else {}))  # fmt: skip
        self._rebuild(new_factory, new_params, {} if new_factory != self.factory else None, {})

    def set_search_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Commit new default search parameters (e.g. ``{"nprobe": 1024}``), merged over the
        current ones, and return them. The faiss index is unchanged: it is saved again as the
        next generation, so readers take the new defaults up as they take any commit.

        Raises:
            ValueError: A parameter the index does not have, or a bad value.
        """
        self._require_writable()
        for name, value in params.items():  # every parameter is a count (max_codes: 0 = no limit)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name.endswith("max_codes") else 1):
                raise ValueError(f"search parameter {name!r} must be a positive integer, got {value!r}")
        with self._lock:
            self._check_open()
            merged = {**self._search_defaults, **params}
            faiss_ops.SearchSetup(self._snapshot.index, merged)  # refuses a bad name before committing
            self._catalog.begin_write()
            try:
                self._commit(self._snapshot.index, extra_meta={"search_params": merged})
            except BaseException:
                self._abort(False)
                raise
            self._read_settings(self._catalog.meta())
        return dict(self._search_defaults)

    def _rebuild(self, factory: str, build_params: Mapping[str, Any], search_params: dict[str, Any] | None,
                 extra_meta: Mapping[str, Any], train_vectors: int = TRAIN_SAMPLE_MAX) -> None:
        """One commit replacing the faiss index by ``factory`` built from the stored vectors,
        trained on ``train_vectors`` of them (``search_params`` None: the defaults are kept)."""
        with self._lock:
            self._check_open()
            self._catalog.begin_write()
            try:
                index = rebuild_from_catalog(self._catalog, factory, self.dim, build_params, train_vectors)
                extra: dict[str, Any] = {"factory": factory, "build_params": dict(build_params), **extra_meta}
                if search_params is not None:
                    faiss_ops.SearchSetup(index, search_params)  # refuses a bad name before committing
                    extra["search_params"] = search_params
                self._commit(index, extra_meta=extra)
            except BaseException:
                self._abort(False)
                raise
            self._read_settings(self._catalog.meta())  # the factory, its parameters and staging as committed

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


def _checked_updates(updates: Mapping[int, bytes | None] | None) -> dict[int, bytes | None]:
    """``aux_updates`` with int ids and bytes values (checked before any write)."""
    if not updates:
        return {}
    return {int(rid): as_bytes(value, int(rid)) for rid, value in updates.items()}
