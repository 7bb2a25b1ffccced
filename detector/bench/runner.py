"""The benchmark job: how good and how fast the detector is, on real brand logos, in one run.

One call builds (or reuses) a seeded benchmark dataset, indexes its references with a model
preset, scores every query with one or more scoring variants through the unchanged scoring
flow, and measures speed and cost in the same process::

    dataset (cached by parameters) ──► index build (timed) ──► quality per variant
        (run_evaluation + compute_metrics: µAP, R@1, R@P90, P/R/FPR at the thresholds)
        ──► speed (embedding throughput vs a plain open_clip baseline, search QPS/latency,
            single-image latency, scoring throughput per setting) ──► JSON + markdown

Quality figures come from :mod:`detector.evaluation.metrics` (the same code as ``eval``).
Random weights give speed figures only (their quality means nothing).

This module runs the job (dataset, index, then the parts); the parts live in
:mod:`~detector.bench.config` (sizes, options), :mod:`~detector.bench.variants`,
:mod:`~detector.bench.quality`, :mod:`~detector.bench.throughput` (the speed part) and
:mod:`~detector.bench.results` (machine figures, writing the files). Their public names are
importable from here too.

Example:
    >>> from detector.bench.runner import BenchConfig, run_benchmark
    >>> result = run_benchmark("bench-out", BenchConfig(size="small", preset="tiny-clip-test"))  # doctest: +SKIP
    >>> result.json_path.name  # doctest: +SKIP
    'bench-tiny-clip-test-small.json'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.bench.config import (
    SIZES,
    BenchConfig,
    BenchSize,
    add_arguments,
    config_dict,
    config_from_args,
)
from detector.bench.quality import measure_quality
from detector.bench.results import (
    RESULT_FORMAT,
    BenchResult,
    loadavg,
    machine_info,
    model_info,
    peak_rss_bytes,
    write_result,
)
from detector.bench.throughput import (
    THROUGHPUT_SETTINGS,
    measure_latency,
    measure_search,
    measure_speed,
    measure_throughput,
    speed_subset,
)
from detector.bench.variants import VARIANTS, variant_detector
from detector.errors import ConfigError, DetectorError

__all__ = [
    "RESULT_FORMAT",
    "SIZES",
    "THROUGHPUT_SETTINGS",
    "VARIANTS",
    "BenchConfig",
    "BenchResult",
    "BenchSize",
    "add_arguments",
    "config_from_args",
    "machine_info",
    "main",
    "measure_latency",
    "measure_search",
    "measure_throughput",
    "peak_rss_bytes",
    "run_benchmark",
    "speed_subset",
    "variant_detector",
]

log = logging.getLogger(__name__)


def run_benchmark(
    out_dir: str | os.PathLike[str],
    config: BenchConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Build/reuse the dataset, index it, measure quality and speed, write JSON + markdown.

    Args:
        out_dir: Working folder: ``datasets/`` (cached by parameters), ``indexes/`` (rebuilt
            each run, since its build time is a figure) and the result files.
        config: What to run; default ``BenchConfig()`` (small, effnet-lite0).
        progress: Called with a one-line message at each stage (default: logging).

    Returns:
        The figures and the paths of ``bench-<preset>[-random]-<size>.json`` / ``.md``.

    Raises:
        ConfigError: A bad option, unknown preset or thresholds file.
        WeightsUnavailableError: The preset's weights are not on this machine.
        DetectorError: The dataset or index could not be written.

    Example:
        >>> run_benchmark("bench-out", BenchConfig(preset="tiny-clip-test")).data["quality"]["enabled"]  # doctest: +SKIP
        True
    """
    cfg = (config or BenchConfig()).validated()
    say = progress or log.info
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "config": config_dict(cfg),
        "machine": machine_info(cfg.device),
    }
    size = _dataset_size(cfg)
    data["config"]["dataset_size"] = asdict(size)  # capped to a small collection's logos
    dataset = _build_dataset(out / "datasets", cfg, size, say)
    data["dataset"] = dataset["summary"]
    index_dir = out / "indexes" / f"{_tag(cfg)}-{dataset['key']}"
    data["index"] = _build_index(dataset["set"].manifest_path, index_dir, cfg, say)

    from detector.scoring import Detector

    with Detector.open(
        index_dir, thresholds=cfg.thresholds, config=cfg.scoring, **cfg.embedder_options()
    ) as base:
        if cfg.threads is not None:  # after the model loaded: a preset may set its own count
            import torch

            torch.set_num_threads(cfg.threads)
        data["model"] = model_info(base)
        data["thresholds"] = {
            "source": str(cfg.thresholds or _shipped_thresholds(base)),
            "table": base.thresholds.to_dict(),
        }
        labels = _read_labels(dataset["set"].labels_path)
        scores_dir = out / f"scores-{_tag(cfg)}-{cfg.size}{cfg.set_tag()}"
        data["quality"] = measure_quality(base, labels, cfg, scores_dir, say)
        data["speed"] = (
            measure_speed(base, labels, cfg, size, out, say) if cfg.speed else {"enabled": False}
        )
    data["cost"] = {
        "index_build_seconds": data["index"]["build_seconds"],
        "index_bytes_per_reference": data["index"]["bytes_per_reference"],
        "peak_rss_bytes": peak_rss_bytes(),
    }
    data["machine"]["load_average_end"] = loadavg()
    data["wall_seconds"] = round(time.perf_counter() - started, 2)

    stem = f"bench-{_tag(cfg)}-{cfg.size}{cfg.set_tag()}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    data["outputs"] = {"json": str(json_path), "markdown": str(md_path)}
    data, markdown = write_result(data, json_path, md_path)
    say(f"wrote {json_path} and {md_path} in {data['wall_seconds']:.0f}s")
    return BenchResult(data, json_path, md_path, markdown)


