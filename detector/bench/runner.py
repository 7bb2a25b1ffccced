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
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ConfigError, DetectorError

log = logging.getLogger(__name__)

RESULT_FORMAT = 1


# ---------------------------------------------------------------------- sizes and variants
@dataclass(frozen=True)
class BenchSize:
    """Dataset and measurement sizes of one benchmark size.

    Attributes:
        name: ``"small"`` (CI) or ``"full"``.
        n_brands: Indexed brands (one logo reference each).
        n_unindexed: Brands only shown in ``neg_unindexed`` queries.
        queries_per_class: Queries per transformation class.
        product_photo_fraction: Share of brands that also get a product-photo reference.
        speed_queries_per_class: Queries per class in the speed subset (latency, throughput,
            search vectors).
        search_batch: Query vectors per batched search call.
        embed_images, embed_rounds, embed_latency_repeats: Files per photo size, alternating
            rounds and single-image calls of the embedding comparison (small: its quick mode).
        throughput_rounds: Rounds of the scoring-throughput comparison (every setting scores
            the speed subset once a round, in rotating order).
    """

    name: str
    n_brands: int
    n_unindexed: int
    queries_per_class: int
    product_photo_fraction: float
    speed_queries_per_class: int
    search_batch: int
    embed_images: int = 8
    embed_rounds: int = 3
    embed_latency_repeats: int = 20
    throughput_rounds: int = 3


SIZES: dict[str, BenchSize] = {
    # CI: must finish well under 2 minutes on 2 cores with the tiny preset.
    "small": BenchSize("small", 6, 3, 2, 0.5, 1, 256, throughput_rounds=1),
    # 1,000 brands, 50 queries per class: effnet-lite0 with the whole-image and default
    # variants ran in ~10 minutes on 2 shared cores (regions+verification ~1 s per query).
    "full": BenchSize("full", 1000, 200, 50, 0.3, 3, 1024),
}

# Scoring switches of each named variant, applied over the preset's defaults and --scoring.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # One vector per image: the "before" of region matching (no border-trimmed frame either,
    # no shape search, whatever the preset's defaults).
    "whole-image": {"regions": {"enabled": False, "trim_frame": False}, "verify": {"enabled": False},
                    "silhouettes": {"enabled": False}},
    "regions": {"regions": {"enabled": True}, "verify": {"enabled": False}},
    "verify": {"regions": {"enabled": False}, "verify": {"enabled": True}},
    "regions+verify": {"regions": {"enabled": True}, "verify": {"enabled": True}},
    # The "lean" and "thorough" scoring profiles (detector.scoring.PROFILES), each with its
    # own thresholds.
    "lean": {"profile": "lean"},
    "thorough": {"profile": "thorough"},
}

