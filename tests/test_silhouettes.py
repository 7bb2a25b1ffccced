"""detector.silhouettes: masks of marks, canonical shapes, aligned IoU, and the scorer's channel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector.errors import ConfigError, DetectorError
from detector.reference_prep import ReferencePrepConfig, reference_views
from detector.scoring import Detector
from detector.shape_scores import (
    distinct_ious,
    generic_ious,
    shape_bonus,
    shape_floor,
    shape_support,
)
from detector.silhouettes import (
    QueryShapes,
    SilhouetteConfig,
    aligned_iou,
    canonical_mask,
    component_boxes,
    overlaps,
    query_mask,
    reference_mask,
    silhouette_image,
)
from detector.verify import LocalFeatures, extract_features

pytest.importorskip("cv2")

CONFIG = SilhouetteConfig(enabled=True)


def _mark(size: int = 200, colour=(200, 30, 30, 255)) -> Image.Image:
    """An asymmetric mark (an 'L' with a dot) on transparency: mirror and rotation matter."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    s = size / 200
    d.rectangle([20 * s, 20 * s, 60 * s, 180 * s], fill=colour)
    d.rectangle([20 * s, 140 * s, 150 * s, 180 * s], fill=colour)
    d.ellipse([120 * s, 30 * s, 175 * s, 85 * s], fill=colour)
    return im


def _disc(size: int = 200) -> Image.Image:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse([10, 10, size - 10, size - 10], fill=(0, 90, 200, 255))
    return im


