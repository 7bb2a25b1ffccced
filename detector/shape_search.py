"""The shape search: the logos whose canonical masks a listing's marks align with best.

Small libraries are searched exactly: every rotated and mirrored variant of every mark against
every logo (:meth:`QueryShapes.coarse`, one int8 matrix product). That is linear in the
library (216 x N products; 1M logos would also need 4 GiB of int8 rows), so from
:data:`EXACT_UP_TO` logos on, an HNSW graph over the packed masks (FAISS ``IndexBinaryHNSW``,
Hamming distance: for two masks of equal area ``IoU = (2a - h) / (2a + h)``, and canonical
masks are area-normalised) gives each variant's ``per_variant`` nearest logos; the union is
then scored exactly, so the marks' best IoUs and the ``search`` best logos are those of the
exact search whenever the graph finds them (measured in docs/scale.md, "Shape search and
distinct floors").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.shape_library import ShapeLibrary
from detector.silhouettes import QueryShapes

EXACT_UP_TO = 5000  # crossover measured in docs/scale.md
HNSW_NEIGHBOURS = 16  # graph degree M: 16 kept the exact top 5 on synthetic libraries
EF_SEARCH = 64


class ShapeSearch:
    """Coarse shape search over one :class:`ShapeLibrary` (built once per index generation).

    Thread-safe for searches (FAISS HNSW searches are read-only).
    """

    def __init__(self, library: ShapeLibrary, *, exact_up_to: int = EXACT_UP_TO, per_variant: int = 10,
                 ef_search: int = EF_SEARCH) -> None:  # fmt: skip
        self.library = library
        self.per_variant = per_variant
        self.exact = len(library) <= exact_up_to
        self._rows: np.ndarray | None = library.rows() if self.exact else None
        self._graph: Any = None if self.exact else _hnsw(library.codes, ef_search)

    @property
    def nbytes(self) -> int:
        """Bytes of the search structure beyond the library (int8 rows or the graph's codes and links)."""
        if self._rows is not None:
            return self._rows.nbytes
        hnsw = self._graph.hnsw
        links = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return len(self.library) * self.library.codes.shape[1] + links

    def coarse(self, query: QueryShapes) -> tuple[np.ndarray, np.ndarray]:
        """``(ref ids, (marks, len(ref ids)) coarse IoUs)`` over the candidate logos: every
        logo on the exact path, the graph's shortlist otherwise (ids ascending either way, so
        ties break as in the exact search)."""
        lib = self.library
        if not len(query) or not len(lib):
            return lib.ids[:0], np.zeros((len(query), 0), np.float32)
        if self._rows is not None:
            return lib.ids, query.coarse(self._rows)
        positions = self.shortlist(query)
        return lib.ids[positions], query.coarse(lib.rows(positions))

    def shortlist(self, query: QueryShapes) -> np.ndarray:
        """Library positions (ascending) of each mark variant's nearest logos by Hamming distance."""
        variants = np.packbits(query.variant_rows() > 0, axis=1)
        _, found = self._graph.search(variants, min(self.per_variant, len(self.library)))
        return np.unique(found[found >= 0])


def _hnsw(codes: np.ndarray, ef_search: int) -> Any:
    import faiss

    graph = faiss.IndexBinaryHNSW(codes.shape[1] * 8, HNSW_NEIGHBOURS)
    graph.hnsw.efConstruction = 40
    graph.hnsw.efSearch = ef_search
    graph.add(np.ascontiguousarray(codes))
    return graph
