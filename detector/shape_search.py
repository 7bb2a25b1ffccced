"""The shape search: the logos whose canonical masks a listing's marks align with best.

Small libraries are searched exactly: every rotated and mirrored variant of every mark against
every logo (:meth:`QueryShapes.coarse`, one int8 matrix product). That is linear in the
library (216 x N products; 1M logos would also need 4 GiB of int8 rows), so above
:data:`EXACT_UP_TO` logos an inverted file over the packed masks (FAISS ``IndexBinaryIVF``,
Hamming distance: ``IoU = (a + b - h) / (a + b + h)``, and canonical masks are
area-normalised, so the nearest in Hamming is nearly the best in IoU) gives each variant's
``per_variant`` nearest logos among the ``nprobe`` of ``4 sqrt(N)`` lists closest to it (a
variant scans ~``8 sqrt(N)`` logos); the union is then scored exactly. The lists' centres are
logos drawn from the library, not trained: k-means over 4,096-bit codes would cost minutes a
generation, and drawn centres measured nearly as well. Measured against the exact search in
docs/scale.md, "Shape search and distinct floors" (IndexBinaryHNSW found the Hamming-nearest
logo less often: 0.87-0.96 vs 0.98 of variants on 10k logos).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detector.shape_library import ShapeLibrary
from detector.silhouettes import QueryShapes

if TYPE_CHECKING:
    from detector.shape_lists import SavedLists

EXACT_UP_TO = 1500  # crossover: equal at 1,000 logos, the inverted file 3x faster at 2,000 (docs/scale.md)
NPROBE = 32  # lists scanned per variant: 0.98 of variants found their Hamming-nearest logo on 10k


class ShapeSearch:
    """Coarse shape search over one :class:`ShapeLibrary` (built once per index generation).

    Thread-safe for searches (FAISS searches with the parameters fixed at build are read-only).
    """

    def __init__(self, library: ShapeLibrary, *, exact_up_to: int = EXACT_UP_TO, per_variant: int = 10,
                 nprobe: int = NPROBE, previous: ShapeSearch | None = None,
                 saved: SavedLists | None = None) -> None:  # fmt: skip
        """``previous``: the last generation's search; its inverted file is copied and updated
        by difference (logos withdrawn and added) instead of built again, while the library
        is within a factor 2 of the size its lists were drawn for. ``saved``: an inverted file
        read back from disk (:mod:`detector.shape_lists`), which the caller has checked holds
        exactly ``library``'s logos; used when ``previous`` is not.

        ``origin`` says where the search structure came from: ``"exact"`` (int8 rows),
        ``"updated"`` (``previous``'s, by difference; ``previous``'s own origin when nothing
        changed), ``"loaded"`` (``saved``) or ``"built"``.
        """
        self.library = library
        self.per_variant = per_variant
        self.exact = len(library) <= exact_up_to
        self._rows: np.ndarray | None = library.rows() if self.exact else None
        self._lists: Any = None
        self._drawn_for = len(library)  # library size the lists' centres were drawn for
        self.origin = "exact"
        if not self.exact:
            if previous is not None and previous._lists is not None and \
                    previous._drawn_for / 2 <= len(library) <= previous._drawn_for * 2:
                self._lists, self._drawn_for = _updated(previous, library), previous._drawn_for
                self.origin = "updated" if self._lists is not previous._lists else previous.origin
            elif saved is not None and saved.lists.ntotal == len(library) and \
                    saved.drawn_for / 2 <= len(library) <= saved.drawn_for * 2:
                self._lists, self._drawn_for = saved.lists, saved.drawn_for
                self._lists.nprobe = min(nprobe, self._lists.nlist)
                self.origin = "loaded"
            else:
                self._lists = _inverted_file(library.codes, library.ids, nprobe)
                self.origin = "built"

    @property
    def lists(self) -> Any:
        """The inverted file (``faiss.IndexBinaryIVF`` labelled with ref ids); None on the exact path."""
        return self._lists

    @property
    def drawn_for(self) -> int:
        """The library size the inverted file's centres were drawn for."""
        return self._drawn_for

    @property
    def nbytes(self) -> int:
        """Bytes of the search structure beyond the library: the int8 rows, or the inverted
        file's copy of the codes, their ids and the list centres."""
        if self._rows is not None:
            return self._rows.nbytes
        width = self.library.codes.shape[1]
        return len(self.library) * (width + 8) + self._lists.nlist * width

    def coarse(self, query: QueryShapes) -> tuple[np.ndarray, np.ndarray]:
        """``(ref ids, (marks, len(ref ids)) coarse IoUs)`` over the candidate logos: every
        logo on the exact path, the inverted file's shortlist otherwise (ids ascending either way, so
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
        import faiss

        variants = np.packbits(query.variant_rows() > 0, axis=1)
        # One OpenMP thread, for this thread only (OpenMP's thread count is per calling thread):
        # the search runs beside feature extraction, and 2 threads spinning against it measured
        # 120-320 ms vs 7.5 ms single-threaded (1,500 logos, loaded 2-core machine).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            _, found = self._lists.search(variants, min(self.per_variant, len(self.library)))
        finally:
            faiss.omp_set_num_threads(threads)
        return np.searchsorted(self.library.ids, np.unique(found[found >= 0]))  # the lists hold ref ids


def _inverted_file(codes: np.ndarray, ids: np.ndarray, nprobe: int) -> Any:
    """An IndexBinaryIVF over ``codes`` (labelled with their ref ``ids``) with ``4 sqrt(N)``
    lists centred on logos drawn from them (a fixed draw: the same library gives the same lists)."""
    import faiss

    n, width = codes.shape
    nlist = max(1, min(n, round(4 * np.sqrt(n))))
    centres = faiss.IndexBinaryFlat(width * 8)
    centres.add(np.ascontiguousarray(codes[np.random.default_rng(0).choice(n, nlist, replace=False)]))
    lists = faiss.IndexBinaryIVF(centres, width * 8, nlist)
    lists.is_trained = True  # centres given, not trained
    lists.nprobe = min(nprobe, nlist)
    lists.add_with_ids(np.ascontiguousarray(codes), np.ascontiguousarray(ids, dtype=np.int64))
    lists.centres = centres  # keep the quantizer alive as long as the index (SWIG does not own it)
    return lists


def _updated(previous: ShapeSearch, library: ShapeLibrary) -> Any:
    """A copy of ``previous``'s inverted file less the logos ``library`` no longer holds, plus
    those it gained (the copy costs a memcpy of the codes; the old one still serves its generation).
    The same inverted file when nothing changed: none is ever modified once built."""
    import faiss

    old = previous.library.ids
    gone = old[~np.isin(old, library.ids)]
    added = np.flatnonzero(~np.isin(library.ids, old))
    if not len(gone) and not len(added):
        return previous._lists
    lists = faiss.clone_binary_index(previous._lists)  # owns its copy of the quantizer
    lists.nprobe = previous._lists.nprobe
    if len(gone):
        lists.remove_ids(np.ascontiguousarray(gone, dtype=np.int64))
    if len(added):
        lists.add_with_ids(np.ascontiguousarray(library.codes[added]), np.ascontiguousarray(library.ids[added]))
    return lists
