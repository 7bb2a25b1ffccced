"""Evaluation toolkit: labelled scores, metrics (µAP, R@P90, P/R/FPR), tuning and reports.

Typical use::

    labels = read_labels("eval/labels.jsonl")
    scores = EvalScores.from_matches(labels.queries, matches_per_query)   # from the scorer
    result = tune_thresholds(scores, target_precision=0.95)
    write_report("reports/run1", scores, result.thresholds, title="run 1")

Plots need matplotlib (the ``eval`` extra); it is imported only when a plot is drawn.
"""

from detector.evaluation.labels import LabelsError, LabelSet, read_labels
from detector.evaluation.metrics import (
    DecisionMetrics,
    EvalMetrics,
    Interval,
    OperatingPoint,
    PRCurve,
    SliceMetrics,
    compute_metrics,
    evaluate_decisions,
    micro_average_precision,
    pair_pr_curve,
    point_at_threshold,
    query_pr_curve,
    recall_at_precision,
    roc_auc,
    top1_accuracy,
)
from detector.evaluation.report import ReportFiles, write_report
from detector.evaluation.scores import (
    Decisions,
    EvalScores,
    EvaluationError,
    Prediction,
    Query,
    synthetic_scores,
)
from detector.evaluation.tuning import (
    HoldoutResult,
    SlotResult,
    TuningResult,
    evaluate_holdout,
    split_by_group,
    split_random,
    tune_thresholds,
)

__all__ = [
    "DecisionMetrics",
    "Decisions",
    "EvalMetrics",
    "EvalScores",
    "EvaluationError",
    "HoldoutResult",
    "Interval",
    "LabelSet",
    "LabelsError",
    "OperatingPoint",
    "PRCurve",
    "Prediction",
    "Query",
    "ReportFiles",
    "SliceMetrics",
    "SlotResult",
    "TuningResult",
    "compute_metrics",
    "evaluate_decisions",
    "evaluate_holdout",
    "micro_average_precision",
    "pair_pr_curve",
    "point_at_threshold",
    "query_pr_curve",
    "read_labels",
    "recall_at_precision",
    "roc_auc",
    "split_by_group",
    "split_random",
    "synthetic_scores",
    "top1_accuracy",
    "tune_thresholds",
    "write_report",
]
