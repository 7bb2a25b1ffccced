"""How much a shape match counts: the floor an aligned IoU must pass (:func:`shape_floor`),
the support above it and the score bonus (:func:`shape_support`, :func:`shape_bonus`), and
how distinct a logo's shape is from other brands' logos and from generic shapes (stars,
rings, hearts), which raises its floor (``SilhouetteConfig.distinct_margin``); and, not yet
wired, a mark's own chance scale (:func:`mark_chance_floor`, :func:`mark_rank_log_nfa`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from detector.silhouettes import CANONICAL_SIDE, SilhouetteConfig, canonical_mask


def shape_floor(reference: np.ndarray, config: SilhouetteConfig) -> float:
    """The aligned IoU above which a reference's shape is evidence: ``iou_floor``, or with
    ``solidity_floor`` the mark's solidity (its area over its convex hull's) when higher.

    A convex mark (solidity near 1: a disc, a square, a shield) aligns well with any blob
    a photo segments into (a text block, a price tag), so its alignment says little; with
    the floor at its solidity only aligned concave detail (holes, notches, strokes) counts.
    Measured on benchmark seed 0 (thorough): the wrong logos that outranked true copies and
    re-posts through their shape had solidity 0.82-0.91 (median logo 0.59).

    Example:
        >>> square = np.zeros((64, 64), np.uint8); square[16:48, 16:48] = 1
        >>> round(shape_floor(square, SilhouetteConfig(solidity_floor=True)), 2)
        1.0
    """
    import cv2

    if not config.solidity_floor:
        return config.iou_floor
    points = cv2.findNonZero(reference.astype(np.uint8))
    if points is None:
        return config.iou_floor
    hull = np.zeros(reference.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    solidity = float(np.count_nonzero(reference)) / max(int(hull.sum()), 1)
    return max(config.iou_floor, min(solidity, 1.0))


def shape_support(iou: float, floor: float) -> float:
    """How far an aligned IoU is above its floor, as a share of the way to 1: ``(iou -
    floor) / (1 - floor)`` clipped to ``[0, 1]`` (0 when the floor is 1).

    Example:
        >>> shape_support(0.75, 0.5)
        0.5
    """
    if floor >= 1.0:
        return 0.0
    return float(min(max((iou - floor) / (1.0 - floor), 0.0), 1.0))


def shape_bonus(iou: float, config: SilhouetteConfig, floor: float | None = None) -> float:
    """``weight * shape_support(iou, floor)``; ``floor`` defaults to ``iou_floor`` (see
    :func:`shape_floor`).

    Example:
        >>> shape_bonus(0.75, SilhouetteConfig(enabled=True, iou_floor=0.5, weight=0.4))
        0.2
    """
    if not config.enabled:
        return 0.0
    return config.weight * shape_support(iou, config.iou_floor if floor is None else floor)


def mark_chance_floor(others: np.ndarray, k: int = 5, beta: float = 1.0) -> float:
    """A floor on a listing mark's aligned IoU from the mark's own chance scale (the shape
    analogue of :mod:`detector.background`'s ``bg_k``): ``beta`` times its k-th best aligned IoU
    with the library's *other* masks (other brands' logos, generic shapes), 0 with fewer than
    ``k``. A plain blob that aligns with many logos gets a high floor; a distinctive mark a
    low one. Not wired into the shape signal yet (docs/scoring.md, section 5).

    Example:
        >>> mark_chance_floor(np.array([0.82, 0.8, 0.79, 0.78, 0.75, 0.7]), k=5)  # a plain blob
        0.75
        >>> mark_chance_floor(np.array([0.41, 0.3, 0.2, 0.2, 0.1]), k=5)          # a distinctive mark
        0.1
    """
    others = np.asarray(others, np.float64).ravel()
    if len(others) < k:
        return 0.0
    return float(beta * np.partition(-others, k - 1)[k - 1] * -1)


def mark_rank_log_nfa(iou: float, others: np.ndarray, marks: int = 1) -> float:
    """``log10`` of a rank NFA of a mark's aligned IoU with a candidate logo: ``marks * L *
    (c + 1) / (L + 1)`` with ``c`` of the ``L`` other masks (other brands' logos, generic
    shapes) aligning with the mark at least as well. At most 0 (NFA <= 1) only when the
    candidate is the mark's unique best over a single mark.

    Example:
        >>> round(mark_rank_log_nfa(0.8, np.array([0.5, 0.4, 0.3])), 3)   # the unique best: 3/4
        -0.125
        >>> round(mark_rank_log_nfa(0.6, np.array([0.7, 0.65, 0.3])), 3)  # two better: 3 * 3/4
        0.352
    """
    others = np.asarray(others, np.float64).ravel()
    total = len(others)
    if total == 0:
        return float(np.log10(max(marks, 1)))
    better = int(np.count_nonzero(others >= iou))
    return float(np.log10(max(marks, 1) * total * (better + 1) / (total + 1)))


def distinct_ious(masks: np.ndarray, brands: Sequence[str], *, chunk: int = 1024) -> np.ndarray:
    """Each mask's best IoU with a mask of another brand, aligned as is or mirrored.

    ``masks`` is (n, side * side), flattened canonical masks as 0/1 (float32). Both
    alignments of canonical masks are centroid-centred and area-normalised, so this is one
    matrix product per chunk of rows: ~2 * n^2 * side^2 flops (1,000 logos: ~0.1 s on 2 cores).
    A brand alone in the index gets 0. The reference computation: the scorer keeps these
    incrementally (:class:`detector.shape_library.ShapeLibrary`, equal bit for bit).

    Example:
        >>> a = np.zeros((4, 4), np.float32); a[1:3, 1:3] = 1
        >>> distinct_ious(np.stack([a.ravel(), a.ravel()]), ["x", "y"]).tolist()
        [1.0, 1.0]
    """
    n = len(masks)
    out = np.zeros(n, dtype=np.float32)
    if n < 2:
        return out
    side = round(float(np.sqrt(masks.shape[1])))
    mirrored = masks.reshape(n, side, side)[:, :, ::-1].reshape(n, -1)
    areas = masks.sum(axis=1)
    labels = np.unique(np.asarray(brands), return_inverse=True)[1]
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        best = np.zeros((rows.stop - start, n), dtype=np.float32)
        for variant in (masks[rows], mirrored[rows]):
            inter = variant @ masks.T
            union = areas[rows, None] + areas[None, :] - inter
            best = np.maximum(best, inter / np.maximum(union, 1.0))
        best[labels[rows, None] == labels[None, :]] = 0.0  # the brand's own logos
        out[rows] = best.max(axis=1)
    return out


def generic_ious(masks: np.ndarray) -> np.ndarray:
    """Each mask's best IoU with a generic shape (:func:`generic_shapes`), as is or mirrored.

    ``masks`` is (n, side * side), flattened canonical masks as 0/1 (float32). A mark that
    is nothing but a star, a ring or a heart is printed on goods of every brand, so its
    shape is no brand's evidence; :class:`SilhouetteConfig`'s ``distinct_margin`` treats
    these shapes like another brand's logo.

    Example:
        >>> import cv2
        >>> disc = np.zeros((256, 256), np.uint8); _ = cv2.circle(disc, (128, 128), 100, 1, -1)
        >>> ring = disc.copy(); _ = cv2.circle(ring, (128, 128), 65, 0, -1)
        >>> [round(float(v), 1) for v in generic_ious(np.stack([canonical_mask(m).ravel() for m in (ring, disc)]).astype(np.float32))]
        [1.0, 0.8]
    """
    if len(masks) == 0:
        return np.zeros(0, dtype=np.float32)
    side = round(float(np.sqrt(masks.shape[1])))
    shapes = generic_shapes(side)
    mirrored = masks.reshape(len(masks), side, side)[:, :, ::-1].reshape(len(masks), -1)
    best = np.zeros(len(masks), dtype=np.float32)
    for variant in (masks, mirrored):
        inter = variant @ shapes.T
        union = variant.sum(axis=1)[:, None] + shapes.sum(axis=1)[None, :] - inter
        best = np.maximum(best, (inter / np.maximum(union, 1.0)).max(axis=1))
    return best


@cache
def generic_shapes(side: int = CANONICAL_SIDE) -> np.ndarray:
    """(n, side * side) canonical masks of generic shapes, each at rotations 5 degrees apart
    over its symmetry: 4-, 5-, 6- and 8-pointed stars (two depths), rings (three widths),
    crosses (two widths), a heart and crescents (two widths). Convex shapes are left to
    :func:`shape_floor`'s solidity. Read-only (cached)."""
    import cv2

    size = 256
    centre, radius = size / 2, 0.45 * size

    def star(points: int, depth: float) -> np.ndarray:
        angles = np.pi * np.arange(2 * points) / points - np.pi / 2
        radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * depth)
        outline = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
        return cv2.fillPoly(np.zeros((size, size), np.uint8), [np.int32(np.round(outline))], 1)

    def ring(hole: float) -> np.ndarray:
        disc = cv2.circle(np.zeros((size, size), np.uint8), (size // 2, size // 2), round(radius), 1, -1)
        return cv2.circle(disc, (size // 2, size // 2), round(radius * hole), 0, -1)

    def cross(width: float) -> np.ndarray:
        mask = np.zeros((size, size), np.uint8)
        c, arm, half = size // 2, round(radius), round(radius * width)
        mask[c - half : c + half, c - arm : c + arm] = 1
        mask[c - arm : c + arm, c - half : c + half] = 1
        return mask

    def heart() -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, 400)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        outline = np.stack([x, y], axis=1) * size / 40 + centre
        return cv2.fillPoly(np.zeros((size, size), np.uint8), [np.int32(outline)], 1)

    def crescent(offset: float) -> np.ndarray:
        c, r = size // 2, round(0.4 * size)
        disc = cv2.circle(np.zeros((size, size), np.uint8), (c, c), r, 1, -1)
        return cv2.circle(disc, (c + round(r * offset), c), r, 0, -1)

    shapes = [(star(n, depth), 360 // n) for n in (4, 5, 6, 8) for depth in (0.38, 0.5)]
    shapes += [(ring(hole), 5) for hole in (0.5, 0.65, 0.8)]
    shapes += [(cross(width), 90) for width in (0.2, 0.33)]
    shapes += [(heart(), 360)] + [(crescent(offset), 360) for offset in (0.35, 0.6)]
    rows = []
    for mask, period in shapes:
        for angle in range(0, period, 5):
            turn = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
            canonical = canonical_mask(cv2.warpAffine(mask, turn, (size, size), flags=cv2.INTER_NEAREST), side)
            if canonical is not None:
                rows.append(canonical.ravel())
    stacked = np.asarray(rows, dtype=np.float32)
    stacked.setflags(write=False)
    return stacked
