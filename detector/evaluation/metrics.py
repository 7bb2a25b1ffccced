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
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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
__test__ = {"micro_average_precision": micro_average_precision}

NEG_INF = float("-inf")


# ---- values -------------------------------------------------------------------------------


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


# ---- threshold table outcomes ------------------------------------------------------------------


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
