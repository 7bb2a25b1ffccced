"""Local-descriptor search: references the embedding missed are found by their SIFT votes."""

from __future__ import annotations

import csv

import pytest
from PIL import Image, ImageOps

from detector.errors import ConfigError, DetectorError
from detector.local_search import LocalFeatureIndex
from detector.reference_prep import ReferencePrepConfig, reference_views
from detector.verify import VerifyConfig, query_features, reference_features

pytest.importorskip("cv2")

SLUGS = ("starbucks", "ferrari", "mastercard", "nike")


def _logo(slug: str) -> Image.Image:
    pytest.importorskip("cairosvg")
    from detector.bench.logos import render_logo

    return render_logo(slug, 400)


def _scene_with(slug: str, scale: float = 0.6, angle: float = 15, mirrored: bool = False) -> Image.Image:
    """The logo, scaled and rotated, on a photo (what an embedding of the whole frame misses)."""
    data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(data.coffee()).resize((640, 480)).convert("RGBA")
    logo = ImageOps.mirror(_logo(slug)) if mirrored else _logo(slug)
    logo = logo.resize((round(logo.width * scale), round(logo.height * scale)), Image.Resampling.LANCZOS)
    photo.alpha_composite(logo.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC), (330, 150))
    return photo.convert("RGB")


def _distractors(n: int) -> list[str]:
    """Other real logos, spread over simple-icons' alphabet (a library is never 4 logos:
    the vote's ratio test across references needs neighbours to compare with)."""
    pytest.importorskip("simple_icons_pack")
    from detector.bench.logos import list_icons

    return [info.slug for info in list_icons()[::60] if info.slug not in SLUGS][:n]


@pytest.fixture(scope="module")
def features():
    config = VerifyConfig()
    prep = ReferencePrepConfig(logo_margins=(0.0,))
    slugs = list(SLUGS) + _distractors(30)
    return {i: reference_features(reference_views(_logo(s), "logo", prep)[0], config) for i, s in enumerate(slugs)}


def test_votes_bring_the_pasted_logo_to_the_top(features):
    index = LocalFeatureIndex.from_features(features)
    assert len(index) == sum(len(f) for f in features.values())
    for ref_id, slug in [(0, "starbucks"), (1, "ferrari")]:
        votes = index.vote(query_features(_scene_with(slug), VerifyConfig()), top=3)
        assert ref_id in [rid for rid, _ in votes], (slug, votes)
        assert [v for _, v in votes] == sorted((v for _, v in votes), reverse=True)


def test_large_libraries_search_an_inverted_file_with_the_same_outcome(features, monkeypatch):
    from detector import local_search

    monkeypatch.setattr(local_search, "EXACT_UP_TO", 1000)
    index = LocalFeatureIndex.from_features(features)
    assert type(index._index).__name__ == "IndexIVFFlat"
    query = query_features(_scene_with("starbucks"), VerifyConfig())
    votes = index.vote(query, top=3)
    assert 0 in [rid for rid, _ in votes], votes
    assert index._index.nprobe == 16
    fewer = LocalFeatureIndex.from_features(features, nprobe=4)
    assert fewer._index.nprobe == 4 and 0 in [rid for rid, _ in fewer.vote(query, top=3)]


def test_the_logo_brings_its_votes(features):
    data = pytest.importorskip("skimage.data")
    bare = Image.fromarray(data.coffee()).resize((640, 480))
    index = LocalFeatureIndex.from_features(features)
    with_logo = dict(index.vote(query_features(_scene_with("starbucks"), VerifyConfig()), top=len(features)))
    without = dict(index.vote(query_features(bare, VerifyConfig()), top=len(features)))
    assert with_logo[0] >= 5 and without.get(0, 0) <= with_logo[0] / 3


def test_empty_index_and_bad_arguments(features):
    empty = LocalFeatureIndex.from_features({})
    assert len(empty) == 0
    assert empty.vote(features[0], top=5) == []
    assert LocalFeatureIndex.from_features(features).vote(features[0], top=0) == []
    orb = VerifyConfig(method="orb")
    with pytest.raises(DetectorError, match="SIFT"):
        LocalFeatureIndex.from_features({0: reference_features(_logo("nike"), orb)})
    with pytest.raises(ConfigError, match="sift"):
        VerifyConfig(method="orb", local_candidates=5)
    with pytest.raises(ConfigError, match="local_ratio"):
        VerifyConfig(local_ratio=0.0)
    with pytest.raises(ConfigError, match="cosine_floor"):
        VerifyConfig(cosine_floor=1.5)


