"""Shape: the listing's marks (frame regions and colour components, segmented) compared by
shape with every logo reference (:mod:`detector.silhouettes`).

The coarse search proposes the logos some mark resembles; the top candidates (and those) are
then shape-checked — the best aligned IoU of any mark with the reference's canonical mask —
against a floor raised by how close other brands' logos and generic shapes come to that logo
(``distinct_margin``: a shape two brands share identifies neither). With ``embed``, the marks
some logo resembles are also embedded as silhouettes (:meth:`ShapeSignal.embed_views`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from detector.regions import Region
from detector.shape_scores import distinct_ious, generic_ious, shape_floor
from detector.signals.base import Evidence, Listing, ReferenceImage, Signal
from detector.signals.geometry import Stealable, listing_pool
from detector.signals.local_features import ranked_eligible
from detector.silhouettes import (
    CANONICAL_SIDE,
    QueryShapes,
    canonical_mask,
    component_boxes,
    mask_box,
    query_mask,
    reference_mask,
    silhouette_image,
)
from detector.verdict import Box, ScoredMatch
from index.protocol import VectorIndex

Mark = tuple[np.ndarray, np.ndarray, Box]  # (mask, canonical mask, box in the image)


@dataclass(frozen=True)
class ShapeEvidence(Evidence):
    """The best aligned IoU of a listing's mark with a logo reference's silhouette, the floor
    it must pass to count, and where that mark is."""

    iou: float = 0.0
    floor: float = 1.0
    box: Box | None = None

    def detail(self) -> dict[str, object]:
        return {"iou": self.iou, "floor": self.floor, "box": list(self.box) if self.box else None}


@dataclass
class Marks:
    """The marks found in one listing: their shapes and where each lies."""

    query: QueryShapes
    boxes: list[Box]
    found: tuple[int, ...] = ()  # logo references the shape search found (silhouettes.search)
    embedded: list[Mark] = field(default_factory=list)  # marks whose silhouettes are embedded
    picks: frozenset[int] = frozenset()  # those found and each mark's own best references
    checked: tuple[int, ...] = ()  # candidates to shape-check (plan)


@dataclass(frozen=True)
class LogoShapes:
    """The canonical masks of one index generation's logo references."""

    ids: np.ndarray  # ref id of each row
    rows: np.ndarray  # (n, CANONICAL_SIDE**2) flattened 0/1 masks, int8 (QueryShapes.coarse)
    distinct: dict[int, float]  # ref id -> best IoU with another brand's logo or a generic shape


