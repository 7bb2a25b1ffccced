"""Geometric verification of the top candidates: local features, ratio test, RANSAC homography.

The first stage (embeddings) ranks references; this second stage checks the best few by
matching local features (SIFT by default, ORB as a faster patent-free-era fallback) and
fitting a homography with RANSAC. Logos are planar, so a true match yields many inliers of
one plausible homography; the reference's outline projected through it localises the logo
in the listing photo. Reference features are extracted once at indexing time and stored as
opaque bytes (:meth:`LocalFeatures.to_bytes`, a NumPy ``.npz`` loaded with
``allow_pickle=False``; never pickle).

Score fusion (:func:`fuse_scores`)::

    fused = embedding_score + weight * min(inliers, inlier_cap) / inlier_cap
    (with an accepted verification, embedding_score counts as at least cosine_floor;
     with a confirmed one, at least confirmed_floor)

``inliers`` is the count of an *accepted* verification (0 otherwise, see
:attr:`Verification.accepted_inliers`). The bonus lies in ``[0, weight]``, so the fused score
is monotone non-decreasing in both arguments, equals the embedding score when there is no
geometric support, and stays in the thresholds' range [-1, 2] for weight <= 1. The floor
exists because a logo small in a photo has a low whole-region cosine however many of its
keypoints RANSAC confirms, while chance homographies that pass the sanity checks are rare
(on the tuning set, 0-2 of 100 logo-free listings among 10 voted candidates each). Thresholds
are tuned on the fused score. With ``enabled=False`` the fused score is the embedding score.

A fit that passes the geometric checks is accepted with ``min_inliers`` inliers or, with
``acceptance="a_contrario"``, when its number of false alarms under the chance model of
:mod:`detector.chance` is small (``log_nfa <= max_log_nfa``); every fit reports ``log_nfa``.

An accepted verification is also *confirmed* when the listing's region, rectified by the
homography, lines up with the reference's edges (:func:`rectified_similarity`, on a 64 px
thumbnail stored with each logo's features). Chance homographies pass the geometric checks
with a few inliers but land on unrelated texture; only confirmed matches are held to the
thresholds table's ``logo:verified`` entry (:mod:`detector.thresholds`).

Cost on a 2-core CPU (measured): query features for a 640x480 photo ~65 ms (SIFT, up to
2000 keypoints); verify() ~0.4 ms median per pair (~3 ms for detailed logos); a reference's
features take ~7 KiB. Flat one-colour marks yield few keypoints (often < 30), so
verification mostly confirms detailed logos; region embeddings must carry flat ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image

from detector.chance import MIN_SAMPLE, hull_area, log_nfa_of_fit, residuals
from detector.errors import ConfigError
from detector.features import (
    LocalFeatures,
    chroma_channel,
    extract_features,
    mirror_features,
    root_sift,
)
from detector.rivals import own_inliers
from detector.verify_config import VerifyConfig

__all__ = [
    "APPEARANCE_SIDE", "LocalFeatures", "Neighbours", "Verification", "VerifyConfig", "appearance_thumbnail",
    "chroma_channel", "extract_features", "fuse_scores", "logo_area_verdict", "mirror_features", "nearest_two",
    "query_features", "rectified_similarity", "reference_features", "root_sift", "verify",
]

APPEARANCE_SIDE = 64  # pixels of a reference's appearance thumbnail (4 KiB a logo)


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one (query, reference) pair.

    Attributes:
        inliers: RANSAC inliers, counted as distinct query keypoints (0 if no model was fit).
        matches: Matches that passed the ratio test.
        homography: 3x3 reference-to-query homography as nested tuples, or None.
        box: The reference outline projected into the query, as an axis-aligned
            (x0, y0, x1, y1) box clipped to the query image, or None.
        accepted: True when the homography passed the sanity checks and has
            ``min_inliers`` inliers or more (``acceptance="count"``) or a small enough
            number of false alarms (``acceptance="a_contrario"``: ``log_nfa <= max_log_nfa``).
        reason: Why it was rejected ("" when accepted), for analysts and debugging.
        logo_keypoints: Reference keypoints inside the reference's ``logo_box`` (0 without one).
        logo_inliers: How many of them are RANSAC inliers.
        logo_box: The logo box projected into the query (clipped), when a homography was fit.
        appearance: Edge agreement of the rectified listing region with the reference's
            appearance thumbnail (:func:`rectified_similarity`), when it was checked.
        confirmed: Accepted, and the appearance (when checked) reaches ``min_appearance``.
        own_inliers: Inliers whose match beats every other brand's logo (``rivals`` given:
            :mod:`detector.rivals`), else None.
        counts_own: ``rival_test`` is on and fewer than ``min_inliers`` inliers are the
            brand's own: only those are fused (:attr:`accepted_inliers`).
        log_nfa: ``log10`` of the fit's number of false alarms under the chance model
            (:func:`detector.chance.log_nfa_of_fit`, ``N_tests`` =
            :attr:`VerifyConfig.chance_tests`), when a homography was fit; the lower, the
            less likely by chance.
    """

    inliers: int
    matches: int
    homography: tuple[tuple[float, ...], ...] | None
    box: tuple[int, int, int, int] | None
    accepted: bool
    reason: str = ""
    logo_keypoints: int = 0
    logo_inliers: int = 0
    logo_box: tuple[int, int, int, int] | None = None
    appearance: float | None = None
    confirmed: bool = False
    log_nfa: float | None = None
    own_inliers: int | None = None
    counts_own: bool = False

    @property
    def accepted_inliers(self) -> int:
        """Inliers to fuse when accepted (else 0): the count, or only the own inliers when the
        fit rests on a part another brand's logo shares (``counts_own``)."""
        if not self.accepted:
            return 0
        return self.own_inliers if self.counts_own and self.own_inliers is not None else self.inliers


