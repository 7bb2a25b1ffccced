"""Searching one loaded generation of the faiss index: top-k distinct references per query.

A reference may own several vectors (views of one image) under one faiss id, so a search
over-fetches and keeps each reference's best vector: every row holds k different references.
Tombstoned references (HNSW cannot delete) are excluded by an id selector at search time.

An index whose codes approximate the vectors (PQ, SQ) ranks and scores them approximately:
its searches fetch :data:`REFINE_FACTOR` times the references asked for and re-score them
exactly with the stored vectors (:func:`refine`; faiss's ``IndexRefine``, with the vectors read
from the catalog on disk instead of held in RAM), so a lossy index's scores are the exact
ones, and its top-k is exact whenever the true top-k are among the fetched.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from index import faiss_ops

QUERY_BATCH = 4096  # queries per faiss call: bounds the (batch, k * over-fetch) result arrays
REFINE_FACTOR = 4  # a lossy index fetches 4k references to re-score (faiss's k_factor)
REFINE_BATCH = 64  # queries whose candidates' vectors are read at once (~7 views x 2.5 KB each)
REFINE_PARAM = "refine"  # search parameter: the factor for one call (1: the index's own scores)


def is_lossy(factory: str) -> bool:
    """Whether a factory's codes approximate the vectors (product or scalar quantizers)."""
    return re.search(r"PQ|SQ|LSH|RaBitQ", factory) is not None


def refine(
    queries: np.ndarray, candidates: np.ndarray, vectors: Mapping[int, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's candidates re-scored exactly (a reference's best view), best k first.

    Args:
        queries: ``(q, dim)`` unit-norm float32 queries.
        candidates: ``(q, m)`` reference ids (-1: none), as an approximate search found them.
        vectors: ``(views, dim)`` stored vectors by reference id; a candidate without any
            (removed since the search's generation) is dropped.
        k: References kept per row.

    Returns:
        ``(scores, ref_ids)``, both ``(q, k)``, as :func:`search_snapshot` returns them.
    """
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, row_ids) in enumerate(zip(queries, candidates)):
        known = [int(rid) for rid in row_ids if rid >= 0 and int(rid) in vectors]
        if not known:
            continue
        exact = np.array([float(np.max(vectors[rid] @ query)) for rid in known], dtype=np.float32)
        order = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(order)] = exact[order]
        ids[row, : len(order)] = np.asarray(known, dtype=np.int64)[order]
    return scores, ids


@dataclass(frozen=True)
class Snapshot:
    """One loaded generation: what searches use. Swapped as a whole, never mutated by readers."""

    generation: int
    index: Any
    live_vectors: int
    max_per_ref: int
    selector: Any = None  # excludes tombstoned refs; None when there are none
    keep: tuple[Any, ...] = field(default=())  # Python refs the selector needs alive


def make_snapshot(
    generation: int, index: Any, tomb_ids: np.ndarray, tomb_vectors: int, max_per_ref: int
) -> Snapshot:
    """The snapshot of ``index`` at ``generation`` with a selector hiding the tombstoned ids."""
    faiss_ops.scan_lists_in_parallel(index)
    selector, keep = None, ()
    if len(tomb_ids):
        batch = faiss.IDSelectorBatch(tomb_ids)
        selector = faiss.IDSelectorNot(batch)
        keep = (batch,)
    return Snapshot(
        generation=generation,
        index=index,
        live_vectors=int(index.ntotal) - tomb_vectors,
        max_per_ref=max(1, max_per_ref),
        selector=selector,
        keep=keep,
    )


def search_snapshot(
    snap: Snapshot,
    q: np.ndarray,
    k: int,
    *,
    defaults: Mapping[str, Any],
    params: Mapping[str, Any] | None,
    guard: contextlib.AbstractContextManager[Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k distinct references of validated ``(q, dim)`` float32 queries, as arrays.

    Args:
        snap: The generation to search.
        q: Validated queries.
        k: References per query (>= 1).
        defaults: The index's default query-time parameters; ``params`` override them.
        params: Query-time faiss parameters of this call, or None.
        guard: Held around the faiss calls (the writer's lock: it modifies its index in place).

    Returns:
        ``(scores, ref_ids)``, both ``(q, k)``; ids ``-1`` with score ``-inf`` where fewer than
        k exist.
    """
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    if snap.live_vectors <= 0 or len(q) == 0:
        return scores, ids
    # A reference has up to max_per_ref vectors: fetching k * max_per_ref guarantees k distinct.
    fetch = min(k * snap.max_per_ref, int(snap.index.ntotal))
    setup = faiss_ops.SearchSetup(snap.index, {**defaults, **(params or {})}, snap.selector)
    with guard:
        for start in range(0, len(q), QUERY_BATCH):
            block = q[start : start + QUERY_BATCH]
            d, i = snap.index.search(block, fetch, params=setup.params)
            if snap.max_per_ref > 1:
                d, i = distinct_top_k(d, i, k)
            n = min(k, d.shape[1])
            valid = i[:, :n] >= 0
            scores[start : start + len(block), :n] = np.where(valid, d[:, :n], -np.inf)
            ids[start : start + len(block), :n] = np.where(valid, i[:, :n], -1)
    return scores, ids


def distinct_top_k(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first (best) hit of each id per row, at most k, order preserved (vectorised)."""
    order = np.argsort(i, axis=1, kind="stable")  # groups equal ids, best score first in a group
    grouped = np.take_along_axis(i, order, axis=1)
    first = np.ones_like(grouped, dtype=bool)
    first[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first &= grouped >= 0
    keep = np.zeros_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept columns first, in score order
    kept = np.take_along_axis(keep, pos, axis=1)
    return (
        np.where(kept, np.take_along_axis(d, pos, axis=1), -np.inf),
        np.where(kept, np.take_along_axis(i, pos, axis=1), -1),
    )
