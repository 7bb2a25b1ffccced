"""Tests for detector.verify: local features, RANSAC verification and score fusion."""

from __future__ import annotations

import io
import itertools
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from detector.errors import ConfigError, DetectorError
from detector.reference_prep import ReferencePrepConfig, reference_views
from detector.regions import box_iou
from detector.verify import (
    LocalFeatures,
    VerifyConfig,
    _degenerate,
    _project_outline,
    appearance_thumbnail,
    extract_features,
    fuse_scores,
    mirror_features,
    nearest_two,
    query_features,
    rectified_similarity,
    reference_features,
    root_sift,
    verify,
)

pytest.importorskip("cv2")


def _logo(slug: str) -> Image.Image:
    """A real brand logo (simple-icons, CC0) rendered to RGBA at 512 px."""
    cairosvg = pytest.importorskip("cairosvg")
    sip = pytest.importorskip("simple_icons_pack")
    icon = sip.get_icon(slug)
    svg = icon.svg.replace("<svg ", f'<svg fill="#{icon.hex}" ', 1)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=512, output_height=512)
    return Image.open(io.BytesIO(png)).convert("RGBA")


def _reference(slug: str) -> Image.Image:
    """The reference view as indexed: trimmed, on white, square, no margin."""
    return reference_views(_logo(slug), "logo", ReferencePrepConfig(logo_margins=(0.0,)))[0]


def _photo(name: str = "coffee") -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(getattr(data, name)()).resize((640, 480))


def _paste(photo: Image.Image, view: Image.Image, scale: float, angle: float, at: tuple[int, int]):
    """Paste ``view`` scaled and rotated; returns the photo and the true (rotated view) box."""
    size = (round(view.width * scale), round(view.height * scale))
    part = view.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
    part = part.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    out = photo.convert("RGBA")
    out.alpha_composite(part, at)
    x0, y0, x1, y1 = part.getbbox()
    return out.convert("RGB"), (at[0] + x0, at[1] + y0, at[0] + x1, at[1] + y1)


@pytest.fixture(scope="module")
def config() -> VerifyConfig:
    return VerifyConfig()


@pytest.fixture(scope="module")
def starbucks_scene(config):
    reference = _reference("starbucks")
    query, true_box = _paste(_photo(), reference, 0.5, 20, (220, 110))
    return reference_features(reference, config), query_features(query, config), true_box


def test_accepts_rotated_half_scale_copy_and_localises_it(starbucks_scene, config):
    ref, query, true_box = starbucks_scene
    result = verify(query, ref, config)
    assert result.accepted, result.reason
    assert result.inliers >= 2 * config.min_inliers
    assert result.matches >= result.inliers
    assert result.box is not None and box_iou(result.box, true_box) >= 0.7
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert np.asarray(result.homography).shape == (3, 3)
    # The homography's linear part is a ~0.5x rotation by ~20 deg (PIL rotates counter-clockwise).
    h = np.asarray(result.homography) / result.homography[2][2]
    assert np.sqrt(abs(np.linalg.det(h[:2, :2]))) == pytest.approx(0.5, rel=0.1)
    assert np.degrees(np.arctan2(-h[1, 0], h[0, 0])) == pytest.approx(20, abs=3)


def test_rejects_an_unrelated_logo(starbucks_scene, config):
    _, query, _ = starbucks_scene
    other = reference_features(_reference("ferrari"), config)
    result = verify(query, other, config)
    assert not result.accepted and result.reason
    assert result.accepted_inliers == 0
    assert result.inliers < config.min_inliers


def test_rejects_a_photo_without_the_logo(config):
    ref = reference_features(_reference("starbucks"), config)
    result = verify(query_features(_photo("chelsea"), config), ref, config)
    assert not result.accepted


def test_orb_fallback_matches_an_exact_copy():
    config = VerifyConfig(method="orb")
    reference = _reference("ferrari")
    query, true_box = _paste(_photo(), reference, 0.6, 0, (200, 100))
    result = verify(query_features(query, config), reference_features(reference, config), config)
    assert result.accepted, result.reason
    assert box_iou(result.box, true_box) >= 0.7


