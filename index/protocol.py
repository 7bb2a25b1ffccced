"""The interface the detector needs from a reference index, whichever backend holds it.

:class:`index.store.ReferenceIndex` (FAISS directory) and
:class:`index.milvus_store.MilvusReferenceIndex` (Milvus) both satisfy it; the detector's
modules annotate with :class:`VectorIndex` and get one from :func:`index.open.open_index`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from index.records import AddReport, Fingerprint, IndexInfo, Match, NewReference, Reference


class VectorIndex(Protocol):
    """Reference vectors with their records and side data: search, read, write, reload."""

    fingerprint: Fingerprint
    dim: int
    factory: str
    path: Path  # local folder of the index's files (a Milvus store's side folder)

    @property
    def generation(self) -> int: ...
    @property
    def writable(self) -> bool: ...
    def committed_generation(self) -> int: ...
    def reload(self) -> bool: ...
    def __len__(self) -> int: ...
    def search_vectors(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def search(
        self, queries: np.ndarray, k: int = 10, *, params: Mapping[str, Any] | None = None
    ) -> list[list[Match]]: ...
    def existing_sha256(self, shas: Iterable[str]) -> dict[str, int]: ...
    def get_references(self, ref_ids: Iterable[int]) -> dict[int, Reference]: ...
    def get_aux(self, ref_ids: Iterable[int]) -> dict[int, bytes]: ...
    def get_vectors(self, ref_ids: Iterable[int]) -> dict[int, np.ndarray]: ...
    def references(self, brand: str | None = None) -> Iterator[Reference]: ...
    def info(self) -> IndexInfo: ...
    def add(
        self,
        references: Sequence[NewReference],
        vectors: Sequence[np.ndarray] | np.ndarray,
        aux: Sequence[bytes | None] | None = None,
        *,
        aux_updates: Mapping[int, bytes | None] | None = None,
    ) -> AddReport: ...
    def remove(
        self,
        *,
        ref_ids: Iterable[int] | None = None,
        brand: str | None = None,
        product_id: str | None = None,
        aux_updates: Mapping[int, bytes | None] | None = None,
    ) -> int: ...
    def replace_aux(self, updates: Mapping[int, bytes | None]) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
