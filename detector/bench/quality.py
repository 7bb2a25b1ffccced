"""The quality part of a bench run: every variant scores the whole query set.

Figures come from :mod:`detector.evaluation.metrics` (the same code as ``eval``); each
variant's per-query scores are saved next to the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detector.bench.config import BenchConfig
from detector.bench.throughput import rate
from detector.bench.variants import variant_detector


def measure_quality(
    base: Any, labels: Any, cfg: BenchConfig, scores_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Metrics of each of ``cfg.variants`` on every query; ``enabled`` False when skipped."""
    if not cfg.quality:
        reason = "quality needs real weights" if cfg.random_weights else "not requested"
        return {"enabled": False, "reason": reason}
    from detector.evaluation.metrics import compute_metrics
    from detector.evaluation.runner import run_evaluation, save_scores

    variants: dict[str, Any] = {}
    for name in cfg.variants:
        det = variant_detector(base, name, cfg.scoring, explicit_thresholds=cfg.thresholds is not None)
        say(f"quality: scoring {len(labels.queries)} queries with variant {name!r}")
        run = run_evaluation(det, labels)
        # Per-query brand scores, to look at failing queries (`counterfeit tune` reads them too).
        scores_dir.mkdir(parents=True, exist_ok=True)
        scores_path = scores_dir / f"{name}.jsonl"
        save_scores(run.scores, scores_path)
        metrics = compute_metrics(
            run.scores,
            det.thresholds,
            target_precision=cfg.target_precision,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
        ).to_dict()
        variants[name] = {
            "scoring": asdict(det.config),
            "thresholds": det.thresholds.version,
            "n_scored": run.computed,
            "failed": [{"image": i, "error": e} for i, e in run.failed],
            "seconds": round(run.seconds, 3),
            "images_per_second": rate(run.computed, run.seconds),
            "scores_path": str(scores_path),
            # Per-brand figures would make the file huge and are not compared run to run.
            "metrics": {k: metrics[k] for k in ("overall", "by_group", "by_kind")},
        }
    return {
        "enabled": True,
        "target_precision": cfg.target_precision,
        "n_boot": cfg.n_boot,
        "variants": variants,
    }
