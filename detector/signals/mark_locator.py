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

Only the stored features take part (the product photo's and the logos'), never the images, so
a product indexed before its logos is located exactly as one indexed after them. The
shape search (:mod:`detector.silhouettes`) is not used here: it needs the photo's pixels,
which the index does not keep, and a located box would then depend on indexing order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from detector.errors import DetectorError
from detector.verdict import Box
from detector.verify import LocalFeatures, VerifyConfig, verify
from index.store import ReferenceIndex

log = logging.getLogger(__name__)

GIVEN, LOCATED = "given", "located"


@dataclass(frozen=True)
class LocatedMark:
    """The brand's logo found on a product photo: its box (first-view pixels), the RANSAC
    inliers of the best fit and which logo (position in the logos passed) gave it."""

    box: Box | None
    inliers: int = 0
    logo: int = -1


def locate_mark(product: LocalFeatures, logos: Sequence[LocalFeatures], config: VerifyConfig) -> LocatedMark:
    """The best accepted RANSAC fit of any of ``logos`` in the product photo (most inliers).

    The product's stored features are the query: their keypoints are in the pixels of its
    first view, so the box is too. The appearance check is skipped (stored features carry no
    pixels), the same whether the photo was just prepared or read back from the index.
    """
    product = replace(product, pixels=None) if product.pixels is not None else product
    best = LocatedMark(None)
    for i, logo in enumerate(logos):
        if logo.method != product.method or len(logo) < 2:
            continue
        result = verify(product, logo, config)
        if result.accepted and result.box is not None and result.inliers > best.inliers:
            best = LocatedMark(result.box, result.inliers, i)
    return best


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
    index: ReferenceIndex, brands: Iterable[str], exclude: frozenset[int] = frozenset()
) -> dict[str, list[LocalFeatures]]:
    """The stored features of each brand's logo references (ids in ``exclude`` left out)."""
    found: dict[str, list[LocalFeatures]] = {}
    for brand in dict.fromkeys(brands):
        ids = [r.id for r in index.references(brand) if r.kind == "logo" and r.id not in exclude]
        found[brand] = _decoded(index, ids)
    return found


def relocate_brand_products(
    index: ReferenceIndex,
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


def _decoded(index: ReferenceIndex, ids: Sequence[int]) -> list[LocalFeatures]:
    records = []
    for rid, blob in sorted(index.get_aux(ids).items()):
        try:
            records.append(LocalFeatures.from_bytes(blob))
        except DetectorError as e:
            log.warning("logo reference %d: unreadable side data, not used to locate marks (%s)", rid, e)
    return records
