"""Report files: metrics.json, summary.md and PNG plots that are valid and not blank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.evaluation.metrics import compute_metrics
from detector.evaluation.report import (
    brand_threshold_data,
    pr_curve_data,
    score_hist_data,
    write_report,
)
from detector.evaluation.scores import EvalScores, Query, synthetic_scores
from detector.evaluation.tuning import tune_thresholds
from detector.thresholds import Thresholds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scores() -> EvalScores:
    return synthetic_scores(500, brand_support=(80, 40, 20, 5), seed=2)


def _assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert min(pixels.shape) > 300
    assert pixels.std() > 5  # something was drawn, not a blank canvas
    assert (pixels < 128).mean() > 0.005  # text, axes and curves are dark


def test_write_report_writes_every_file(scores: EvalScores, tmp_path: Path) -> None:
    tuned = tune_thresholds(scores, target_precision=0.95, min_support=20, n_boot=0).thresholds
    files = write_report(tmp_path / "rep", scores, tuned, title="Synthetic run", n_boot=200)
    for png in (files.pr_curve_png, files.score_hist_png, files.brand_thresholds_png):
        _assert_real_png(png)
    doc = json.loads(files.metrics_json.read_text())
    expected = compute_metrics(scores, tuned, n_boot=200)
    assert doc["metrics"]["overall"]["micro_ap"] == pytest.approx(expected.overall.micro_ap)
    assert doc["thresholds"] == tuned.to_dict()
    assert doc["dataset"]["n_queries"] == 500
    md = files.summary_md.read_text()
    assert md.startswith("# Synthetic run")
    for row in (
        "| overall | 500 |",
        "| group:val |",
        "| group:test |",
        "| kind:logo |",
        "| b0 |",
        "| b3 |",
    ):
        assert row in md
    d = expected.overall.decision
    assert (
        d is not None
        and f"{d.precision:.3f} [{d.precision_ci.low:.2f}, {d.precision_ci.high:.2f}]" in md
    )
    assert not list((tmp_path / "rep").glob(".*tmp"))  # no temp files left behind


def test_top_n_limits_brand_rows_and_mismatch_warning(scores: EvalScores, tmp_path: Path) -> None:
    table = Thresholds(default=0.7, score="cosine")
    files = write_report(tmp_path, scores, table, title="t", top_n_brands=2, n_boot=0)
    md = files.summary_md.read_text()
    assert "| b0 |" in md and "| b1 |" in md and "| b2 |" not in md
    assert "**Warning**" in md and "`cosine`" in md


def test_plot_data_functions(scores: EvalScores) -> None:
    h = score_hist_data(scores)
    assert sum(len(v) for v in h.values()) == scores.n_predictions
    assert len(h["true"]) == int(scores.is_true.sum())
    assert h["true"].mean() > h["logo_free"].mean()
    table = Thresholds(default=0.7, kinds={"logo": 0.72}, brands={"b1": {"default": 0.6}})
    rows = brand_threshold_data(scores, table, top_n=3)
    assert [r.brand for r in rows] == ["b0", "b1", "b2"]  # by support
    assert [r.support for r in rows] == sorted((r.support for r in rows), reverse=True)
    assert rows[1].overridden and rows[1].values == {"logo": 0.6, "product": 0.6}
    assert not rows[0].overridden and rows[0].values == {"logo": 0.72, "product": 0.7}
    p = pr_curve_data(scores, table)
    assert 0 < p.operating_recall < 1 and 0 < p.operating_precision <= 1
    assert len(p.pair.thresholds) >= len(p.query.thresholds)


def test_report_survives_a_set_without_predictions(tmp_path: Path) -> None:
    empty = EvalScores.from_predictions([Query("a", "A"), Query("b", None)], [])
    files = write_report(tmp_path, empty, 0.5, title="nothing retrieved", n_boot=10)
    assert json.loads(files.metrics_json.read_text())["metrics"]["overall"]["micro_ap"] == 0.0
    assert files.pr_curve_png.read_bytes()[:8] == PNG_MAGIC
    assert files.brand_thresholds_png.stat().st_size > 0
