"""Where a brand's logo is on its product photos: located at indexing time.

The scorer checks a product match on its logo's area (:mod:`detector.signals.logo_area`):
a listing shot in the same scene matches the scene, only a re-post also shows the logo. Brands
rarely draw that area (the ``logo_box`` attribute) for thousands of photos, so indexing finds
it: each of the brand's logo references is verified against the product photo (RANSAC,
:func:`detector.verify.verify`, the logo as the reference and the photo as the query), and the
best accepted fit's projected logo outline becomes the photo's ``logo_box`` with
``logo_box_origin = "located"`` (``logo_box`` None: no mark found). A given ``logo_box`` stays
an override (origin ``"given"``); a product whose brand has no logo references yet keeps
origin None and is located when its logos arrive (:func:`relocate_brand_products`).

Flat one-colour logos have few keypoints (RANSAC then finds no fit), so the photo's candidate
marks are also kept with its record at indexing time (:func:`product_marks`: its isolated
colour components, segmented, as canonical masks with their boxes, :mod:`detector.silhouettes`);
when RANSAC finds nothing, the mark whose shape aligns best with a logo's canonical silhouette
(aligned IoU >= :data:`SHAPE_MIN_IOU`) is the located mark.

Only what the index stores takes part (the product photo's features and marks, the logos'
features and silhouettes), never the images, so a product indexed before its logos is
located exactly as one indexed after them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from detector.errors import DetectorError
from detector.verdict import Box
from detector.verify import LocalFeatures, VerifyConfig, verify
from index.protocol import VectorIndex

log = logging.getLogger(__name__)

GIVEN, LOCATED = "given", "located"

# Candidate marks kept per product photo (isolated colour components; 512 bytes each stored).
PRODUCT_MARKS = 6
# Aligned IoU (rotations, mirror, affine refinement) of a stored mark with a logo's silhouette
# that locates the logo by shape. Measured on a 200-brand benchmark set (100 product photos,
# tiny preset's verification): of the 41 photos RANSAC did not locate, 0.8 located 15 at
# IoU >= 0.5 with the true box and none elsewhere; 0.7 one more and one wrong, 0.6 four wrong.
SHAPE_MIN_IOU = 0.8
# A mark located by shape must also be about as wide for its height as the logo (the shape
# match normalises scale and refines an affine warp, so a thin stripe can align with a
# triangle): box aspect within this factor of the silhouette's own (canonical masks are scaled
# uniformly, so it is the mark's). Seed 1 of the same benchmark: one such stripe, 5.6 against
# 1.15, was the only wrong shape location; no right one changed on seeds 0 and 1.
SHAPE_MAX_ASPECT_RATIO = 2.0
# The locator's RANSAC: looser than the scorer's, since the brand's own logo is searched on
# the brand's own photo (not every logo on every listing). Same set: ratio 0.75 / 10 inliers
# (the default scorer's) located 47 of 100, 0.85 / 6 located 59, all within IoU 0.5 of the
# truth; 0.8 / 6 placed one wrongly.
LOCATOR_RATIO = 0.85
LOCATOR_MIN_INLIERS = 6


@dataclass(frozen=True)
class LocatedMark:
    """The brand's logo found on a product photo: its box (first-view pixels), the RANSAC
    inliers of the best fit and which logo (position in the logos passed) gave it."""

    box: Box | None
    inliers: int = 0
    logo: int = -1
    method: str = ""  # "ransac" or "shape"
    shape_iou: float = 0.0


def product_marks(view: Image.Image, count: int = PRODUCT_MARKS) -> tuple[np.ndarray, np.ndarray] | None:
    """A product photo's candidate marks: its isolated colour components (up to ``count``),
    each segmented (:func:`detector.silhouettes.query_mask`) into a canonical mask, with the
    mark's box in ``view``'s pixels; None when there are none."""
    from detector.silhouettes import (
        SilhouetteConfig,
        canonical_mask,
        component_boxes,
        mask_box,
        query_mask,
    )

    config = SilhouetteConfig(component_marks=count)
    image = view.convert("RGB")
    masks, boxes = [], []
    for region in component_boxes(image, config):
        mask = query_mask(image.crop(region), config)
        canonical = canonical_mask(mask) if mask is not None else None
        if canonical is None:
            continue
        masks.append(canonical.astype(np.uint8))
        boxes.append(mask_box(mask, region))
    if not masks:
        return None
    return np.stack(masks), np.array(boxes, dtype=np.int64)


def locate_mark(product: LocalFeatures, logos: Sequence[LocalFeatures], config: VerifyConfig) -> LocatedMark:
    """The best accepted RANSAC fit of any of ``logos`` in the product photo (most inliers).

    The product's stored features are the query: their keypoints are in the pixels of its
    first view, so the box is too. The appearance check is skipped (stored features carry no
    pixels), the same whether the photo was just prepared or read back from the index.
    """
    product = replace(product, pixels=None) if product.pixels is not None else product
    config = replace(config, ratio=max(config.ratio, LOCATOR_RATIO), min_inliers=min(config.min_inliers, LOCATOR_MIN_INLIERS))
    best = LocatedMark(None)
    for i, logo in enumerate(logos):
        if logo.method != product.method or len(logo) < 2:
            continue
        result = verify(product, logo, config)
        if result.accepted and result.box is not None and result.inliers > best.inliers:
            best = LocatedMark(result.box, result.inliers, i, "ransac")
    if best.box is None and product.marks is not None and product.mark_boxes is not None and len(product.marks):
        best = _locate_by_shape(product, logos)
    return best


def _locate_by_shape(product: LocalFeatures, logos: Sequence[LocalFeatures]) -> LocatedMark:
    from detector.silhouettes import QueryShapes, SilhouetteConfig, mask_box

    assert product.marks is not None and product.mark_boxes is not None
    shapes = QueryShapes(list(product.marks), SilhouetteConfig())
    best = LocatedMark(None)
    for i, logo in enumerate(logos):
        if logo.silhouette is None:
            continue
        iou, mark = shapes.match(logo.silhouette)
        if mark < 0 or iou < SHAPE_MIN_IOU or iou <= best.shape_iou:
            continue
        box = tuple(int(v) for v in product.mark_boxes[mark])
        side = logo.silhouette.shape[0]
        if _aspect_ratio(box, mask_box(logo.silhouette, (0, 0, side, side))) <= SHAPE_MAX_ASPECT_RATIO:
            best = LocatedMark(box, 0, i, "shape", iou)  # type: ignore[arg-type]
    return best


def _aspect_ratio(box: Sequence[int], content: Sequence[int]) -> float:
    """How many times more elongated one box is than the other (>= 1)."""
    def aspect(b: Sequence[int]) -> float:
        return max(b[2] - b[0], 1) / max(b[3] - b[1], 1)

    ratio = aspect(box) / aspect(content)
    return max(ratio, 1 / ratio)




def with_located_mark(record: LocalFeatures, logos: Sequence[LocalFeatures], config: VerifyConfig) -> LocalFeatures:
    """A product record with its mark located among ``logos`` (the brand's logo references).

    A given box is kept as it is; without logos the record is "not located" (origin None,
    no box), with logos it is "located", with the box found or None ("no mark found").
    """
    if record.logo_box_origin == GIVEN:
        return record
    if not logos:
        return replace(record, logo_box=None, logo_box_origin=None)
    return replace(record, logo_box=locate_mark(record, logos, config).box, logo_box_origin=LOCATED)


def brand_logo_features(
    index: VectorIndex, brands: Iterable[str], exclude: frozenset[int] = frozenset()
) -> dict[str, list[LocalFeatures]]:
    """The stored features of each brand's logo references (ids in ``exclude`` left out)."""
    found: dict[str, list[LocalFeatures]] = {}
    for brand in dict.fromkeys(brands):
        ids = [r.id for r in index.references(brand) if r.kind == "logo" and r.id not in exclude]
        found[brand] = _decoded(index, ids)
    return found


def relocate_brand_products(
    index: VectorIndex,
    brands: Iterable[str],
    config: VerifyConfig,
    *,
    extra_logos: Mapping[str, Sequence[LocalFeatures]] | None = None,
    exclude: frozenset[int] = frozenset(),
) -> dict[int, bytes]:
    """New stored records of the brands' product photos whose located mark changes.

    Args:
        index: The index holding the products (and the brands' stored logos).
        brands: Brands whose logo references changed.
        config: Verification options (the preset's).
        extra_logos: Logos about to be added (not in the index yet), by brand.
        exclude: Ids about to be removed: neither their logos count nor are they updated.

    Returns:
        ``{ref id: record bytes}`` for :meth:`index.store.ReferenceIndex.replace_aux` (or the
        ``aux_updates`` of ``add``/``remove``, to change them in the same commit).
    """
    brands = list(dict.fromkeys(brands))
    logos = brand_logo_features(index, brands, exclude)
    updates: dict[int, bytes] = {}
    for brand in brands:
        brand_logos = logos[brand] + list((extra_logos or {}).get(brand, ()))
        ids = [r.id for r in index.references(brand) if r.kind == "product" and r.id not in exclude]
        for start in range(0, len(ids), 500):
            for rid, blob in index.get_aux(ids[start : start + 500]).items():
                try:
                    record = LocalFeatures.from_bytes(blob)
                except DetectorError as e:
                    log.warning("product reference %d: unreadable side data, mark not located (%s)", rid, e)
                    continue
                located = with_located_mark(record, brand_logos, config)
                if (located.logo_box, located.logo_box_origin) != (record.logo_box, record.logo_box_origin):
                    updates[rid] = located.to_bytes()
    return updates


def _decoded(index: VectorIndex, ids: Sequence[int]) -> list[LocalFeatures]:
    records = []
    for rid, blob in sorted(index.get_aux(ids).items()):
        try:
            records.append(LocalFeatures.from_bytes(blob))
        except DetectorError as e:
            log.warning("logo reference %d: unreadable side data, not used to locate marks (%s)", rid, e)
    return records
