"""A chance model for geometric verification: how many false alarms a RANSAC fit this good
would give if the matches were random (an *a-contrario* test, after Moisan & Stival, "A
probabilistic criterion to detect rigid point matches between two images", IJCV 2004, and
ORSA, Moisan, Moulon & Monasse, IPOL 2012).

The null hypothesis: the ``n`` ratio-test matches of a reference against a listing pair each
reference keypoint with a listing keypoint that lands anywhere in the listing, uniformly and
independently. A homography is fixed by 4 matches; each of the other ``n - 4`` then falls
within ``eps`` pixels of where the homography sends its reference keypoint with probability::

    p(eps) = min(1, pi * eps^2 / A)        A = the area the matches fall in, pixels

``A`` is the listing's area, or (the verifier's ``chance_area="matches"``) the area of the
convex hull of the matches' listing positions: the null model then spreads chance matches
over the patch the matches actually fall in, so a fit among matches bunched in a small
patch (a few keypoints of text, nearly collinear points) is not significant.

The number of false alarms of a fit whose k-th smallest residual (distinct listing keypoints)
is ``eps_k``::

    NFA(k) = N_tests * (n - 4) * C(n, 4) * P[Binomial(n - 4, p(eps_k)) >= k - 4]

``C(n, 4)`` counts the homographies (minimal samples) RANSAC may pick, ``n - 4`` the values of
``k`` tried, and ``N_tests`` the references verified for the listing. The fit's NFA is the
smallest over ``k`` (with ``eps_k`` up to the RANSAC tolerance): a true match has many inliers
with small residuals, a chance fit a few at the tolerance's edge. ``NFA <= 1`` means fewer
than one fit this good is expected by chance over all the tests made; :func:`log_nfa` returns
``log10 NFA``, so the acceptance test is ``log_nfa <= max_log_nfa`` (0 for ``NFA <= 1``).

The model's scale is the listing's: a listing with more matches (more keypoints) needs more
inliers, and a larger tolerance or a smaller listing gives each chance match more room.
Its assumption (uniform positions) is optimistic where keypoints cluster in texture, which
is why ``max_log_nfa`` is an option rather than fixed at 0 (see docs/scoring.md).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

__all__ = ["chance_probability", "hull_area", "log_binomial_tail", "log_nfa", "log_nfa_of_fit", "residuals"]

_LN10 = math.log(10.0)
MIN_SAMPLE = 4  # matches that fix a homography


def chance_probability(tolerance: float, area: float) -> float:
    """Probability that a random listing keypoint falls within ``tolerance`` pixels of a
    given point of a listing of ``area`` pixels: ``min(1, pi * tolerance^2 / area)``.

    Example:
        >>> round(chance_probability(5.0, 640 * 480), 6)
        0.000256
    """
    if area <= 0:
        return 1.0
    return float(min(1.0, math.pi * tolerance * tolerance / area))


@cache
def _log_factorials(n: int) -> np.ndarray:
    """ln(i!) for i = 0..n (cached for the largest n seen; slices serve smaller ones)."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _ln_factorials(n: int) -> np.ndarray:
    size = 1 << max(10, (n + 1).bit_length())  # grow in powers of two: few cache entries
    return _log_factorials(size)[: n + 1]


