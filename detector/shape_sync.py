"""Keep a :class:`ShapeLibrary` in step with an index's logo references.

The library is saved next to the index (:data:`LIBRARY_FILE`, written atomically after each
indexing commit). It is a cache that follows the index by difference, never a second source
of truth: whatever logos the index holds that the file lacks (a commit made through the raw
index API, an index built before this file existed, a crash between the index's commit and
the file's write) are read from their stored records and scanned in; logos the file holds
that the index no longer does are withdrawn (ref ids are never reused). An unreadable file
is ignored and the library computed again.

Above the shape search's exact crossover, the search's inverted file is saved beside it
(:data:`~detector.shape_lists.LISTS_FILE`, keyed to the library it holds), so that a scorer
starting on a large index loads it instead of building it (minutes at 1M logos). The writer
brings it up by difference from the saved one, as the scorer does between generations.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from detector.shape_library import LIBRARY_FILE, ShapeLibrary
from detector.shape_lists import LISTS_FILE, load_lists, save_lists
from detector.shape_search import EXACT_UP_TO, ShapeSearch
from index.protocol import VectorIndex

log = logging.getLogger(__name__)

MaskReader = Callable[[Sequence[int]], dict[int, "np.ndarray | None"]]


def synced_library(index: VectorIndex, read_masks: MaskReader, previous: ShapeLibrary | None = None) -> ShapeLibrary:
    """``previous`` (default: the saved library, else an empty one) brought up to the index's
    current logos. ``read_masks(ref ids)`` gives stored canonical masks (None: no mark)."""
    logos = {r.id: r.brand for r in index.references() if r.kind == "logo"}
    base = previous if previous is not None else load_saved(Path(index.path))
    held = set(base.ids.tolist()) | base.without_mask
    gone = [i for i in held if i not in logos]
    library = base.without(gone) if gone else base
    new = sorted(i for i in logos if i not in held)
    if new:
        log.info("shape library: adding %s logos (their masks, then the distinct floors)", f"{len(new):,}")
        masks = read_masks(new)
        library = library.with_added(new, [logos[i] for i in new], [masks.get(i) for i in new])
    return library


def synced_search(index: VectorIndex, read_masks: MaskReader, previous: ShapeSearch | None = None, *,
                  exact_up_to: int = EXACT_UP_TO) -> ShapeSearch:  # fmt: skip
    """The shape search over the index's current logos (scorer side): ``previous`` (the last
    generation's) brought up by difference; without one, the saved library and its saved
    inverted file, loaded when the file was built for that library (else built)."""
    started = time.perf_counter()
    if previous is None:
        base = load_saved(Path(index.path))
        previous = saved_search(Path(index.path), base, exact_up_to=exact_up_to)
        library = synced_library(index, read_masks, base)
    else:
        library = synced_library(index, read_masks, previous.library)
    search = ShapeSearch(library, exact_up_to=exact_up_to, previous=previous)
    log.info("shape search over %d logos (%s) in %.1f s", len(library), search.origin, time.perf_counter() - started)
    return search


def save_synced_library(index: VectorIndex, read_masks: MaskReader, *, exact_up_to: int = EXACT_UP_TO) -> ShapeLibrary:
    """Bring the saved library up to the index (writer side) and save it atomically; then the
    shape search's inverted file (:func:`save_synced_search`)."""
    directory = Path(index.path)
    base = load_saved(directory)
    library = synced_library(index, read_masks, base)
    library.save(directory / LIBRARY_FILE)
    save_synced_search(directory, library, base, exact_up_to=exact_up_to)
    return library


def save_synced_search(index_dir: Path, library: ShapeLibrary, base: ShapeLibrary, *,
                       exact_up_to: int = EXACT_UP_TO) -> ShapeSearch:  # fmt: skip
    """Save the inverted file over ``library`` (just saved) in ``index_dir`` atomically: the
    saved one updated by difference when it was built for ``base`` (the library saved before),
    else built. Below the exact crossover there is none, and a stale one is removed."""
    path = Path(index_dir) / LISTS_FILE
    if len(library) <= exact_up_to:
        path.unlink(missing_ok=True)
        return ShapeSearch(library, exact_up_to=exact_up_to)
    previous = saved_search(index_dir, base, exact_up_to=exact_up_to)
    search = ShapeSearch(library, exact_up_to=exact_up_to, previous=previous)
    if previous is None or search.lists is not previous.lists:  # built, or changed by difference
        save_lists(path, search.lists, key=library.key, drawn_for=search.drawn_for)
    return search


def saved_search(index_dir: Path, library: ShapeLibrary, *, exact_up_to: int = EXACT_UP_TO) -> ShapeSearch | None:
    """The shape search over ``library`` with the inverted file saved in ``index_dir``; None
    when the library takes the exact path, or the file is missing, stale or unreadable."""
    if len(library) <= exact_up_to:
        return None
    saved = load_lists(Path(index_dir) / LISTS_FILE, library.key, expected=len(library))
    if saved is None:
        return None
    return ShapeSearch(library, exact_up_to=exact_up_to, saved=saved)


def load_saved(index_dir: Path) -> ShapeLibrary:
    """The library saved in ``index_dir``; empty when there is none or it is unreadable."""
    path = Path(index_dir) / LIBRARY_FILE
    if not path.exists():
        return ShapeLibrary.empty()
    try:
        return ShapeLibrary.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated or foreign
        log.warning("%s unreadable, shape library computed again from the index (%s)", path, e)
        return ShapeLibrary.empty()


def stored_masks(index: VectorIndex, ref_ids: Sequence[int]) -> dict[int, np.ndarray | None]:
    """Canonical masks kept in the references' side data (None: none, or unreadable)."""
    from detector.errors import DetectorError
    from detector.verify import LocalFeatures

    found: dict[int, np.ndarray | None] = {}
    ids = list(ref_ids)
    for start in range(0, len(ids), 1000):
        for rid, blob in index.get_aux(ids[start : start + 1000]).items():
            try:
                found[rid] = LocalFeatures.silhouette_from_bytes(blob)
            except DetectorError as e:
                log.warning("reference %d: unreadable side data, no shape (%s)", rid, e)
    return found
