"""Tune one table entry (a *slot*: a kind or a brand) with the other entries held fixed.

A slot's curve is the flags its predictions win; its threshold is the max-recall point meeting
the bounds (see :mod:`detector.evaluation.tuning`).
"""

from __future__ import annotations

import numpy as np

from detector.evaluation.pr_curves import (
    OperatingPoint,
    PRCurve,
    point_on_curve,
    pr_curve_from_arrays,
)
from detector.evaluation.scores import EvalScores
from detector.evaluation.tuning_result import SlotResult, _fmt
from detector.thresholds import THRESHOLD_KEYS, Thresholds


def _choose(
    curve: PRCurve, target_precision: float | None, max_fpr: float | None
) -> tuple[OperatingPoint | None, bool]:
    """Max-recall point meeting the constraints; else the point closest to them."""
    if len(curve.thresholds) == 0 or not (curve.tp > 0).any():
        return None, False
    has_tp = curve.tp > 0
    fpr_ok = (
        np.ones(len(curve.thresholds), dtype=bool) if max_fpr is None else (curve.fpr <= max_fpr)
    )
    prec_ok = (
        np.ones(len(curve.thresholds), dtype=bool)
        if target_precision is None
        else (curve.precision >= target_precision)
    )
    ok = np.flatnonzero(has_tp & fpr_ok & prec_ok)
    if len(ok):
        i = int(ok[curve.recall[ok] == curve.recall[ok].max()][0])
        return point_on_curve(curve, i, target_precision, met=True), True
    pool = np.flatnonzero(has_tp & fpr_ok)
    if len(pool) and target_precision is not None:
        # best precision within the FPR bound; the highest recall among equals
        best = curve.precision[pool].max()
        cand = pool[curve.precision[pool] == best]
        i = int(cand[np.argmax(curve.recall[cand])])
    else:
        # the FPR bound itself is out of reach: lowest FPR, then highest precision
        pool = np.flatnonzero(has_tp)
        fpr = np.where(np.isnan(curve.fpr[pool]), np.inf, curve.fpr[pool])
        cand = pool[fpr == fpr.min()]
        i = int(cand[np.argmax(curve.precision[cand])])
    return point_on_curve(curve, i, target_precision, met=False), False


def _kind_candidates(
    scores: EvalScores,
    context: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
    slots: list[SlotResult],
    notes: list[str],
) -> list[tuple[str, int, float]]:
    out = []
    for k in sorted({str(k) for k in scores.ref_kind}):
        if k not in THRESHOLD_KEYS:
            notes.append(
                f"reference kind {k!r} is not a thresholds kind ({', '.join(THRESHOLD_KEYS)}); not tuned"
            )
            continue
        sel = scores.ref_kind == k
        support = _support(scores, sel)
        curve = _slot_curve(scores, context, sel, int(scores.positive.sum()))
        cand = _slot(f"kind:{k}", support, curve, target_precision, max_fpr, min_support)
        if isinstance(cand, SlotResult):
            slots.append(cand)
        else:
            out.append((k, support, cand))
    return out


def _brand_candidates(
    scores: EvalScores,
    context: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
    slots: list[SlotResult],
    notes: list[str],
) -> list[tuple[str, int, float]]:
    out = []
    passing = scores.score >= scores.thresholds_per_prediction(context)
    best1, best2 = _top_two(scores, passing)
    by_brand = scores.predictions_by_brand()
    code_of = {b: i for i, b in enumerate(scores.brands)}
    for b, support in sorted(scores.support().items(), key=lambda kv: (-kv[1], kv[0])):
        mine = by_brand[b]  # at most one prediction per query
        q = scores.query_idx[mine]
        # the best passing prediction of another brand: the runner-up when b itself is the best
        other = best1[q]
        other = np.where(scores.brand_code_of(other) == code_of[b], best2[q], other)
        curve = _wins_curve(scores, mine, q, other, support)
        cand = _slot(f"brand:{b}", support, curve, target_precision, max_fpr, min_support)
        if isinstance(cand, SlotResult):
            slots.append(cand)
            if cand.point is not None and not cand.point.met:
                notes.append(f"brand {b}: {cand.reason}")
        else:
            out.append((b, support, cand))
    return out


def _slot_curve(
    scores: EvalScores, context: Thresholds, in_slot: np.ndarray, n_positive: int
) -> PRCurve:
    """PR curve of the flags won by ``in_slot`` predictions under one shared threshold.

    Predictions outside the slot keep their ``context`` thresholds. A query can be flagged through
    the slot only by its best slot prediction (they share one threshold), and only when that one
    beats the query's best passing outside prediction (equal scores: the wrong brand wins).
    """
    thr = scores.thresholds_per_prediction(context)
    other = scores.best_per_query(~in_slot & (scores.score >= thr))
    mine = scores.best_per_query(in_slot)
    q = np.flatnonzero(mine >= 0)
    return _wins_curve(scores, mine[q], q, other[q], n_positive)


def _wins_curve(
    scores: EvalScores, mine: np.ndarray, q: np.ndarray, other: np.ndarray, n_positive: int
) -> PRCurve:
    """Curve over the slot predictions ``mine`` (of queries ``q``) that beat ``other`` (-1: none)."""
    s, t = scores.score[mine], scores.is_true[mine]
    o_score = np.where(other >= 0, scores.score[np.maximum(other, 0)], -np.inf)
    wins = (s > o_score) | ((s == o_score) & ~t)
    neg = wins & ~scores.positive[q]
    return pr_curve_from_arrays(
        "query", s[wins], t[wins], n_positive, s[neg], int((~scores.positive).sum())
    )


def _top_two(scores: EvalScores, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best and runner-up eligible prediction per query (-1 if none), worst-case tie order."""
    best1 = np.full(scores.n_queries, -1, dtype=np.int64)
    best2 = np.full(scores.n_queries, -1, dtype=np.int64)
    cand = np.flatnonzero(eligible)
    if len(cand) == 0:
        return best1, best2
    order = cand[np.lexsort((scores.is_true[cand], -scores.score[cand], scores.query_idx[cand]))]
    qs = scores.query_idx[order]
    start = np.r_[True, qs[1:] != qs[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(qs)), 0))
    rank = np.arange(len(qs)) - group_start
    best1[qs[rank == 0]] = order[rank == 0]
    best2[qs[rank == 1]] = order[rank == 1]
    return best1, best2


def _slot(
    name: str,
    support: int,
    curve: PRCurve,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
) -> SlotResult | float:
    """A threshold for the slot, or a SlotResult saying why it inherits."""
    if support < min_support:
        return SlotResult(
            name, support, "inherited", None, None, f"support {support} < min_support {min_support}"
        )
    point, met = _choose(curve, target_precision, max_fpr)
    if point is None:
        return SlotResult(
            name, support, "inherited", None, None, "no correct flag at any threshold"
        )
    if not met:
        return SlotResult(
            name,
            support,
            "inherited",
            None,
            point,
            f"target unreachable on its own flags (best precision {_fmt(point.precision)} at "
            f"recall {_fmt(point.recall)}, FPR {_fmt(point.fpr)}); inherits",
        )
    return float(point.threshold)  # type: ignore[arg-type]


def _support(scores: EvalScores, governed: np.ndarray) -> int:
    """A slot's support: queries whose true brand is among the ``governed`` predictions."""
    return int(np.unique(scores.query_idx[governed & scores.is_true]).size)