def query_features(image: Image.Image, config: VerifyConfig) -> LocalFeatures:
    """Features of a listing photo with the query limits of ``config``."""
    return extract_features(
        image, max_side=config.query_max_side, max_features=config.query_max_features,
        method=config.method, chroma=config.chroma,
    )


def reference_features(image: Image.Image, config: VerifyConfig) -> LocalFeatures:
    """Features of a reference view with the reference limits of ``config``; store ``to_bytes()``."""
    return extract_features(
        image, max_side=config.reference_max_side, max_features=config.reference_max_features,
        method=config.method, chroma=config.chroma,
    )


Neighbours = tuple[np.ndarray, np.ndarray]
"""(indices, distances), each (n, 2): a reference's descriptors' two nearest query descriptors."""


def nearest_two(query: LocalFeatures, references: Sequence[LocalFeatures]) -> list[Neighbours | None]:
    """For each reference, the two nearest query descriptors of each of its descriptors.

    SIFT: one exact search (FAISS, a BLAS matrix product) for all references together —
    they are all matched against the same listing, and batched this is ~3x faster than a
    brute-force matcher per reference (15 references of 100-600 keypoints against 1,000:
    9.5 vs 30 ms on 2 cores). ORB: OpenCV's Hamming matcher per reference.

    Returns:
        Per reference, (indices, Euclidean / Hamming distances), or None where there is
        nothing to match (fewer than two query or one reference keypoint, another method).
    """
    import cv2

    usable = [len(query) >= 2 and len(r) >= 1 and r.method == query.method for r in references]
    found: list[Neighbours | None] = [None] * len(references)
    if query.method == "sift":
        rows = [root_sift(r.descriptors) for r, ok in zip(references, usable) if ok]
        if rows:
            import faiss

            squared, indices = faiss.knn(np.concatenate(rows), query.matchable, 2)
            distances = np.sqrt(np.maximum(squared, 0.0))
            offsets = np.cumsum([0] + [len(r) for r in rows])
            matched = [i for i, ok in enumerate(usable) if ok]
            for i, (start, stop) in zip(matched, pairwise(offsets)):
                found[i] = (indices[start:stop], distances[start:stop])
        return found
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for i, (reference, ok) in enumerate(zip(references, usable)):
        if ok:
            pairs = matcher.knnMatch(reference.descriptors, query.matchable, k=2)
            full = [p if len(p) == 2 else (p[0], p[0]) for p in pairs]  # a lone match fails the ratio test
            found[i] = (np.array([[p[0].trainIdx, p[1].trainIdx] for p in full], dtype=np.int64).reshape(-1, 2),
                        np.array([[p[0].distance, p[1].distance] for p in full], dtype=np.float32).reshape(-1, 2))
    return found


