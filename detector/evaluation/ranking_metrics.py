"""Threshold-free ranking figures: µAP, top-1 accuracy and the detection ROC AUC.

Definitions (pooling, worst-case ties, who counts as positive) are in
:mod:`detector.evaluation.metrics`.
"""

from __future__ import annotations

import math

import numpy as np

from detector.evaluation.scores import EvalScores


def micro_average_precision(scores: EvalScores) -> float:
    """µAP (DISC21): pooled predictions, worst-case ties, recall over all true pairs.

    Returns NaN when no query has a true brand.

    Example:
        >>> from detector.evaluation.scores import Query, Prediction
        >>> qs = [Query("a", "acme"), Query("b", None)]
        >>> s = EvalScores.from_predictions(qs, [Prediction(0, "acme", .9, "logo"),
        ...                                      Prediction(1, "acme", .9, "logo")])
        >>> micro_average_precision(s)  # the false match ranks first at the tie
        0.5
    """
    return _average_precision(scores.score, scores.is_true, int(scores.positive.sum()))


def top1_accuracy(scores: EvalScores) -> float:
    """Share of queries with a true brand whose highest-scoring brand is it (NaN if none)."""
    n_pos = int(scores.positive.sum())
    if n_pos == 0:
        return math.nan
    top = scores.top_prediction()
    hit = (top >= 0) & scores.positive
    return float(scores.is_true[top[hit]].sum() / n_pos)


def roc_auc(scores: EvalScores) -> float:
    """Detection ROC AUC: top score per query, branded vs logo-free queries (NaN if one is empty)."""
    top = scores.top_prediction()
    has = top >= 0
    return _auc(
        scores.score[top[has]],
        scores.positive[has],
        int(scores.positive.sum()),
        int((~scores.positive).sum()),
    )


def _average_precision(score: np.ndarray, is_true: np.ndarray, n_pos: int) -> float:
    if n_pos == 0:
        return math.nan
    order = np.lexsort((is_true, -score))
    t = is_true[order]
    tp = np.cumsum(t)
    precision = tp / np.arange(1, len(t) + 1)
    # Δrecall is 1/n_pos at each true pair and 0 elsewhere
    return float(precision[t].sum() / n_pos)


def _auc(score: np.ndarray, positive: np.ndarray, n_pos: int, n_neg: int) -> float:
    """Mann-Whitney AUC where only some items have a score; the others tie below all scores.

    Args:
        score, positive: The scored items and their labels.
        n_pos, n_neg: Totals, scored or not (unscored items rank last, tied).
    """
    if n_pos == 0 or n_neg == 0:
        return math.nan
    pos_f = int(positive.sum())
    neg_f = len(score) - pos_f
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # mid-rank of each tie group, from 1
    u_scored = avg_rank[inv][positive].sum() - pos_f * (pos_f + 1) / 2.0
    neg_unscored, pos_unscored = n_neg - neg_f, n_pos - pos_f
    # scored positives beat unscored negatives; unscored pairs tie (one half)
    u = u_scored + pos_f * neg_unscored + 0.5 * pos_unscored * neg_unscored
    return float(u / (n_pos * n_neg))
