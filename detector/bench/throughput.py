"""The speed part of a bench run: search QPS and latency, single-image scoring latency, scoring
throughput per setting, and the embedding comparison of :mod:`detector.bench.speed`.

Everything is measured warm on a fixed subset of the query files (:func:`speed_subset`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.config import BenchConfig, BenchSize
from detector.bench.variants import variant_detector

# Settings whose scoring throughput the speed part always measures (with and without the
# expensive stages), whatever variants the quality part runs.
THROUGHPUT_SETTINGS: tuple[str, ...] = ("whole-image", "regions", "regions+verify")


def measure_speed(
    base: Any, labels: Any, cfg: BenchConfig, size: BenchSize, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Every speed figure of a run, measured on the :func:`speed_subset` of the queries."""
    subset = speed_subset(labels, size.speed_queries_per_class)
    paths = [labels.image_path(i) for i in subset]
    say(f"speed: {len(paths)} query files")
    result: dict[str, Any] = {"enabled": True, "n_query_files": len(paths)}
    result["embedding"] = _embedding_throughput(cfg, size, out, say)
    result["search"] = measure_search(base, paths, size.search_batch)
    result["latency"] = {}
    detectors = {}
    for name in dict.fromkeys([*THROUGHPUT_SETTINGS, *cfg.variants]):
        detectors[name] = variant_detector(base, name, cfg.scoring, explicit_thresholds=cfg.thresholds is not None)
        if name in cfg.variants:
            say(f"speed: scoring latency, {name!r}")
            result["latency"][name] = measure_latency(detectors[name], paths)
    say(f"speed: scoring throughput of {list(detectors)}, {size.throughput_rounds} interleaved rounds")
    result["scoring_throughput"] = measure_throughput(detectors, paths, rounds=size.throughput_rounds)
    return result


def _embedding_throughput(
    cfg: BenchConfig, size: BenchSize, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Project pipeline vs the plain baseline loop, measured by :mod:`detector.bench.speed`.

    That module times both sides in alternating rounds on its own photo-like listing JPEGs
    (typical upload sizes, where decoding matters), always on CPU.
    """
    try:
        from detector.bench.speed import run_speed_benchmark
    except ImportError as e:
        return {"available": False, "reason": f"detector.bench.speed not importable: {e}"}
    overrides = {
        k: v
        for k, v in (("precision", cfg.precision), ("batch_size", cfg.batch_size))
        if v is not None
    }
    say(f"speed: embedding throughput, project pipeline vs plain baseline ({cfg.preset}, CPU)")
    result = run_speed_benchmark(
        [cfg.preset],
        quick=size.name == "small",
        n_images=size.embed_images,
        rounds=size.embed_rounds,
        latency_repeats=size.embed_latency_repeats,
        data_dir=out / "speed-data",
        overrides=overrides,
        log=lambda msg: say(f"speed: {msg.strip()}"),
    )
    return {
        "available": True,
        "environment": result["environment"],
        **result["presets"][cfg.preset],
    }


def speed_subset(labels: Any, per_class: int) -> list[int]:
    """First ``per_class`` queries of each group, in file order (the same files every run)."""
    taken: dict[str | None, int] = {}
    chosen = []
    for i, query in enumerate(labels.queries):
        if taken.get(query.group, 0) < per_class:
            taken[query.group] = taken.get(query.group, 0) + 1
            chosen.append(i)
    return chosen


def measure_latency(det: Any, paths: Sequence[Path], *, warmup: int = 2) -> dict[str, Any]:
    """Single-image ``Detector.score`` latency on files (read + decode + score), warm."""
    for path in list(paths)[:warmup]:
        det.score(path)
    seconds = []
    for path in paths:
        t0 = time.perf_counter()
        det.score(path)
        seconds.append(time.perf_counter() - t0)
    return {"n": len(seconds), **_percentiles_ms(seconds)}


def measure_throughput(
    detectors: dict[str, Any], paths: Sequence[Path], *, rounds: int, batch: int = 8,
    reference: str = THROUGHPUT_SETTINGS[0],
) -> dict[str, Any]:
    """Images/s of each detector's ``score_many`` on the same files in batches, warm.

    Every detector scores all files once a round, in an order that rotates from round to
    round, so a slow spell of a shared machine hits all of them alike: the median of the
    per-round ratios to ``reference`` (``share_of_reference``) is steadier than a ratio of
    runs made minutes apart (whole-image's own rate varied 45-55 images/s between runs).
    """
    names = list(detectors)
    if not paths:
        return {name: {"n": 0, "images_per_second": None} for name in names}
    for det in detectors.values():
        det.score(paths[0])
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            for start in range(0, len(paths), batch):
                detectors[name].score_many(list(paths[start : start + batch]))
            rates[name].append(len(paths) / (time.perf_counter() - t0))
    out = {}
    for name in names:
        figures: dict[str, Any] = {
            "n": len(paths), "batch": batch, "rounds": rounds,
            "images_per_second": round(statistics.median(rates[name]), 3),
        }
        if reference in rates and name != reference:
            figures["share_of_reference"] = round(
                statistics.median([a / b for a, b in zip(rates[name], rates[reference])]), 4
            )
        out[name] = figures
    return out


def measure_search(
    det: Any, paths: Sequence[Path], batch_size: int, *, repeats: int = 3
) -> dict[str, Any]:
    """Search QPS (batched) and single-query latency on the bench index.

    Query vectors are the whole-frame embeddings of ``paths`` (tiled up to ``batch_size``),
    searched for ``search_k`` references as the scoring flow does.
    """
    from detector.images import load_image

    vectors = det.embedder.embed([load_image(p) for p in paths])
    if len(vectors) == 0:
        return {"n_vectors": 0}
    k = max(det.config.search_k, det.config.top_k)
    index = det.index
    tiled = np.ascontiguousarray(np.resize(vectors, (batch_size, vectors.shape[1])))
    index.search_vectors(tiled[:1], k)  # warm-up
    best = math.inf
    for _ in range(repeats):  # best of a few: the least disturbed by other processes
        t0 = time.perf_counter()
        index.search_vectors(tiled, k)
        best = min(best, time.perf_counter() - t0)
    single = []
    for row in vectors:
        t0 = time.perf_counter()
        index.search_vectors(row[None, :], k)
        single.append(time.perf_counter() - t0)
    return {
        "k": k,
        "index_vectors": index.info().vectors,
        "batch": batch_size,
        "batch_seconds": round(best, 6),
        "batch_qps": rate(batch_size, best),
        "single_qps": rate(len(single), sum(single)),
        "single_latency": {"n": len(single), **_percentiles_ms(single)},
    }


def _percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def rate(n: int, seconds: float) -> float | None:
    """``n`` per second, rounded; None when no time was measured."""
    return round(n / seconds, 3) if seconds > 0 else None
