"""Matches another brand explains as well: Lowe's ratio test across brands.

A RANSAC fit counts a listing keypoint as evidence for a reference's brand when it matches
the reference. But if the same keypoint matches a *different* brand's logo just as well, it
is evidence for a part the two marks share — a Union Jack canton on two flags, a common
emblem, a laurel — not for either brand. The descriptor vote (:mod:`detector.local_search`)
already finds each listing descriptor's nearest logo descriptors over the whole library; this
module turns them into, per listing keypoint, the distance to the nearest descriptor of a logo
of *another* brand (the rival). Verification then counts an inlier as the brand's own only when
its match is clearly closer than the rival (``distance < ratio * rival``, the same ratio as
the within-reference test). With :attr:`detector.verify_config.VerifyConfig.rival_test` on, a
fit with fewer than ``min_inliers`` own inliers rests on a shared part, and only its own
inliers are fused into the score; a fit with enough keeps its score.

The rival is searched among each descriptor's nearest neighbours only (20, the vote's); a
keypoint with no other brand among them has no rival (infinite distance), as in the vote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from detector.regions import box_iou

if TYPE_CHECKING:  # detector.local_search imports detector.verify, which imports this module
    from detector.local_search import DescriptorNeighbours


@dataclass(frozen=True)
class OwnerBrands:
    """Reference id -> brand, as arrays for vectorised lookups (one per index generation)."""

    ids: np.ndarray  # sorted reference ids
    codes: np.ndarray  # brand code of each id
    code_of: dict[str, int]

    @classmethod
    def of(cls, brands: Mapping[int, str]) -> OwnerBrands:
        """From reference id -> brand."""
        code_of: dict[str, int] = {}
        ids = np.array(sorted(brands), dtype=np.int64)
        codes = np.array([code_of.setdefault(brands[int(i)], len(code_of)) for i in ids], dtype=np.int64)
        return cls(ids, codes, code_of)

    def codes_for(self, owners: np.ndarray) -> np.ndarray:
        """Brand codes of these reference ids (any shape); -1 for -1 and unknown ids."""
        if len(self.ids) == 0:
            return np.full(owners.shape, -1, dtype=np.int64)
        at = np.clip(np.searchsorted(self.ids, owners), 0, len(self.ids) - 1)
        return np.where(self.ids[at] == owners, self.codes[at], -1)


@dataclass(frozen=True)
class BrandNeighbours:
    """A listing's descriptor neighbours with their owners' brands: the rival distances for
    any candidate brand (computed once a listing, asked for once a candidate)."""

    near: DescriptorNeighbours
    codes: np.ndarray  # OwnerBrands.codes_for(near.owners)
    code_of: dict[str, int]

    @classmethod
    def of(cls, near: DescriptorNeighbours, brands: OwnerBrands) -> BrandNeighbours:
        return cls(near, brands.codes_for(near.owners), brands.code_of)

    def rivals(self, brand: str) -> np.ndarray:
        """:func:`rival_distances` for a candidate of ``brand`` (a brand with no logo: every
        other brand is a rival)."""
        return rival_distances(self.near, self.codes, self.code_of.get(brand, -2))


def rival_distances(near: DescriptorNeighbours, owner_codes: np.ndarray, brand_code: int) -> np.ndarray:
    """Per listing keypoint, the Euclidean distance to its nearest descriptor of another
    brand's logo among its neighbours (``inf`` when there is none).

    Args:
        near: The listing's descriptor neighbours (squared L2 distances).
        owner_codes: :meth:`OwnerBrands.codes_for` of ``near.owners``.
        brand_code: The candidate's brand code (-2 or any unused code for a brand with no logo).
    """
    rival = (owner_codes != brand_code) & (owner_codes >= 0)
    squared = np.where(rival, near.distances, np.inf).min(axis=1)
    return np.sqrt(np.maximum(squared, 0.0))


def own_inliers(
    match_distances: np.ndarray, query_points: np.ndarray, rivals: np.ndarray, ratio: float
) -> int:
    """Distinct listing keypoints among the inliers whose match beats the rival by ``ratio``.

    Args:
        match_distances: Each inlier match's descriptor distance (Euclidean).
        query_points: Each inlier match's listing keypoint index.
        rivals: :func:`rival_distances` for the candidate's brand.
        ratio: Lowe's ratio (a match counts when ``distance < ratio * rival``).
    """
    own = match_distances < ratio * rivals[query_points]
    return len(np.unique(query_points[own]))


def rival_fits(
    fits: Mapping[int, tuple[str, tuple[int, int, int, int] | None, int]], min_excess: int, min_overlap: float = 0.5
) -> dict[int, int]:
    """Fits that another brand's fit on the same listing area explains nearly as well.

    The per-inlier test above misses a part several indexed logos share: each shared inlier
    is "clearly closest" to one of them by chance of rendering, so every brand keeps some own
    inliers (on the flag sets, Bermuda's canton verified as Tuvalu's with 24 inliers, 10 own,
    while Heard Island's, Pitcairn's and three more flags' fits held 18-20 on the same box).
    Compared as whole fits, what a brand's fit shows beyond the part is its inliers beyond
    the best other brand's accepted fit whose box overlaps it (IoU >= ``min_overlap``); the fit
    counts when that excess is itself a fit's worth (``min_excess``, ``verify.min_inliers``).
    A true logo that contains a shared part explains more than the part (Tuvalu's stars
    besides its canton) and keeps its fit, however many keypoints the part holds.

    Args:
        fits: Accepted fits by reference id: (brand, projected box in the listing, inliers).
        min_excess: Inliers a fit needs beyond its best rival's.
        min_overlap: Box IoU from which two fits cover the same area.

    Returns:
        Reference id -> the best rival fit's inliers, for each fit that does not count.

    Example:
        >>> rival_fits({1: ("tv", (0, 0, 200, 150), 24), 2: ("hm", (0, 0, 210, 150), 20)}, 6)
        {1: 20, 2: 24}
        >>> rival_fits({1: ("tv", (0, 0, 200, 150), 60), 2: ("hm", (0, 0, 210, 150), 20)}, 6)
        {2: 60}
    """
    ambiguous: dict[int, int] = {}
    for rid, (brand, box, inliers) in fits.items():
        if box is None:
            continue
        rival = max(
            (n for other, (b, other_box, n) in fits.items()
             if other != rid and b != brand and other_box is not None and box_iou(box, other_box) >= min_overlap),
            default=0,
        )  # fmt: skip
        if rival > 0 and inliers - rival < min_excess:
            ambiguous[rid] = rival
    return ambiguous
