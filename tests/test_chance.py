"""Tests for detector.chance (the a-contrario chance model of geometric verification) and its
use in verify() (``VerifyConfig(acceptance="a_contrario")``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector.chance import (
    chance_probability,
    hull_area,
    log_binomial_tail,
    log_nfa,
    log_nfa_of_fit,
    residuals,
)
from detector.errors import ConfigError
from detector.verify import VerifyConfig, extract_features, verify

cv2 = pytest.importorskip("cv2")

A_CONTRARIO = VerifyConfig(acceptance="a_contrario", min_appearance=-1.0)


def _texture(seed: int, size: int = 320) -> Image.Image:
    """Random coloured ellipses, rectangles and lines: plenty of SIFT keypoints."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 4, 2)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(2, 6)))
    return image


def _features(image: Image.Image):
    return extract_features(image, max_side=512, max_features=800)


def test_binomial_tail_matches_the_exact_sum():
    for trials, successes, p in [(20, 3, 0.1), (26, 4, 2.6e-4), (40, 40, 0.5), (12, 1, 0.9)]:
        exact = sum(math.comb(trials, j) * p**j * (1 - p) ** (trials - j) for j in range(successes, trials + 1))
        assert float(log_binomial_tail(trials, successes, p)) == pytest.approx(math.log10(exact), abs=1e-9)
    assert float(log_binomial_tail(10, 0, 0.3)) == 0.0
    assert float(log_binomial_tail(10, 11, 0.3)) == -math.inf
    assert float(log_binomial_tail(3000, 2000, 1e-6)) < -1000  # no underflow to -inf


def test_nfa_is_monotone_in_inliers_matches_tolerance_and_tests():
    p = chance_probability(5.0, 640 * 480)
    by_inliers = [log_nfa(k, 80, p, tests=20) for k in range(5, 40)]
    assert all(a > b for a, b in itertools.pairwise(by_inliers))  # more inliers: less likely by chance
    by_matches = [log_nfa(10, n, p, tests=20) for n in range(10, 400, 10)]
    assert all(a < b for a, b in itertools.pairwise(by_matches))  # more keypoints / matches: likelier
    wider = chance_probability(10.0, 640 * 480)
    smaller = chance_probability(5.0, 320 * 240)
    assert log_nfa(10, 80, wider) > log_nfa(10, 80, p) < log_nfa(10, 80, smaller)
    assert log_nfa(10, 80, p, tests=40) == pytest.approx(log_nfa(10, 80, p, tests=20) + math.log10(2))
    assert log_nfa(4, 80, p) >= 0  # a homography's own 4 points prove nothing


def test_the_fit_criterion_prefers_tight_residuals():
    tight = np.concatenate([np.full(12, 0.5), np.full(48, 50.0)])
    loose = np.concatenate([np.full(12, 4.5), np.full(48, 50.0)])
    area = 640 * 480
    assert log_nfa_of_fit(tight, 60, area, 5.0)[0] < log_nfa_of_fit(loose, 60, area, 5.0)[0]
    value, k = log_nfa_of_fit(tight, 60, area, 5.0, resolution=0.1)
    eps = 0.5 * math.sqrt(12 / 8)  # the residual corrected for the fit's 8 parameters
    assert k == 12 and value == pytest.approx(log_nfa(12, 60, chance_probability(eps, area)))
    five = np.concatenate([np.full(5, 0.01), np.full(55, 50.0)])  # 5 points a refit fits exactly
    assert log_nfa_of_fit(five, 60, area, 5.0)[0] == pytest.approx(log_nfa(5, 60, chance_probability(1.0, area)))


def test_residuals_of_a_known_homography():
    h = np.array([[1.0, 0, 10], [0, 1, -5], [0, 0, 1]])
    src = np.array([[0.0, 0], [10, 10]])
    assert residuals(h, src, src + [10, -5]) == pytest.approx([0, 0])
    assert residuals(h, src, src + [13, -1])[0] == pytest.approx(5.0)


def test_random_matches_are_rejected_by_chance_and_a_true_fit_is_not():
    """Random keypoints matched at random in two 640x480 images: RANSAC always finds a few
    points that fit some homography; the chance model says that many are expected."""
    rng = np.random.default_rng(3)
    values = []
    for _ in range(20):
        n = 60
        src = rng.uniform(0, [400, 400], (n, 2)).astype(np.float32)
        dst = rng.uniform(0, [640, 480], (n, 2)).astype(np.float32)
        h, _ = cv2.findHomography(src, dst, cv2.RANSAC, 5.0, maxIters=2000)
        if h is None:
            continue
        values.append(log_nfa_of_fit(residuals(h, src, dst), n, 640 * 480, 5.0, tests=20)[0])
    assert values and min(values) > 0
    h_true = np.array([[0.9, -0.2, 100], [0.2, 0.9, 50], [0, 0, 1]])
    src = rng.uniform(0, 400, (60, 2))
    dst = (np.column_stack([src, np.ones(60)]) @ h_true.T)[:, :2] + rng.normal(0, 0.7, (60, 2))
    dst[30:] = rng.uniform(0, [640, 480], (30, 2))  # half the matches wrong
    assert log_nfa_of_fit(residuals(h_true, src, dst), 60, 640 * 480, 5.0, tests=20)[0] < -20