# ---------------------------------------------------------------------- stages
def _dataset_size(cfg: BenchConfig) -> BenchSize:
    """The size to build: capped to the collection's distinct logos when it holds fewer."""
    from detector.bench.logo_collections import check_available, get_collection

    check_available(cfg.logos)  # a missing npm tarball: say how to fetch it, up front
    size = cfg.dataset_size()
    collection = get_collection(cfg.logos)
    if len(collection.names()) < size.n_brands + size.n_unindexed:
        size = cfg.dataset_size(collection.usable())
    return size


def _build_dataset(
    root: Path, cfg: BenchConfig, size: BenchSize, say: Callable[[str], None]
) -> dict[str, Any]:
    from detector.bench.dataset import build_benchmark_set

    params = {
        "n_brands": size.n_brands,
        "n_unindexed": size.n_unindexed,
        "queries_per_class": size.queries_per_class,
        "seed": cfg.seed,
        "product_photo_fraction": size.product_photo_fraction,
    }
    # Options added later enter the key only away from what earlier sets were built with, so
    # those sets keep their folder (simple-icons on photos with logo boxes).
    options = {
        "collection": cfg.logos,
        "backgrounds": cfg.backgrounds,
        "logo_boxes": cfg.logo_boxes,
    }
    legacy = {"collection": "simple-icons", "backgrounds": "photos", "logo_boxes": True}
    keyed = {**params, **{k: v for k, v in options.items() if v != legacy[k]}}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]
    folder = root / f"{size.name}{cfg.set_tag()}-seed{cfg.seed}-{key}"
    reused = (folder / "dataset.json").is_file()
    say(f"dataset: {'reusing' if reused else 'building'} {folder}")
    t0 = time.perf_counter()
    bench = build_benchmark_set(
        folder, workers=cfg.workers, **params, **options  # type: ignore[arg-type]
    )
    summary = {
        "root": str(folder),
        "size": size.name,
        **options,
        **params,
        "n_references": bench.n_references,
        "n_queries": bench.n_queries,
        "group_counts": bench.group_counts,
        "skipped": list(bench.skipped),
        "reused": reused,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    return {"set": bench, "key": key, "summary": summary}


def _build_index(
    manifest: Path, index_dir: Path, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    from detector.indexing import run_indexing
    from index.open import open_index

    if index_dir.exists():
        if not (index_dir / "manifest.json").is_file():
            raise ConfigError(f"{index_dir} exists but is not a bench index; move it away")
        shutil.rmtree(index_dir)  # rebuilt every run: the build time is one of the figures
    say(f"index: building {index_dir} with {cfg.preset}")
    options = {**cfg.embedder_options(), "random_weights": cfg.random_weights}
    if cfg.threads is not None:
        options["num_threads"] = cfg.threads
    t0 = time.perf_counter()
    report = run_indexing(
        manifest, index_dir, preset=cfg.preset, factory=cfg.factory, embedder_options=options
    )
    wall = time.perf_counter() - t0
    with open_index(index_dir) as index:
        info = index.info()
    count = max(info.count, 1)
    files = {p.name: p.stat().st_size for p in sorted(index_dir.iterdir()) if p.is_file()}
    vector_files = sorted(name for name in files if name.endswith(".faiss"))
    return {
        "path": str(index_dir),
        "factory": info.factory,
        "references": info.count,
        "vectors": info.vectors,
        "vectors_per_reference": round(info.vectors / count, 3),
        "size_bytes": info.size_bytes,
        "bytes_per_reference": round(info.size_bytes / count, 1),
        # The current generation's vectors alone (the rest: SQLite records + verification features).
        "vector_bytes_per_reference": round(files[vector_files[-1]] / count, 1)
        if vector_files
        else None,
        "files": files,
        "build_seconds": round(report.seconds, 2),
        "build_wall_seconds": round(wall, 2),  # includes model loading
        "references_per_second": round(report.added / report.seconds, 3)
        if report.seconds
        else None,
        "failed": [{"item": f.item, "reason": f.reason} for f in report.failed],
    }


def _shipped_thresholds(det: Any) -> Path:
    from detector.thresholds import default_thresholds_path

    return default_thresholds_path(det.embedder.preset.name)


def _read_labels(path: Path) -> Any:
    from detector.evaluation.labels import read_labels

    return read_labels(path)


def _tag(cfg: BenchConfig) -> str:
    return cfg.preset + ("-random" if cfg.random_weights else "")


# ---------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector.bench.runner`` / ``scripts/bench.py``: run and print the tables."""
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    # Progress of this package only: libraries log their own details at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("detector").setLevel(logging.INFO)
    try:
        result = run_benchmark(args.out, config_from_args(args))
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
