"""``counterfeit tune --transfer-eval``: a tuned table measured on a second labelled set."""

from __future__ import annotations

import dataclasses

import numpy as np

from detector.evaluation.jobs import transfer_job
from detector.evaluation.runner import SCORES_FILE, save_scores
from detector.evaluation.synthetic import synthetic_scores
from detector.evaluation.transfer_check import check_transfer
from detector.evaluation.tuning import tune_thresholds


def _louder_negatives(scores, shift: float):
    """The same set with every prediction for a logo-free listing scored ``shift`` higher: a
    collection where look-alikes score as high as true matches."""
    negative = np.array([q.brand is None for q in scores.queries])[scores.query_idx]
    return dataclasses.replace(scores, score=scores.score + shift * negative)


def test_a_table_that_transfers_gives_no_warning_and_one_that_does_not_warns():
    tuned_on = synthetic_scores(400, seed=0)
    table = tune_thresholds(tuned_on, target_precision=0.9, max_fpr=0.01).thresholds
    same = check_transfer(table, tuned_on, synthetic_scores(400, seed=0), name="copy")
    assert same.warnings == () and same.other.fpr == same.in_sample.fpr
    louder = check_transfer(table, tuned_on, _louder_negatives(tuned_on, 0.5), name="other")
    assert louder.other.fpr > louder.in_sample.fpr + 0.02
    assert any("false-flag rate does not transfer to other" in w for w in louder.warnings)
    assert "WARNING" in louder.summary()


def test_transfer_job_reads_eval_folders(tmp_path):
    tuned_on = synthetic_scores(300, seed=2)
    for name, scores in (("tuned", tuned_on), ("flags", _louder_negatives(tuned_on, 0.5))):
        (tmp_path / name).mkdir()
        save_scores(scores, tmp_path / name / SCORES_FILE)
    table = tune_thresholds(tuned_on, target_precision=0.9, max_fpr=0.01).thresholds
    (check,) = transfer_job(table, tmp_path / "tuned", [tmp_path / "flags"], margin=0.02)
    assert check.name == "flags" and check.warnings
