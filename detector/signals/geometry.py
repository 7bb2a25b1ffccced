"""One listing's local features and its batched descriptor matching, shared by the signals
that verify geometrically (:mod:`detector.signals.local_features`,
:mod:`detector.signals.logo_area`).

Every reference any of them verifies is matched against the listing in one exact search
(:func:`detector.verify.nearest_two`), in the order the signals asked for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any, Generic, TypeVar

from PIL import Image

from detector.verify import LocalFeatures, Neighbours, VerifyConfig, nearest_two, query_features

T = TypeVar("T")

STATE_KEY = "geometry"  # where a listing keeps its GeometricMatching (Listing.state)


class GeometricMatching:
    """A listing's local features (extracted in a worker thread, or on first need) and the
    references to match against them.

    Signals call :meth:`request` while planning and :meth:`neighbours` while gathering
    evidence; the first :meth:`neighbours` call matches every requested reference at once.
    """

    def __init__(self, image: Image.Image, config: VerifyConfig, pending: Future[LocalFeatures] | None) -> None:
        self._image = image
        self._config = config
        self._pending = pending
        self._features: LocalFeatures | None = None
        self._requested: dict[int, LocalFeatures] = {}
        self._neighbours: dict[int, Neighbours | None] | None = None

    def features(self) -> LocalFeatures:
        """The listing's features: the worker's result, else extracted here."""
        if self._features is None:
            self._features = (self._pending.result() if self._pending is not None
                              else query_features(self._image, self._config))
        return self._features

    def request(self, references: Iterable[tuple[int, LocalFeatures]]) -> None:
        """Ask for these references to be matched (before the first :meth:`neighbours`)."""
        assert self._neighbours is None, "all matching is requested before the first result"
        for rid, features in references:
            self._requested.setdefault(rid, features)

    def neighbours(self, ref_id: int) -> Neighbours | None:
        if self._neighbours is None:
            ids = list(self._requested)
            self._neighbours = nearest_pairs(self.features() if ids else None, ids, self._requested)
        return self._neighbours[ref_id]


def nearest_pairs(
    query: LocalFeatures | None, ref_ids: list[int], stored: dict[int, LocalFeatures]
) -> dict[int, Neighbours | None]:
    """:func:`detector.verify.nearest_two` for these references, by id."""
    if query is None or not ref_ids:
        return {}
    return dict(zip(ref_ids, nearest_two(query, [stored[rid] for rid in ref_ids])))


class Stealable(Generic[T]):
    """A task queued on a worker pool that the thread needing its result runs itself when no
    worker has started it yet: the feature thread is the busier one (SIFT on two channels),
    so the caller segments a listing's marks while a worker extracts its features."""

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> None:
        self._call = (fn, args)
        self._future = pool.submit(fn, *args)

    def result(self) -> T:
        if self._future.cancel():  # not started: run it here rather than wait behind the queue
            fn, args = self._call
            return fn(*args)
        return self._future.result()


@cache
def listing_pool() -> ThreadPoolExecutor:
    """Threads that extract listings' local features (and segment marks) while the scorer
    embeds (shared by all detectors; half the cores, since OpenCV's extraction is itself
    multi-threaded). Not ``detector.verify``'s channel pool: these tasks wait on that one's."""
    return ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="listing-features")
