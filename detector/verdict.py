"""The scoring result for one listing image, identical in the Python API, CLI JSON and HTTP."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ScoredMatch:
    """A reference matched by a listing image, with the evidence behind its score.

    Attributes:
        ref_id, brand, kind, product_id, source: The reference record.
        score: Final score used for thresholds (the fused score; equals ``cosine`` when
            geometric verification is off or was not run for this reference).
        cosine: Best cosine similarity between the reference and any allowed query region.
        inliers: RANSAC inliers from geometric verification, or None when not verified.
        shape_iou: Aligned IoU of the query's best mark silhouette with the reference's
            (:mod:`detector.silhouettes`), or None when shapes were not compared.
        box: Where the evidence lies in the listing image (x0, y0, x1, y1), or None.
        logo_area: For a product photo checked against the listing
            (:mod:`detector.signals.logo_area`): ``"matched"`` (its mark's area, given or
            located at indexing, is in the listing, not only the scene), ``"repost"`` (not
            that, but the whole frame agrees at re-post grade), else ``"missing"``,
            ``"undecided"``, ``"no mark"`` (none was found on the photo) or ``"not located"``
            (its brand had no logos); only the first two let the match count. None when
            not checked.
        mirrored: True when RANSAC confirmed the reference mirrored in the listing.
        verified: True when geometric verification accepted this reference and, where the
            index holds its appearance, the listing's rectified region looks like it
            (:attr:`detector.verify.Verification.confirmed`); such a match is held to the
            ``<kind>:verified`` threshold when the table has one (:mod:`detector.thresholds`).
        signals: Evidence details of signals other than the built-in ones, by signal name
            (:mod:`detector.signals`); the built-in signals' evidence is in the fields above.
    """

    ref_id: int
    brand: str
    kind: str
    product_id: str | None
    score: float
    source: str
    cosine: float
    inliers: int | None = None
    box: Box | None = None
    shape_iou: float | None = None
    logo_area: str | None = None
    mirrored: bool = False
    verified: bool = False
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["box"] = list(self.box) if self.box is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoredMatch:
        """Inverse of :meth:`to_dict` (results stored by a distributed job)."""
        box = data.get("box")
        return cls(**{**data, "box": tuple(box) if box is not None else None})


@dataclass(frozen=True)
class Verdict:
    """Whether a listing image is flagged, for which brand, and why.

    ``score`` is the best brand's score; ``flagged`` is true when some brand's score reaches the
    threshold that applies to that brand and the matched reference's kind (``threshold_source``
    says which entry of the thresholds file applied). ``error`` is set, and everything else
    empty, when the image could not be scored.
    """

    image: str
    flagged: bool = False
    brand: str | None = None
    score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    matches: tuple[ScoredMatch, ...] = field(default_factory=tuple)
    box: Box | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "flagged": self.flagged,
            "brand": self.brand,
            "score": self.score,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "matches": [m.to_dict() for m in self.matches],
            "box": list(self.box) if self.box is not None else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict` (results stored by a distributed job)."""
        box = data.get("box")
        matches = tuple(ScoredMatch.from_dict(m) for m in data.get("matches") or ())
        return cls(**{**data, "matches": matches, "box": tuple(box) if box is not None else None})

    @classmethod
    def failed(cls, image: str, error: str) -> Verdict:
        return cls(image=image, error=error)