# Settings whose scoring throughput the speed part always measures (with and without the
# expensive stages), whatever variants the quality part runs.
THROUGHPUT_SETTINGS: tuple[str, ...] = ("whole-image", "regions", "regions+verify")


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how.

    Attributes:
        size: Key of :data:`SIZES`.
        preset: Model preset.
        random_weights: The preset's architecture with seeded random weights; quality is
            skipped (speed only).
        checkpoint: Local weights file for the preset (e.g. real CLIP weights).
        seed: Dataset seed.
        thresholds: Thresholds file for the decision figures; default: the preset's shipped one.
        scoring: Scoring overrides applied to every variant (``ScoringConfig.from_dict`` keys).
        variants: Names from :data:`VARIANTS`, each scored on the whole query set.
        quality: Run the quality part (forced off by ``random_weights``).
        speed: Run the speed part.
        device, precision, batch_size: Embedder options.
        threads: torch intra-op threads while indexing and scoring (None: the preset's choice).
        workers: Processes generating the dataset.
        n_brands, queries_per_class: Override the size's dataset figures.
        factory: FAISS factory string of the bench index.
        target_precision: Precision of the "recall at precision" figures.
        n_boot: Bootstrap replicates of the decision-figure intervals.
    """

    size: str = "small"
    preset: str = "effnet-lite0"
    random_weights: bool = False
    checkpoint: str | None = None
    seed: int = 0
    thresholds: str | None = None
    scoring: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ("default",)
    quality: bool = True
    speed: bool = True
    device: str = "cpu"
    precision: str | None = None
    batch_size: int | None = None
    threads: int | None = None
    workers: int = 2
    n_brands: int | None = None
    queries_per_class: int | None = None
    factory: str = "Flat"
    target_precision: float = 0.9
    n_boot: int = 200

    def validated(self) -> BenchConfig:
        """Checked copy; ``quality`` is off with random weights.

        Raises:
            ConfigError: Unknown size or variant, or an out-of-range number.
        """
        if self.size not in SIZES:
            raise ConfigError(f"unknown bench size {self.size!r}; choose from {sorted(SIZES)}")
        variants = tuple(dict.fromkeys(self.variants))  # drop repeats, keep order
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ConfigError(f"unknown or no variants {unknown}; choose from {list(VARIANTS)}")
        if not 0.0 < self.target_precision <= 1.0:
            raise ConfigError(f"target_precision must be in (0, 1], got {self.target_precision}")
        for name in ("threads", "n_brands", "queries_per_class"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        return replace(self, variants=variants, quality=self.quality and not self.random_weights)

    def dataset_size(self) -> BenchSize:
        base = SIZES[self.size]
        return replace(
            base,
            n_brands=self.n_brands or base.n_brands,
            queries_per_class=self.queries_per_class or base.queries_per_class,
        )

    def embedder_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"device": self.device}
        for key in ("precision", "batch_size", "checkpoint"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options


@dataclass(frozen=True)
class BenchResult:
    """Outcome of :func:`run_benchmark`.

    Attributes:
        data: Every figure (what the JSON file holds).
        json_path: The JSON file written.
        markdown_path: The markdown tables written.
        markdown: The markdown text.
    """

    data: dict[str, Any]
    json_path: Path
    markdown_path: Path
    markdown: str


# ---------------------------------------------------------------------- the job
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
    from detector.bench.tables import render_markdown
    from index.atomic import atomic_write_bytes

    cfg = (config or BenchConfig()).validated()
    say = progress or log.info
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "config": _config_dict(cfg),
        "machine": machine_info(cfg.device),
    }
    size = cfg.dataset_size()
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
        data["model"] = _model_info(base)
        data["thresholds"] = {
            "source": str(cfg.thresholds or _shipped_thresholds(base)),
            "table": base.thresholds.to_dict(),
        }
        labels = _read_labels(dataset["set"].labels_path)
        data["quality"] = _quality(base, labels, cfg, out / f"scores-{_tag(cfg)}-{cfg.size}", say)
        data["speed"] = (
            _speed(base, labels, cfg, size, out, say) if cfg.speed else {"enabled": False}
        )
    data["cost"] = {
        "index_build_seconds": data["index"]["build_seconds"],
        "index_bytes_per_reference": data["index"]["bytes_per_reference"],
        "peak_rss_bytes": peak_rss_bytes(),
    }
    data["machine"]["load_average_end"] = _loadavg()
    data["wall_seconds"] = round(time.perf_counter() - started, 2)

    stem = f"bench-{_tag(cfg)}-{cfg.size}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    data["outputs"] = {"json": str(json_path), "markdown": str(md_path)}
    data = _jsonable(data)
    markdown = render_markdown(data)
    # Not atomic_write_json: its sorted keys would lose the run order of variants and rows.
    atomic_write_bytes(json_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(md_path, markdown.encode("utf-8"))
    say(f"wrote {json_path} and {md_path} in {data['wall_seconds']:.0f}s")
    return BenchResult(data, json_path, md_path, markdown)


# ---------------------------------------------------------------------- stages
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
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    folder = root / f"{size.name}-seed{cfg.seed}-{key}"
    reused = (folder / "dataset.json").is_file()
    say(f"dataset: {'reusing' if reused else 'building'} {folder}")
    t0 = time.perf_counter()
    bench = build_benchmark_set(folder, workers=cfg.workers, **params)
    summary = {
        "root": str(folder),
        "size": size.name,
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
    from index.store import ReferenceIndex

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
    with ReferenceIndex.open(index_dir) as index:
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


def _quality(
    base: Any, labels: Any, cfg: BenchConfig, scores_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
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
            "images_per_second": _rate(run.computed, run.seconds),
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


def _speed(
    base: Any, labels: Any, cfg: BenchConfig, size: BenchSize, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
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


# ---------------------------------------------------------------------- measurements
def variant_detector(
    base: Any, name: str, overrides: dict[str, Any] | None = None, *, explicit_thresholds: bool = False
) -> Any:
    """A Detector sharing ``base``'s model and index, with variant ``name``'s scoring.

    Settings resolve as: preset defaults < a profile < ``overrides`` < the variant's
    switches. A profile variant scores with the profile's shipped thresholds unless the
    thresholds were given explicitly (``explicit_thresholds``).

    Raises:
        ConfigError: Unknown variant or scoring option.
    """
    from detector.scoring import Detector, merge_options, resolve_scoring
    from detector.thresholds import default_thresholds_path
    from detector.thresholds import load_thresholds

    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    config, profile = resolve_scoring(
        base.embedder.preset.defaults.get("scoring", {}), merge_options(overrides or {}, VARIANTS[name])
    )
    thresholds = base.thresholds
    if profile is not None and not explicit_thresholds:
        thresholds = load_thresholds(default_thresholds_path(base.embedder.preset.name, profile))
    return Detector(base.index, base.embedder, thresholds=thresholds, config=config)


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
        "batch_qps": _rate(batch_size, best),
        "single_qps": _rate(len(single), sum(single)),
        "single_latency": {"n": len(single), **_percentiles_ms(single)},
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores, load, library versions and device: what a figure depends on."""
    import faiss
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_start": _loadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": getattr(faiss, "__version__", "unknown"),
        "numpy": np.__version__,
        "device_requested": device,
        "cuda_available": torch.cuda.is_available(),
    }
    for module in ("open_clip", "timm", "PIL", "cv2"):
        info[module] = _version(module)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------- helpers