def _textured(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth, busy background: low-frequency colour noise, like a photo's surfaces."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, size=(12, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _alpha_mask(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))[..., 3] > 127


def test_reference_mask_from_transparency_and_from_a_uniform_border():
    mark = _mark()
    assert (reference_mask(mark) == _alpha_mask(mark)).all()
    on_white = Image.new("RGB", mark.size, "white")
    on_white.paste(mark, mask=mark)
    from_border = reference_mask(on_white)
    assert from_border is not None and np.mean(from_border == _alpha_mask(mark)) > 0.99


def test_reference_mask_is_none_without_a_separable_mark():
    assert reference_mask(_textured((120, 90))) is None  # a photo: no uniform border
    assert reference_mask(Image.new("RGB", (50, 50), "white")) is None  # nothing at all


def test_query_mask_finds_a_recoloured_mark_on_a_textured_background():
    mark = _mark(120, colour=(250, 240, 20, 255))  # recoloured: yellow instead of red
    crop = _textured((180, 170))
    crop.paste(mark, (30, 25), mask=mark)
    mask = query_mask(crop, CONFIG)
    assert mask is not None
    truth = np.zeros((170, 180), bool)
    truth[25:145, 30:150] = _alpha_mask(mark)
    truth = np.asarray(Image.fromarray(truth).resize(mask.shape[::-1]))
    iou = np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum()
    assert iou > 0.8


def test_query_mask_ignores_regions_without_a_mark():
    assert query_mask(Image.new("RGB", (100, 80), (90, 120, 40)), CONFIG) is None


def test_component_boxes_find_a_flat_mark_on_a_photo():
    photo = _textured((640, 480), seed=5)
    mark = _mark(110, colour=(20, 20, 230, 255))
    photo.paste(mark, (400, 260), mask=mark)
    truth = (400 + 20 * 110 // 200, 260 + 20 * 110 // 200, 400 + 175 * 110 // 200, 260 + 180 * 110 // 200)
    boxes = component_boxes(photo, CONFIG)
    assert 1 <= len(boxes) <= CONFIG.component_marks
    def covers(box):
        inside = [max(0, min(box[i + 2], truth[i + 2]) - max(box[i], truth[i])) for i in (0, 1)]
        area = (truth[2] - truth[0]) * (truth[3] - truth[1])
        return inside[0] * inside[1] / area
    assert max(covers(b) for b in boxes) > 0.9
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert component_boxes(photo, SilhouetteConfig(component_marks=0)) == []


def test_aligned_iou_is_invariant_to_scale_translation_and_small_rotation():
    reference = canonical_mask(_alpha_mask(_mark()))
    moved = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    small = _mark(90).rotate(20, expand=True, resample=Image.Resampling.BICUBIC)
    moved.alpha_composite(small, (250, 40))
    query = canonical_mask(_alpha_mask(moved))
    assert aligned_iou(query, reference, CONFIG) > 0.85
    other = canonical_mask(_alpha_mask(_disc()))
    assert aligned_iou(other, reference, CONFIG) < 0.7


def test_mirror_is_tried_only_when_configured():
    reference = canonical_mask(_alpha_mask(_mark()))
    mirrored = canonical_mask(_alpha_mask(_mark())[:, ::-1])
    assert aligned_iou(mirrored, reference, CONFIG) > 0.95
    no_mirror = SilhouetteConfig(enabled=True, mirror=False)
    assert aligned_iou(mirrored, reference, no_mirror) < 0.8


def test_coarse_best_is_each_marks_best_alignment_over_all_references():
    mark = canonical_mask(_alpha_mask(_mark()))
    disc = canonical_mask(_alpha_mask(_disc()))
    turned = canonical_mask(_alpha_mask(_mark().rotate(20, expand=True)))
    references = np.stack([disc.ravel(), mark.ravel()]).astype(np.float32)
    shapes = QueryShapes([turned, disc], CONFIG)
    best = shapes.coarse_best(references)
    assert best.shape == (2,) and best[1] == pytest.approx(1.0)
    assert best[0] > 0.85  # the rotation is among the coarse search's angles
    assert best[0] == pytest.approx(max(shapes.coarse_best(references[1:])[0], shapes.coarse_best(references[:1])[0]))
    assert QueryShapes([], CONFIG).coarse_best(references).shape == (0,)


def test_coarse_gives_every_marks_alignment_with_every_reference():
    mark = canonical_mask(_alpha_mask(_mark()))
    disc = canonical_mask(_alpha_mask(_disc()))
    turned = canonical_mask(_alpha_mask(_mark().rotate(20, expand=True)))
    references = np.stack([disc.ravel(), mark.ravel(), turned.ravel()]).astype(np.float32)
    shapes = QueryShapes([turned, disc], CONFIG)
    coarse = shapes.coarse(references)
    assert coarse.shape == (2, 3)
    assert np.array_equal(coarse.max(axis=1), shapes.coarse_best(references))
    assert coarse[1, 0] == pytest.approx(1.0) and coarse[0, 2] == pytest.approx(1.0)
    assert coarse[0, 1] > 0.85 and coarse[0, 0] < 0.8 and coarse[1, 1] < 0.8
    assert QueryShapes([], CONFIG).coarse(references).shape == (0, 3)
    assert np.array_equal(shapes.coarse(references.astype(np.int8)), coarse)  # the scorer's rows


def test_overlaps_count_shared_pixels_exactly():
    rng = np.random.default_rng(0)
    masks, references = (rng.integers(0, 2, (n, 4096)).astype(np.float32) for n in (7, 5))
    assert np.array_equal(overlaps(masks, references), masks @ references.T)


def test_distinct_ious_are_each_logos_best_alignment_with_another_brand():
    mark = canonical_mask(_alpha_mask(_mark())).ravel()
    mirrored = canonical_mask(_alpha_mask(_mark())[:, ::-1]).ravel()
    disc = canonical_mask(_alpha_mask(_disc())).ravel()
    masks = np.stack([mark, mirrored, disc, disc]).astype(np.float32)
    got = distinct_ious(masks, ["acme", "copycat", "round", "round"])
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(1.0)  # the same mark, mirrored
    assert got[2] == got[3] < 0.8  # their own brand's identical disc does not count
    inter = (mark * disc).sum()
    assert got[2] == pytest.approx(inter / (mark.sum() + disc.sum() - inter), abs=0.05)
    assert distinct_ious(masks[:2], ["acme", "acme"]).tolist() == [0.0, 0.0]
    assert distinct_ious(masks[:1], ["acme"]).tolist() == [0.0]
    chunked = distinct_ious(masks, ["a", "b", "c", "d"], chunk=1)
    assert np.allclose(chunked, distinct_ious(masks, ["a", "b", "c", "d"]))


def test_shape_support_is_the_share_of_the_way_from_floor_to_one():
    assert shape_support(0.75, 0.5) == pytest.approx(0.5)
    assert shape_support(0.4, 0.5) == 0.0 and shape_support(1.0, 0.5) == 1.0
    assert shape_support(1.0, 1.0) == 0.0  # a floor of 1: nothing is evidence


def test_a_subset_of_marks_matches_as_if_built_from_them_alone():
    mark = canonical_mask(_alpha_mask(_mark()))
    disc = canonical_mask(_alpha_mask(_disc()))
    turned = canonical_mask(_alpha_mask(_mark().rotate(20, expand=True)))
    subset = QueryShapes([disc, turned, mark], CONFIG).subset([2, 0])
    alone = QueryShapes([disc, mark], CONFIG)
    assert len(subset) == 2
    for reference in (mark, disc, turned):
        assert subset.match(reference) == alone.match(reference)
    references = np.stack([mark.ravel(), disc.ravel()]).astype(np.float32)
    assert np.array_equal(subset.coarse_best(references), alone.coarse_best(references))


def test_canonical_mask_of_an_empty_mask_is_none_and_other_sizes_are_resampled():
    assert canonical_mask(np.zeros((30, 30), bool)) is None
    mask = _alpha_mask(_mark())
    assert aligned_iou(canonical_mask(mask, 64), canonical_mask(mask, 48), CONFIG) > 0.85


def test_shape_bonus_is_bounded_and_off_when_disabled():
    cfg = SilhouetteConfig(enabled=True, iou_floor=0.5, weight=0.4)
    assert shape_bonus(0.3, cfg) == 0.0
    assert shape_bonus(0.75, cfg) == pytest.approx(0.2)
    assert shape_bonus(1.0, cfg) == pytest.approx(0.4)
    assert shape_bonus(1.0, SilhouetteConfig(enabled=False)) == 0.0


def test_a_convex_mark_raises_its_own_floor_to_its_solidity():
    cfg = SilhouetteConfig(enabled=True, iou_floor=0.6, weight=0.4)
    disc, mark = canonical_mask(_alpha_mask(_disc())), canonical_mask(_alpha_mask(_mark()))
    assert shape_floor(disc, cfg) > 0.95  # a disc aligns with any round blob
    assert shape_floor(mark, cfg) == pytest.approx(0.6)  # the L with a dot is far from convex
    assert shape_bonus(0.9, cfg, shape_floor(disc, cfg)) == 0.0
    assert shape_bonus(0.9, cfg, shape_floor(mark, cfg)) == pytest.approx(0.3)
    assert shape_floor(disc, SilhouetteConfig(enabled=True, iou_floor=0.6, solidity_floor=False)) == 0.6


def test_silhouette_image_is_a_black_mark_on_a_white_square():
    image = silhouette_image(_alpha_mask(_mark()))
    assert image.mode == "RGB" and image.width == image.height
    pixels = np.asarray(image)
    assert set(np.unique(pixels)) == {0, 255}
    with pytest.raises(ConfigError):
        silhouette_image(np.zeros((5, 5), bool))


@pytest.mark.parametrize(
    "kwargs",
    [{"clusters": 1}, {"max_regions": 0}, {"min_fill": 0.5, "max_fill": 0.4}, {"iou_floor": 1.0},
     {"weight": 2.0}, {"angle_step": 0}, {"attempts": 0}, {"search": -1}, {"shape_score": 2.5},
     {"shape_score_weight": 1.5}, {"distinct_margin": 1.0}, {"distinct_margin": -0.1}],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        SilhouetteConfig(**kwargs)


def test_reference_views_add_a_silhouette_only_when_asked():
    plain = reference_views(_mark(), "logo", ReferencePrepConfig())
    with_silhouette = reference_views(_mark(), "logo", ReferencePrepConfig(logo_silhouette=True))
    assert len(with_silhouette) == len(plain) + 1
    assert set(np.unique(np.asarray(with_silhouette[-1]))) == {0, 255}
    product = reference_views(_textured((200, 150)), "product", ReferencePrepConfig(logo_silhouette=True))
    assert len(product) == 1


def test_features_blob_carries_the_silhouette_and_old_blobs_have_none():
    features = extract_features(_mark(), max_side=128, max_features=50)
    assert LocalFeatures.from_bytes(features.to_bytes()).silhouette is None
    canonical = canonical_mask(_alpha_mask(_mark()))
    with_shape = LocalFeatures(**{**features.__dict__, "silhouette": canonical})
    loaded = LocalFeatures.from_bytes(with_shape.to_bytes())
    assert np.array_equal(loaded.silhouette, canonical)
    bad = LocalFeatures(**{**features.__dict__, "silhouette": np.zeros((4, 5), np.uint8)})
    with pytest.raises(DetectorError):
        LocalFeatures.from_bytes(bad.to_bytes())


def test_indexing_takes_the_silhouette_from_the_alpha_of_a_mark_that_touches_its_corners(tmp_path):
    """Tight logos (e.g. rendered SVGs) fill their corners: composited on white they have no
    uniform border, so only the alpha channel separates the mark (23 % of the benchmark's
    logos had no silhouette when indexing read the composited image)."""
    from detector.indexing import run_indexing
    from index.store import ReferenceIndex

    tight = Image.new("RGBA", (160, 120), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tight)
    draw.rectangle([0, 60, 159, 119], fill=(40, 160, 60, 255))  # a bar along the bottom edge
    draw.ellipse([40, 0, 120, 80], fill=(40, 160, 60, 255))
    assert reference_mask(tight.convert("RGB")) is None  # what compositing used to leave
    (tmp_path / "refs" / "acme").mkdir(parents=True)
    tight.save(tmp_path / "refs" / "acme" / "logo.png")
    run_indexing(
        tmp_path / "refs", tmp_path / "index", preset="tiny-clip-test", default_kind="logo",
        embedder_options={"device": "cpu"}, prep=ReferencePrepConfig(logo_silhouette=True),
    )
    with ReferenceIndex.open(tmp_path / "index", writable=False) as index:
        (ref,) = index.references()
        stored = LocalFeatures.from_bytes(index.get_aux([ref.id])[ref.id])
        vectors = index.info().vectors
    assert np.array_equal(stored.silhouette, canonical_mask(_alpha_mask(tight)))
    plain_views = len(reference_views(tight, "logo", ReferencePrepConfig()))
    assert vectors == plain_views + 1  # the silhouette view is indexed too


# --- the scorer's silhouette channel (tiny preset) -------------------------------------------


@pytest.fixture(scope="module")
def silhouette_index(sample_set, tmp_path_factory):
    """The sample references indexed with silhouette views and stored canonical masks."""
    from detector.indexing import run_indexing

    index_dir = tmp_path_factory.mktemp("silhouette-index") / "tiny"
    run_indexing(
        sample_set.references_dir, index_dir, preset="tiny-clip-test",
        embedder_options={"device": "cpu"}, prep=ReferencePrepConfig(logo_silhouette=True),
    )
    return index_dir


def _pasted_logo(sample_set) -> tuple[str, Image.Image]:
    """(brand, a textured 480x360 listing with that brand's sample logo pasted on it)."""
    logo_path = min(sample_set.references_dir.glob("*/logo.png"))
    logo = Image.open(logo_path).convert("RGBA")
    logo.thumbnail((160, 160))
    listing = _textured((480, 360), seed=3)
    listing.paste(logo, (200, 120), mask=logo)
    return logo_path.parent.name, listing


def test_scorer_checks_shapes_and_reports_boxes_inside_the_image(silhouette_index, sample_set):
    brand, listing = _pasted_logo(sample_set)
    buffer = io.BytesIO()
    listing.save(buffer, "PNG")
    config = {"regions": {"enabled": True, "max_regions": 5}, "silhouettes": {"enabled": True}}
    with Detector.open(silhouette_index, device="cpu", config=config) as det:
        verdict = det.score(buffer.getvalue(), name="listing.png")
    best = {m.brand: m for m in verdict.matches if m.shape_iou is not None}
    assert brand in best and best[brand].shape_iou > CONFIG.iou_floor
    assert best[brand].shape_iou == max(m.shape_iou for m in best.values())
    assert best[brand].score > best[brand].cosine  # the shape added its bonus
    for m in verdict.matches:
        if m.box is not None:
            x0, y0, x1, y1 = m.box
            assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360


def test_a_silhouette_similarity_counts_only_when_the_shape_confirms_it(silhouette_index, sample_set):
    brand, listing = _pasted_logo(sample_set)
    config = {"regions": {"enabled": True, "max_regions": 5}, "verify": {"enabled": False},
              "silhouettes": {"enabled": True, "top_candidates": 50}}

    def scores(confirm_iou: float) -> dict[str, tuple[float, float | None]]:
        options = {**config, "silhouettes": {**config["silhouettes"], "confirm_iou": confirm_iou}}
        with Detector.open(silhouette_index, device="cpu", config=options) as det:
            (analysis,) = det.analyse_images([listing], ["listing.png"])
        matches = {m.ref_id: m for m in analysis.verdict.matches}
        return {b.brand: (b.score, matches[b.ref_id].shape_iou if b.ref_id in matches else None)
                for b in analysis.brand_scores}

    ungated, default, strict = scores(0.0), scores(CONFIG.confirm_iou), scores(1.0)
    assert ungated[brand][1] is not None and ungated[brand][1] >= CONFIG.confirm_iou
    assert default[brand][0] == pytest.approx(ungated[brand][0])  # its shape confirms it
    assert default[brand][0] == max(score for score, _ in default.values())
    # Nothing aligns perfectly: silhouette similarities fall back to the other regions'.
    assert all(strict[b][0] <= ungated[b][0] + 1e-6 for b in ungated)
    assert sum(strict[b][0] < ungated[b][0] - 1e-6 for b in ungated) >= 1
    assert strict[brand][0] < ungated[brand][0]


def test_each_mark_gets_its_own_best_references_shape_checked(silhouette_index, sample_set):
    brand, listing = _pasted_logo(sample_set)

    def checked(per_mark: int) -> set[str]:
        options = {"regions": {"enabled": True, "max_regions": 5}, "verify": {"enabled": False},
                   "silhouettes": {"enabled": True, "top_candidates": 0, "per_mark_candidates": per_mark}}
        with Detector.open(silhouette_index, device="cpu", config=options) as det:
            (analysis,) = det.analyse_images([listing], ["listing.png"])
        return {m.brand for m in analysis.verdict.matches if m.shape_iou is not None}

    assert checked(0) == set()  # no global top candidates, no per-mark ones: nothing checked
    assert brand in checked(3)


def test_silhouettes_off_leave_scores_unchanged(silhouette_index, sample_set):
    listings = sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))[:3]
    base = {"regions": {"enabled": True, "max_regions": 5}, "verify": {"enabled": False}}
    with Detector.open(silhouette_index, device="cpu", config=base) as det:
        plain = det.score_many(listings)
    assert all(m.shape_iou is None and m.score == m.cosine for v in plain for m in v.matches)


def test_regions_can_feed_silhouettes_without_embedding_their_crops(silhouette_index, sample_set):
    listing = min((sample_set.labels_path.parent / "listings").glob("*.jpg"))
    config = {"regions": {"enabled": True, "max_regions": 4, "embed_crops": False},
              "silhouettes": {"enabled": True, "max_regions": 4, "component_marks": 2}}
    with Detector.open(silhouette_index, device="cpu", config=config) as det:
        calls = []
        original = det.embedder.embed
        det.embedder.embed = lambda images: calls.append(list(images)) or original(images)
        det.score(listing)
    (embedded,) = calls
    # The whole frame, then only black-on-white silhouettes (one per region with a mark).
    assert 2 <= len(embedded) <= 1 + 4 + 2
    for image in embedded[1:]:
        assert set(np.unique(np.asarray(image))) <= {0, 255}


def test_only_marks_some_logo_resembles_are_embedded(silhouette_index, sample_set):
    """The pasted logo's silhouette is embedded whatever the bar below 1; a bar no mark
    reaches leaves the whole frame alone; no bar embeds every mark."""
    brand, listing = _pasted_logo(sample_set)

    def embedded(min_shape_iou: float) -> tuple[int, dict[str, float]]:
        config = {"regions": {"enabled": True, "max_regions": 5, "embed_crops": False},
                  "silhouettes": {"enabled": True, "min_shape_iou": min_shape_iou}}
        with Detector.open(silhouette_index, device="cpu", config=config) as det:
            calls = []
            original = det.embedder.embed
            det.embedder.embed = lambda images: calls.append(len(images)) or original(images)
            (analysis,) = det.analyse_images([listing], ["listing.png"])
        return calls[0], {b.brand: b.score for b in analysis.brand_scores}

    every, scores = embedded(0.0)
    some, filtered = embedded(0.5)
    assert 1 < some < every  # the textured background's marks resemble no logo
    assert filtered[brand] == pytest.approx(scores[brand]) and filtered[brand] == max(filtered.values())
    assert embedded(1.0)[0] == 1


# --- the shape search (default profile of effnet-lite0): marks compared by shape only ----------

SHAPE_SEARCH = {"enabled": True, "embed": False, "top_candidates": 0, "weight": 0.0, "search": 3,
                "shape_score": 1.5, "shape_score_weight": 0.5}


def _ring(size: int = 200) -> Image.Image:
    """A ring with a notch: concave, unlike the 'L' with a dot."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse([10, 10, size - 10, size - 10], fill=(230, 160, 0, 255))
    d.ellipse([60, 60, size - 60, size - 60], fill=(0, 0, 0, 0))
    d.rectangle([size // 2 - 15, 0, size // 2 + 15, 70], fill=(0, 0, 0, 0))
    return im


def _index_logos(root, logos: dict[str, Image.Image]):
    from detector.indexing import run_indexing

    for brand, image in logos.items():
        (root / "refs" / brand).mkdir(parents=True)
        image.save(root / "refs" / brand / "logo.png")
    run_indexing(root / "refs", root / "index", preset="tiny-clip-test", default_kind="logo",
                 embedder_options={"device": "cpu"}, prep=ReferencePrepConfig(logo_silhouette=True))
    return root / "index"


def _listing_with_mark(seed: int = 5) -> Image.Image:
    """A textured 480x360 photo with the 'L' mark, recoloured white, pasted at (180, 120)."""
    listing = _textured((480, 360), seed=seed)
    mark = _mark(120, colour=(250, 250, 250, 255))
    listing.paste(mark, (180, 120), mask=mark)
    return listing


def _flag(size: int = 200) -> Image.Image:
    """A pole with a pennant and a base: asymmetric and far from every generic shape."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    s = size / 200
    d.rectangle([30 * s, 10 * s, 70 * s, 190 * s], fill=(90, 0, 160, 255))
    d.polygon([(70 * s, 10 * s), (185 * s, 55 * s), (70 * s, 110 * s)], fill=(90, 0, 160, 255))
    d.rectangle([10 * s, 155 * s, 125 * s, 190 * s], fill=(90, 0, 160, 255))
    return im


def _cross(size: int = 200) -> Image.Image:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rectangle([80, 10, 120, size - 10], fill=(90, 0, 160, 255))
    d.rectangle([10, 60, size - 10, 100], fill=(90, 0, 160, 255))
    return im


@pytest.fixture(scope="module")
def shape_index(tmp_path_factory):
    # No disc: the 'L' mark's dot is one, and a disc aligns with it (see the solidity floor).
    return _index_logos(tmp_path_factory.mktemp("shapes"), {"acme": _mark(), "cross": _cross(), "ring": _ring()})


def _analyse_with(index_dir, listing: Image.Image, silhouettes: dict) -> tuple[list[int], dict]:
    """(images embedded per model call, matches by brand) of one listing."""
    config = {"verify": {"enabled": False}, "silhouettes": silhouettes}
    with Detector.open(index_dir, device="cpu", config=config) as det:
        calls = []
        original = det.embedder.embed
        det.embedder.embed = lambda images: calls.append(len(images)) or original(images)
        (analysis,) = det.analyse_images([listing], ["listing.png"])
    return calls, {m.brand: m for m in analysis.verdict.matches}


def test_the_shape_search_finds_a_pasted_mark_without_embedding_its_silhouette(shape_index):
    """A shape score (1.5 here, above any cosine) reaches the pasted brand through its shape
    alone: no silhouette is embedded, and the box is the mark's."""
    listing = _listing_with_mark()
    calls, found = _analyse_with(shape_index, listing, SHAPE_SEARCH)
    assert calls == _analyse_with(shape_index, listing, {"enabled": False})[0]  # no extra model pass
    match = found["acme"]
    assert match.shape_iou is not None and match.shape_iou > 0.8
    assert match.score >= 1.5 > match.cosine
    assert all(m.score < 1.5 for b, m in found.items() if b != "acme")
    x0, y0, x1, y1 = match.box  # the 120 px mark was pasted at (180, 120)
    assert 170 <= x0 < x1 <= 310 and 110 <= y0 < y1 <= 250

    _, unsearched = _analyse_with(shape_index, listing, {**SHAPE_SEARCH, "search": 0})
    assert all(m.shape_iou is None and m.score == m.cosine for m in unsearched.values())


def test_a_shape_two_brands_share_identifies_neither(tmp_path):
    """The same mark registered by two brands (one of them mirrored) gives neither a shape
    score once ``distinct_margin`` is set; a distinct mark still gets one."""
    copycat = _mark(colour=(20, 120, 40, 255)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    index_dir = _index_logos(tmp_path, {"acme": _mark(), "copycat": copycat, "flag": _flag()})
    flag_listing = _textured((480, 360), seed=6)
    flag = _flag(120)
    flag_listing.paste(flag, (150, 100), mask=flag)

    def shape_scored(listing: Image.Image, distinct_margin: float | None) -> set[str]:
        _, found = _analyse_with(index_dir, listing, {**SHAPE_SEARCH, "distinct_margin": distinct_margin})
        return {b for b, m in found.items() if m.score >= 1.5}

    assert shape_scored(_listing_with_mark(), None) == {"acme", "copycat"}
    assert shape_scored(_listing_with_mark(), 0.05) == set()
    assert shape_scored(flag_listing, 0.05) == {"flag"}


def _star(size: int = 200, points: int = 5, turn: float = 0.0) -> Image.Image:
    """A plain star on transparency, drawn with PIL (not the generic shapes' own drawing)."""
    angles = np.pi * np.arange(2 * points) / points + np.radians(turn)
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.45, 0.19) * size
    outline = [(size / 2 + r * np.cos(a), size / 2 + r * np.sin(a)) for r, a in zip(radii, angles)]
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).polygon(outline, fill=(200, 20, 40, 255))
    return im