def verify(
    query: LocalFeatures, reference: LocalFeatures, config: VerifyConfig, neighbours: Neighbours | None = None,
    rivals: np.ndarray | None = None,
) -> Verification:
    """Match reference features into the query and fit a RANSAC homography.

    Each reference keypoint is matched to its two nearest query keypoints (the query has
    many more, mostly background) and kept if it passes the ratio test.

    Args:
        query: Features of the listing photo.
        reference: Features of the reference (e.g. from :meth:`LocalFeatures.from_bytes`).
        config: Thresholds.
        neighbours: The reference's entry of :func:`nearest_two` when already computed
            (the scorer batches its candidates); computed here when None.
        rivals: Per listing keypoint, the distance to the nearest logo descriptor of another
            brand (:func:`detector.rivals.rival_distances`); with ``config.rival_test`` a fit
            with fewer than ``min_inliers`` inliers that beat it fuses only those.

    Returns:
        A Verification; ``accepted`` is False with a ``reason`` when evidence is missing or
        the homography is degenerate (tiny/huge/flipped area, non-convex outline, shear).

    Raises:
        ConfigError: The two feature sets were made with different methods.

    Example:
        >>> empty = extract_features(Image.new("RGB", (32, 32)), max_side=32, max_features=10)
        >>> verify(empty, empty, VerifyConfig()).accepted
        False
    """
    import cv2

    if query.method != reference.method:
        raise ConfigError(f"cannot match {reference.method} features against {query.method}")
    if len(query) < 2 or len(reference) < 2:
        return Verification(0, 0, None, None, False, "too few keypoints")

    indices, distances = neighbours if neighbours is not None else nearest_two(query, [reference])[0]
    good_refs = np.flatnonzero(distances[:, 0] < config.ratio * distances[:, 1])  # reference keypoints
    good_queries = indices[good_refs, 0]  # their matches in the query
    counting = config.acceptance == "count"
    if len(good_refs) < (config.min_inliers if counting else MIN_SAMPLE + 1):
        return Verification(0, len(good_refs), None, None, False, f"{len(good_refs)} ratio-test matches")

    src = reference.keypoints[good_refs].reshape(-1, 1, 2)
    dst = query.keypoints[good_queries].reshape(-1, 1, 2)
    # The tolerance is meant at the resolution features were found at; points are in original px.
    threshold = config.ransac_reproj_threshold / query.scale
    homography, mask = cv2.findHomography(
        src, dst, cv2.RANSAC, threshold, maxIters=config.ransac_max_iters, confidence=0.995
    )
    if homography is None or mask is None:
        return Verification(0, len(good_refs), None, None, False, "no homography found")
    inlier_idx = np.flatnonzero(mask.ravel())
    # Several reference points snapping to one query point is not independent evidence.
    inliers = len(np.unique(good_queries[inlier_idx]))
    as_tuple = tuple(tuple(float(v) for v in row) for row in homography)

    outline = _project_outline(homography, reference.content)
    x0, y0, x1, y1 = reference.content
    reason = _degenerate(outline, (x1 - x0, y1 - y0), query.image_size, config)
    box = _clipped_box(outline, query.image_size) if outline is not None else None
    chance = _chance(homography, src, dst, query, threshold, config)
    if not reason and counting and inliers < config.min_inliers:
        reason = f"{inliers} inliers < {config.min_inliers}"
    own = None
    if rivals is not None:
        inlier_refs = good_refs[inlier_idx]
        own = own_inliers(distances[inlier_refs, 0], good_queries[inlier_idx], rivals, config.rival_ratio)
    if not reason and box is None:
        reason = "projected outline lies outside the query"
    appearance = None
    if not reason and config.min_appearance > -1 and reference.appearance is not None and query.pixels is not None:
        appearance = rectified_similarity(query, reference, homography)
    confirmed = not reason and (appearance is None or appearance >= config.min_appearance)
    logo = {}
    if reference.logo_box is not None:
        lx0, ly0, lx1, ly1 = reference.logo_box
        points = reference.keypoints
        inside = (points[:, 0] >= lx0) & (points[:, 0] < lx1) & (points[:, 1] >= ly0) & (points[:, 1] < ly1)
        inlier_refs = good_refs[inlier_idx]  # distinct: each reference keypoint matches once
        projected = _project_outline(homography, reference.logo_box)
        logo = {
            "logo_keypoints": int(inside.sum()),
            "logo_inliers": int(inside[inlier_refs].sum()),
            "logo_box": _clipped_box(projected, query.image_size) if projected is not None else None,
        }
    return Verification(
        inliers, len(good_refs), as_tuple, box, not reason, reason, appearance=appearance, confirmed=confirmed,
        log_nfa=chance, own_inliers=own,
        counts_own=config.rival_test == "on" and own is not None and own < config.min_inliers, **logo,
    )


