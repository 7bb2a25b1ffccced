"""Held-out-brand negatives: each branded listing scored as if its brand were not indexed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.cli import main as cli_main
from detector.evaluation.held_out_brands import (
    HELD_OUT_GROUP,
    held_out_brand_negatives,
    with_held_out_brands,
)
from detector.evaluation.runner import save_scores
from detector.evaluation.scores import EvalScores, Prediction, Query
from detector.evaluation.synthetic import synthetic_scores
from detector.evaluation.tuning import tune_thresholds
from detector.thresholds import load_thresholds


def _second_brand_close() -> EvalScores:
    """60 branded listings, true score 0.6-1.0 and a look-alike brand 0.05 below it; 20
    logo-free listings, all below 0.5: the real negatives say nothing about the look-alikes."""
    rng = np.random.default_rng(0)
    queries = [Query(f"p{i}.jpg", f"brand{i % 6}", "logo", "copy") for i in range(60)]
    queries += [Query(f"n{i}.jpg", None, None, "neg_nologo") for i in range(20)]
    preds = []
    for i in range(60):
        true = float(rng.uniform(0.6, 1.0))
        preds.append(Prediction(i, f"brand{i % 6}", true, "logo"))
        preds.append(Prediction(i, f"brand{(i + 1) % 6}", true - 0.05, "logo"))
    for i in range(60, 80):
        preds.append(Prediction(i, "brand0", float(rng.uniform(0.2, 0.5)), "logo"))
    return EvalScores.from_predictions(queries, preds)


def test_negatives_are_the_branded_listings_without_their_brand() -> None:
    scores = synthetic_scores(300, seed=3, logo_free_fraction=0.25)
    held = held_out_brand_negatives(scores)
    positives = [q for q in scores.queries if q.brand is not None]
    assert held.n_queries == len(positives)
    assert all(q.brand is None and q.group == HELD_OUT_GROUP for q in held.queries)
    assert len({q.id for q in held.queries}) == held.n_queries
    # every wrong-brand prediction of a positive query survives, unchanged; no true one does
    positive_query = scores.positive[scores.query_idx]
    expected = sorted(
        zip(scores.brand[positive_query & ~scores.is_true], scores.score[positive_query & ~scores.is_true])
    )
    assert sorted(zip(held.brand, held.score)) == expected
    merged = with_held_out_brands(scores)
    assert merged.queries[: scores.n_queries] == scores.queries
    assert merged.n_queries == scores.n_queries + held.n_queries
    assert int((~merged.positive).sum()) == int((~scores.positive).sum()) + len(positives)


def test_tuning_with_them_keeps_look_alikes_below_the_threshold() -> None:
    scores = _second_brand_close()
    plain = tune_thresholds(scores, target_precision=0.95, max_fpr=0.0, per_brand=False, n_boot=0)
    held = tune_thresholds(
        with_held_out_brands(scores), target_precision=0.95, max_fpr=0.0, per_brand=False, n_boot=0
    )
    look_alike_max = float(scores.score[~scores.is_true & scores.positive[scores.query_idx]].max())
    assert plain.met and held.met
    # the 20 real negatives (all below 0.5) let every branded listing be flagged ...
    assert plain.thresholds.default <= float(scores.score[scores.is_true].min())
    # ... though 60 look-alike scores reach up to 0.95: the held-out negatives see them
    assert held.thresholds.default > look_alike_max
    assert plain.expected.recall == 1.0 and held.expected.recall < 1.0


def test_tune_command_takes_the_option(tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    save_scores(_second_brand_close(), eval_dir / "scores.jsonl")
    for flag, out in (([], "plain.json"), (["--held-out-brands"], "held.json")):
        code = cli_main(
            ["tune", "--eval", str(eval_dir), "--out", str(tmp_path / out), "--max-fpr", "0",
             "--min-support", "1000", *flag]
        )  # fmt: skip
        assert code == 0
    assert load_thresholds(tmp_path / "held.json").default > load_thresholds(tmp_path / "plain.json").default


def test_tuning_says_what_its_logo_free_listings_can_show() -> None:
    scores = _second_brand_close()  # 20 logo-free listings
    note = next(n for n in tune_thresholds(scores, max_fpr=0.01, n_boot=0).notes if "95 %" in n)
    assert "0 of 20 logo-free listings flagged" in note and "13.9%" in note
    assert ">= 299 logo-free listings" in note
    held = tune_thresholds(with_held_out_brands(scores), max_fpr=0.01, per_brand=False, n_boot=0)
    assert any("of 80 logo-free listings (60 of them held-out-brand negatives)" in n for n in held.notes)


def test_rate_bound_matches_the_closed_form() -> None:
    from detector.evaluation.decision_metrics import rate_upper_bound, trials_to_show

    for n in (10, 40, 299):
        assert abs(rate_upper_bound(0, n) - (1 - 0.05 ** (1 / n))) < 1e-9
    assert rate_upper_bound(3, 100) > rate_upper_bound(2, 100) > rate_upper_bound(1, 100)
    assert rate_upper_bound(5, 5) == 1.0 and np.isnan(rate_upper_bound(0, 0))
    assert rate_upper_bound(0, trials_to_show(0.02)) <= 0.02 < rate_upper_bound(0, trials_to_show(0.02) - 1)
