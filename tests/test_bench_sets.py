"""Bench set options: logo collections (simple-icons, crypto, flags) and studio product shots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("simple_icons_pack")
pytest.importorskip("cairosvg")
pytest.importorskip("skimage")

from detector.bench import logo_collections, studio
from detector.bench.config import BenchConfig, add_arguments, config_from_args
from detector.bench.dataset import GROUPS, WIDTH_RANGES, build_benchmark_set, read_labels
from detector.errors import ConfigError

NPM = tuple(logo_collections.NPM_SOURCES)


def _need(name: str) -> None:
    """Skip (saying how to fetch it) when a collection's npm tarball is not on this machine."""
    if name == logo_collections.DEFAULT_COLLECTION:
        return
    try:
        logo_collections.check_available(name)
    except ConfigError as e:
        pytest.skip(f"logo collection {name!r} not fetched (scripts/setup_env.sh does): {e}")


@pytest.mark.parametrize("name", logo_collections.COLLECTIONS)
def test_each_collection_renders_tight_distinct_logos(name: str) -> None:
    _need(name)
    collection = logo_collections.get_collection(name)
    chosen = collection.select(3, seed=5)
    assert chosen == collection.select(3, seed=5) and len(set(chosen)) == 3
    rest = collection.select(2, seed=5, candidates=chosen, exclude=chosen[:1])
    assert sorted(rest) == sorted(chosen[1:])  # an excluded brand is never chosen
    for slug in chosen:
        logo = collection.render(slug, 96)
        assert logo.mode == "RGBA" and max(logo.size) == 96
        alpha = np.asarray(logo.getchannel("A"))
        assert (alpha > 32).mean() > 0.05
        # cropped tight: painted pixels touch the left/right and top/bottom edges
        assert alpha[:, 0].max() > 32 or alpha[:, -1].max() > 32
        assert alpha[0].max() > 32 or alpha[-1].max() > 32
        assert len(collection.colour(slug)) == 6


def test_collections_share_no_brand() -> None:
    for name in NPM:
        _need(name)
    names = {
        n: set(logo_collections.get_collection(n).names()) for n in logo_collections.COLLECTIONS
    }
    assert len(names["crypto"]) > 400 and len(names["flags"]) > 250
    for a, first in names.items():
        for b, second in names.items():
            if a < b:
                assert not first & second, (a, b)
    assert all(n.startswith("crypto-") for n in names["crypto"])
    assert all(n.startswith("flag-") for n in names["flags"])


def test_flags_drop_identical_flags_and_keep_look_alikes() -> None:
    _need("flags")
    flags = logo_collections.get_collection("flags")
    # Chad and Romania are the same tricolour: only one of them can be picked.
    with pytest.raises(ConfigError, match="usable distinct"):
        flags.select(2, seed=0, candidates=["flag-td", "flag-ro"])
    # Italy and Mexico differ by the emblem only: look-alikes, which this collection is for.
    assert len(flags.select(3, seed=0, candidates=["flag-fr", "flag-it", "flag-mx"])) == 3


def test_missing_tarball_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logo_collections.ENV_DIR, str(tmp_path))
    with pytest.raises(ConfigError, match="npm pack flag-icons@"):
        logo_collections.check_available("flags")
    with pytest.raises(ConfigError, match="unknown logo collection"):
        logo_collections.get_collection("wallpapers")


def test_setup_script_fetches_the_pinned_versions() -> None:
    script = (Path(__file__).parents[1] / "scripts" / "setup_env.sh").read_text()
    for source in logo_collections.NPM_SOURCES.values():
        assert f"{source.package}@{source.version}" in script


def _logo() -> Image.Image:
    from detector.bench import logos

    return logos.render_logo("nike", 128)


