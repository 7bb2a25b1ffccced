"""Product logo area: a product photo matched by its whole frame must also show its logo.

A re-posted product photo shows the whole photo, logo included; a listing shot in the same
scene matches the scene's keypoints as well, but not the logo's. For the top product
candidates, the share of the logo area's keypoints that are RANSAC inliers decides whether
the mark is in the listing: matched, missing or undecided
(:func:`detector.verify.logo_area_verdict`). The logo's box is the brand's ``logo_box``
attribute or, without one, located at indexing time (:mod:`detector.signals.mark_locator`).
Whatever the mark, re-post-grade agreement of the whole frame is measured too
(:func:`frame_agreement`); a product match counts only with one of the two
(:func:`detector.fusion.fuse_one`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.signals.base import Evidence, Listing, ReferenceImage, Signal
from detector.signals.geometry import STATE_KEY, GeometricMatching
from detector.signals.mark_locator import GIVEN, LOCATED, product_marks
from detector.verdict import Box, ScoredMatch
from detector.verify import (
    LocalFeatures,
    Neighbours,
    Verification,
    VerifyConfig,
    logo_area_verdict,
    nearest_two,
    verify,
)

LOGO_AREA = {1: "matched", -1: "missing", 0: "undecided"}

# Re-post-grade evidence over the whole frame (:func:`frame_agreement`): the product photo's
# content is cut into a REPOST_GRID x REPOST_GRID grid; a cell with at least
# REPOST_CELL_KEYPOINTS reference keypoints "agrees" when at least REPOST_CELL_SHARE of them are
# RANSAC inliers. A re-post shows every part of the photo, so every such cell agrees; a listing
# cropped from the scene lacks the cells cropped off, one shot on the same backdrop lacks the
# cells of the mark and of whatever it shows instead. Re-post grade: at least
# REPOST_MIN_CELLS cells have keypoints and all of them agree.
REPOST_GRID = 4
REPOST_CELL_KEYPOINTS = 8
REPOST_CELL_SHARE = 0.3
REPOST_MIN_CELLS = 4


@dataclass(frozen=True)
class LogoAreaEvidence(Evidence):
    """Evidence about a product photo's mark in a listing.

    ``outcome``: the mark's area is in the listing (+1), missing (-1) or undecided (0; also
    when the photo has no known mark). ``mark``: where its box comes from: ``given``,
    ``located``, ``none`` (located: no mark found), ``unlocated`` (the brand had no logos) or
    ``unchecked`` (a product candidate below the top ``product_candidates``, never verified).
    ``repost``: most of the frame agrees geometrically (:func:`frame_agreement`).
    """

    outcome: int = 0
    inliers: int | None = None  # RANSAC inliers of the product photo (None: not verified)
    box: Box | None = None  # the logo's area projected into the listing, when matched
    mark: str = "given"
    repost: bool = False
    agreement: float = 0.0  # share of the frame's populated cells that agree

    @property
    def counts(self) -> bool:
        """Whether this evidence lets the product match count: its mark is in the listing,
        or the whole frame is (never the whole-frame cosine alone) and the mark is not seen
        missing — a re-post shows the mark, and a listing cropped from the same scene photo
        with another brand's logo in its place agrees everywhere but there (benchmark seed 0:
        an unindexed brand's listing agreed at re-post grade with a same-scene product photo,
        597 inliers, its logo area missing)."""
        return self.outcome > 0 or (self.repost and self.outcome == 0)

    @property
    def label(self) -> str:
        if self.outcome > 0:
            return "matched"
        if self.repost:
            return "repost"
        if self.mark == "none":
            return "no mark"
        if self.mark == "unlocated":
            return "not located"
        if self.mark == "unchecked":
            return "not checked"
        return LOGO_AREA[self.outcome]

    def detail(self) -> dict[str, object]:
        return {"logo_area": self.label, "inliers": self.inliers, "mark": self.mark, "repost": self.repost,
                "agreement": self.agreement}


class ProductLogoAreaSignal(Signal):
    """The logo-area check of the top product candidates (needs the verification's matching)."""

    name = "logo_area"

    @classmethod
    def active(cls, config) -> bool:
        return config.verify.enabled

    @classmethod
    def reference_fields(cls, reference: ReferenceImage, stored, config) -> dict:
        """A product photo's ``logo_box`` attribute, in the pixels of its first view (origin
        ``"given"``: an override). Without one, indexing locates the brand's logo on the photo
        (:mod:`detector.signals.mark_locator`), once the brand's logos are known."""
        if reference.kind != "product":
            return {}
        box = view_logo_box(reference)
        if box is not None:
            return {"logo_box": box, "logo_box_origin": GIVEN}
        # Its candidate marks, so that the brand's logos can be located by shape too.
        marks = product_marks(reference.view)
        return {"logo_box": None, "logo_box_origin": None, "marks": marks[0] if marks else None,
                "mark_boxes": marks[1] if marks else None}

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        """The top product candidates by cosine, all of them: with a known mark its area is
        checked, and with or without one the frame's agreement is measured."""
        vcfg = self.config.verify
        products = [m for m in candidates if m.kind == "product" and m.kind not in vcfg.kinds]
        products = sorted(products, key=lambda m: -m.cosine)[: vcfg.product_candidates]
        stored = self.references.features(listing.index, [m.ref_id for m in products])
        chosen = tuple(m.ref_id for m in products if m.ref_id in stored)
        # The other product candidates are not verified (cost), so they have no evidence about
        # their mark: they must not count on their whole-frame cosine either, or a same-scene
        # photo ranked below the checked ones would overtake them.
        unchecked = tuple(m.ref_id for m in candidates
                          if m.kind == "product" and m.kind not in vcfg.kinds and m.ref_id not in chosen)
        listing.state[self.name] = (chosen, unchecked)
        if chosen:
            listing.state[STATE_KEY].request((rid, stored[rid]) for rid in chosen)

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        chosen, unchecked = listing.state.get(self.name, ((), ()))
        found: dict[int, Evidence] = {rid: LogoAreaEvidence(mark="unchecked") for rid in unchecked}
        if not chosen:
            return found
        matching: GeometricMatching = listing.state[STATE_KEY]
        stored = self.references.features(listing.index, chosen)
        query = matching.features()
        for rid in chosen:
            reference, neighbours = stored[rid], matching.neighbours(rid)
            result = verify(query, reference, self.config.verify, neighbours)
            outcome = logo_area_verdict(result, self.config.verify)
            agreement = frame_agreement(query, reference, result, neighbours, self.config.verify)
            repost = agreement is not None and agreement >= 1.0
            box = result.logo_box if outcome > 0 and result.logo_box else (result.box if repost else None)
            found[rid] = LogoAreaEvidence(
                outcome=outcome, inliers=result.inliers, box=box, mark=_mark_state(reference), repost=repost,
                agreement=0.0 if agreement is None else round(agreement, 3),
            )
        return found


def _mark_state(reference: LocalFeatures) -> str:
    if reference.logo_box is not None:
        return reference.logo_box_origin or GIVEN
    return "none" if reference.logo_box_origin == LOCATED else "unlocated"


def frame_agreement(
    query: LocalFeatures, reference: LocalFeatures, result: Verification, neighbours: Neighbours | None,
    config: VerifyConfig,
) -> float | None:
    """The share of the reference's populated grid cells that agree with the listing through
    the verification's homography (see :data:`REPOST_GRID`); None when the verification was
    not accepted or fewer than :data:`REPOST_MIN_CELLS` cells hold keypoints.

    A reference keypoint is an inlier when it passes the ratio test and its nearest listing
    keypoint lies within RANSAC's tolerance of where the homography maps it (RANSAC's own
    inlier rule, for the final homography).
    """
    import cv2

    if not result.accepted or result.homography is None or len(reference) < REPOST_MIN_CELLS:
        return None
    if neighbours is None:
        neighbours = nearest_two(query, [reference])[0]
        if neighbours is None:
            return None
    indices, distances = neighbours
    good = distances[:, 0] < config.ratio * distances[:, 1]
    mapped = cv2.perspectiveTransform(reference.keypoints.reshape(-1, 1, 2).astype(np.float64),
                                      np.asarray(result.homography, dtype=np.float64)).reshape(-1, 2)
    error = np.linalg.norm(mapped - query.keypoints[indices[:, 0]], axis=1)
    inlier = good & (error <= config.ransac_reproj_threshold / query.scale)
    x0, y0, x1, y1 = reference.content
    points = reference.keypoints
    col = np.clip(((points[:, 0] - x0) * REPOST_GRID / max(x1 - x0, 1)).astype(int), 0, REPOST_GRID - 1)
    row = np.clip(((points[:, 1] - y0) * REPOST_GRID / max(y1 - y0, 1)).astype(int), 0, REPOST_GRID - 1)
    cell = row * REPOST_GRID + col
    counts = np.bincount(cell, minlength=REPOST_GRID**2)
    hits = np.bincount(cell, weights=inlier.astype(np.float64), minlength=REPOST_GRID**2)
    populated = counts >= REPOST_CELL_KEYPOINTS
    if populated.sum() < REPOST_MIN_CELLS:
        return None
    agrees = hits[populated] >= REPOST_CELL_SHARE * counts[populated]
    return float(agrees.mean())


def view_logo_box(reference: ReferenceImage) -> Box | None:
    """A product photo's ``logo_box`` attribute (x0, y0, x1, y1 in the uploaded image's
    pixels) in the pixels of its first view, where its features are found.

    Raises:
        ValueError: The attribute is not four numbers making a non-empty box in the image.
    """
    raw = reference.attributes.get("logo_box")
    if raw is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise ValueError(f"logo_box must be four numbers [x0, y0, x1, y1], got {raw!r}") from None
    width, height = reference.image.size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"logo_box {raw!r} is not a non-empty box inside the {width}x{height} image")
    view = reference.view
    sx, sy = view.width / width, view.height / height  # the view may be downscaled
    left, top = int(x0 * sx), int(y0 * sy)
    return left, top, max(left + 1, round(x1 * sx)), max(top + 1, round(y1 * sy))