def _model_info(det: Any) -> dict[str, Any]:
    import torch

    emb = det.embedder
    return {
        "preset": emb.preset.name,
        "fingerprint": det.fingerprint.to_dict(),
        "weights": emb.fingerprint.weights,
        "random_weights": emb.fingerprint.weights.startswith("random:"),
        "device": str(emb.device),
        "precision": emb.precision,
        "batch_size": emb.batch_size,
        "torch_threads": torch.get_num_threads(),
        "embedder": repr(emb),
    }


def _shipped_thresholds(det: Any) -> Path:
    from detector.thresholds import default_thresholds_path

    return default_thresholds_path(det.embedder.preset.name)


def _read_labels(path: Path) -> Any:
    from detector.evaluation.labels import read_labels

    return read_labels(path)


def _tag(cfg: BenchConfig) -> str:
    return cfg.preset + ("-random" if cfg.random_weights else "")


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    data = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    data["variants"] = list(cfg.variants)
    data["dataset_size"] = asdict(cfg.dataset_size())
    return data


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


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench options to a parser (shared by ``counterfeit bench`` and scripts/bench.py)."""
    parser.add_argument(
        "--out", default="bench-out", metavar="DIR", help="working folder (default: bench-out)"
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--model", default="effnet-lite0", metavar="PRESET", help="model preset")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="local weights for the preset (e.g. real CLIP)"
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="random weights: speed figures only"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument(
        "--thresholds", metavar="FILE", help="thresholds file (default: the preset's)"
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated scoring variants: {', '.join(VARIANTS)} (default: default)",
    )
    parser.add_argument(
        "--scoring",
        default="{}",
        metavar="JSON",
        help='scoring overrides for every variant, e.g. \'{"verify": {"method": "orb"}}\'',
    )
    parser.add_argument("--no-quality", action="store_true", help="skip the quality part")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    parser.add_argument("--n-brands", type=int, help="override the size's brand count")
    parser.add_argument(
        "--queries-per-class", type=int, help="override the size's queries per class"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    parser.add_argument("--precision", help="fp32 | fp16 | bf16 (default: the preset's)")
    parser.add_argument(
        "--batch-size", type=int, help="images per model call (default: the preset's)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: the preset's choice)")
    parser.add_argument("--workers", type=int, default=2, help="dataset generation processes")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Turn parsed :func:`add_arguments` options into a validated BenchConfig.

    Raises:
        ConfigError: ``--scoring`` is not a JSON object, or another option is invalid.
    """
    try:
        scoring = json.loads(args.scoring)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--scoring is not valid JSON: {e}") from e
    if not isinstance(scoring, dict):
        raise ConfigError("--scoring must be a JSON object")
    return BenchConfig(
        size=args.size,
        preset=args.model,
        random_weights=args.random_weights,
        checkpoint=args.checkpoint,
        seed=args.seed,
        thresholds=args.thresholds,
        scoring=scoring,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        quality=not args.no_quality,
        speed=not args.no_speed,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        threads=args.threads,
        workers=args.workers,
        n_brands=args.n_brands,
        queries_per_class=args.queries_per_class,
    ).validated()


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