def test_studio_shot_has_the_logo_where_the_generator_says() -> None:
    for seed in range(6):  # several product kinds
        style = studio.draw_style(np.random.default_rng(seed))
        with_logo, box = studio.studio_shot(style, _logo(), np.random.default_rng(99), (240, 180))
        body = studio.body_for(style, _logo())
        blank, none = studio.studio_shot(
            style, None, np.random.default_rng(99), (240, 180), body=body
        )
        assert none is None and box is not None
        changed = (
            np.abs(np.asarray(with_logo, dtype=np.int16) - np.asarray(blank, dtype=np.int16)).max(
                axis=2
            )
            > 0
        )
        x0, y0, x1, y1 = box
        outside = changed.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), (style.kind, box)
        assert changed[y0:y1, x0:x1].mean() > 0.1
        # a white-ish studio backdrop in the corners
        assert np.asarray(blank)[:5, :5].mean() > 190


def test_placed_product_keeps_the_logo_inside_at_the_asked_width() -> None:
    from detector.bench import photos

    for seed in range(5):
        rng = np.random.default_rng(seed)
        style = studio.draw_style(rng)
        cut = studio.product_cutout(style, _logo(), rng, logo_width=90)
        image, box = studio.place_product(
            cut, photos.random_background(rng, (240, 180)), rng, strength=0.12, logo_width=90
        )
        assert image.size == (240, 180) and box is not None
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 240 and 0 <= y0 < y1 <= 180
        assert abs((x1 - x0) - 90) <= 2


@pytest.mark.parametrize(("collection", "backgrounds"), [("crypto", "studio"), ("flags", "photos")])
def test_other_collections_and_studio_build_labelled_sets(
    tmp_path: Path, collection: str, backgrounds: str
) -> None:
    _need(collection)
    bench = build_benchmark_set(
        tmp_path / "set",
        n_brands=4,
        n_unindexed=2,
        queries_per_class=2,
        seed=3,
        product_photo_fraction=0.5,
        brands_per_scene=2,
        image_size=(192, 144),
        reference_size=64,
        collection=collection,
        backgrounds=backgrounds,
    )
    assert bench.skipped == () and bench.group_counts == {g: 2 for g in GROUPS}
    prefix = logo_collections.NPM_SOURCES[collection].prefix
    rows = bench.manifest_path.read_text().splitlines()[1:]
    assert all(row.split(",")[1].startswith(prefix) for row in rows)
    assert all(row.endswith(",") for row in rows)  # no logo box without --logo-boxes
    indexed = {row.split(",")[1] for row in rows}
    for label in read_labels(bench.labels_path):
        width, height = Image.open(bench.root / label.image).size
        if label.group == "neg_nologo":
            assert label.box is None
            continue
        assert label.box is not None and label.logo is not None
        assert (label.logo in indexed) == (label.group != "neg_unindexed")
        x0, y0, x1, y1 = label.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        if label.group in WIDTH_RANGES:
            low, high = WIDTH_RANGES[label.group]
            assert low <= label.width_fraction <= high, label
    params = json.loads((bench.root / "dataset.json").read_text())["params"]
    assert params["collection"] == collection and params["logo_boxes"] is False


def test_bench_options_reach_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--logos", "flags", "--backgrounds", "studio"]))
    assert (cfg.logos, cfg.backgrounds, cfg.logo_boxes) == ("flags", "studio", False)
    assert cfg.set_tag() == "-flags-studio"
    assert config_from_args(parser.parse_args(["--logo-boxes"])).logo_boxes is True
    assert BenchConfig().set_tag() == ""
    # a collection with fewer distinct logos than the full size: a sixth unindexed, rest indexed
    size = BenchConfig(size="full").dataset_size(250)
    assert (size.n_brands, size.n_unindexed, size.queries_per_class) == (209, 41, 50)
    with pytest.raises(ConfigError, match="logo collection"):
        BenchConfig(logos="devicon").validated()
    with pytest.raises(ConfigError, match="backgrounds"):
        BenchConfig(backgrounds="beach").validated()
