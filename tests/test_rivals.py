"""The ratio test across brands (detector.rivals): a part two brands' logos share is evidence
for neither; what is a brand's own still verifies."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from detector.local_search import DescriptorNeighbours, LocalFeatureIndex
from detector.rivals import BrandNeighbours, OwnerBrands, own_inliers, rival_distances, rival_fits
from detector.verify import VerifyConfig, query_features, reference_features, verify

pytest.importorskip("cv2")


def _icon(slug: str, side: int = 256) -> Image.Image:
    cairosvg = pytest.importorskip("cairosvg")
    sip = pytest.importorskip("simple_icons_pack")
    png = cairosvg.svg2png(bytestring=sip.get_icon(slug).svg.encode(), output_width=side, output_height=side)
    icon = Image.open(io.BytesIO(png)).convert("RGBA")
    out = Image.new("RGB", (side, side), "white")
    out.paste(icon, (0, 0), icon)
    return out


def _pair(left: str, right: str) -> Image.Image:
    """A two-part mark: ``left`` beside ``right`` (a shared emblem beside a brand's own)."""
    out = Image.new("RGB", (528, 256), "white")
    out.paste(_icon(left), (0, 0))
    out.paste(_icon(right), (272, 0))
    return out


def _listing(mark: Image.Image) -> Image.Image:
    data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(data.coffee()).resize((800, 600))
    photo.paste(mark.resize((396, 192), Image.Resampling.LANCZOS), (200, 200))
    return photo


@pytest.fixture(scope="module")
def library():
    """Brand A's logo and brand B's share their left part (the same emblem)."""
    config = VerifyConfig(min_inliers=6)
    refs = {1: reference_features(_pair("starbucks", "github"), config),
            2: reference_features(_pair("starbucks", "nasa"), config)}
    return config, refs, LocalFeatureIndex.from_features(refs), OwnerBrands.of({1: "brand-a", 2: "brand-b"})


def _verify(library, mark: Image.Image, mode: str):
    config, refs, index, brands = library
    config = VerifyConfig(min_inliers=6, rival_test=mode)
    query = query_features(_listing(mark), config)
    near = index.neighbours(query)
    return verify(query, refs[1], config, rivals=BrandNeighbours.of(near, brands).rivals("brand-a"))


def test_a_shared_part_alone_does_not_verify(library):
    unindexed = _pair("starbucks", "python")  # the shared emblem beside a third brand's mark
    plain = _verify(library, unindexed, "off")
    assert plain.accepted and plain.accepted_inliers >= 6  # the emblem alone fits a homography
    tested = _verify(library, unindexed, "on")
    assert tested.own_inliers < 6 and tested.counts_own
    assert tested.accepted_inliers == tested.own_inliers < plain.accepted_inliers


def test_the_brand_s_own_mark_still_verifies(library):
    result = _verify(library, _pair("starbucks", "github"), "on")
    assert result.accepted and result.own_inliers >= 6
    assert result.own_inliers < result.inliers  # the shared emblem's inliers are not its own...
    assert result.accepted_inliers == result.inliers  # ...but a fit that is the brand's keeps them


def test_rival_distances_and_own_inliers():
    near = DescriptorNeighbours(
        distances=np.array([[1.0, 4.0, 9.0], [1.0, 1.0, -1.0], [4.0, 16.0, 16.0]], np.float32),
        rows=np.array([[0, 1, 2], [3, 4, -1], [5, 6, 7]]),
        owners=np.array([[10, 11, 20], [20, 20, -1], [10, 10, 10]]),
    )
    brands = OwnerBrands.of({10: "a", 11: "a", 20: "b"})
    assert brands.codes_for(np.array([10, 20, 99, -1])).tolist() == [0, 1, -1, -1]
    rivals = rival_distances(near, brands.codes_for(near.owners), brands.code_of["a"])
    assert rivals[0] == pytest.approx(3.0) and rivals[1] == pytest.approx(1.0) and np.isinf(rivals[2])
    # keypoint 0 matched at 1.0 (< 0.75 * 3), keypoint 1 at 1.0 (not < 0.75), keypoint 2 twice
    assert own_inliers(np.array([1.0, 1.0, 2.0, 2.0]), np.array([0, 1, 2, 2]), rivals, 0.75) == 2


def _fits(library, mark: Image.Image) -> dict[int, tuple[str, tuple[int, int, int, int] | None, int]]:
    """Both brands' plain verifications of one listing, as :func:`rival_fits` takes them."""
    config, refs, _, _ = library
    query = query_features(_listing(mark), config)
    results = {rid: verify(query, refs[rid], config) for rid in refs}
    brand = {1: "brand-a", 2: "brand-b"}
    return {rid: (brand[rid], r.box, r.inliers) for rid, r in results.items() if r.accepted}


def test_fits_on_a_shared_part_are_rejected_for_every_brand(library):
    fits = _fits(library, _pair("starbucks", "python"))  # the shared emblem, no indexed brand
    assert set(fits) == {1, 2}  # both brands' logos fit the emblem
    assert set(rival_fits(fits, 6)) == {1, 2}


def test_the_brand_whose_whole_mark_is_shown_keeps_its_fit(library):
    fits = _fits(library, _pair("starbucks", "github"))  # brand A's whole mark
    ambiguous = rival_fits(fits, 6)
    # the emblem holds most keypoints (brand B's fit on it alone has ~0.9 of brand A's
    # inliers), but what brand A shows beyond it is a fit's worth
    assert 1 in fits and 1 not in ambiguous
    assert 2 not in fits or 2 in ambiguous


def test_rival_fits_rules():
    box, far = (0, 0, 100, 100), (300, 300, 400, 400)
    # another brand on the same area within 6 inliers: ambiguous both ways
    assert rival_fits({1: ("a", box, 20), 2: ("b", box, 15)}, 6) == {1: 15, 2: 20}
    # 6 more inliers keep the fit; the weaker one is dropped
    assert rival_fits({1: ("a", box, 21), 2: ("b", box, 15)}, 6) == {2: 21}
    # the same brand's other references, other areas and missing boxes are no rivals
    assert rival_fits({1: ("a", box, 20), 2: ("a", box, 20)}, 6) == {}
    assert rival_fits({1: ("a", box, 20), 2: ("b", far, 20)}, 6) == {}
    assert rival_fits({1: ("a", box, 20), 2: ("b", None, 20)}, 6) == {}
