"""detector.evaluation.runner + jobs: cached scoring of a labelled set, eval/tune commands."""

from __future__ import annotations

import shutil

import pytest

from detector.evaluation.labels import read_labels
from detector.evaluation.runner import load_scores, run_evaluation, save_scores, scoring_context
from detector.scoring import Detector

FAST = {"verify": {"enabled": False}, "regions": {"max_regions": 4}}


def counting(det):
    calls = []
    original = det.embedder.embed
    det.embedder.embed = lambda images: calls.append(len(images)) or original(images)
    return calls


def test_cache_is_used_and_invalidated(tiny_index_dir, sample_set, tmp_path):
    labels_dir = tmp_path / "set"
    shutil.copytree(sample_set.root, labels_dir)
    labels = read_labels(labels_dir / "labels.jsonl")
    cache = tmp_path / "cache.sqlite"
    with Detector.open(tiny_index_dir, device="cpu", config=FAST) as det:
        calls = counting(det)
        first = run_evaluation(det, labels, cache_path=cache)
        first_context = scoring_context(det)
        assert first.computed == len(labels.queries) and first.cached == 0 and calls
        calls.clear()
        second = run_evaluation(det, labels, cache_path=cache)
        assert calls == [] and second.cached == len(labels.queries) and second.computed == 0
        assert second.scores.score.tolist() == first.scores.score.tolist()

        # Changing one image's bytes recomputes that image only.
        changed = labels.image_path(0)
        changed.write_bytes(changed.read_bytes() + b"\0")
        calls.clear()
        third = run_evaluation(det, labels, cache_path=cache)
        assert third.computed == 1 and third.cached == len(labels.queries) - 1

    # Other scoring options (or another model/index) are another context: nothing reused.
    with Detector.open(tiny_index_dir, device="cpu", config={**FAST, "search_k": 7}) as det:
        assert run_evaluation(det, labels, cache_path=cache).cached == 0
    with Detector.open(tiny_index_dir, device="cpu", config={**FAST, "silhouettes": {"weight": 0.1}}) as det:
        assert scoring_context(det) != first_context


def test_scores_round_trip(tiny_index_dir, sample_set, tmp_path):
    labels = read_labels(sample_set.labels_path)
    with Detector.open(tiny_index_dir, device="cpu", config=FAST) as det:
        scores = run_evaluation(det, labels).scores
    path = tmp_path / "scores.jsonl"
    save_scores(scores, path)
    again = load_scores(path)
    assert again.queries == scores.queries
    assert again.score.tolist() == pytest.approx(scores.score.tolist())
    assert list(again.brand) == list(scores.brand)


def test_eval_command_writes_scores_and_report(tiny_index_dir, sample_set, tmp_path):
    from detector.cli import main

    out = tmp_path / "eval"
    code = main(["eval", "--index", str(tiny_index_dir), "--labels", str(sample_set.labels_path),
                 "--out", str(out), "--no-verify", "--device", "cpu"])
    assert code == 0
    for name in ("scores.jsonl", "cache.sqlite", "report/metrics.json", "report/summary.md",
                 "report/pr_curve.png", "report/score_hist.png", "report/brand_thresholds.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(load_scores(out / "scores.jsonl").queries) == sample_set.n_listings


@pytest.mark.parametrize("holdout", [False, True])
def test_tune_command(tmp_path, holdout):
    from detector.cli import main
    from detector.evaluation.scores import synthetic_scores
    from detector.thresholds import load_thresholds

    out = tmp_path / "eval"
    out.mkdir()
    save_scores(synthetic_scores(600, seed=3), out / "scores.jsonl")
    thresholds = tmp_path / "tuned.yaml"
    args = ["tune", "--eval", str(out), "--out", str(thresholds), "--target-precision", "0.9", "--min-support", "30"]
    if holdout:
        args += ["--tune-groups", "val", "--test-groups", "test"]
    assert main(args) == 0
    table = load_thresholds(thresholds)
    assert 0.5 < table.default < 1.0 and table.brands  # b0/b1 have enough support for their own
    assert (out / "tuned-report" / "summary.md").stat().st_size > 0
