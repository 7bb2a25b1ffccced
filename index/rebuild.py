"""Rebuilding the faiss index from the vectors stored in SQLite.

SQLite holds every live reference's raw vectors, so a faiss index can always be rebuilt from it:
to compact tombstoned vectors, to retrain (e.g. an IVF trained on a small first batch), to convert
to another factory string, or to repair a missing or corrupt faiss file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from index import faiss_ops
from index.catalog import Catalog

TOMBSTONE_REBUILD_FRACTION = 0.25  # rebuild an HNSW index once this share of its vectors is dead
TRAIN_SAMPLE_MAX = 262_144  # vectors used to retrain on rebuild (plenty for IVF65536)
_REBUILD_ADD_BATCH = 65_536


def rebuild_from_catalog(
    catalog: Catalog, factory: str, dim: int, build_params: Mapping[str, Any],
    train_vectors: int = TRAIN_SAMPLE_MAX,
) -> Any:
    """A new faiss index holding every live stored vector (inside the write transaction).

    Clears the catalog's tombstones: the new index holds no dead vectors.
    """
    index = faiss_ops.build_index(factory, dim, build_params)
    if not index.is_trained:
        faiss_ops.train_if_needed(index, training_sample(catalog, dim, train_vectors), factory)
    ids_buf: list[np.ndarray] = []
    vec_buf: list[np.ndarray] = []
    buffered = 0
    for ids, vecs in catalog.iter_vectors(dim):
        ids_buf.append(ids)
        vec_buf.append(vecs)
        buffered += len(ids)
        if buffered >= _REBUILD_ADD_BATCH:  # big batches: faiss parallelises within a call
            index.add_with_ids(np.concatenate(vec_buf), np.concatenate(ids_buf))
            ids_buf, vec_buf, buffered = [], [], 0
    if buffered:
        index.add_with_ids(np.concatenate(vec_buf), np.concatenate(ids_buf))
    catalog.clear_tombstones()
    return index


def training_sample(catalog: Catalog, dim: int, limit: int = TRAIN_SAMPLE_MAX) -> np.ndarray:
    """``limit`` stored vectors spread evenly over the library (all of them when fewer).

    Exactly ``limit``: an integer stride would halve the sample just above it (350,000 stored
    vectors gave 175,000, short of the 319,488 an IVF8192 wants)."""
    total, _ = catalog.vector_stats()
    wanted = np.unique(np.linspace(0, total - 1, min(limit, total)).astype(np.int64)) if total else None
    parts, start = [], 0
    for _, vecs in catalog.iter_vectors(dim):
        stop = start + len(vecs)
        lo, hi = np.searchsorted(wanted, [start, stop])
        parts.append(vecs[wanted[lo:hi] - start])
        start = stop
    return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
