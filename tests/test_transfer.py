"""The transfer table: one threshold table tuned on one set and reported on others."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detector.bench.labels import GROUPS, NEGATIVE_GROUPS
from detector.bench.transfer import load_set_scores, main, transfer
from detector.errors import ConfigError
from detector.evaluation.decision_metrics import evaluate_decisions
from detector.evaluation.runner import save_scores
from detector.evaluation.scores import EvalScores
from detector.evaluation.synthetic import synthetic_scores
from detector.thresholds import Thresholds, save_thresholds

POSITIVE_GROUPS = tuple(g for g in GROUPS if g not in NEGATIVE_GROUPS)


def _bench_like(seed: int, false_mean: float) -> EvalScores:
    """Synthetic scores whose groups are the bench classes (negatives only in neg_*)."""
    raw = synthetic_scores(
        240, seed=seed, false_mean=false_mean, groups=POSITIVE_GROUPS, logo_free_fraction=0.3
    )
    queries = [
        q if q.brand is not None else replace(q, kind=None, group=NEGATIVE_GROUPS[i % 2])
        for i, q in enumerate(raw.queries)
    ]
    return EvalScores(tuple(queries), raw.query_idx, raw.brand, raw.score, raw.ref_kind)


def _by_hand(scores: EvalScores, threshold: float) -> dict[str, object]:
    """A global threshold's figures, computed from the raw arrays."""
    n = scores.n_queries
    top_score = np.full(n, -np.inf)
    top_brand: list[object] = [None] * n
    for q, brand, score in zip(scores.query_idx, scores.brand, scores.score):
        if score > top_score[q]:
            top_score[q], top_brand[q] = score, brand
    truth = [q.brand for q in scores.queries]
    right = np.array([top_brand[i] is not None and top_brand[i] == truth[i] for i in range(n)])
    flagged = top_score >= threshold
    positive = np.array([t is not None for t in truth])
    groups = np.array([q.group for q in scores.queries])
    out: dict[str, object] = {
        "precision": (flagged & right).sum() / flagged.sum(),
        "recall": (flagged & right).sum() / positive.sum(),
        "false_flags": int((flagged & ~positive).sum()),
        "false_flag_rate": (flagged & ~positive).sum() / (~positive).sum(),
    }
    for g in POSITIVE_GROUPS:
        m = groups == g
        out[f"{g}:rank1"] = right[m].mean()
        out[f"{g}:recall"] = (flagged & right)[m].mean()
    for g in NEGATIVE_GROUPS:
        out[f"{g}:flagged"] = flagged[groups == g].mean()
    return out


def test_figures_of_a_global_table_match_the_arithmetic() -> None:
    sets = {"a": _bench_like(0, 0.55), "b": _bench_like(1, 0.66)}
    result = transfer(
        sets, thresholds=Thresholds(default=0.7, version="g"), thresholds_source="test"
    )
    for figures in result.sets:
        hand = _by_hand(sets[figures.name], 0.7)
        assert not figures.tuned_on
        assert figures.precision == pytest.approx(hand["precision"])
        assert figures.recall == pytest.approx(hand["recall"])
        assert figures.false_flags == hand["false_flags"]
        assert figures.false_flag_rate == pytest.approx(hand["false_flag_rate"])
        assert figures.n_logo_free == figures.n_queries - figures.n_positive
        for g in POSITIVE_GROUPS:
            assert figures.by_group[g].rank1 == pytest.approx(hand[f"{g}:rank1"])
            assert figures.by_group[g].recall == pytest.approx(hand[f"{g}:recall"])
        for g in NEGATIVE_GROUPS:
            assert figures.by_group[g].flagged == pytest.approx(hand[f"{g}:flagged"])
            assert np.isnan(figures.by_group[g].rank1)
    # the worse set (distractors score higher) has more false flags at the same table
    assert result.sets[1].false_flag_rate > result.sets[0].false_flag_rate


def test_tuned_table_meets_its_target_in_sample_and_is_applied_unchanged(tmp_path: Path) -> None:
    sets = {"a": _bench_like(0, 0.55), "b": _bench_like(1, 0.66)}
    result = transfer(sets, tune_on="a", target_precision=0.95, max_fpr=0.02, min_support=5)
    a, b = result.sets
    assert a.tuned_on and not b.tuned_on and result.tuning is not None and result.tuning.met
    assert a.precision >= 0.95 and a.false_flag_rate <= 0.02
    assert b.precision == pytest.approx(
        evaluate_decisions(sets["b"], result.thresholds, n_boot=0).precision
    )
    markdown = result.markdown()
    assert "| figure | a (tuned here) | b |" in markdown
    for g in [*POSITIVE_GROUPS, *NEGATIVE_GROUPS]:
        assert g in markdown
    assert json.loads(json.dumps(result.to_dict()))["sets"][0]["name"] == "a"

    # the same table from a file gives the same figures
    table = tmp_path / "t.json"
    save_thresholds(result.thresholds, table)
    again = transfer(sets, thresholds=result.thresholds)
    assert [s.recall for s in again.sets] == [s.recall for s in result.sets]

    with pytest.raises(ConfigError, match="tune-on"):
        transfer(sets, tune_on="c")
    with pytest.raises(ConfigError, match="exactly one"):
        transfer(sets)


def test_command_line_reads_bench_and_eval_score_layouts(tmp_path: Path, capsys) -> None:
    bench_out = tmp_path / "bench-a" / "scores-tiny-small"
    bench_out.mkdir(parents=True)
    save_scores(_bench_like(0, 0.55), bench_out / "default.jsonl")  # counterfeit bench
    eval_dir = tmp_path / "eval-b"
    eval_dir.mkdir()
    save_scores(_bench_like(1, 0.66), eval_dir / "scores.jsonl")  # counterfeit eval
    assert load_set_scores(tmp_path / "bench-a").n_queries == 240
    out = tmp_path / "table.md"
    saved = tmp_path / "tuned.json"
    code = main(
        [f"a={tmp_path / 'bench-a'}", f"b={eval_dir}", "--tune-on", "a", "--min-support", "5",
         "--target-precision", "0.9", "--out", str(out), "--save-thresholds", str(saved)]
    )  # fmt: skip
    assert code == 0 and out.read_text() == capsys.readouterr().out
    assert main([f"b={eval_dir}", "--thresholds", str(saved)]) == 0
    assert "from " + str(saved) in capsys.readouterr().out
    assert main([f"a={tmp_path / 'nowhere'}", "--tune-on", "a"]) == 2


def test_tune_on_each_gives_one_row_per_tuning_set(tmp_path: Path, capsys) -> None:
    for name, seed, false_mean in (("a", 0, 0.55), ("b", 1, 0.66)):
        folder = tmp_path / name
        folder.mkdir()
        save_scores(_bench_like(seed, false_mean), folder / "scores.jsonl")
    args = [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--tune-on-each", "--min-support", "5",
            "--target-precision", "0.9", "--max-fpr", "0"]  # fmt: skip
    assert main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(rows) == 2
    # each row's own cell is the in-sample figure: tuned for no false flag there
    a_row, b_row = (row.split("|")[1:-1] for row in rows)
    assert a_row[1].strip().startswith("0/") and b_row[2].strip().startswith("0/")
    assert main(args + ["--held-out-brands"]) == 0
