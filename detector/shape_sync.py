"""Keep a :class:`ShapeLibrary` in step with an index's logo references.

The library is saved next to the index (:data:`LIBRARY_FILE`, written atomically after each
indexing commit). It is a cache that follows the index by difference, never a second source
of truth: whatever logos the index holds that the file lacks (a commit made through the raw
index API, an index built before this file existed, a crash between the index's commit and
the file's write) are read from their stored records and scanned in; logos the file holds
that the index no longer does are withdrawn (ref ids are never reused). An unreadable file
is ignored and the library computed again.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from detector.shape_library import LIBRARY_FILE, ShapeLibrary
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
        masks = read_masks(new)
        library = library.with_added(new, [logos[i] for i in new], [masks.get(i) for i in new])
    return library


def save_synced_library(index: VectorIndex, read_masks: MaskReader) -> ShapeLibrary:
    """Bring the saved library up to the index (writer side) and save it atomically."""
    library = synced_library(index, read_masks)
    library.save(Path(index.path) / LIBRARY_FILE)
    return library


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
                found[rid] = LocalFeatures.from_bytes(blob).silhouette
            except DetectorError as e:
                log.warning("reference %d: unreadable side data, no shape (%s)", rid, e)
    return found
