"""Precision/recall/FPR curves over global thresholds, and the operating points read off them.

Definitions (pair vs query level, worst-case ties, where a threshold can cut) are in
:mod:`detector.evaluation.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.evaluation.scores import EvalScores, EvaluationError


@dataclass(frozen=True)
class PRCurve:
    """Precision/recall/FPR at every distinct global threshold, highest threshold first.

    Attributes:
        level: "pair" (pooled predictions, as µAP) or "query" (each query's top brand, as a flag).
        thresholds: Distinct scores, descending; point i flags ``score >= thresholds[i]``.
        precision, recall, fpr: At each threshold (FPR = logo-free queries reaching it).
        tp, n_flagged: True and total accepted items (pairs or queries) at each threshold.
        n_positive, n_logo_free: Recall and FPR denominators.
    """

    level: str
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    fpr: np.ndarray
    tp: np.ndarray
    n_flagged: np.ndarray
    n_positive: int
    n_logo_free: int


@dataclass(frozen=True)
class OperatingPoint:
    """One point of a PR curve.

    Attributes:
        threshold: Score threshold (``>=`` flags), or None when no threshold meets the target.
        precision, recall, fpr: At that threshold (recall 0 and NaN precision when unmet).
        target_precision: The precision asked for, if this point answers a target.
        met: Whether the target was reached (always True for a point read at a threshold).
    """

    threshold: float | None
    precision: float
    recall: float
    fpr: float
    target_precision: float | None = None
    met: bool = True


def pair_pr_curve(scores: EvalScores) -> PRCurve:
    """PR curve of all (query, brand) predictions pooled, as used by µAP."""
    return _curve("pair", scores.score, scores.is_true, scores)


def query_pr_curve(scores: EvalScores) -> PRCurve:
    """PR curve of the flag decision under one global threshold (each query's top brand)."""
    top = scores.top_prediction()
    idx = top[top >= 0]
    return _curve("query", scores.score[idx], scores.is_true[idx], scores)


def recall_at_precision(curve: PRCurve, target: float) -> OperatingPoint:
    """Highest recall with precision >= ``target`` and the (highest) threshold that gives it.

    When no threshold reaches the target: ``met=False``, recall 0, threshold None.

    Raises:
        EvaluationError: ``target`` is outside (0, 1].
    """
    if not 0.0 < target <= 1.0:
        raise EvaluationError(f"target precision must be in (0, 1], got {target}")
    ok = np.flatnonzero((curve.precision >= target) & (curve.tp > 0))
    if len(ok) == 0:
        return OperatingPoint(None, math.nan, 0.0, 0.0, target_precision=target, met=False)
    best_recall = curve.recall[ok].max()
    i = int(ok[curve.recall[ok] == best_recall][0])  # first = highest threshold at that recall
    return point_on_curve(curve, i, target, met=True)


def point_on_curve(curve: PRCurve, i: int, target: float | None, *, met: bool) -> OperatingPoint:
    """The operating point at index ``i`` of ``curve``."""
    return OperatingPoint(
        float(curve.thresholds[i]),
        float(curve.precision[i]),
        float(curve.recall[i]),
        float(curve.fpr[i]),
        target_precision=target,
        met=met,
    )


def point_at_threshold(curve: PRCurve, threshold: float) -> OperatingPoint:
    """The curve's point for a global threshold (nothing flagged above the highest score)."""
    i = int(np.searchsorted(-curve.thresholds, -threshold, side="right")) - 1
    if i < 0:
        return OperatingPoint(float(threshold), math.nan, 0.0, 0.0)
    return OperatingPoint(
        float(threshold), float(curve.precision[i]), float(curve.recall[i]), float(curve.fpr[i])
    )


def _curve(level: str, score: np.ndarray, is_true: np.ndarray, scores: EvalScores) -> PRCurve:
    top = scores.top_prediction()
    neg = ~scores.positive
    neg_top = top[neg]
    return pr_curve_from_arrays(
        level,
        score,
        is_true,
        int(scores.positive.sum()),
        scores.score[neg_top[neg_top >= 0]],
        int(neg.sum()),
    )


def pr_curve_from_arrays(
    level: str,
    score: np.ndarray,
    is_true: np.ndarray,
    n_pos: int,
    neg_scores: np.ndarray,
    n_logo_free: int,
) -> PRCurve:
    """PR curve of scored items at each distinct threshold (ends of runs of equal scores).

    Args:
        level: Label stored in the curve.
        score, is_true: The items (pairs or query flags) and whether each is right.
        n_pos: Recall denominator.
        neg_scores: For logo-free queries that can be flagged, the score at which they are
            (others may be left out or given -inf).
        n_logo_free: FPR denominator (all logo-free queries).
    """
    order = np.lexsort((is_true, -score))
    s, t = score[order], is_true[order]
    tp = np.cumsum(t)
    n = np.arange(1, len(s) + 1)
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    thr = s[last]
    neg_sorted = np.sort(neg_scores)
    # logo-free queries whose score reaches each threshold
    neg_flag = len(neg_sorted) - np.searchsorted(neg_sorted, thr, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = neg_flag / n_logo_free if n_logo_free else np.full(len(thr), math.nan)
        recall = tp[last] / n_pos if n_pos else np.full(len(thr), math.nan)
    return PRCurve(
        level=level,
        thresholds=thr,
        precision=tp[last] / n[last],
        recall=recall,
        fpr=np.asarray(fpr, dtype=np.float64),
        tp=tp[last],
        n_flagged=n[last],
        n_positive=n_pos,
        n_logo_free=n_logo_free,
    )