def test_features_round_trip_through_bytes_exactly(starbucks_scene):
    ref, query, _ = starbucks_scene
    for features in (ref, query):
        blob = features.to_bytes()
        back = LocalFeatures.from_bytes(blob)
        assert isinstance(blob, bytes)
        assert np.array_equal(back.keypoints, features.keypoints)
        assert back.keypoints.dtype == np.float32 and back.descriptors.dtype == np.uint8
        assert np.array_equal(back.descriptors, features.descriptors)
        assert (back.image_size, back.scale, back.method, back.content) == (
            features.image_size, features.scale, features.method, features.content,
        )
        assert back.to_bytes() == blob
    # Compact: SIFT stored as uint8, ~136 bytes a keypoint plus a small header.
    assert len(ref.to_bytes()) < 140 * len(ref) + 2000


def test_blobs_are_compressed_and_uncompressed_ones_still_load(starbucks_scene, monkeypatch):
    """Blobs are most of an index's bytes, so they are zlib-compressed npz; indexes written
    before hold plain npz, which must still load the same."""
    ref, _, _ = starbucks_scene
    ref = replace(ref, silhouette=(np.arange(64 * 64).reshape(64, 64) % 7 == 0).astype(np.uint8),
                  appearance=appearance_thumbnail(ref))
    blob = ref.to_bytes()
    monkeypatch.setattr(np, "savez_compressed", np.savez)  # what to_bytes wrote before
    plain = ref.to_bytes()
    monkeypatch.undo()
    assert len(blob) < 0.8 * len(plain)
    for stored in (blob, plain):
        back = LocalFeatures.from_bytes(stored)
        assert np.array_equal(back.descriptors, ref.descriptors) and np.array_equal(back.keypoints, ref.keypoints)
        assert np.array_equal(back.silhouette, ref.silhouette) and np.array_equal(back.appearance, ref.appearance)


def test_the_appearance_of_a_true_match_agrees_and_a_misplaced_one_does_not(starbucks_scene, config):
    """The rectified listing region lines up with the reference's edges only where RANSAC
    put it: shifting the same homography by a sixth of the logo lands on coffee texture."""
    ref, query, _ = starbucks_scene
    ref = replace(ref, appearance=appearance_thumbnail(ref))
    result = verify(query, ref, config)
    assert result.accepted and result.confirmed and result.appearance >= config.min_appearance
    homography = np.asarray(result.homography)
    shift = ref.image_size[0] / 6
    misplaced = homography @ np.array([[1.0, 0.0, shift], [0.0, 1.0, shift], [0.0, 0.0, 1.0]])
    assert rectified_similarity(query, ref, misplaced) < 0.2 < result.appearance - 0.3
    # An unmet bar leaves the verification accepted (its inliers still count) but unconfirmed.
    strict = verify(query, ref, replace(config, min_appearance=0.99))
    assert strict.accepted and not strict.confirmed and strict.inliers == result.inliers
    # Without a thumbnail (an older index) or with the check off, acceptance confirms.
    assert verify(query, replace(ref, appearance=None), config).confirmed
    assert verify(query, ref, replace(config, min_appearance=-1)).appearance is None


def test_appearance_round_trips_and_is_never_stored_for_queries(starbucks_scene):
    ref, query, _ = starbucks_scene
    thumb = appearance_thumbnail(ref)
    assert thumb.shape == (64, 64) and thumb.dtype == np.uint8
    back = LocalFeatures.from_bytes(replace(ref, appearance=thumb).to_bytes())
    assert np.array_equal(back.appearance, thumb) and back.pixels is None
    assert back.nbytes == ref.keypoints.nbytes + ref.descriptors.nbytes + thumb.nbytes  # the cache's budget
    assert LocalFeatures.from_bytes(query.to_bytes()).pixels is None  # the working copy stays in memory
    buffer = io.BytesIO(replace(ref, appearance=np.zeros((4, 8), np.uint8)).to_bytes())
    with pytest.raises(DetectorError, match="appearance"):
        LocalFeatures.from_bytes(buffer.getvalue())


