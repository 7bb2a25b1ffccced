"""Metrics against small hand-computed cases (ties, logo-free and never-retrieved queries)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detector.evaluation.metrics import (
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
from detector.evaluation.scores import (
    EvalScores,
    EvaluationError,
    Prediction,
    Query,
    synthetic_scores,
)
from detector.thresholds import Thresholds
from index.records import Match


@pytest.fixture()
def hand() -> EvalScores:
    """q0=A, q1=B, q2 logo-free, q3=C never retrieved.

    Pooled, worst-case order: .9 F(q2,A), .9 T(q0,A), .8 T(q1,B), .7 F(q1,A), .5 F(q0,B), .4 F(q2,B)
    """
    queries = [
        Query("q0", "A", kind="logo", group="g1"),
        Query("q1", "B", kind="product", group="g1"),
        Query("q2", None, kind="logo", group="g2"),
        Query("q3", "C", group="g2"),
    ]
    preds = [
        Prediction(0, "A", 0.9, "logo"),
        Prediction(2, "A", 0.9, "logo"),
        Prediction(1, "B", 0.8, "product"),
        Prediction(1, "A", 0.7, "logo"),
        Prediction(0, "B", 0.5, "logo"),
        Prediction(2, "B", 0.4, "logo"),
    ]
    return EvalScores.from_predictions(queries, preds)


def test_micro_ap_hand_computed_with_pessimistic_ties(hand: EvalScores) -> None:
    # true pairs at ranks 2 and 3 of 3 possible: (1/2 + 2/3) / 3 = 7/18; optimistic would be 5/9
    assert micro_average_precision(hand) == pytest.approx(7 / 18)


def test_micro_ap_matches_isc_formula_on_random_data_with_ties() -> None:
    s = synthetic_scores(150, seed=3)
    rounded = EvalScores(
        s.queries, s.query_idx, s.brand, np.round(s.score, 1), s.ref_kind
    )  # many ties
    # independent implementation of DISC21: sort by (score, not true) descending, Σ Δrecall × precision
    keys = sorted(zip(rounded.score.tolist(), (~rounded.is_true).tolist()), reverse=True)
    n_pos = int(rounded.positive.sum())
    tp, ap, prev_recall = 0, 0.0, 0.0
    for k, (_, is_false) in enumerate(keys, start=1):
        tp += not is_false
        recall = tp / n_pos
        ap += (recall - prev_recall) * tp / k
        prev_recall = recall
    assert micro_average_precision(rounded) == pytest.approx(ap)
    assert micro_average_precision(rounded) < micro_average_precision(s) + 0.2  # sanity: same scale


def test_micro_ap_is_nan_without_positives() -> None:
    s = EvalScores.from_predictions([Query("a", None)], [Prediction(0, "A", 0.5, "logo")])
    assert math.isnan(micro_average_precision(s))


def test_pair_curve_points_only_at_tie_group_ends(hand: EvalScores) -> None:
    c = pair_pr_curve(hand)
    np.testing.assert_allclose(c.thresholds, [0.9, 0.8, 0.7, 0.5, 0.4])
    np.testing.assert_allclose(c.precision, [1 / 2, 2 / 3, 2 / 4, 2 / 5, 2 / 6])
    np.testing.assert_allclose(c.recall, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(c.fpr, [1, 1, 1, 1, 1])  # q2's A score 0.9 reaches every threshold
    assert c.n_positive == 3 and c.n_logo_free == 1


def test_recall_at_precision_and_its_threshold(hand: EvalScores) -> None:
    c = pair_pr_curve(hand)
    p = recall_at_precision(c, 0.6)
    assert p.met and p.threshold == 0.8
    assert p.recall == pytest.approx(2 / 3) and p.precision == pytest.approx(2 / 3)
    # at 0.5 both 0.8 and 0.7 give recall 2/3: the higher threshold is reported
    assert recall_at_precision(c, 0.5).threshold == 0.8
    # the tie at 0.9 puts the false match first, so P90 is out of reach (optimistic: R=1/3)
    p90 = recall_at_precision(c, 0.9)
    assert not p90.met and p90.threshold is None and p90.recall == 0.0
    with pytest.raises(EvaluationError):
        recall_at_precision(c, 1.5)


def test_query_curve_uses_each_querys_top_brand(hand: EvalScores) -> None:
    c = query_pr_curve(hand)
    np.testing.assert_allclose(c.thresholds, [0.9, 0.8])
    np.testing.assert_allclose(c.precision, [1 / 2, 2 / 3])
    np.testing.assert_allclose(c.recall, [1 / 3, 2 / 3])
    p = point_at_threshold(c, 0.85)
    assert (p.precision, p.recall, p.fpr) == pytest.approx((1 / 2, 1 / 3, 1.0))
    assert point_at_threshold(c, 0.95).recall == 0.0


def test_top1_and_auc_hand_computed(hand: EvalScores) -> None:
    assert top1_accuracy(hand) == pytest.approx(2 / 3)  # q3 was never retrieved: counts as wrong
    # positives 0.9, 0.8, -inf vs negative 0.9: only the 0.9 tie scores, one half
    assert roc_auc(hand) == pytest.approx(0.5 / 3)


def test_auc_matches_pairwise_count_with_ties() -> None:
    s = synthetic_scores(120, seed=5)
    s = EvalScores(s.queries, s.query_idx, s.brand, np.round(s.score, 1), s.ref_kind)
    top = s.top_prediction()
    q = np.where(top >= 0, s.score[np.maximum(top, 0)], -np.inf)
    pos, neg = q[s.positive], q[~s.positive]
    expected = (
        (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    ) / (len(pos) * len(neg))
    assert roc_auc(s) == pytest.approx(expected)


def test_ties_between_brands_break_against_the_system() -> None:
    s = EvalScores.from_predictions(
        [Query("a", "A")], [Prediction(0, "A", 0.8, "logo"), Prediction(0, "B", 0.8, "logo")]
    )
    assert top1_accuracy(s) == 0.0
    d = s.decide(0.5)
    assert d.flagged[0] and d.brand[0] == "B" and not d.correct[0]


def test_decisions_with_brand_and_kind_overrides(hand: EvalScores) -> None:
    # B passes at 0.45 (q1 B .8, q0 B .5); A at 0.85 (q0 .9, q2 .9). q0 -> A (higher), q1 -> B, q2 -> A
    m = evaluate_decisions(
        hand, Thresholds(default=0.85, brands={"B": {"default": 0.45}}), n_boot=0
    )
    assert (m.n_flagged, m.tp, m.fp_logo_free, m.fp_wrong_brand, m.fn) == (3, 2, 1, 0, 1)
    assert (m.precision, m.recall, m.fpr) == pytest.approx((2 / 3, 2 / 3, 1.0))
    assert m.f1 == pytest.approx(2 / 3)
    # only product references pass (q1 B .8): one right flag, nothing on the logo-free listing
    m = evaluate_decisions(hand, Thresholds(default=0.95, kinds={"product": 0.75}), n_boot=0)
    assert (m.precision, m.recall, m.fpr) == pytest.approx((1.0, 1 / 3, 0.0))
    assert math.isnan(m.precision_ci.low)  # n_boot=0: no intervals


def test_wrong_brand_flag_is_a_false_positive_and_a_miss() -> None:
    s = EvalScores.from_predictions(
        [Query("a", "A"), Query("b", "B")],
        [
            Prediction(0, "B", 0.9, "logo"),
            Prediction(0, "A", 0.6, "logo"),
            Prediction(1, "B", 0.9, "logo"),
        ],
    )
    m = evaluate_decisions(s, 0.5, n_boot=0)
    assert (m.tp, m.fp_wrong_brand, m.fn) == (1, 1, 1)
    assert (m.precision, m.recall) == pytest.approx((0.5, 0.5))
    assert math.isnan(m.fpr)  # no logo-free listings: undefined, not 0


def test_breakdowns_counts_and_brand_figures(hand: EvalScores) -> None:
    m = compute_metrics(hand, 0.85, n_boot=50)
    assert set(m.by_group) == {"g1", "g2"} and set(m.by_kind) == {"logo", "product"}
    assert m.by_group["g1"].n_queries + m.by_group["g2"].n_queries == 4
    assert (m.by_group["g2"].n_positive, m.by_group["g2"].n_logo_free) == (1, 1)
    a = m.by_brand["A"]  # flagged as A: q0 (right) and q2 (logo-free)
    assert a.n_positive == 1 and a.decision is not None
    assert (a.decision.n_flagged, a.decision.tp, a.decision.fp_logo_free) == (2, 1, 1)
    assert a.micro_ap == pytest.approx(0.5)  # A's pairs: .9 F, .9 T, .7 F
    assert a.thresholds["logo"] == {"value": 0.85, "source": "default"}
    assert m.by_brand["C"].n_positive == 1 and m.by_brand["C"].micro_ap == 0.0
    text = json.dumps(m.to_dict(), allow_nan=False)  # NaN must become null
    assert '"micro_ap": 0.3888' in text


def test_bootstrap_intervals_are_seeded_and_widen_with_few_examples() -> None:
    s = synthetic_scores(600, brand_support=(200, 8), seed=1)
    a = compute_metrics(s, 0.7, n_boot=300, seed=7)
    b = compute_metrics(s, 0.7, n_boot=300, seed=7)
    assert a.to_dict() == b.to_dict()
    big, small = a.by_brand["b0"].decision, a.by_brand["b1"].decision
    assert big is not None and small is not None
    for d in (big, small):
        assert d.recall_ci.low <= d.recall <= d.recall_ci.high
    width = lambda ci: ci.high - ci.low
    assert width(small.recall_ci) > 2 * width(big.recall_ci)
    c = compute_metrics(s, 0.7, n_boot=300, seed=8)
    assert c.overall.decision.recall_ci != a.overall.decision.recall_ci  # type: ignore[union-attr]


def test_bootstrap_interval_degenerate_when_all_flags_right() -> None:
    s = EvalScores.from_predictions(
        [Query(str(i), "A") for i in range(10)],
        [Prediction(i, "A", 0.9, "logo") for i in range(10)],
    )
    m = evaluate_decisions(s, 0.5, n_boot=200)
    assert (m.precision_ci.low, m.precision_ci.high) == (1.0, 1.0)


def test_validation_errors() -> None:
    q = [Query("a", "A")]
    with pytest.raises(EvaluationError, match="both for query 0"):
        EvalScores.from_predictions(
            q, [Prediction(0, "A", 0.5, "logo"), Prediction(0, "A", 0.6, "logo")]
        )
    with pytest.raises(EvaluationError, match="outside"):
        EvalScores.from_predictions(q, [Prediction(3, "A", 0.5, "logo")])
    with pytest.raises(EvaluationError, match="not finite"):
        EvalScores.from_predictions(q, [Prediction(0, "A", float("nan"), "logo")])
    with pytest.raises(EvaluationError, match="unknown group"):
        EvalScores.from_predictions(q, []).for_group("nope")


def test_from_matches_keeps_best_per_brand_and_subset_reindexes() -> None:
    def m(brand: str, kind: str, score: float) -> Match:
        return Match(ref_id=0, brand=brand, kind=kind, product_id=None, score=score, source="x")

    queries = [Query("a", "A", group="x"), Query("b", None, group="y")]
    s = EvalScores.from_matches(
        queries, [[m("A", "logo", 0.6), m("A", "product", 0.8)], [m("B", "logo", 0.3)]]
    )
    assert s.n_predictions == 2
    i = int(np.flatnonzero(s.brand == "A")[0])
    assert (s.score[i], s.ref_kind[i]) == (0.8, "product")
    y = s.for_group("y")
    assert y.n_queries == 1 and y.query_idx.tolist() == [0] and y.brand.tolist() == ["B"]


def test_docstring_examples_run() -> None:
    import doctest

    from detector.evaluation import labels, metrics, report, scores, tuning

    for module in (scores, metrics, tuning, labels, report):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0 or module in (labels, report), module.__name__
