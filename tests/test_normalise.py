"""Tests for background score normalisation (detector.background, ScoringConfig.normalise)."""

from __future__ import annotations

import numpy as np
import pytest

from detector.background import (
    NormaliseConfig,
    background_images,
    background_path,
    background_similarity,
    build_background,
    normalised,
    offsets_for,
)
from detector.errors import ConfigError
from detector.scoring import Detector
from detector.scoring_config import ScoringConfig

WHOLE = {"regions": {"enabled": False}}


def listings(sample_set) -> list:
    return sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_an_empty_background_is_the_identity():
    rng = np.random.default_rng(0)
    views, cosines = _unit(rng.normal(size=(3, 16))), rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    empty = np.zeros((0, 16), np.float32)
    offsets = offsets_for(views, empty, NormaliseConfig(enabled=True, k=10, background=0))
    assert offsets.tolist() == [0.0, 0.0, 0.0]
    assert np.array_equal(normalised(cosines, offsets), cosines)


def test_a_near_duplicate_in_the_background_lowers_the_score():
    rng = np.random.default_rng(1)
    listing = _unit(rng.normal(size=(1, 32)))
    unrelated = _unit(rng.normal(size=(20, 32)))
    twin = _unit(listing + 0.02 * rng.normal(size=(1, 32)))
    config = NormaliseConfig(enabled=True, k=1, beta=1.0, background=1)
    plain = float(background_similarity(listing, unrelated, 1)[0])
    with_twin = float(background_similarity(listing, np.concatenate([unrelated, twin]), 1)[0])
    assert with_twin > 0.95 > plain
    cosine = np.array([[0.9]], np.float32)
    dropped = normalised(cosine, offsets_for(listing, np.concatenate([unrelated, twin]), config))[0, 0]
    kept = normalised(cosine, offsets_for(listing, unrelated, config))[0, 0]
    assert dropped < 0.0 < kept and dropped == pytest.approx(0.9 - with_twin)


def test_bg_k_is_the_kth_highest_similarity():
    views = np.array([[1.0, 0.0]], np.float32)
    background = _unit(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.2]]))
    sims = sorted((background @ views.T).ravel(), reverse=True)
    for k in (1, 2, 3, 4):
        assert background_similarity(views, background, k)[0] == pytest.approx(sims[k - 1])
    assert background_similarity(views, background, 5)[0] == 0.0  # fewer than k: no offset


def test_the_generator_is_deterministic_and_varied():
    first, again = background_images(6, seed=3), background_images(6, seed=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(background_images(1, seed=4)[0]))
    assert len({np.asarray(im).tobytes() for im in first}) == 6
    assert all(im.mode == "RGB" and im.size == (256, 256) for im in first)


@pytest.mark.parametrize(
    "options",
    [{"k": 0}, {"beta": -0.1}, {"beta": 2.5}, {"background": -1}, {"background": 5, "k": 10}, {"seed": -1}],
)
def test_normalise_options_are_validated(options):
    with pytest.raises(ConfigError):
        NormaliseConfig(**options)
    with pytest.raises(ConfigError):
        ScoringConfig.from_dict({"normalise": options})


def test_unknown_normalise_option_is_a_config_error():
    with pytest.raises(ConfigError):
        ScoringConfig.from_dict({"normalise": {"kth": 3}})
    assert ScoringConfig.from_dict({}).normalise == NormaliseConfig()  # off by default
    assert not ScoringConfig().normalise.enabled


def _scores(det: Detector, paths) -> list[list[tuple[str, float]]]:
    return [[(m.brand, m.score) for m in v.matches] for v in det.score_many(paths)]


def test_scoring_with_an_empty_background_equals_raw_scoring(tiny_index_dir, sample_set):
    paths = listings(sample_set)[:2]
    with Detector.open(tiny_index_dir, device="cpu", config=WHOLE) as det:
        raw = _scores(det, paths)
    identity = {**WHOLE, "normalise": {"enabled": True, "background": 0}}
    with Detector.open(tiny_index_dir, device="cpu", config=identity) as det:
        assert _scores(det, paths) == raw
    assert not (tiny_index_dir / "background").exists()  # nothing stored for an empty background


def test_the_background_is_stored_with_the_index_and_reused(tiny_index_copy, sample_set):
    config = {**WHOLE, "normalise": {"enabled": True, "background": 12, "k": 2}}
    path = listings(sample_set)[0]
    with Detector.open(tiny_index_copy, device="cpu", config=config) as det:
        first = det.score(path)
        stored = background_path(tiny_index_copy, det.fingerprint, det.config.normalise)
        assert stored.is_file()
        vectors = np.load(stored)
        assert vectors.shape == (12, det.fingerprint.dim)
        again = build_background(tiny_index_copy, det.fingerprint, det.config.normalise, embed=None)
        assert np.array_equal(again, vectors)  # read back, not re-embedded (embed=None)
    with Detector.open(tiny_index_copy, device="cpu", config=config) as det:
        assert [m.score for m in det.score(path).matches] == [m.score for m in first.matches]


def test_a_background_holding_the_listing_lowers_its_scores(tiny_index_copy, sample_set):
    path = listings(sample_set)[0]
    with Detector.open(tiny_index_copy, device="cpu", config=WHOLE) as det:
        raw = {m.ref_id: m.cosine for m in det.score(path).matches}
        from detector.images import load_image

        listing = det.embedder.embed([load_image(path)])
    config = {**WHOLE, "normalise": {"enabled": True, "background": 3, "k": 1, "beta": 1.0}}
    rng = np.random.default_rng(0)
    twin = _unit(listing + 0.01 * rng.normal(size=listing.shape))
    with Detector.open(tiny_index_copy, device="cpu", config=config) as det:
        stored = background_path(tiny_index_copy, det.fingerprint, det.config.normalise)
        stored.parent.mkdir(exist_ok=True)
        np.save(stored, np.concatenate([twin, _unit(rng.normal(size=(2, listing.shape[1])))]).astype(np.float32))
        offset = float((twin @ listing.T)[0, 0])
        found = {m.ref_id: m.cosine for m in det.score(path).matches}
    assert found and offset > 0.99
    for rid, cosine in found.items():
        if rid in raw:
            assert cosine == pytest.approx(raw[rid] - offset, abs=1e-4)