def _canonical_row(image: Image.Image) -> np.ndarray:
    return canonical_mask(np.asarray(image.getchannel("A")) > 0).ravel().astype(np.float32)


def test_generic_ious_find_plain_shapes_at_any_rotation():
    """A star or ring at an angle off the shapes' 5-degree grid matches a generic shape;
    asymmetric marks do not come close."""
    ring = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    draw = ImageDraw.Draw(ring)
    draw.ellipse([10, 10, 190, 190], fill=(0, 0, 0, 255))
    draw.ellipse([55, 55, 145, 145], fill=(0, 0, 0, 0))
    rows = np.stack([_canonical_row(m) for m in (_star(turn=17), _star(points=6, turn=8), ring, _mark(), _flag())])
    ious = generic_ious(rows)
    assert ious[:3].min() > 0.85, ious
    assert ious[3:].max() < 0.75, ious
    assert generic_ious(rows[:0]).shape == (0,)


def test_a_plain_star_identifies_no_brand(tmp_path):
    """Registered by one brand only, a star still gets no shape score with ``distinct_margin``:
    it is a generic shape. Without the margin the same listing is scored by its shape."""
    index_dir = _index_logos(tmp_path, {"flag": _flag(), "stellar": _star()})
    listing = _textured((480, 360), seed=11)
    star = _star(130, turn=12).convert("LA").convert("RGBA")  # recoloured, turned
    listing.paste(star, (170, 110), mask=star)

    def shape_scored(distinct_margin: float | None) -> set[str]:
        _, found = _analyse_with(index_dir, listing, {**SHAPE_SEARCH, "distinct_margin": distinct_margin})
        return {b for b, m in found.items() if m.score >= 1.5}

    assert "stellar" in shape_scored(None)
    assert shape_scored(0.05) == set()