def _chance(
    homography: np.ndarray, src: np.ndarray, dst: np.ndarray, query: LocalFeatures, tolerance: float,
    config: VerifyConfig,
) -> float:
    """log10 NFA of the fit (:func:`detector.chance.log_nfa_of_fit`) in original pixels.

    Matches count once per listing *position* (to the working copy's pixel; the best residual
    of each): greyscale and chroma keypoints at one corner, or several reference keypoints on
    one listing keypoint, are one event, not independent evidence. The area is the listing's
    (``chance_area="image"``) or that of the convex hull of the matches' listing positions
    (``"matches"``: matches bunched in a small patch fit a homography easily). The finest
    tolerance is one pixel of the working copy."""
    errors = residuals(homography, src.reshape(-1, 2), dst.reshape(-1, 2))
    points = dst.reshape(-1, 2)
    cells = np.round(points * query.scale).astype(np.int64)
    order = np.lexsort((errors, cells[:, 1], cells[:, 0]))  # by position, best residual first
    first = np.ones(len(order), bool)
    first[1:] = np.any(cells[order][1:] != cells[order][:-1], axis=1)
    distinct = errors[order][first]
    width, height = query.image_size
    area = float(width * height)
    if config.chance_area == "matches":
        area = min(area, hull_area(points[order][first]))
    resolution = 1.0 / query.scale  # one pixel of the working copy
    return log_nfa_of_fit(distinct, len(distinct), area, tolerance, config.chance_tests, resolution)[0]


