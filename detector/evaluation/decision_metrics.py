"""Query-level figures of a threshold table (precision, recall, F1, FPR) with bootstrap intervals.

Definitions (what a flag is, who counts as a false positive) are in
:mod:`detector.evaluation.metrics`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from detector.evaluation.scores import EvalScores
from detector.thresholds import Thresholds


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval (NaN bounds when the figure is undefined)."""

    low: float
    high: float


@dataclass(frozen=True)
class DecisionMetrics:
    """Query-level outcome of a threshold table on a slice of queries.

    For a brand slice, "flagged" means flagged as that brand, positives are that brand's
    queries, and FPR is the share of all logo-free queries flagged as that brand.
    """

    n_flagged: int
    tp: int
    fp_wrong_brand: int
    fp_logo_free: int
    fn: int
    precision: float
    recall: float
    f1: float
    fpr: float
    precision_ci: Interval
    recall_ci: Interval
    fpr_ci: Interval


def evaluate_decisions(
    scores: EvalScores,
    thresholds: Thresholds | float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    name: str = "overall",
) -> DecisionMetrics:
    """Query-level precision/recall/F1/FPR at a threshold table, with bootstrap intervals.

    Args:
        scores: Labelled predictions.
        thresholds: A table, or one global threshold.
        n_boot: Bootstrap replicates (0 disables the intervals: NaN bounds).
        seed: RNG seed; combined with ``name`` so each slice has its own stream.
        confidence: Two-sided interval level.
        name: Slice name (only seeds the RNG).

    Example:
        >>> from detector.evaluation.scores import synthetic_scores
        >>> m = evaluate_decisions(synthetic_scores(200, seed=0), 0.7)
        >>> 0.0 <= m.precision_ci.low <= m.precision <= m.precision_ci.high <= 1.0
        True
    """
    d = scores.decide(thresholds)
    pos, neg = scores.positive, ~scores.positive
    return _decision_metrics(
        _Outcomes(
            tp=int(d.correct.sum()),
            fp_wrong_on_positive=int((d.flagged & pos & ~d.correct).sum()),
            fp_off_slice=0,
            fp_logo_free=int((d.flagged & neg).sum()),
            missed=int((pos & ~d.flagged).sum()),
            logo_free_clear=int((neg & ~d.flagged).sum()),
            other=0,
        ),
        n_boot=n_boot,
        rng=_rng(seed, name),
        confidence=confidence,
    )


@dataclass(frozen=True)
class _Outcomes:
    """Queries of a slice by outcome; these counts determine every decision figure."""

    tp: int  # flagged, right brand
    fp_wrong_on_positive: int  # a branded listing of the slice flagged as another brand
    fp_off_slice: int  # brand slice: another brand's listing flagged as this brand
    fp_logo_free: int  # a logo-free listing flagged
    missed: int  # a positive of the slice not flagged (right)
    logo_free_clear: int  # a logo-free listing not flagged
    other: int  # none of the above (brand slice: other brands' listings left alone)

    # per outcome: (tp, flagged, positive, logo-free flagged, logo-free)
    PATTERNS = np.array(
        [
            [1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 1, 0, 1, 1],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.int64,
    )

    def counts(self) -> np.ndarray:
        return np.array(
            [
                self.tp,
                self.fp_wrong_on_positive,
                self.fp_off_slice,
                self.fp_logo_free,
                self.missed,
                self.logo_free_clear,
                self.other,
            ],
            dtype=np.int64,
        )


def _decision_metrics(
    o: _Outcomes, *, n_boot: int, rng: np.random.Generator, confidence: float
) -> DecisionMetrics:
    n_flagged = o.tp + o.fp_wrong_on_positive + o.fp_off_slice + o.fp_logo_free
    n_pos = o.tp + o.fp_wrong_on_positive + o.missed
    n_neg = o.fp_logo_free + o.logo_free_clear
    precision_ci, recall_ci, fpr_ci = _bootstrap(
        o.counts(), n_boot=n_boot, rng=rng, confidence=confidence
    )
    return DecisionMetrics(
        n_flagged=n_flagged,
        tp=o.tp,
        fp_wrong_brand=o.fp_wrong_on_positive + o.fp_off_slice,
        fp_logo_free=o.fp_logo_free,
        fn=n_pos - o.tp,
        precision=_ratio(o.tp, n_flagged),
        recall=_ratio(o.tp, n_pos),
        f1=2 * o.tp / (n_flagged + n_pos) if (n_flagged + n_pos) else math.nan,
        fpr=_ratio(o.fp_logo_free, n_neg),
        precision_ci=precision_ci,
        recall_ci=recall_ci,
        fpr_ci=fpr_ci,
    )


def _bootstrap(
    counts: np.ndarray, *, n_boot: int, rng: np.random.Generator, confidence: float
) -> tuple[Interval, Interval, Interval]:
    """Percentile intervals of precision, recall and FPR when the slice's queries are resampled.

    Resampling n queries with replacement is a multinomial draw over the outcome counts
    (``_Outcomes``), which is exact and costs O(outcomes) per replicate instead of O(n).
    """
    nan = Interval(math.nan, math.nan)
    n = int(counts.sum())
    if n_boot == 0 or n == 0:
        return nan, nan, nan
    draws = rng.multinomial(n, counts / n, size=n_boot)  # (n_boot, outcomes)
    sums = draws @ _Outcomes.PATTERNS  # (n_boot, 5)
    with np.errstate(invalid="ignore", divide="ignore"):
        figures = (sums[:, 0] / sums[:, 1], sums[:, 0] / sums[:, 2], sums[:, 3] / sums[:, 4])
    alpha = (1.0 - confidence) / 2.0
    out = []
    for f in figures:
        f = f[np.isfinite(f)]
        if len(f) == 0:
            out.append(nan)
        else:
            lo, hi = np.quantile(f, [alpha, 1.0 - alpha])
            out.append(Interval(float(lo), float(hi)))
    return out[0], out[1], out[2]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def rate_upper_bound(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen ``events`` times in ``trials``.

    A bootstrap interval of "0 of 40 flagged" is [0, 0]; this bound says what such a count
    still allows (about 3/40: the rule of three), so a tuning set too small to show a target
    false-flag rate is reported as such. NaN for no trials.

    Example:
        >>> round(rate_upper_bound(0, 300), 4)  # 0 of 300 shows a rate under 1 %
        0.0099
    """
    if trials <= 0:
        return math.nan
    if events >= trials:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:  # P(X <= events) for X ~ Binomial(trials, p)
        return sum(math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(events + 1))

    low, high = events / trials, 1.0
    for _ in range(60):  # cdf falls with p: bisect for cdf(p) = alpha
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) > alpha else (low, mid)
    return high


def trials_to_show(rate: float, confidence: float = 0.95) -> int | None:
    """Trials with no event needed for :func:`rate_upper_bound` to reach ``rate`` (None for 0)."""
    if rate <= 0:
        return None
    if rate >= 1:
        return 1
    return math.ceil(math.log(1 - confidence) / math.log(1 - rate))
