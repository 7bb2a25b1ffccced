"""The ``eval`` and ``tune`` jobs: what the CLI runs, usable from notebooks too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.evaluation.held_out_brands import with_held_out_brands
from detector.evaluation.labels import read_labels
from detector.evaluation.report import ReportFiles, write_report
from detector.evaluation.runner import (
    SCORES_FILE,
    EvalRun,
    load_scores,
    run_evaluation,
    save_scores,
)
from detector.evaluation.transfer_check import DEFAULT_MARGIN, TransferCheck, check_transfer
from detector.evaluation.tuning import (
    HoldoutResult,
    TuningResult,
    evaluate_holdout,
    split_by_group,
    tune_thresholds,
)
from detector.thresholds import Thresholds, save_thresholds
from index.atomic import atomic_write_json


@dataclass(frozen=True)
class EvalOutcome:
    run: EvalRun
    report: ReportFiles
    scores_path: Path


def eval_job(
    index_dir: str | Path,
    labels_path: str | Path,
    out_dir: str | Path,
    *,
    thresholds: str | Path | None = None,
    target_precision: float = 0.9,
    cache_path: str | Path | None = None,
    detector_options: dict[str, Any] | None = None,
    scoring_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> EvalOutcome:
    """Score a labelled set against an index (cached) and write scores + a report into ``out_dir``.

    Outputs: ``scores.jsonl`` (input of ``tune``), ``cache.sqlite``, ``failed.json`` and
    ``report/`` (metrics.json, summary.md, plots) at the thresholds in use.
    """
    from detector.scoring import Detector

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(labels_path)
    if on_total:
        on_total(len(labels.queries))
    with Detector.open(index_dir, thresholds=thresholds, config=scoring_options, **(detector_options or {})) as det:
        run = run_evaluation(det, labels, cache_path=cache_path or out / "cache.sqlite", progress=progress)
        table = det.thresholds
        title = f"{Path(labels_path).name} on {det.fingerprint.preset} ({Path(index_dir).name})"
    scores_path = out / SCORES_FILE
    save_scores(run.scores, scores_path)
    atomic_write_json(out / "failed.json", [{"image": i, "error": e} for i, e in run.failed])
    report = write_report(out / "report", run.scores, table, title=title, target_precision=target_precision)
    return EvalOutcome(run, report, scores_path)


def tune_job(
    eval_dir: str | Path,
    out_path: str | Path,
    *,
    target_precision: float | None = 0.95,
    max_fpr: float | None = None,
    min_support: int = 20,
    tune_groups: Sequence[str] = (),
    test_groups: Sequence[str] = (),
    version: str | None = None,
    report_dir: str | Path | None = None,
    held_out_brands: bool = False,
) -> TuningResult | HoldoutResult:
    """Choose thresholds from an ``eval`` output folder and write the thresholds file.

    With ``tune_groups``/``test_groups`` the thresholds are tuned on one part and the expected
    figures are also reported on the held-out part. A report at the tuned thresholds is written
    to ``report_dir`` (default: ``<eval_dir>/tuned-report``). ``held_out_brands`` adds each
    tuning listing scored without its brand as a logo-free one
    (:mod:`~detector.evaluation.held_out_brands`); held-out and report figures stay real.
    """
    scores = load_scores(Path(eval_dir) / SCORES_FILE)
    options: dict[str, Any] = {
        "target_precision": target_precision,
        "max_fpr": max_fpr,
        "min_support": min_support,
        "version": version or f"tuned-{Path(eval_dir).name}",
    }
    result: TuningResult | HoldoutResult
    if tune_groups or test_groups:
        tune_part, test_part = split_by_group(scores, tune_groups, test_groups)
        if held_out_brands:
            tune_part = with_held_out_brands(tune_part)
        result = evaluate_holdout(tune_part, test_part, **options)
        table = result.tuning.thresholds
    else:
        result = tune_thresholds(with_held_out_brands(scores) if held_out_brands else scores, **options)
        table = result.thresholds
    save_thresholds(table, out_path)
    write_report(report_dir or Path(eval_dir) / "tuned-report", scores, table,
                 title=f"{Path(eval_dir).name} at tuned thresholds",
                 target_precision=target_precision or 0.9)
    return result


def transfer_job(
    thresholds: Thresholds, eval_dir: str | Path, other_dirs: Sequence[str | Path], *, margin: float = DEFAULT_MARGIN
) -> list[TransferCheck]:
    """Measure a tuned table on the eval folder it was tuned on and on each other eval folder
    (:mod:`detector.evaluation.transfer_check`)."""
    tuned_on = load_scores(Path(eval_dir) / SCORES_FILE)
    return [
        check_transfer(thresholds, tuned_on, load_scores(Path(d) / SCORES_FILE), name=Path(d).name, margin=margin)
        for d in other_dirs
    ]
