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

from detector.regions import OFFERED_SOURCES, Region
from detector.shape_scores import shape_floor
from detector.shape_search import ShapeSearch
from detector.shape_sync import stored_masks, synced_search
from detector.signals.base import Evidence, Listing, ReferenceImage, Signal
from detector.signals.local_features import ranked_eligible
from detector.silhouettes import (
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


class ShapeSignal(Signal):
    """Marks searched and checked by shape."""

    name = "shape"
    # (index path, ShapeSearch) of the last index generation: the next one is brought up by difference
    _last_search: tuple[str, ShapeSearch] | None = None

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

    def embed_views(self, listing: Listing) -> list[tuple[Region, Image.Image]]:
        """Segment the marks — here, once the regions other signals offer have joined the
        listing's — and give each embedded mark's silhouette (with ``embed``), with the mark's
        own box as its region.

        In this thread: the listing pool's one worker (on 2 cores) is busy extracting local
        features by now; measured on 48 benchmark listings (``fast``, interleaved), leaving the
        marks to it took 806 ms a listing against 745 ms segmenting them here (one run, load
        average 15)."""
        scan = listing.state["embedding"]
        listing.state[self.name] = self._find_marks(listing.index, list(scan.crops), list(scan.regions))
        short = min(listing.image.size)
        return [
            (Region(box, "silhouette", max(box[2] - box[0], box[3] - box[1]) / short), silhouette_image(mask))
            for mask, _, box in self._marks(listing).embedded
        ]

    def _marks(self, listing: Listing) -> Marks:
        return listing.state[self.name]

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
        library = self._logo_shapes(listing.index).library
        found: dict[int, Evidence] = {}
        for rid in marks.checked:
            silhouette = stored[rid].silhouette if rid in stored else None
            if silhouette is None:
                continue
            iou, mark = marks.query.match(silhouette)
            floor = shape_floor(silhouette, scfg)
            distinct = library.distinct(rid) if scfg.distinct_margin is not None else None
            if distinct is not None:  # a shape another brand's logo shares identifies neither
                floor = max(floor, distinct + scfg.distinct_margin)
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
            ids, coarse = self._logo_shapes(index).coarse(shapes)  # (marks, candidate logos)
            if scfg.search > 0 and coarse.size:
                best = coarse.max(axis=0)
                order = np.argsort(-best, kind="stable")[: scfg.search]
                found = tuple(int(ids[j]) for j in order if best[j] > 0)
            if embed_filter:
                resembled = [i for i, iou in enumerate(coarse.max(axis=1).tolist()) if iou >= scfg.min_shape_iou]
                marks, shapes = [marks[i] for i in resembled], shapes.subset(resembled)
        return Marks(shapes, [box for _, _, box in marks], found=found, embedded=marks if scfg.embed else [])

    def _segment(self, crops: list[Image.Image], regions: list[Region]) -> list[Mark]:
        """The mark in each of the first regions (and each colour component of the frame)."""
        scfg = self.config.silhouettes
        found = []
        proposed = [(crop, r.box) for crop, r in zip(crops, regions) if r.source not in OFFERED_SOURCES]
        # Regions offered by other signals (around a line of text) are segmented beyond the cap.
        pairs = proposed[: scfg.max_regions] + [(crop, r.box) for crop, r in zip(crops, regions)
                                                if r.source in OFFERED_SOURCES]  # fmt: skip
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

    def _logo_shapes(self, index: VectorIndex) -> ShapeSearch:
        """The shape search over ``index``'s logo references (and their distinct floors), built
        once per index generation from the last one (or the library and inverted file saved with
        the index) by difference: only added logos are read and scanned in."""

        def build() -> ShapeSearch:
            path = str(index.path)
            previous = self._last_search[1] if self._last_search and self._last_search[0] == path else None
            search = synced_search(index, lambda ids: stored_masks(index, ids), previous)
            self._last_search = (path, search)
            return search

        return self.references.per_generation("logo_shapes", index, build)
