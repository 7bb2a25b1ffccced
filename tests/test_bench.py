"""The benchmark runner: the small size runs end to end on the tiny preset and reports every figure."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("simple_icons_pack")
pytest.importorskip("cairosvg")
pytest.importorskip("skimage")

from detector.bench.dataset import GROUPS
from detector.bench.runner import (
    SIZES,
    THROUGHPUT_SETTINGS,
    BenchConfig,
    add_arguments,
    config_from_args,
    run_benchmark,
    variant_detector,
)
from detector.bench.tables import render_markdown
from detector.errors import ConfigError

TINY = "tiny-clip-test"
VARIANTS = ("whole-image", "default")

# Every figure the JSON must carry (dotted paths); the list, nothing optional.
REQUIRED_KEYS = (
    "format",
    "created_at",
    "wall_seconds",
    "config.size",
    "config.preset",
    "config.variants",
    "config.dataset_size",
    "machine.cpu_model",
    "machine.cpu_count",
    "machine.load_average_start",
    "machine.load_average_end",
    "machine.torch",
    "machine.faiss",
    "machine.open_clip",
    "machine.torch_threads",
    "machine.device_requested",
    "model.preset",
    "model.weights",
    "model.fingerprint",
    "model.device",
    "model.precision",
    "dataset.n_brands",
    "dataset.n_unindexed",
    "dataset.n_references",
    "dataset.n_queries",
    "dataset.queries_per_class",
    "dataset.group_counts",
    "dataset.seed",
    "dataset.reused",
    "index.references",
    "index.vectors",
    "index.size_bytes",
    "index.bytes_per_reference",
    "index.build_seconds",
    "thresholds.source",
    "thresholds.table",
    "quality.enabled",
    "quality.target_precision",
    "quality.variants",
    "speed.embedding",
    "speed.search.batch_qps",
    "speed.search.single_qps",
    "speed.search.single_latency.p50_ms",
    "speed.search.single_latency.p99_ms",
    "speed.latency",
    "speed.scoring_throughput",
    "cost.index_build_seconds",
    "cost.index_bytes_per_reference",
    "cost.peak_rss_bytes",
    "outputs.json",
    "outputs.markdown",
)
SLICE_KEYS = ("n_queries", "micro_ap", "top1_accuracy", "pair_at_target", "decision")
DECISION_KEYS = ("precision", "recall", "fpr")


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        assert isinstance(data, dict) and part in data, f"missing {dotted!r} (at {part!r})"
        data = data[part]
    return data


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        size="small", preset=TINY, variants=VARIANTS, threads=2, workers=1, n_boot=20
    )
    return out, run_benchmark(out, config)


def test_small_run_json_has_every_field(small_run) -> None:
    _out, result = small_run
    data = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert data == result.data
    for key in REQUIRED_KEYS:
        _get(data, key)
    size = SIZES["small"]
    assert data["dataset"]["n_brands"] == size.n_brands
    assert data["dataset"]["group_counts"] == {g: size.queries_per_class for g in GROUPS}
    assert (
        data["index"]["references"] == data["dataset"]["n_references"] > size.n_brands
    )  # + products
    assert data["cost"]["peak_rss_bytes"] > 10 * 2**20
    assert data["model"]["weights"] == "random:0"
    search = data["speed"]["search"]
    assert search["batch_qps"] > 0 and search["k"] >= 1
    assert search["single_latency"]["p50_ms"] <= search["single_latency"]["p99_ms"]
    assert set(data["speed"]["latency"]) == set(VARIANTS)
    throughput = data["speed"]["scoring_throughput"]
    assert set(throughput) == set(THROUGHPUT_SETTINGS) | set(VARIANTS)
    for name, figures in throughput.items():
        assert figures["images_per_second"] > 0
        # every setting's share of whole-image scoring, measured in the same rounds
        assert (name == "whole-image") == ("share_of_reference" not in figures)
    assert result.markdown_path.read_text(encoding="utf-8") == result.markdown


def test_variants_give_per_class_rows(small_run) -> None:
    _, result = small_run
    variants = result.data["quality"]["variants"]
    assert list(variants) == list(VARIANTS)
    n_queries = result.data["dataset"]["n_queries"]
    for name, variant in variants.items():
        assert variant["n_scored"] == n_queries and not variant["failed"]
        assert variant["images_per_second"] > 0
        lines = Path(variant["scores_path"]).read_text(encoding="utf-8").splitlines()
        assert len(lines) == n_queries  # per-query scores kept for inspecting failures
        by_group = variant["metrics"]["by_group"]
        assert set(by_group) == set(GROUPS)
        for group, m in by_group.items():
            for key in SLICE_KEYS:
                assert key in m, (name, group, key)
            for key in DECISION_KEYS:
                assert key in m["decision"]
            if group.startswith("neg_"):
                assert m["micro_ap"] is None and m["decision"]["fpr"] is not None
            else:
                assert 0.0 <= m["micro_ap"] <= 1.0 and 0.0 <= m["top1_accuracy"] <= 1.0
    # The variants really scored differently: whole-image has one region, default several.
    assert variants["whole-image"]["scoring"]["regions"]["enabled"] is False
    assert variants["whole-image"]["scoring"]["regions"]["trim_frame"] is False  # one vector
    assert variants["whole-image"]["scoring"]["silhouettes"]["enabled"] is False  # no shape search
    assert variants["default"]["scoring"]["regions"]["enabled"] is True
    side = result.markdown.split("#### Variants side by side")[1].split("####")[0]
    rows = [line for line in side.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == [*GROUPS, "overall"]
    assert all(len(r.split("|")) == len(rows[0].split("|")) for r in rows)


def test_markdown_rerenders_from_json(small_run) -> None:
    _, result = small_run
    data = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert render_markdown(data) == result.markdown
    for group in GROUPS:
        assert f"| {group} | {SIZES['small'].queries_per_class} |" in result.markdown


def test_random_weights_skip_quality_and_reuse_dataset(small_run) -> None:
    out, first = small_run
    config = BenchConfig(size="small", preset=TINY, random_weights=True, speed=False, workers=1)
    result = run_benchmark(out, config)
    assert result.data["quality"] == {"enabled": False, "reason": "quality needs real weights"}
    assert result.data["dataset"]["reused"] is True
    assert result.data["dataset"]["root"] == first.data["dataset"]["root"]
    assert "quality needs real weights" in result.markdown
    assert result.json_path.name == f"bench-{TINY}-random-small.json"


def test_variant_settings_resolve_preset_then_overrides_then_switches(small_run) -> None:
    from detector.scoring import Detector

    _, result = small_run
    with Detector.open(result.data["index"]["path"], device="cpu") as base:
        overrides = {"regions": {"max_regions": 5}, "verify": {"enabled": False}, "top_k": 3}
        det = variant_detector(base, "regions+verify", overrides)
        assert det.config.regions.enabled and det.config.regions.max_regions == 5
        assert det.config.verify.enabled  # the variant's switch wins over the override
        assert det.config.top_k == 3
        assert not variant_detector(base, "default", overrides).config.verify.enabled
        assert det.embedder is base.embedder and det.index is base.index
        with pytest.raises(ConfigError, match="whole-image"):
            variant_detector(base, "nope")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BenchConfig(size="huge"), "small"),
        (BenchConfig(variants=("whole-image", "bogus")), "regions\\+verify"),
        (BenchConfig(target_precision=1.5), "target_precision"),
        (BenchConfig(queries_per_class=0), "queries_per_class"),
    ],
)
def test_bad_config_is_refused(config: BenchConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.validated()


def test_cli_arguments_make_a_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--size",
            "full",
            "--model",
            "clip-vit-b-32",
            "--random-weights",
            "--variants",
            "whole-image, regions+verify,whole-image",
            "--scoring",
            '{"verify": {"method": "orb"}}',
            "--queries-per-class",
            "7",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.variants == ("whole-image", "regions+verify")
    assert cfg.quality is False  # random weights: speed only
    assert cfg.scoring == {"verify": {"method": "orb"}}
    assert cfg.dataset_size().queries_per_class == 7 and cfg.dataset_size().n_brands >= 1000
    with pytest.raises(ConfigError, match="JSON"):
        config_from_args(parser.parse_args(["--scoring", "{not json"]))


def test_speed_figures_are_finite(small_run) -> None:
    _, result = small_run
    speed = result.data["speed"]
    for name, lat in speed["latency"].items():
        assert lat["n"] == len(GROUPS) * SIZES["small"].speed_queries_per_class
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] and math.isfinite(lat["mean_ms"]), name
    assert Path(result.data["outputs"]["json"]) == result.json_path


def test_other_logo_collection_on_studio_backgrounds_runs(tmp_path: Path) -> None:
    from detector.bench.logo_collections import check_available

    try:
        check_available("flags")
    except ConfigError as e:
        pytest.skip(f"flag-icons not fetched (scripts/setup_env.sh does): {e}")
    config = BenchConfig(
        size="small", preset=TINY, variants=("whole-image",), speed=False, threads=2, workers=1,
        n_boot=0, logos="flags", backgrounds="studio",
    )  # fmt: skip
    result = run_benchmark(tmp_path, config)
    dataset = result.data["dataset"]
    assert (dataset["collection"], dataset["backgrounds"], dataset["logo_boxes"]) == (
        "flags", "studio", False,
    )  # fmt: skip
    assert Path(dataset["root"]).name.startswith("small-flags-studio-seed0-")
    assert result.json_path.name == f"bench-{TINY}-small-flags-studio.json"
    scores = Path(result.data["quality"]["variants"]["whole-image"]["scores_path"])
    assert scores.parent.name == f"scores-{TINY}-small-flags-studio"
    assert "logos flags, backgrounds studio, product references without logo boxes" in result.markdown