@pytest.fixture(scope="module")
def logo_index(tmp_path_factory):
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("local-search")
    with open(root / "refs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "brand", "kind"])
        for slug in SLUGS:
            _logo(slug).save(root / f"{slug}.png")
            writer.writerow([f"{slug}.png", slug, "logo"])
    index_dir = root / "index"
    report = run_indexing(root / "refs.csv", index_dir, preset="tiny-clip-test", embedder_options={"device": "cpu"})
    assert report.added == len(SLUGS)
    return index_dir


def test_scorer_verifies_the_voted_reference_beyond_the_embedding_top(logo_index):
    """With no embedding candidate verified (top_candidates 0), only the local vote can bring
    the pasted logo to RANSAC; its score is then the fused one, and the box is on the logo."""
    from detector.scoring import Detector

    listing = _scene_with("starbucks")
    base = {"verify": {"top_candidates": 0}, "regions": {"enabled": False}}
    scores = {}
    for local in (0, 3):
        config = {**base, "verify": {"top_candidates": 0, "local_candidates": local}}
        with Detector.open(logo_index, config=config, device="cpu") as det:
            (match,) = [m for m in det.score(listing).matches if m.brand == "starbucks"] or [None]
            scores[local] = (match, det.config.verify)
    without, _ = scores[0]
    assert without is None or without.inliers is None  # never verified
    voted, vcfg = scores[3]
    assert voted is not None and voted.inliers is not None and voted.inliers >= vcfg.min_inliers
    assert voted.score > voted.cosine
    x0, y0, x1, y1 = voted.box
    assert 300 <= x0 < x1 <= 640 and 120 <= y0 < y1 <= 480  # around the pasted logo at (330, 150)


def test_a_batch_scores_each_listing_as_alone(logo_index):
    """The listings' features are extracted in worker threads while the batch embeds; each
    listing must get its own: a batch's verdicts equal scoring the listings one by one."""
    from detector.scoring import Detector

    data = pytest.importorskip("skimage.data")
    listings = [_scene_with("starbucks"), Image.fromarray(data.coffee()).resize((640, 480)), _scene_with("ferrari")]
    config = {"regions": {"enabled": False}, "verify": {"top_candidates": 2, "local_candidates": 3}}
    with Detector.open(logo_index, config=config, device="cpu") as det:
        alone = [det.score(listing) for listing in listings]
        batch = det.score_many(listings)
        min_inliers = det.config.verify.min_inliers
    # Each listing gets its own features: the same matches, evidence and boxes. Scores are
    # compared to float precision only: the model's matrix products round differently for a
    # batch of 3 than for 1 on some CPUs (cosines moved by ~3e-8 here).
    def evidence(v):
        return [(m.ref_id, m.inliers, m.box, m.verified, m.mirrored) for m in v.matches]

    assert [evidence(v) for v in batch] == [evidence(v) for v in alone]
    for b, a in zip(batch, alone):
        assert [m.score for m in b.matches] == pytest.approx([m.score for m in a.matches], abs=1e-6)
    verified = [{m.brand for m in v.matches if (m.inliers or 0) >= min_inliers} for v in batch]
    assert verified == [{"starbucks"}, set(), {"ferrari"}]


def test_a_mirrored_logo_is_verified_against_the_mirrored_listing(logo_index):
    from detector.scoring import Detector

    listing = _scene_with("ferrari", mirrored=True)  # the prancing horse is not symmetric
    found = {}
    for mirrored in (False, True):
        config = {"regions": {"enabled": False}, "verify": {"top_candidates": 0, "local_candidates": 3, "mirrored": mirrored}}
        with Detector.open(logo_index, config=config, device="cpu") as det:
            found[mirrored] = [m for m in det.score(listing).matches if m.brand == "ferrari"]
            min_inliers = det.config.verify.min_inliers
    assert not any(m.mirrored or (m.inliers or 0) >= min_inliers for m in found[False])
    (match,) = found[True]
    assert match.mirrored and match.inliers >= min_inliers and match.score > match.cosine
    x0, y0, x1, y1 = match.box  # in the listing's own (unmirrored) pixels
    assert 300 <= x0 < x1 <= 640 and 120 <= y0 < y1 <= 480


def test_a_verified_match_is_held_to_the_verified_threshold(logo_index):
    """A table whose plain logo threshold nothing reaches still flags the RANSAC-verified
    logo through its ``logo:verified`` entry; a logo-free photo (nothing verified) stays clear."""
    from detector.scoring import Detector
    from detector.thresholds import Thresholds

    data = pytest.importorskip("skimage.data")
    # The tiny random model's cosines are arbitrary: any verified match passes, nothing else.
    table = Thresholds.from_dict({"default": 2.0, "kinds": {"logo:verified": -1.0}})
    config = {
        "verify": {"top_candidates": 0, "local_candidates": 3, "confirmed_floor": 1.0},
        "regions": {"enabled": False},
    }
    with Detector.open(logo_index, config=config, thresholds=table, device="cpu") as det:
        flagged = det.score(_scene_with("starbucks"))
        clear = det.score(Image.fromarray(data.coffee()).resize((640, 480)))
        weight, cap = det.config.verify.weight, det.config.verify.inlier_cap
    assert [m.brand for m in flagged.matches if m.verified] == ["starbucks"]
    confirmed = next(m for m in flagged.matches if m.verified)  # its fused score starts at the confirmed floor
    assert confirmed.score == pytest.approx(1.0 + weight * min(confirmed.inliers, cap) / cap)
    assert flagged.flagged and flagged.brand == "starbucks"
    assert (flagged.threshold, flagged.threshold_source) == (-1.0, "kind:logo:verified")
    assert not any(m.verified for m in clear.matches)
    assert not clear.flagged and clear.threshold_source == "default"


def test_indexed_logos_carry_their_appearance_thumbnail(logo_index):
    from detector.verify import APPEARANCE_SIDE, LocalFeatures
    from index.store import ReferenceIndex

    with ReferenceIndex.open(logo_index) as index:
        blobs = index.get_aux([r.id for r in index.references()])
    thumbs = [LocalFeatures.from_bytes(b).appearance for b in blobs.values()]
    assert len(thumbs) == len(SLUGS)
    assert all(t is not None and t.shape == (APPEARANCE_SIDE, APPEARANCE_SIDE) and t.std() > 10 for t in thumbs)

