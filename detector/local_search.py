"""Find references by their local features: the candidates the embedding missed.

A logo that fills a tenth of a busy photo rarely brings its reference into the embedding's
top candidates, yet its corners and strokes still match the reference's SIFT descriptors.
:class:`LocalFeatureIndex` holds the descriptors of every reference of the verified kinds
(the scorer reads them from the index's features blobs) in a FAISS index. For a listing photo each
query descriptor votes for a reference when its nearest reference descriptor is clearly
closer than the nearest one of any *other* reference (Lowe's ratio test across references);
the most-voted references then go through the same RANSAC verification as the
embedding's candidates (:mod:`detector.scoring`), which is what rejects chance votes.

Search is exact for small libraries and an inverted file (IVF, ``nprobe`` 16 by default) from
:data:`EXACT_UP_TO` descriptors on. Measured on the benchmark's 1,000 logos (52,514
descriptors, 27 MB) with 20 photos of up to 2,000 keypoints, 2 cores shared with another
job (so compare the two, not the absolute figures): exact 399 ms per photo, IVF with 1,024
lists 24 ms, with the same nearest descriptor for 94 % of query descriptors (the code picks
~4 sqrt(n) lists, 916 for this library). Building it
(decoding the blobs and k-means included) took 1.1 s there, once per index generation.

From :data:`~detector.descriptor_store.STORE_FROM_REFERENCES` references on the index keeps the
descriptors on disk instead (:mod:`detector.descriptor_store`, voted on by
:mod:`detector.descriptor_vote` with :func:`count_votes`): this class then only holds the
references the store does not cover yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from detector.errors import DetectorError
from detector.verify import LocalFeatures, root_sift

# Nearest reference descriptors fetched per query descriptor: enough to find the nearest
# descriptor of another reference behind a reference's own near-duplicates.
NEIGHBOURS = 20
EXACT_UP_TO = 20_000
DEFAULT_NPROBE = 16  # inverted lists a search visits (VerifyConfig.local_nprobe)


class LocalFeatureIndex:
    """RootSIFT descriptors of many references, searchable by a query's descriptors.

    Example:
        >>> idx = LocalFeatureIndex.from_features({})
        >>> len(idx)
        0
    """

    def __init__(self, owners: np.ndarray, descriptors: np.ndarray, method: str | None, nprobe: int = DEFAULT_NPROBE) -> None:
        import faiss

        self._owners = owners.astype(np.int64)
        self._method = method
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(-1, 128)
        if len(descriptors) <= EXACT_UP_TO:
            self._index = faiss.IndexFlatL2(128)
        else:  # ~4 sqrt(n) lists keeps both the coarse and the fine search short
            lists = int(4 * np.sqrt(len(descriptors)))
            self._quantizer = faiss.IndexFlatL2(128)  # the IVF index does not keep it alive
            self._index = faiss.IndexIVFFlat(self._quantizer, 128, lists)
            self._index.train(descriptors)
            self._index.nprobe = nprobe
        self._index.add(descriptors)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @classmethod
    def from_features(cls, features: dict[int, LocalFeatures], nprobe: int = DEFAULT_NPROBE) -> LocalFeatureIndex:
        """Index the given references' features (ref id -> features); all SIFT. ``nprobe``:
        inverted lists a search visits, once the library is large enough for them.

        Raises:
            DetectorError: Some features are not SIFT (ORB descriptors are binary).
        """
        kept = {rid: f for rid, f in features.items() if len(f)}
        if any(f.method != "sift" for f in kept.values()):
            raise DetectorError("local-feature search needs SIFT features (verify.method = 'sift')")
        if not kept:
            return cls(np.zeros(0, np.int64), np.zeros((0, 128), np.float32), None, nprobe)
        owners = np.concatenate([np.full(len(f), rid, dtype=np.int64) for rid, f in kept.items()])
        descriptors = np.concatenate([root_sift(f.descriptors) for f in kept.values()])
        return cls(owners, descriptors, "sift", nprobe)

    def neighbours(self, query: LocalFeatures) -> DescriptorNeighbours | None:
        """Each query descriptor's nearest reference descriptors (None when nothing to search)."""
        if len(self) == 0 or len(query) == 0 or query.method != self._method:
            return None
        k = min(NEIGHBOURS, len(self))
        distances, rows = self._index.search(query.matchable, k)  # squared L2, -1 rows last
        owners = np.where(rows >= 0, self._owners[np.maximum(rows, 0)], -1)
        return DescriptorNeighbours(distances, rows, owners)

    def vote(self, query: LocalFeatures, top: int, ratio: float = 0.8,
             near: DescriptorNeighbours | None = None) -> list[tuple[int, int]]:
        """The ``top`` references with the most votes from ``query``'s descriptors.

        Args:
            query: Features of the listing photo (SIFT).
            top: References to return.
            ratio: A descriptor votes for its nearest reference when that distance is below
                ``ratio`` times the distance to the nearest descriptor of another reference.
            near: :meth:`neighbours` of ``query`` when already searched.

        Returns:
            ``(ref_id, votes)`` pairs, most votes first (ties by lower id).
        """
        near = near if near is not None else self.neighbours(query)
        if top < 1 or near is None:
            return []
        return count_votes(near, top, ratio)


def count_votes(near: DescriptorNeighbours, top: int, ratio: float) -> list[tuple[int, int]]:
    """The vote of :meth:`LocalFeatureIndex.vote` from neighbour lists sorted by distance (also
    the on-disk store's, :mod:`detector.descriptor_vote`): ``rows`` identify reference
    descriptors, ``owners`` their references (-1: no neighbour)."""
    distances, rows, owners = near.distances, near.rows, near.owners
    if top < 1 or len(rows) == 0:
        return []
    others = (owners != owners[:, :1]) & (owners >= 0)
    first_other = others.argmax(axis=1)
    nearest_other = distances[np.arange(len(rows)), first_other]
    # No other reference among the neighbours: the nearest is unambiguous.
    clear = ~others.any(axis=1) | (distances[:, 0] < ratio**2 * nearest_other)
    # Many query descriptors landing on one reference descriptor (texture, repeated
    # strokes) are one piece of evidence, not many: each reference descriptor counts once.
    hit = clear & (owners[:, 0] >= 0)
    _, first = np.unique(rows[hit, 0], return_index=True)
    votes = Counter(owners[hit, 0][first].tolist())
    return sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


@dataclass(frozen=True)
class DescriptorNeighbours:
    """A listing's descriptors' nearest reference descriptors, one row per query descriptor
    (its keypoint's index), nearest first: squared L2 ``distances``, descriptor ``rows`` and
    their ``owners`` (reference ids); -1 rows and owners where fewer were found."""

    distances: np.ndarray
    rows: np.ndarray
    owners: np.ndarray