def test_searched_marks_reach_their_own_listing_in_a_batch(shape_index):
    """Marks found in worker threads are matched with the listing they came from."""
    listings = [_textured((480, 360), seed=7), _listing_with_mark(), _textured((300, 200), seed=8)]
    names = [f"{i}.png" for i in range(len(listings))]
    with Detector.open(shape_index, device="cpu", config={"silhouettes": SHAPE_SEARCH}) as det:
        batch = det.analyse_images(listings, names)
        alone = [det.analyse_images([image], [name])[0] for image, name in zip(listings, names)]
    assert [a.brand_scores for a in batch] == [a.brand_scores for a in alone]
    assert [any(m.score >= 1.5 for m in a.verdict.matches) for a in batch] == [False, True, False]


def test_the_shape_search_follows_logos_added_and_withdrawn_without_a_rebuild(tmp_path):
    """The logo masks (and their distinct floors) are gathered per index generation: a brand
    registered after the scorer opened is found by its shape once reloaded, and no longer once
    withdrawn."""
    from detector.indexing import run_indexing
    from detector.shape_library import LIBRARY_FILE, ShapeLibrary
    from index.store import ReferenceIndex

    index_dir = _index_logos(tmp_path, {"acme": _mark(), "ring": _ring()})
    listing = _textured((480, 360), seed=9)
    flag = _flag(120)
    listing.paste(flag, (200, 100), mask=flag)
    config = {"verify": {"enabled": False}, "silhouettes": {**SHAPE_SEARCH, "distinct_margin": 0.05}}

    def shape_scored(det: Detector) -> set[str]:
        (analysis,) = det.analyse_images([listing], ["listing.png"])
        return {m.brand for m in analysis.verdict.matches if m.score >= 1.5}

    with Detector.open(index_dir, device="cpu", config=config) as det:
        assert shape_scored(det) == set()
        (tmp_path / "refs" / "flag").mkdir()
        _flag().save(tmp_path / "refs" / "flag" / "logo.png")
        run_indexing(tmp_path / "refs", index_dir, preset="tiny-clip-test", default_kind="logo",
                     embedder_options={"device": "cpu"}, prep=ReferencePrepConfig(logo_silhouette=True))
        assert det.reload_index()
        assert shape_scored(det) == {"flag"}
        saved = ShapeLibrary.load(index_dir / LIBRARY_FILE)  # saved by the indexing run
        assert sorted(saved.brands.tolist()) == ["acme", "flag", "ring"]
        with ReferenceIndex.open(index_dir, writable=True) as writer:  # the raw API: the file is now stale
            assert writer.remove(brand="flag") == 1
        assert det.reload_index()
        assert shape_scored(det) == set()


def test_concurrent_callers_get_their_own_shape_matches(shape_index):
    from concurrent.futures import ThreadPoolExecutor

    listings = [_listing_with_mark(seed) for seed in (5, 6, 7)] + [_textured((400, 300), seed=8)]
    with Detector.open(shape_index, device="cpu", config={"silhouettes": SHAPE_SEARCH}) as det:
        expected = [det.analyse_images([image], ["x"])[0].brand_scores for image in listings]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda image: det.analyse_images([image], ["x"])[0].brand_scores, listings * 2))
    assert got == expected * 2
    assert [any(b.score >= 1.5 for b in scores) for scores in expected] == [True, True, True, False]
