"""Distinct floors of many new logos at once, approximately, from the shape search's shortlist.

A library computed from nothing (a new large build, or an old index opened without its saved
library) scanned every new logo against every other: O(N^2) popcounts, days at a million
logos. Above :data:`~detector.shape_library.EXACT_FLOORS_UP_TO` new logos in one batch, each
new logo's floor is instead its best IoU with another brand's logo among the logos an inverted file over the library
proposes for it (as is and mirrored: each one's ``per_variant`` Hamming-nearest logos among
the ``nprobe`` closest lists: the shape search's shortlist for a listing's mark, deeper). Each pair
found also raises the other logo's floor (the pair's IoU is symmetric), so the logos already
held are raised by the new ones they are close to.

The IoUs of the pairs found are exact (from the Hamming distances the search returns, with
the full scan's float32 arithmetic), so an approximate floor is never above the exact one, and
equals it whenever the logo that sets the exact floor is in the shortlist (as is and mirrored).
How often and how close on synthetic libraries: docs/scale.md, "Approximate floors for a
library computed from nothing".
"""

from __future__ import annotations

import numpy as np

from detector.shape_library import ShapeLibrary, mirrored_codes

# Nearest logos per new logo (as is, and mirrored) and lists scanned: the listing search's 10 and
# 32 found the exact floor's logo for 0.91 of logos on 20k synthetic logos, 200 and 64 for 0.98,
# in 5.3 vs 13.6 s (the exact scan: 111 s); docs/scale.md, "Approximate floors for a library
# computed from nothing".
FLOORS_PER_VARIANT = 200
FLOORS_NPROBE = 64
_QUERY_CHUNK = 8192  # new logos searched at once: bounds the pair arrays


def approximate_floors(library: ShapeLibrary, positions: np.ndarray, *, per_variant: int = FLOORS_PER_VARIANT,
                       nprobe: int = FLOORS_NPROBE) -> None:  # fmt: skip
    """Set the floors of the logos at ``positions`` (just appended, floors unset) from their
    shortlists, and raise the other logos' floors by the pairs found. Mutates ``library``'s
    floor arrays in place (called only on a fresh copy by :meth:`ShapeLibrary.with_added`).

    Ties break as in the exact scan: the lowest library position sets a new logo's floor, and
    a held logo's floor is raised only by a strictly closer new logo (the first in order).
    """
    from detector.shape_search import _inverted_file

    n = len(library)
    positions = np.asarray(positions, np.int64)
    if not len(positions) or n < 2:
        return
    lists = _inverted_file(library.codes, np.arange(n, dtype=np.int64), nprobe)
    k = min(per_variant + 1, n)  # +1: a logo's nearest is itself
    is_new = np.zeros(n, bool)
    is_new[positions] = True
    best, source = library.other_best, library.other_source  # updated in place
    source_pos = np.full(n, -1, np.int64)  # library position of each floor's source (ties: lowest)
    held = ~is_new & (source >= 0)
    source_pos[held] = np.searchsorted(library.ids, source[held])
    held_pos = source_pos.copy()
    best[positions], source[positions] = 0.0, -1
    for start in range(0, len(positions), _QUERY_CHUNK):
        queries = positions[start : start + _QUERY_CHUNK]
        codes = np.ascontiguousarray(library.codes[queries])
        # As is and mirrored: a pair's IoU is the better of the two (the full scan's _pair_ious).
        for variant in (codes, mirrored_codes(codes)):
            hamming, found = lists.search(variant, k)
            query = np.repeat(queries, k)
            other, hamming = found.ravel(), hamming.ravel().astype(np.int64)
            keep = (other >= 0) & (other != query)
            query, other, hamming = query[keep], other[keep], hamming[keep]
            keep = library.brands[query] != library.brands[other]
            query, other, hamming = query[keep], other[keep], hamming[keep]
            value = _iou(library.areas[query] + library.areas[other], hamming)
            # Both directions: the new logo's floor, and the other logo's (new or held) raised.
            _merge(best, source_pos, is_new, np.concatenate([query, other]), np.concatenate([other, query]),
                   np.concatenate([value, value]))  # fmt: skip
    changed = is_new | (source_pos != held_pos)
    source[changed] = np.where(source_pos[changed] >= 0, library.ids[np.maximum(source_pos[changed], 0)], -1)


def _iou(total_area: np.ndarray, hamming: np.ndarray) -> np.ndarray:
    """float32 IoU from two masks' summed areas and Hamming distance, with the full scan's
    arithmetic (:meth:`ShapeLibrary.ious_with`), so that equal pairs give equal bits."""
    inter = ((total_area - hamming) // 2).astype(np.float32)
    union = ((total_area + hamming) // 2).astype(np.float32)
    return inter / np.maximum(union, np.float32(1.0))


def _merge(best: np.ndarray, source_pos: np.ndarray, is_new: np.ndarray, target: np.ndarray,
           other: np.ndarray, value: np.ndarray) -> None:  # fmt: skip
    """Raise ``best[target]`` to ``value`` where it is closer; ``source_pos`` follows."""
    if not len(target):
        return
    # Per target, the highest value, then the lowest other position.
    order = np.lexsort((other, -value, target))
    target, other, value = target[order], other[order], value[order]
    first = np.ones(len(target), bool)
    first[1:] = target[1:] != target[:-1]
    target, other, value = target[first], other[first], value[first]
    current, current_pos = best[target], source_pos[target]
    # A new logo's floor: closer, or as close and set by a lower position (the full scan's
    # argmax). A held logo's: only strictly closer (the full scan raises on >).
    tie_wins = is_new[target] & (value == current) & ((current_pos < 0) | (other < current_pos))
    wins = (value > current) | (tie_wins & (value > 0))
    best[target[wins]] = value[wins]
    source_pos[target[wins]] = other[wins]
