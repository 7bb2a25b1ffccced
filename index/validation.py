"""Checks on what callers hand the index: references, aux blobs, stored vectors and queries.

Inputs are checked before a write transaction opens or a search runs, so bad input never
reaches SQLite or faiss. Messages name the offending item and say how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from index.records import NewReference

UNIT_NORM_TOLERANCE = 1e-3


def reference_attributes_json(refs: Sequence[NewReference]) -> list[str]:
    """The attributes of each reference as stored JSON text; checks each item is a NewReference."""
    attributes = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, NewReference):
            raise ValueError(f"references[{i}] must be a NewReference, got {type(ref).__name__}")
        try:
            attributes.append(json.dumps(ref.attributes, sort_keys=True))
        except (TypeError, ValueError) as e:
            raise ValueError(f"references[{i}].attributes is not JSON-serialisable: {e}") from e
    return attributes


def as_bytes(value: Any, i: int) -> bytes | None:
    """``aux[i]`` as bytes (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueError(f"aux[{i}] must be bytes or None, got {type(value).__name__}")


def validate_vectors(vectors: Sequence[np.ndarray] | np.ndarray, dim: int) -> list[np.ndarray]:
    """Per-reference ``(n_i, dim)`` float32 matrices; checks shape, finiteness and unit norm."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        whole = vectors
        bounds = np.arange(len(vectors) + 1)
    else:
        parts = []
        for i, v in enumerate(vectors):
            a = np.asarray(v)
            a = a[None, :] if a.ndim == 1 else a
            if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != dim:
                raise ValueError(
                    f"vectors[{i}] must have shape ({dim},) or (n, {dim}) with n >= 1, "
                    f"got {np.shape(v)}"
                )
            parts.append(a)
        if not parts:
            return []
        whole = np.concatenate(parts)
        bounds = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    if whole.shape[1] != dim:
        raise ValueError(f"vectors have dim {whole.shape[1]}, the index has dim {dim}")
    if not np.issubdtype(whole.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got {whole.dtype}")
    whole = np.ascontiguousarray(whole, dtype=np.float32)
    finite = np.isfinite(whole).all(axis=1)
    norms = np.linalg.norm(whole, axis=1)
    bad = np.flatnonzero(~finite | (np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE))
    if len(bad):
        row = int(bad[0])
        item = int(np.searchsorted(bounds, row, side="right") - 1)
        raise ValueError(
            f"vectors[{item}] row {row - int(bounds[item])} has L2 norm {norms[row]:.4f}; the "
            f"index stores finite unit vectors (tolerance {UNIT_NORM_TOLERANCE}): L2-normalise "
            f"in the embedder ({len(bad)} bad row(s) in total)"
        )
    return [whole[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def validate_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """``(q, dim)`` C-contiguous float32 queries (a single ``(dim,)`` query becomes one row)."""
    q = np.asarray(queries)
    q = q[None, :] if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (q, {dim}), got {np.shape(queries)}")
    if not np.issubdtype(q.dtype, np.floating):
        raise ValueError(f"queries must be floating point, got {q.dtype}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or infinite values")
    return q