def appearance_thumbnail(features: LocalFeatures, side: int = APPEARANCE_SIDE) -> np.ndarray | None:
    """The content box of the image ``features`` were found on, greyscale, ``side`` x ``side``
    (aspect not kept: the rectified listing region is resampled the same way); None when
    the features do not hold their working copy.
    """
    import cv2

    if features.pixels is None:
        return None
    x0, y0, x1, y1 = (round(v * features.scale) for v in features.content)
    grey = features.pixels if features.pixels.ndim == 2 else features.pixels[..., 0]
    height, width = grey.shape
    crop = grey[max(0, y0) : min(height, max(y1, y0 + 1)), max(0, x0) : min(width, max(x1, x0 + 1))]
    if crop.size == 0:
        return None
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def rectified_similarity(query: LocalFeatures, reference: LocalFeatures, homography: np.ndarray) -> float:
    """How well the listing region the homography maps the reference onto lines up with the
    reference's edges: edge-orientation agreement in [-1, 1] on the appearance grid.

    Both are resampled to the reference's appearance thumbnail; at each pixel near one of
    the reference's edges, the cosine between the two gradients' *doubled* angles (blind to
    the gradient's sign, so to recolouring and inversion), weighted by the reference's edge
    strength. A true match lines the mark's edges up; a chance homography, or the same logo
    shifted by a sixth of its size, lands on unrelated texture (measured, two detailed logos
    pasted on a busy photo: 0.55-0.58 aligned, 0.03 shifted, where a plain gradient
    correlation gave 0.07-0.20 aligned; the thin Ferrari horse at other placements on the
    same photo 0.15-0.47, as the photo's own edges show between its strokes). When the
    query's pixels hold a chroma channel, its orientation tensor is added to the greyscale
    one, so a mark that differs from the photo only in colour still shows its edges (a red
    mark on a grey photo of the same brightness). Needs ``query.pixels`` and
    ``reference.appearance``.
    """
    import cv2

    if query.pixels is None or reference.appearance is None:
        raise ValueError("rectified_similarity needs the query's pixels and the reference's appearance")
    side = reference.appearance.shape[0]
    work = 2 * side  # sample finer, then average down like the thumbnail was
    x0, y0, x1, y1 = reference.content
    grid_to_reference = np.array(
        [[(x1 - x0) / work, 0.0, x0], [0.0, (y1 - y0) / work, y0], [0.0, 0.0, 1.0]]
    )
    to_working = np.diag([query.scale, query.scale, 1.0])
    grid_to_query = to_working @ np.asarray(homography, dtype=np.float64) @ grid_to_reference
    patch = cv2.warpPerspective(
        query.pixels, grid_to_query, (work, work),
        flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    (ua, va), (ub, vb) = _doubled_angle(reference.appearance), _doubled_angle(patch)
    strength_a, strength_b = np.hypot(ua, va), np.hypot(ub, vb)  # squared gradient norms
    agreement = (ua * ub + va * vb) / (strength_a * strength_b + 1e-6)
    edges = (strength_a > 0.0625 * strength_a.max()).astype(np.uint8)  # |g| above a quarter of the max
    near = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
    weight = np.sqrt(strength_a) * near
    return float((agreement * weight).sum() / max(float(weight.sum()), 1e-6))


def logo_area_verdict(result: Verification, config: VerifyConfig) -> int:
    """+1 when a product photo's logo area is matched, -1 when it is missing, 0 undecided.

    A re-posted product photo shows the whole photo, logo included. A listing photographed
    in the same scene (or cropped from the same stock photo) matches the scene's keypoints
    as well — hundreds of inliers — but not the logo's. So the share of the logo area's
    reference keypoints that are RANSAC inliers decides; too few keypoints there (a plain
    logo on a plain photo), or no homography, decide nothing.

    Example:
        >>> h = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        >>> v = Verification(300, 320, h, None, True, logo_keypoints=40, logo_inliers=0)
        >>> logo_area_verdict(v, VerifyConfig())
        -1
    """
    if result.homography is None or result.logo_keypoints == 0:
        return 0
    share = result.logo_inliers / result.logo_keypoints
    if share >= config.logo_confirm_share and result.logo_inliers >= config.logo_min_inliers:
        return 1
    if share <= config.logo_missing_share and result.logo_keypoints >= config.logo_min_keypoints:
        return -1
    return 0


def fuse_scores(embedding_score: float, inliers: int, config: VerifyConfig, confirmed: bool = False) -> float:
    """First-stage score plus a bounded geometric bonus.

    ``fused = base + weight * min(inliers, inlier_cap) / inlier_cap`` where ``base`` is the
    embedding score, raised to ``cosine_floor`` when there are inliers (to ``confirmed_floor``
    when the verification is also ``confirmed``); the embedding score unchanged when
    verification is disabled. Pass :attr:`Verification.accepted_inliers` (0 for unverified or
    rejected candidates).

    Example:
        >>> fuse_scores(0.6, 25, VerifyConfig(weight=0.4, inlier_cap=50))
        0.8
        >>> round(fuse_scores(0.3, 25, VerifyConfig(weight=0.4, inlier_cap=50, cosine_floor=0.7)), 6)
        0.9
        >>> round(fuse_scores(0.3, 25, VerifyConfig(weight=0.4, inlier_cap=50, confirmed_floor=0.85), True), 6)
        1.05
    """
    if not config.enabled:
        return float(embedding_score)
    support = min(max(int(inliers), 0), config.inlier_cap) / config.inlier_cap
    floor = max(config.cosine_floor, config.confirmed_floor if confirmed else -1.0)
    base = max(float(embedding_score), floor) if support > 0 else float(embedding_score)
    return base + config.weight * support


# --- internals -----------------------------------------------------------------------------


def _doubled_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient as (gx^2 - gy^2, 2 gx gy): its angle doubled, so opposite gradients agree."""
    import cv2

    pixels = image.astype(np.float32)
    gx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1)
    u, v = gx * gx - gy * gy, 2 * gx * gy
    if u.ndim == 3:  # several channels: their tensors add up (Di Zenzo's colour gradient)
        u, v = u.sum(axis=2), v.sum(axis=2)
    return u, v


def _project_outline(
    homography: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray | None:
    """The box's corners (clockwise from top-left on screen) mapped into the query, (4, 2)."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], dtype=np.float64)
    projected = corners @ homography.T
    if np.any(projected[:, 2] <= 1e-9):
        return None  # a corner maps through the horizon: not a view of a planar logo
    return projected[:, :2] / projected[:, 2:3]


def _degenerate(
    outline: np.ndarray | None,
    ref_size: tuple[int, int],
    query_size: tuple[int, int],
    config: VerifyConfig,
) -> str:
    """Reason the projected outline is implausible, or "" if it looks like a real view."""
    if outline is None:
        return "outline crosses the horizon"
    edges = np.roll(outline, -1, axis=0) - outline
    # z of consecutive edge cross products: all positive for a convex, non-flipped quad
    # (image y points down, corners clockwise on screen => positive in this convention).
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    if np.all(turns < 0):
        return "mirrored outline"
    if not np.all(turns > 0):
        return "non-convex outline"
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    fraction = area / float(query_size[0] * query_size[1])
    if fraction < config.min_area_fraction:
        return f"projected area {fraction:.2e} of the query is too small"
    if fraction > config.max_area_fraction:
        return f"projected area {fraction:.2f}x the query is too large"
    lengths = np.linalg.norm(edges, axis=1)  # top, right, bottom, left
    w, h = ref_size
    aspect_change = ((lengths[0] + lengths[2]) / (lengths[1] + lengths[3])) / (w / h)
    perspective = max(
        lengths[0] / lengths[2], lengths[2] / lengths[0], lengths[1] / lengths[3],
        lengths[3] / lengths[1],
    )
    if max(aspect_change, 1 / aspect_change, perspective) > config.max_distortion:
        return "outline too stretched or foreshortened"
    cosines = -np.sum(edges * following, axis=1) / (lengths * np.roll(lengths, -1))
    smallest = float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).min())
    if smallest < config.min_corner_angle:
        return f"outline too sheared (corner of {smallest:.0f} degrees)"
    return ""


def _clipped_box(outline: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    width, height = size
    x0 = int(np.clip(np.floor(outline[:, 0].min()), 0, width))
    y0 = int(np.clip(np.floor(outline[:, 1].min()), 0, height))
    x1 = int(np.clip(np.ceil(outline[:, 0].max()), 0, width))
    y1 = int(np.clip(np.ceil(outline[:, 1].max()), 0, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
