"""Reference-side data the signals share: each reference's decoded side data (local features,
silhouette, appearance, logo box) and structures built once per index generation (the
descriptor vote's index, the logo masks of the shape search)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from detector.errors import DetectorError
from detector.verify import LocalFeatures
from index.protocol import VectorIndex

log = logging.getLogger(__name__)

FEATURES_CACHE_BYTES = 256 * 2**20  # decoded reference features (LocalFeatures.nbytes) kept between calls

T = TypeVar("T")


class ReferenceData:
    """Decoded reference side data of the current index generation, shared by a detector's
    signals. Thread-safe."""

    def __init__(self) -> None:
        # Decoded reference features of the current index generation (decoding costs ~1 ms).
        self._features: dict[int, LocalFeatures] = {}
        self._features_bytes = 0  # LocalFeatures.nbytes held in self._features
        self._unreadable: set[int] = set()  # refs whose blob failed to decode (logged once)
        self._features_generation = -1
        self._features_lock = threading.Lock()
        self._built: dict[str, tuple[int, Any]] = {}  # name -> (index generation, structure)
        self._built_lock = threading.Lock()

    def per_generation(self, name: str, index: VectorIndex, build: Callable[[], T]) -> T:
        """``build()``'s result for ``index``'s generation, built once per generation."""
        with self._built_lock:
            cached = self._built.get(name)
            if cached is None or cached[0] != index.generation:
                cached = (index.generation, build())
                self._built[name] = cached
            return cached[1]

    def features(self, index: VectorIndex, ref_ids: Sequence[int]) -> dict[int, LocalFeatures]:
        """Stored local features by ref id, decoded once per index generation (up to
        :data:`FEATURES_CACHE_BYTES` of them kept). A corrupt blob is logged and
        treated as absent: that candidate is not verified, the listing is still scored (logged
        once per index generation, not for every listing that meets it)."""
        with self._features_lock:
            if self._features_generation != index.generation:
                self._features, self._features_bytes, self._unreadable = {}, 0, set()
                self._features_generation = index.generation
            found = {rid: self._features[rid] for rid in ref_ids if rid in self._features}
            skip = set(found) | self._unreadable
        decoded: dict[int, LocalFeatures] = {}
        unreadable: set[int] = set()
        missing = [rid for rid in dict.fromkeys(ref_ids) if rid not in skip]
        for start in range(0, len(missing), 1000):
            for rid, blob in index.get_aux(missing[start : start + 1000]).items():
                try:
                    decoded[rid] = LocalFeatures.from_bytes(blob)
                except DetectorError as e:
                    unreadable.add(rid)
                    log.warning("reference %d: unreadable local features, not verified (%s)", rid, e)
        if decoded or unreadable:
            with self._features_lock:
                if self._features_generation == index.generation:
                    self._unreadable |= unreadable
                    fresh = {rid: f for rid, f in decoded.items() if rid not in self._features}
                    added = sum(f.nbytes for f in fresh.values())
                    if self._features_bytes + added > FEATURES_CACHE_BYTES:
                        self._features, self._features_bytes = {}, 0
                    self._features.update(fresh)
                    self._features_bytes += added
        return {**found, **decoded}