def test_verify_accepts_a_rotated_copy_of_a_texture_by_chance_model():
    texture = _texture(0)
    rotated = texture.rotate(25, expand=True, fillcolor=(255, 255, 255)).resize((400, 400))
    result = verify(_features(rotated), _features(texture), A_CONTRARIO)
    assert result.accepted, result.reason
    assert result.log_nfa is not None and result.log_nfa < -20


def test_verify_rejects_unrelated_textures_by_chance_model():
    reference = _features(_texture(1))
    chance = [verify(_features(_texture(seed)), reference, A_CONTRARIO) for seed in range(2, 8)]
    assert not any(r.accepted for r in chance)


def test_count_acceptance_is_unchanged_and_reports_the_nfa():
    texture = _texture(0)
    rotated = texture.rotate(25, expand=True, fillcolor=(255, 255, 255))
    counted = verify(_features(rotated), _features(texture), VerifyConfig(min_appearance=-1.0))
    chance = verify(_features(rotated), _features(texture), A_CONTRARIO)
    assert counted.accepted and counted.inliers == chance.inliers and counted.log_nfa == chance.log_nfa


def test_chance_tests_count_the_verified_references():
    assert VerifyConfig(top_candidates=10).chance_tests == 10
    assert VerifyConfig(top_candidates=10, local_candidates=10).chance_tests == 20
    assert VerifyConfig(top_candidates=10, local_candidates=10, mirrored=True).chance_tests == 30
    assert VerifyConfig(top_candidates=0).chance_tests == 1


def test_matches_bunched_in_a_patch_are_not_significant_over_their_own_area():
    """12 matches in a 30x30 px patch of a 640x480 listing, 8 within 2 px of a fit: a chance
    event for matches that fall in that patch anyway, a rare one for matches spread over the
    whole listing."""
    rng = np.random.default_rng(0)
    patch = rng.uniform(100, 130, (12, 2))
    errors = np.concatenate([rng.uniform(0.5, 2.0, 8), rng.uniform(8, 20, 4)])
    image = log_nfa_of_fit(errors, 12, 640 * 480, 5.0, tests=20)[0]
    bunched = log_nfa_of_fit(errors, 12, hull_area(patch), 5.0, tests=20)[0]
    assert image < 0 < bunched


@pytest.mark.parametrize(
    "kwargs", [{"acceptance": "nfa"}, {"max_log_nfa": 11.0}, {"max_log_nfa": -2000.0}, {"chance_area": "hull"}]
)
def test_chance_options_are_validated(kwargs):
    with pytest.raises(ConfigError):
        VerifyConfig(**kwargs)


def test_the_detector_scores_with_a_contrario_acceptance(tiny_index_dir, sample_set):
    from detector.scoring import Detector
    from detector.signals.local_features import GeometricEvidence

    paths = sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))[:2]
    options = {"regions": {"enabled": False}}
    with Detector.open(tiny_index_dir, device="cpu", config=options) as det:
        counted = det.score_many(paths)
    options["verify"] = {"acceptance": "a_contrario", "max_log_nfa": -1.0}
    with Detector.open(tiny_index_dir, device="cpu", config=options) as det:
        assert det.config.verify.acceptance == "a_contrario"
        chance = det.score_many(paths)
    assert [v.image for v in chance] == [v.image for v in counted] and not any(v.error for v in chance)
    evidence = GeometricEvidence(result=verify(_features(_texture(0)), _features(_texture(0)), A_CONTRARIO))
    assert evidence.detail()["log_nfa"] < -20


def test_shape_chance_scale_sketch():
    from detector.shape_scores import mark_chance_floor, mark_rank_log_nfa

    blob, distinct = np.array([0.8, 0.78, 0.77, 0.76, 0.75, 0.7]), np.array([0.4, 0.3, 0.2, 0.2, 0.1])
    assert mark_chance_floor(blob, k=5) > mark_chance_floor(distinct, k=5)
    assert mark_chance_floor(distinct[:3], k=5) == 0.0  # fewer than k others: no floor
    assert mark_rank_log_nfa(0.9, blob) < mark_rank_log_nfa(0.76, blob) < mark_rank_log_nfa(0.5, blob)
    assert mark_rank_log_nfa(0.9, blob, marks=3) > mark_rank_log_nfa(0.9, blob, marks=1)