def test_from_bytes_never_unpickles_and_rejects_garbage():
    buffer = io.BytesIO()
    np.savez(buffer, keypoints=np.array([object()], dtype=object))
    with pytest.raises(DetectorError):
        LocalFeatures.from_bytes(buffer.getvalue())
    with pytest.raises(DetectorError):
        LocalFeatures.from_bytes(b"not an npz")


def _colour_only_scene(scale: float = 0.4, at: tuple[int, int] = (300, 150)):
    """Starbucks's mark recoloured red on a grey photo of the same brightness (luma 104):
    in greyscale the mark all but vanishes, in colour it is plain to see."""
    rng = np.random.default_rng(0)
    grey = np.clip(104 + rng.normal(0, 3, (480, 640, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    mark = _reference("starbucks").convert("L").point(lambda v: 255 if v < 128 else 0)  # the mark's pixels
    red = Image.new("RGBA", mark.size, (255, 40, 40, 255))
    red.putalpha(mark)
    return _paste(Image.fromarray(grey), red, scale, 10, at)


def test_chroma_features_find_a_mark_that_differs_only_in_colour():
    query, true_box = _colour_only_scene()
    assert abs(np.asarray(query.convert("L"), dtype=float)[true_box[1]:true_box[3], true_box[0]:true_box[2]].mean() - 104) < 15
    reference = _reference("starbucks")  # as indexed: green on white
    luma_only = replace(VerifyConfig(), chroma=False)
    blind = verify(query_features(query, luma_only), reference_features(reference, luma_only), luma_only)
    assert not blind.accepted

    config = VerifyConfig()
    assert config.chroma
    features = query_features(query, config)
    result = verify(features, reference_features(reference, config), config)
    assert result.accepted, result.reason
    assert box_iou(result.box, true_box) >= 0.7
    # The half-resolution channel's keypoints are mapped back onto the mark, in original pixels.
    x0, y0, x1, y1 = true_box
    inside = (features.keypoints[:, 0] > x0 - 4) & (features.keypoints[:, 0] < x1 + 4)
    inside &= (features.keypoints[:, 1] > y0 - 4) & (features.keypoints[:, 1] < y1 + 4)
    assert len(features) > 20 and inside.mean() > 0.9


def test_the_appearance_check_sees_a_mark_that_differs_only_in_colour():
    """The rectified region's edges come from greyscale and chroma together: the red mark on
    grey of the same brightness is confirmed, and greyscale alone would not confirm it."""
    query, _ = _colour_only_scene(scale=0.5, at=(200, 100))
    config = VerifyConfig()
    features = query_features(query, config)
    assert features.pixels.shape == (480, 640, 2)
    reference = reference_features(_reference("starbucks"), config)
    reference = replace(reference, appearance=appearance_thumbnail(reference))  # as indexed
    result = verify(features, reference, config)
    assert result.accepted and result.confirmed, (result.reason, result.appearance)
    grey_only = replace(features, pixels=features.pixels[..., 0])
    h = np.asarray(result.homography)
    assert rectified_similarity(grey_only, reference, h) < config.min_appearance <= result.appearance


def test_references_indexed_without_chroma_still_match(config):
    """An index built before the chroma channel holds greyscale keypoints only: a listing's
    chroma keypoints are extra candidates there, not noise that breaks the match."""
    reference = _reference("starbucks")
    query, true_box = _paste(_photo(), reference, 0.5, 20, (220, 110))
    old_reference = reference_features(reference, replace(config, chroma=False))
    result = verify(query_features(query, config), old_reference, config)
    assert config.chroma and result.accepted, result.reason
    assert box_iou(result.box, true_box) >= 0.7


def test_chroma_features_share_the_keypoint_budget():
    photo = _photo()
    both = extract_features(photo, max_side=640, max_features=300, chroma=True)
    assert len(both) == 300
    assert len(extract_features(photo, max_side=640, max_features=5000, chroma=True)) > len(
        extract_features(photo, max_side=640, max_features=5000)
    )


def test_keypoints_are_in_original_coordinates(config):
    photo = _photo()
    big = photo.resize((1280, 960), Image.Resampling.LANCZOS)
    small_f = extract_features(photo, max_side=640, max_features=500)
    big_f = extract_features(big, max_side=640, max_features=500)
    assert small_f.scale == 1.0 and big_f.scale == pytest.approx(0.5)
    assert big_f.image_size == (1280, 960)
    assert big_f.keypoints[:, 0].max() > 640  # mapped back, not working-copy coordinates
    assert np.all((big_f.keypoints >= -0.5) & (big_f.keypoints <= [1280, 960]))
    # Same image, same working copy: the big one's keypoints are the small one's, doubled.
    assert len(big_f) > 100
    nearest = np.min(
        np.linalg.norm(big_f.keypoints[:50, None] / 2 - small_f.keypoints[None], axis=2), axis=1
    )
    assert np.median(nearest) < 1.0


def test_mirrored_features_are_those_of_the_mirrored_photo(config):
    """Permuted descriptors at mirrored positions stand for an extraction on the mirrored
    photo: the same keypoints, nearly the same descriptors, and a mirrored logo verifies
    against them with the box where the mirrored photo shows it."""
    reference = _reference("ferrari")  # the prancing horse is not symmetric
    scene, true_box = _paste(_photo(), ImageOps.mirror(reference), 0.5, 10, (250, 120))
    features = query_features(scene, config)
    mirrored = mirror_features(features)
    extracted = query_features(ImageOps.mirror(scene), config)

    twice = mirror_features(mirrored)
    assert np.allclose(twice.keypoints, features.keypoints) and np.array_equal(twice.descriptors, features.descriptors)
    assert mirrored.pixels.shape == features.pixels.shape
    assert np.array_equal(mirrored.pixels, features.pixels[:, ::-1])

    # Pair keypoints by position; compare descriptors (relative L1).
    gaps = np.linalg.norm(mirrored.keypoints[:, None] - extracted.keypoints[None], axis=2)
    nearest = gaps.argmin(axis=1)
    paired = gaps[np.arange(len(nearest)), nearest] < 1.0  # OpenCV places keypoints ~0.25 px off
    assert paired.mean() > 0.7
    def error(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(float), b.astype(float)
        return float(np.median(np.abs(a - b).sum(axis=1) / np.maximum(b.sum(axis=1), 1)))
    extracted_desc = extracted.descriptors[nearest[paired]]
    assert error(mirrored.descriptors[paired], extracted_desc) < 0.15
    assert error(features.descriptors[paired], extracted_desc) > 0.5  # unpermuted: far off

    result = verify(mirrored, reference_features(reference, config), config)
    assert result.accepted, result.reason
    x0, y0, x1, y1 = result.box  # in the mirrored photo's pixels
    assert box_iou((640 - x1, y0, 640 - x0, y1), true_box) >= 0.6
    assert not verify(features, reference_features(reference, config), config).accepted
    with pytest.raises(ConfigError, match="SIFT"):
        mirror_features(query_features(scene, VerifyConfig(method="orb")))


def test_batched_neighbours_are_each_references_own(starbucks_scene, config):
    """One search for several references gives each the two nearest query descriptors a
    brute-force matcher finds for it alone, and verification is the same either way."""
    import cv2

    ref, query, _ = starbucks_scene
    others = [reference_features(_reference(slug), config) for slug in ("ferrari", "nike")]
    references = [others[0], ref, others[1]]
    batched = nearest_two(query, references)
    for reference, (indices, distances) in zip(references, batched):
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(root_sift(reference.descriptors), query.matchable, k=2)
        expected = np.array([[p[0].trainIdx, p[1].trainIdx] for p in pairs])
        assert indices.shape == (len(reference), 2)
        assert (indices == expected).mean() > 0.99  # exact search; float ties aside
        assert np.allclose(distances, [[p[0].distance, p[1].distance] for p in pairs], atol=1e-4)
    assert verify(query, ref, config, batched[1]) == verify(query, ref, config)
    empty = replace(query, keypoints=query.keypoints[:1], descriptors=query.descriptors[:1])
    assert nearest_two(empty, references) == [None, None, None]


def test_mixed_methods_raise(starbucks_scene):
    ref, _, _ = starbucks_scene
    orb = extract_features(_photo(), max_side=320, max_features=100, method="orb")
    with pytest.raises(ConfigError):
        verify(orb, ref, VerifyConfig())


def test_blank_images_are_rejected_not_errors(config):
    blank = extract_features(Image.new("RGB", (64, 64), "white"), max_side=64, max_features=50)
    assert len(blank) == 0
    assert not verify(blank, blank, config).accepted


@pytest.mark.parametrize(
    ("homography", "reason"),
    [
        (np.diag([-1.0, 1.0, 1.0]) @ np.array([[1, 0, -100], [0, 1, 0], [0, 0, 1.0]]), "mirrored"),
        (np.diag([0.001, 0.001, 1.0]), "too small"),
        (np.diag([20.0, 20.0, 1.0]), "too large"),
        (np.array([[1.0, 3.0, 0], [0, 0.2, 0], [0, 0, 1]]), "sheared"),
        (np.array([[1.0, 0, 0], [0, 1, 0], [-0.02, 0, 1]]), "horizon"),
        (np.diag([1.0, 8.0, 1.0]), "stretched"),
    ],
)
def test_degenerate_homographies_are_rejected(homography, reason, config):
    outline = _project_outline(homography, (0, 0, 100, 100))
    assert reason in _degenerate(outline, (100, 100), (640, 480), config)


def test_plausible_homography_passes(config):
    angle = np.radians(20)
    c, s = 0.5 * np.cos(angle), 0.5 * np.sin(angle)
    h = np.array([[c, -s, 200], [s, c, 100], [0, 0, 1]])
    outline = _project_outline(h, (0, 0, 300, 300))
    assert _degenerate(outline, (300, 300), (640, 480), config) == ""


def test_fuse_disabled_equals_first_stage_score():
    off = VerifyConfig(enabled=False)
    for score, inliers in itertools.product([-0.2, 0.0, 0.31, 0.9, 1.0], [0, 5, 12, 500]):
        assert fuse_scores(score, inliers, off) == score


def test_fuse_is_monotone_bounded_and_saturates():
    config = VerifyConfig(weight=0.4, inlier_cap=40)
    scores = np.linspace(-1, 1, 21)
    counts = range(0, 80, 3)
    table = np.array([[fuse_scores(s, n, config) for n in counts] for s in scores])
    assert np.all(np.diff(table, axis=0) > 0)  # strictly increasing in the score
    assert np.all(np.diff(table, axis=1) >= 0)  # non-decreasing in the inliers
    assert np.all(table - scores[:, None] <= 0.4 + 1e-12)
    assert fuse_scores(0.5, 0, config) == 0.5
    assert fuse_scores(0.5, 40, config) == fuse_scores(0.5, 400, config) == pytest.approx(0.9)
    assert fuse_scores(0.5, 20, config) == pytest.approx(0.7)


def test_fuse_floor_lifts_only_verified_candidates():
    config = VerifyConfig(weight=0.5, inlier_cap=50, cosine_floor=0.75)
    assert fuse_scores(0.3, 0, config) == 0.3  # no geometric support: the cosine as it is
    assert fuse_scores(0.3, 10, config) == pytest.approx(0.75 + 0.1)
    assert fuse_scores(0.9, 10, config) == pytest.approx(0.9 + 0.1)  # above the floor: unchanged
    scores, counts = np.linspace(-1, 1, 21), range(0, 80, 3)
    table = np.array([[fuse_scores(s, n, config) for n in counts] for s in scores])
    assert np.all(np.diff(table, axis=0) >= 0) and np.all(np.diff(table, axis=1) >= 0)


def test_a_confirmed_verification_gets_its_own_floor():
    config = VerifyConfig(weight=0.5, inlier_cap=50, cosine_floor=0.7, confirmed_floor=0.85)
    assert fuse_scores(0.3, 10, config, confirmed=True) == pytest.approx(0.85 + 0.1)
    assert fuse_scores(0.3, 10, config) == pytest.approx(0.7 + 0.1)  # accepted, not confirmed
    assert fuse_scores(0.3, 0, config, confirmed=True) == 0.3  # nothing accepted, nothing lifted
    assert fuse_scores(0.95, 10, config, confirmed=True) == pytest.approx(0.95 + 0.1)
    unset = replace(config, confirmed_floor=-1.0)
    assert fuse_scores(0.3, 10, unset, confirmed=True) == fuse_scores(0.3, 10, unset)


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "surf"}, {"ratio": 0}, {"min_inliers": 3}, {"weight": 1.5}, {"inlier_cap": 0}, {"local_nprobe": 0},
     {"min_area_fraction": 2.0}, {"max_distortion": 0.5}, {"min_corner_angle": 90},
     {"min_appearance": 1.5}, {"confirmed_floor": 1.5}],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        VerifyConfig(**kwargs)


# --- a product photo's logo area ------------------------------------------------------------


@pytest.fixture(scope="module")
def product_photo():
    """An official product photo: a real photo with the starbucks logo on it, and the box."""
    return _paste(_photo(), _reference("starbucks"), 0.35, 0, (380, 200))


def _product_features(photo: Image.Image, box, config: VerifyConfig) -> LocalFeatures:
    features = reference_features(photo, config)
    return LocalFeatures(**{**features.__dict__, "logo_box": box})


def test_logo_area_matched_in_a_repost_missing_in_the_bare_scene(product_photo, config):
    from detector.verify import logo_area_verdict

    photo, box = product_photo
    reference = _product_features(photo, box, config)
    assert LocalFeatures.from_bytes(reference.to_bytes()).logo_box == box
    # A re-post: the same photo, smaller, recompressed.
    buffer = io.BytesIO()
    photo.resize((480, 360)).save(buffer, "JPEG", quality=60)
    repost = verify(query_features(Image.open(buffer), config), reference, config)
    assert repost.logo_keypoints >= config.logo_min_keypoints
    assert repost.logo_inliers >= config.logo_confirm_share * repost.logo_keypoints
    assert logo_area_verdict(repost, config) == 1
    expected = tuple(round(v * 0.75) for v in box)
    assert repost.logo_box is not None and box_iou(repost.logo_box, expected) > 0.8
    # The same scene without the logo: the scene matches, the logo's area does not.
    bare = verify(query_features(_photo(), config), reference, config)
    assert bare.accepted and bare.inliers > 50
    assert logo_area_verdict(bare, config) == -1
    # Without a known box nothing is decided.
    plain = verify(query_features(_photo(), config), reference_features(photo, config), config)
    assert plain.logo_keypoints == 0 and logo_area_verdict(plain, config) == 0


def test_logo_area_verdict_needs_enough_keypoints(config):
    from detector.verify import Verification, logo_area_verdict

    h = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert logo_area_verdict(Verification(40, 50, h, None, True, logo_keypoints=5, logo_inliers=0), config) == 0
    assert logo_area_verdict(Verification(40, 50, h, None, True, logo_keypoints=20, logo_inliers=1), config) == -1
    assert logo_area_verdict(Verification(40, 50, h, None, True, logo_keypoints=20, logo_inliers=5), config) == 0
    assert logo_area_verdict(Verification(40, 50, h, None, True, logo_keypoints=20, logo_inliers=10), config) == 1
    assert logo_area_verdict(Verification(0, 3, None, None, False, logo_keypoints=20), config) == 0
    with pytest.raises(ConfigError):
        VerifyConfig(logo_missing_share=0.5, logo_confirm_share=0.3)


def test_bad_logo_box_in_a_blob_is_rejected(product_photo, config):
    photo, _ = product_photo
    bad = _product_features(photo, (50, 50, 40, 60), config)
    with pytest.raises(DetectorError):
        LocalFeatures.from_bytes(bad.to_bytes())
