"""Retrieval and decision metrics for the counterfeit detector.

Two levels are measured (scores are similarities: higher = more alike):

* **Pair level** (as the Image Similarity Challenge, DISC21 / SSCD ``isc/metrics.py``): every
  (query, brand) prediction from all queries is pooled and sorted by score, descending; equal
  scores are ordered worst-case (false before true). Precision after k predictions =
  true/k; recall = true / (number of queries with a true brand, retrieved or not).
  ``µAP = Σ Δrecall × precision`` over that ranking, i.e. the mean over true pairs of the
  precision at their rank, with never-retrieved pairs contributing 0.
* **Query level** (what a flag does): at a threshold table, a query is flagged when any of its
  predictions reaches the threshold for its (brand, reference kind), as the brand with the
  highest passing score (ties worst-case). A flag is a true positive iff the flagged brand is
  the true brand. ``precision = TP / flagged queries``; ``recall = TP / queries with a true
  brand``; ``FPR = logo-free queries flagged (any brand) / logo-free queries``. A flag of the
  wrong brand on a branded listing is a false positive (and that listing a miss).

Operating points ("recall at P90 and its threshold") are read only where a threshold can cut:
after the last prediction of a score value, never inside a group of equal scores. The
threshold reported is the score of the lowest accepted prediction (``score >= threshold`` is
flagged); any value down to the next lower score gives the same point on this data. Among
thresholds of equal recall the highest is reported.

Other figures: top-1 accuracy (positives whose highest-scoring brand, no threshold, is the true
brand; no prediction counts as wrong) and a detection ROC AUC (each query's highest score,
-inf if none; positives = queries with a true brand, negatives = logo-free queries; ties count
one half). The AUC only measures "is a registered brand here"; naming the right brand is
measured by top-1 accuracy and query-level precision. Uncertainty: percentile bootstrap over
queries (seeded), drawn exactly as a multinomial over per-query outcome patterns.

The figures are computed in :mod:`~detector.evaluation.pr_curves` (curves, operating points),
:mod:`~detector.evaluation.ranking_metrics` (µAP, top-1, AUC) and
:mod:`~detector.evaluation.decision_metrics` (a threshold table's outcome, bootstrap); this module
gathers them per slice (:func:`compute_metrics`) and re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detector.evaluation.decision_metrics import (
    DecisionMetrics,
    Interval,
    _decision_metrics,
    _Outcomes,
    _rng,
    evaluate_decisions,
)
from detector.evaluation.pr_curves import (
    OperatingPoint,
    PRCurve,
    pair_pr_curve,
    point_at_threshold,
    point_on_curve,
    pr_curve_from_arrays,
    query_pr_curve,
    recall_at_precision,
)
from detector.evaluation.ranking_metrics import (
    _auc,
    _average_precision,
    micro_average_precision,
    roc_auc,
    top1_accuracy,
)
from detector.evaluation.scores import EvalScores, EvaluationError, as_thresholds, group_indices
from detector.thresholds import Thresholds

# the figures split out into their own modules stay importable from here
__all__ = [
    "NEG_INF",
    "DecisionMetrics",
    "EvalMetrics",
    "Interval",
    "OperatingPoint",
    "PRCurve",
    "SliceMetrics",
    "compute_metrics",
    "evaluate_decisions",
    "micro_average_precision",
    "pair_pr_curve",
    "point_at_threshold",
    "point_on_curve",
    "pr_curve_from_arrays",
    "query_pr_curve",
    "recall_at_precision",
    "roc_auc",
    "top1_accuracy",
]

# tests/test_metrics.py runs this module's doctests: they cover the examples that moved out too
__test__ = {
    "micro_average_precision": micro_average_precision,
    "evaluate_decisions": evaluate_decisions,
}

NEG_INF = float("-inf")


# ---- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceMetrics:
    """All figures for one slice (overall, a group, a query kind, or a brand).

    Attributes:
        name: "overall", "group:<g>", "kind:<k>" or "brand:<b>".
        n_queries: Queries in the slice (for a brand: its labelled queries).
        n_positive: Queries with a true brand (for a brand: its support).
        n_logo_free: Logo-free queries (FPR denominator).
        micro_ap: Pair-level µAP (NaN without positives).
        pair_at_target: Pair-level recall at the target precision, with its threshold.
        query_at_target: Query-level (flag) recall at the target precision, global threshold.
        top1_accuracy: Share of positives whose top brand is right (NaN without positives).
        roc_auc: Detection ROC AUC (for a brand: one brand's score vs all other queries).
        decision: Outcome at the threshold table, when one was given.
        thresholds: For a brand slice, the threshold and its source per reference kind.
    """

    name: str
    n_queries: int
    n_positive: int
    n_logo_free: int
    micro_ap: float
    pair_at_target: OperatingPoint
    query_at_target: OperatingPoint
    top1_accuracy: float
    roc_auc: float
    decision: DecisionMetrics | None = None
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalMetrics:
    """Overall metrics plus the per-group, per-query-kind and per-brand breakdowns."""

    overall: SliceMetrics
    by_group: dict[str, SliceMetrics]
    by_kind: dict[str, SliceMetrics]
    by_brand: dict[str, SliceMetrics]
    target_precision: float
    confidence: float
    n_boot: int
    seed: int
    thresholds: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and infinities become null)."""
        return _jsonable(asdict(self))


# ---- every figure, per slice ------------------------------------------------------------------


def compute_metrics(
    scores: EvalScores,
    thresholds: Thresholds | float | None = None,
    *,
    target_precision: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> EvalMetrics:
    """Every metric overall and per group, per query kind and per brand.

    Args:
        scores: Labelled predictions.
        thresholds: Table (or global value) for the query-level decision figures; None skips them.
        target_precision: Precision for the "recall at precision" figures (0.9 = R@P90).
        n_boot: Bootstrap replicates for the intervals.
        seed: Bootstrap seed (results are reproducible for a given seed).
        confidence: Interval level.

    Returns:
        EvalMetrics; ``to_dict()`` gives the JSON written by the report.

    Example:
        >>> from detector.evaluation.scores import synthetic_scores
        >>> m = compute_metrics(synthetic_scores(200, seed=0), 0.7, n_boot=100)
        >>> sorted(m.by_group), m.by_brand["b0"].n_positive > m.by_brand["b4"].n_positive
        (['test', 'val'], True)
    """
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise EvaluationError(f"n_boot must be >= 0, got {n_boot}")
    table = as_thresholds(thresholds) if thresholds is not None else None
    opts: dict[str, Any] = {
        "target": target_precision,
        "n_boot": n_boot,
        "seed": seed,
        "confidence": confidence,
    }
    overall = _slice_metrics("overall", scores, table, **opts)
    by_group = {
        g: _slice_metrics(f"group:{g}", scores.for_group(g), table, **opts) for g in scores.groups
    }
    by_kind = {
        k: _slice_metrics(f"kind:{k}", scores.for_query_kind(k), table, **opts)
        for k in scores.query_kinds
    }
    by_brand = _brand_metrics(scores, table, **opts)
    return EvalMetrics(
        overall=overall,
        by_group=by_group,
        by_kind=by_kind,
        by_brand=by_brand,
        target_precision=target_precision,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        thresholds=table.to_dict() if table is not None else None,
    )


# ---- internals -----------------------------------------------------------------------------


def _slice_metrics(
    name: str,
    scores: EvalScores,
    table: Thresholds | None,
    *,
    target: float,
    n_boot: int,
    seed: int,
    confidence: float,
) -> SliceMetrics:
    decision = None
    if table is not None:
        decision = evaluate_decisions(
            scores, table, n_boot=n_boot, seed=seed, confidence=confidence, name=name
        )
    return SliceMetrics(
        name=name,
        n_queries=scores.n_queries,
        n_positive=int(scores.positive.sum()),
        n_logo_free=int((~scores.positive).sum()),
        micro_ap=micro_average_precision(scores),
        pair_at_target=recall_at_precision(pair_pr_curve(scores), target),
        query_at_target=recall_at_precision(query_pr_curve(scores), target),
        top1_accuracy=top1_accuracy(scores),
        roc_auc=roc_auc(scores),
        decision=decision,
    )


def _brand_metrics(
    scores: EvalScores,
    table: Thresholds | None,
    *,
    target: float,
    n_boot: int,
    seed: int,
    confidence: float,
) -> dict[str, SliceMetrics]:
    """One-vs-rest figures for each brand; O(that brand's queries) per brand after one pass."""
    n = scores.n_queries
    logo_free = ~scores.positive
    n_logo_free = int(logo_free.sum())
    top = scores.top_prediction()
    top_code = scores.brand_code_of(top)
    positives_of = group_indices(scores.true_code, len(scores.brands))
    flagged_as: list[np.ndarray] | None = None
    if table is not None:
        d = scores.decide(table)
        flag_code = scores.brand_code_of(d.prediction)
        flagged_as = group_indices(flag_code, len(scores.brands))
    by_brand = scores.predictions_by_brand()
    out: dict[str, SliceMetrics] = {}
    for code, b in enumerate(scores.brands):
        mine = positives_of[code]
        n_pos = len(mine)
        sel = by_brand[b]
        b_score, b_true = scores.score[sel], scores.is_true[sel]
        on_neg = logo_free[scores.query_idx[sel]]
        curve = pr_curve_from_arrays("pair", b_score, b_true, n_pos, b_score[on_neg], n_logo_free)
        at_target = recall_at_precision(curve, target)
        decision = None
        applied: dict[str, dict[str, Any]] = {}
        if flagged_as is not None and table is not None:
            flags = flagged_as[code]
            tp = int((scores.true_code[flags] == code).sum())
            fp_neg = int(logo_free[flags].sum())
            decision = _decision_metrics(
                _Outcomes(
                    tp=tp,
                    fp_wrong_on_positive=0,  # in a brand slice a wrong flag lands off the slice
                    fp_off_slice=len(flags) - tp - fp_neg,
                    fp_logo_free=fp_neg,
                    missed=n_pos - tp,
                    logo_free_clear=n_logo_free - fp_neg,
                    other=n - len(flags) - (n_pos - tp) - (n_logo_free - fp_neg),
                ),
                n_boot=n_boot,
                rng=_rng(seed, f"brand:{b}"),
                confidence=confidence,
            )
            for k in table.keys_in_use():
                a = table.for_match(b, k)
                applied[k] = {"value": a.value, "source": a.source}
        out[b] = SliceMetrics(
            name=f"brand:{b}",
            n_queries=n_pos,
            n_positive=n_pos,
            n_logo_free=n_logo_free,
            micro_ap=_average_precision(b_score, b_true, n_pos),
            pair_at_target=at_target,
            query_at_target=at_target,
            top1_accuracy=float((top_code[mine] == code).mean()) if n_pos else math.nan,
            roc_auc=_auc(b_score, b_true, n_pos, n - n_pos),
            decision=decision,
            thresholds=applied,
        )
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value
