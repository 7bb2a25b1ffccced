"""Product logo area: a product photo matched by its whole frame must also show its logo.

A re-posted product photo shows the whole photo, logo included; a listing shot in the same
scene matches the scene's keypoints as well, but not the logo's. For the top product
candidates whose reference knows its logo's box, the share of the logo area's keypoints that
are RANSAC inliers decides: matched, missing or undecided
(:func:`detector.verify.logo_area_verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detector.signals.base import Evidence, Listing, ReferenceImage, Signal
from detector.signals.geometry import STATE_KEY, GeometricMatching
from detector.verdict import Box, ScoredMatch
from detector.verify import logo_area_verdict, verify

LOGO_AREA = {1: "matched", -1: "missing", 0: "undecided"}


@dataclass(frozen=True)
class LogoAreaEvidence(Evidence):
    """Whether a product photo's logo area is in the listing (+1), missing (-1) or undecided (0)."""

    outcome: int = 0
    inliers: int = 0
    box: Box | None = None  # the logo's area projected into the listing, when matched

    @property
    def label(self) -> str:
        return LOGO_AREA[self.outcome]

    def detail(self) -> dict[str, object]:
        return {"logo_area": self.label, "inliers": self.inliers}


class ProductLogoAreaSignal(Signal):
    """The logo-area check of the top product candidates (needs the verification's matching)."""

    name = "logo_area"

    @classmethod
    def active(cls, config) -> bool:
        return config.verify.enabled

    @classmethod
    def reference_fields(cls, reference: ReferenceImage, stored, config) -> dict:
        """A product photo's ``logo_box`` attribute, in the pixels of its first view."""
        if reference.kind != "product":
            return {}
        return {"logo_box": view_logo_box(reference)}

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        vcfg = self.config.verify
        products = [m for m in candidates if m.kind == "product" and m.kind not in vcfg.kinds]
        products = sorted(products, key=lambda m: -m.cosine)[: vcfg.product_candidates]
        stored = self.references.features(listing.index, [m.ref_id for m in products])
        chosen = tuple(m.ref_id for m in products if m.ref_id in stored and stored[m.ref_id].logo_box is not None)
        listing.state[self.name] = chosen
        if chosen:
            listing.state[STATE_KEY].request((rid, stored[rid]) for rid in chosen)

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        chosen: tuple[int, ...] = listing.state.get(self.name, ())
        if not chosen:
            return {}
        matching: GeometricMatching = listing.state[STATE_KEY]
        stored = self.references.features(listing.index, chosen)
        found: dict[int, Evidence] = {}
        for rid in chosen:
            result = verify(matching.features(), stored[rid], self.config.verify, matching.neighbours(rid))
            outcome = logo_area_verdict(result, self.config.verify)
            found[rid] = LogoAreaEvidence(
                outcome=outcome, inliers=result.inliers, box=result.logo_box if outcome > 0 and result.logo_box else None
            )
        return found


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