def log_binomial_tail(trials: int, successes: np.ndarray | int, p: np.ndarray | float) -> np.ndarray:
    """``log10 P[Binomial(trials, p) >= successes]``, element-wise over ``successes`` and
    ``p`` (broadcast), exact in log space (no underflow for tails of 1e-1000).

    Example:
        >>> float(np.round(log_binomial_tail(10, 0, 0.3), 6))  # always at least 0 successes
        0.0
        >>> round(float(log_binomial_tail(2, 2, 0.5)), 4)       # log10 0.25
        -0.6021
    """
    successes, p = np.broadcast_arrays(np.asarray(successes, np.int64), np.asarray(p, np.float64))
    shape = successes.shape
    s, q = successes.ravel(), p.ravel()
    lf = _ln_factorials(trials)
    j = np.arange(trials + 1)
    log_choose = lf[trials] - lf[j] - lf[trials - j]  # ln C(trials, j)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.clip(q, 1e-300, 1.0 - 1e-16)[:, None]
        terms = log_choose[None, :] + j[None, :] * np.log(inner) + (trials - j)[None, :] * np.log1p(-inner)
    terms = np.where(j[None, :] >= s[:, None], terms, -np.inf)  # only j >= successes count
    top = terms.max(axis=1, initial=-np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (top + np.log(np.exp(terms - np.where(np.isfinite(top), top, 0.0)[:, None]).sum(axis=1))) / _LN10
    out = np.where(s <= 0, 0.0, out)
    out = np.where((s > trials) | ((q <= 0.0) & (s > 0)), -np.inf, out)
    out = np.where((q >= 1.0) & (s <= trials), 0.0, out)
    return np.minimum(out, 0.0).reshape(shape)


def log_nfa(inliers: int, matches: int, p: float, tests: int = 1) -> float:
    """``log10`` of the number of false alarms of a homography with ``inliers`` of
    ``matches`` ratio-test matches within a tolerance whose chance probability is ``p``
    (:func:`chance_probability`), over ``tests`` verified references (module docstring).
    Fewer than 5 inliers (4 fix the homography) or 4 matches prove nothing: ``log10``
    of the number of hypotheses, at least 0.

    Example:
        >>> p = chance_probability(5.0, 640 * 480)
        >>> round(log_nfa(40, 60, p), 1) < -50 < round(log_nfa(6, 60, p), 1)   # many inliers: no chance
        True
        >>> log_nfa(8, 60, p) < log_nfa(8, 200, p)  # the same inliers among more matches: likelier
        True
        >>> log_nfa(12, 60, p) < log_nfa(8, 60, p)  # more inliers: less likely by chance
        True
    """
    n, k = int(matches), int(inliers)
    hypotheses = _log_hypotheses(n, tests)
    if k <= MIN_SAMPLE or n <= MIN_SAMPLE:
        return float(max(hypotheses, 0.0))
    tail = float(log_binomial_tail(n - MIN_SAMPLE, min(k, n) - MIN_SAMPLE, p))
    return float(hypotheses + tail)


def log_nfa_of_fit(
    residuals: np.ndarray, matches: int, area: float, tolerance: float, tests: int = 1, resolution: float = 1.0
) -> tuple[float, int]:
    """ORSA's criterion for one fit: the smallest :func:`log_nfa` over ``k``, each ``k`` with
    its own tolerance ``eps_k`` from the k-th smallest residual ``r_k`` (at most ``tolerance``)::

        eps_k = max(r_k * sqrt(k / (k - 4)), resolution)

    The factor undoes the fit's own bias: a homography refined on its ``k`` inliers (8
    parameters, ``2k`` coordinates) leaves residuals smaller than an independent point's by
    about ``sqrt((k - 4) / k)`` — with 5 inliers it fits them almost exactly. ``resolution``
    is the finest tolerance that means anything (keypoint localisation: about a pixel of the
    image features were found at).

    Args:
        residuals: Reprojection errors of the matches (one per distinct listing keypoint),
            in the pixels ``area`` is measured in.
        matches: ``n``, the ratio-test matches (distinct listing keypoints) the fit chose from.
        area: The listing's area, pixels.
        tolerance: The largest residual that counts (RANSAC's inlier tolerance).
        tests: References verified for the listing.
        resolution: The smallest ``eps_k``, same pixels.

    Returns:
        (log10 NFA, the k that attains it).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> true_fit = np.concatenate([rng.uniform(0, 1.0, 30), rng.uniform(20, 400, 30)])
        >>> chance_fit = np.concatenate([rng.uniform(3, 5.0, 6), rng.uniform(20, 400, 54)])
        >>> log_nfa_of_fit(true_fit, 60, 640 * 480, 5.0)[0] < -40
        True
        >>> log_nfa_of_fit(chance_fit, 60, 640 * 480, 5.0)[0] > 0
        True
    """
    n = int(matches)
    within = np.sort(np.asarray(residuals, np.float64))
    within = within[within <= tolerance][:n]
    hypotheses = _log_hypotheses(n, tests)
    if len(within) <= MIN_SAMPLE or n <= MIN_SAMPLE:
        return float(max(hypotheses, 0.0)), len(within)
    ks = np.arange(MIN_SAMPLE + 1, len(within) + 1)
    eps = np.maximum(within[ks - 1] * np.sqrt(ks / (ks - MIN_SAMPLE)), resolution)
    p = np.minimum(1.0, np.pi * eps * eps / max(area, 1e-9))
    tails = log_binomial_tail(n - MIN_SAMPLE, ks - MIN_SAMPLE, p)
    best = int(np.argmin(tails))
    return float(hypotheses + tails[best]), int(ks[best])


def residuals(homography: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reprojection errors ``|H src - dst|`` (pixels of ``dst``), ``inf`` where a point
    maps through the horizon. ``src``, ``dst``: (n, 2)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    projected = np.column_stack([src, np.ones(len(src))]) @ np.asarray(homography, np.float64).T
    w = projected[:, 2]
    ok = np.abs(w) > 1e-12
    out = np.full(len(src), np.inf)
    out[ok] = np.linalg.norm(projected[ok, :2] / w[ok, None] - dst[ok], axis=1)
    return out


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (n, 2) points, pixels^2 (0 for fewer than 3 or collinear).

    Example:
        >>> hull_area(np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5]]))
        100.0
    """
    import cv2

    points = np.asarray(points, np.float32).reshape(-1, 2)
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points)))


def _log_hypotheses(n: int, tests: int) -> float:
    """log10 of N_tests * (n - 4) * C(n, 4): the fits a search over ``tests`` references
    could report."""
    if n < MIN_SAMPLE:
        return math.log10(max(tests, 1))
    lf = _ln_factorials(n)
    choose = (lf[n] - lf[MIN_SAMPLE] - lf[n - MIN_SAMPLE]) / _LN10
    return math.log10(max(tests, 1)) + math.log10(max(n - MIN_SAMPLE, 1)) + float(choose)