class ShapeSignal(Signal):
    """Marks searched and checked by shape."""

    name = "shape"

    @classmethod
    def active(cls, config) -> bool:
        return config.silhouettes.enabled

    @classmethod
    def reference_fields(cls, reference: ReferenceImage, stored, config) -> dict:
        """A logo's canonical silhouette (None when its mark cannot be separated)."""
        if reference.kind != "logo":
            return {}
        mask = reference_mask(reference.image)
        return {"silhouette": canonical_mask(mask) if mask is not None else None}

    def start(self, listing: Listing) -> None:
        """Segment the marks: in a worker thread when they are only searched by shape (the
        caller takes the task over if no worker has started it when it is needed); here when
        their silhouettes are to be embedded with the listing's regions."""
        scan = listing.state["embedding"]
        crops, regions = list(scan.crops), list(scan.regions)
        if self.config.silhouettes.embed:
            listing.state[self.name] = self._find_marks(listing.index, crops, regions)
        else:
            listing.state[self.name] = Stealable(listing_pool(), self._find_marks, listing.index, crops, regions)

    def _marks(self, listing: Listing) -> Marks:
        state = listing.state[self.name]
        if isinstance(state, Stealable):
            state = listing.state[self.name] = state.result()
        return state

    def embed_views(self, listing: Listing) -> list[tuple[Region, Image.Image]]:
        """Each embedded mark's silhouette, with the mark's own box as its region."""
        short = min(listing.image.size)
        return [
            (Region(box, "silhouette", max(box[2] - box[0], box[3] - box[1]) / short), silhouette_image(mask))
            for mask, _, box in self._marks(listing).embedded
        ]

    def propose(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> list[list[int]]:
        found = self._marks(listing).found  # logos whose shape a mark resembles, whatever their cosine
        return [list(found)] if found else []

    def plan(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> None:
        """Shape-check the top candidates by cosine, those found by shape and each embedded
        mark's own best references."""
        marks = self._marks(listing)
        if not len(marks.query):
            return
        scfg = self.config.silhouettes
        scan = listing.state["embedding"]
        marks.picks = frozenset(
            rid for r, region in enumerate(scan.regions) if region.source == "silhouette"
            for rid in scan.ref_ids[r][: scfg.per_mark_candidates].tolist() if rid >= 0
        ) | frozenset(marks.found)
        ranked = ranked_eligible(candidates, self.config.verify.kinds)
        marks.checked = tuple(m.ref_id for i, m in enumerate(ranked) if i < scfg.top_candidates or m.ref_id in marks.picks)

    def evidence(self, listing: Listing, candidates: Sequence[ScoredMatch]) -> dict[int, Evidence]:
        marks = self._marks(listing)
        if not marks.checked:
            return {}
        scfg = self.config.silhouettes
        stored = self.references.features(listing.index, marks.checked)
        distinct = self._logo_shapes(listing.index).distinct if scfg.distinct_margin is not None else {}
        found: dict[int, Evidence] = {}
        for rid in marks.checked:
            silhouette = stored[rid].silhouette if rid in stored else None
            if silhouette is None:
                continue
            iou, mark = marks.query.match(silhouette)
            floor = shape_floor(silhouette, scfg)
            if rid in distinct:  # a shape another brand's logo shares identifies neither
                floor = max(floor, distinct[rid] + (scfg.distinct_margin or 0.0))
            found[rid] = ShapeEvidence(iou=iou, floor=floor, box=marks.boxes[mark])
        return found

    # ------------------------------------------------------------------ the marks
    def _find_marks(self, index: VectorIndex, crops: list[Image.Image], regions: list[Region]) -> Marks:
        """The marks of one listing and the logo references the shape search found; with
        ``embed``, only the marks some logo resembles (``min_shape_iou``) are kept: their
        silhouettes are to be embedded."""
        scfg = self.config.silhouettes
        marks = self._segment(crops, regions)
        shapes = QueryShapes([c for _, c, _ in marks], scfg)
        found: tuple[int, ...] = ()
        embed_filter = scfg.embed and scfg.min_shape_iou > 0
        if marks and (embed_filter or scfg.search > 0):
            logos = self._logo_shapes(index)
            coarse = shapes.coarse(logos.rows)  # (marks, logo references)
            if scfg.search > 0 and coarse.size:
                best = coarse.max(axis=0)
                order = np.argsort(-best, kind="stable")[: scfg.search]
                found = tuple(int(logos.ids[j]) for j in order if best[j] > 0)
            if embed_filter:
                resembled = [i for i, iou in enumerate(coarse.max(axis=1).tolist()) if iou >= scfg.min_shape_iou]
                marks, shapes = [marks[i] for i in resembled], shapes.subset(resembled)
        return Marks(shapes, [box for _, _, box in marks], found=found, embedded=marks if scfg.embed else [])

    def _segment(self, crops: list[Image.Image], regions: list[Region]) -> list[Mark]:
        """The mark in each of the first regions (and each colour component of the frame)."""
        scfg = self.config.silhouettes
        found = []
        pairs = list(zip(crops[: scfg.max_regions], (r.box for r in regions)))
        if scfg.component_marks:
            image = crops[0]  # region 0 is always the whole frame
            pairs += [(image.crop(box), box) for box in component_boxes(image, scfg)]
        for crop, region in pairs:
            mask = query_mask(crop, scfg)
            if mask is None:
                continue
            box = mask_box(mask, region)
            if scfg.refine and mask.mean() < scfg.refine_below:
                mask, box = self._refined_mark(crop, region, box, mask)
            canonical = canonical_mask(mask)
            if canonical is not None:
                found.append((mask, canonical, box))
        return found

    def _refined_mark(self, crop: Image.Image, region: Box, box: Box, mask: np.ndarray) -> tuple[np.ndarray, Box]:
        """Segment again in a tight, padded crop around a small mark; keep the first pass
        if the second finds nothing."""
        x0, y0, x1, y1 = box
        pad_x, pad_y = max(2, (x1 - x0) // 6), max(2, (y1 - y0) // 6)
        tight = (
            max(region[0], x0 - pad_x), max(region[1], y0 - pad_y),
            min(region[2], x1 + pad_x), min(region[3], y1 + pad_y),
        )
        local = (tight[0] - region[0], tight[1] - region[1], tight[2] - region[0], tight[3] - region[1])
        finer = query_mask(crop.crop(local), self.config.silhouettes)
        if finer is None:
            return mask, box
        return finer, mask_box(finer, tight)

    def _logo_shapes(self, index: VectorIndex) -> LogoShapes:
        """Canonical masks of ``index``'s logo references (and, with ``distinct_margin``,
        how distinct each is), gathered once per index generation."""

        def build() -> LogoShapes:
            logos = [r for r in index.references() if r.kind == "logo"]
            features = self.references.features(index, [r.id for r in logos])
            masks = {r.id: features[r.id].silhouette for r in logos if r.id in features}
            kept = [r for r in logos if masks.get(r.id) is not None]
            rows = (np.stack([_canonical_rows(mask) for r in kept if (mask := masks[r.id]) is not None]) if kept
                    else np.zeros((0, CANONICAL_SIDE**2), np.int8))
            distinct: dict[int, float] = {}
            if self.config.silhouettes.distinct_margin is not None:
                as_float = rows.astype(np.float32)
                floors = np.maximum(distinct_ious(as_float, [r.brand for r in kept]), generic_ious(as_float))
                distinct = dict(zip((r.id for r in kept), floors.tolist()))
            return LogoShapes(np.array([r.id for r in kept], dtype=np.int64), rows, distinct)

        return self.references.per_generation("logo_shapes", index, build)


def _canonical_rows(mask: np.ndarray) -> np.ndarray:
    """A stored canonical mask as one int8 0/1 row at :data:`CANONICAL_SIDE` (older indexes
    may hold another size)."""
    import cv2

    if mask.shape != (CANONICAL_SIDE, CANONICAL_SIDE):
        mask = cv2.resize(mask.astype(np.uint8), (CANONICAL_SIDE, CANONICAL_SIDE), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.int8).ravel()
