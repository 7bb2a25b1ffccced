"""The descriptor vote over the on-disk store (:mod:`detector.descriptor_store`).

The scorer holds the store's segments memory-mapped (their inverted lists stay in the page
cache, shared and evictable, not on the heap), the ids of the live references of the verified
kinds, and an in-memory :class:`~detector.local_search.LocalFeatureIndex` of the references
the store does not cover yet (added by a run that stopped before its sync): what it needs
to vote, not the library's descriptors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from detector.descriptor_store import (
    SEGMENT_SUFFIX,
    STORE_DIR,
    OpenStore,
    covered_ids,
    open_store,
    owners_of,
    read_manifest,
)
from detector.local_search import (
    DEFAULT_NPROBE,
    NEIGHBOURS,
    DescriptorNeighbours,
    LocalFeatureIndex,
    count_votes,
)
from detector.page_cache import read_ahead
from detector.verify import LocalFeatures


class StoredDescriptorIndex:
    """Votes like :class:`~detector.local_search.LocalFeatureIndex`, from the on-disk store."""

    def __init__(self, store: OpenStore, live: np.ndarray, catch_up: LocalFeatureIndex) -> None:
        self._store = store
        self._live = np.unique(np.asarray(live, dtype=np.int64))
        self._catch_up = catch_up

    def __len__(self) -> int:
        return int(self._store.index.ntotal) + len(self._catch_up)

    @classmethod
    def open(cls, index_path: Path, live: Sequence[int], features: Callable[[list[int]], dict[int, LocalFeatures]],
             nprobe: int = DEFAULT_NPROBE) -> StoredDescriptorIndex | None:
        """The store beside the index at ``index_path``, or None when it has none.

        Args:
            live: Ids of the references that may receive votes (the verified kinds, not removed).
            features: Decodes references' stored features (for those the store does not cover).
            nprobe: Inverted lists a search visits.
        """
        folder = Path(index_path) / STORE_DIR
        manifest = read_manifest(folder)
        if manifest is None:
            return None
        covered = covered_ids(folder, manifest)
        live_ids = np.asarray(list(live), dtype=np.int64)
        missing = live_ids[~np.isin(live_ids, covered)].tolist()
        catch_up = LocalFeatureIndex.from_features(features(missing), nprobe) if missing else (
            LocalFeatureIndex.from_features({}, nprobe))
        store = open_store(folder, manifest, nprobe)
        # Its first searches would otherwise wait on random reads of the files (a cold start).
        read_ahead(folder / f"{stem}{SEGMENT_SUFFIX}" for stem in manifest.segments)
        return cls(store, live_ids, catch_up)

    def neighbours(self, query: LocalFeatures) -> DescriptorNeighbours | None:
        """Each query descriptor's nearest live reference descriptors in the store and the
        catch-up index, nearest first (None when nothing to search). Store rows are
        descriptor ids (>= 0), catch-up rows are negative: a row never names two descriptors."""
        if len(query) == 0 or query.method != "sift" or len(self) == 0:
            return None
        parts = []
        if self._store.index.ntotal:
            distances, ids = self._store.index.search(query.matchable, NEIGHBOURS)
            parts.append((distances, owners_of(ids), ids))
        near = self._catch_up.neighbours(query) if len(self._catch_up) else None
        if near is not None:
            parts.append((near.distances, near.owners, np.where(near.rows >= 0, -2 - near.rows, -1)))
        if not parts:
            return None
        distances = np.concatenate([p[0] for p in parts], axis=1)
        owners = np.concatenate([p[1] for p in parts], axis=1)
        rows = np.concatenate([p[2] for p in parts], axis=1)
        dead = ~np.isin(owners, self._live)  # removed references, other kinds, empty slots
        distances = np.where(dead, np.inf, distances)
        order = np.argsort(distances, axis=1, kind="stable")[:, :NEIGHBOURS]
        distances = np.take_along_axis(distances, order, axis=1)
        empty = np.isinf(distances)
        owners = np.where(empty, -1, np.take_along_axis(owners, order, axis=1))
        rows = np.where(empty, -1, np.take_along_axis(rows, order, axis=1))
        return DescriptorNeighbours(distances.astype(np.float32), rows, owners)

    def vote(self, query: LocalFeatures, top: int, ratio: float = 0.8,
             near: DescriptorNeighbours | None = None) -> list[tuple[int, int]]:
        """The ``top`` references with the most votes from ``query`` (see ``LocalFeatureIndex.vote``)."""
        near = near if near is not None else self.neighbours(query)
        if top < 1 or near is None:
            return []
        return count_votes(near, top, ratio)
