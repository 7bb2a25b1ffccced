"""Build the quickstart sample set and the benchmark dataset on disk, seeded and reproducible.

Layout of a built set (``ROOT``)::

    references/<brand-slug>/logo.png        tight logo, transparent background   (kind=logo)
    references/<brand-slug>/product_1.jpg   logo on a shared "scene" photo       (kind=product)
    references.csv                          path,brand,kind,product_id,attributes (paths
                                            relative to it; with logo_boxes, a product's
                                            attributes give its logo's box:
                                            {"logo_box": [x0, y0, x1, y1]})
    listings/*.jpg  (sample) | queries/*.jpg (benchmark)
    labels.jsonl                            one QueryLabel per image, in a fixed order
    dataset.json                            the parameters and counts it was built with

Brands come from a logo collection (:mod:`~detector.bench.logo_collections`: simple-icons,
crypto, flags) and logos are shown on photos or, with ``studio`` backgrounds, printed on drawn
products (:mod:`~detector.bench.studio`).

Every item draws from its own ``numpy`` generator seeded by ``(seed, stage, group, index)``,
icons are taken in a seeded order of the sorted catalogue and files are written with fixed
encoder settings, so the same parameters give byte-identical files on every build.

Query groups (the ``group`` field of a label):

* ``copy``: a logo reference re-posted: resize, small crop, border, price tag, JPEG q 30-90.
* ``product_repost``: the same edits applied to a product-photo reference.
* ``logo_large``: the logo at 30-60 % of the frame width on a photo, with perspective,
  rotation, hue change, blur and noise.
* ``logo_small``: the logo at 8-20 % of the frame width on a photo, mild geometry.
* ``mirrored`` / ``recoloured``: a mirrored or re-coloured logo (20-50 % width) on a photo or
  a plain background.
* ``neg_unindexed``: any of the above recipes with a brand that is *not* indexed (label brand
  null; ``logo`` names the icon drawn).
* ``neg_nologo``: a photo without any logo (maybe a price tag, blur, noise).

This module is the entry point (the two builders and ``python -m detector.bench.dataset``);
the work is split over :mod:`~detector.bench.labels` (groups and labels),
:mod:`~detector.bench.references` (the reference set), :mod:`~detector.bench.listings` (the
query images) and :mod:`~detector.bench.generation` (running the items, writing the set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from detector.bench import logos
from detector.bench.build_context import BACKGROUNDS, BuildParams
from detector.bench.generation import LABELS_FILE, MANIFEST_FILE, build
from detector.bench.labels import GROUPS, NEGATIVE_GROUPS, SAMPLE_GROUPS, QueryLabel, read_labels
from detector.bench.listings import JPEG_QUALITY_RANGE, WIDTH_RANGES
from detector.bench.logo_collections import DEFAULT_COLLECTION, get_collection
from detector.errors import ConfigError, DetectorError

__all__ = [
    "GROUPS",
    "JPEG_QUALITY_RANGE",
    "NEGATIVE_GROUPS",
    "SAMPLE_GROUPS",
    "WIDTH_RANGES",
    "BenchmarkSet",
    "QueryLabel",
    "SampleSet",
    "build_benchmark_set",
    "build_sample_set",
    "main",
    "read_labels",
]


@dataclass(frozen=True)
class SampleSet:
    """A built quickstart sample set.

    Attributes:
        root: Dataset directory.
        references_dir: ``root/references`` (one folder per brand).
        manifest_path: ``root/references.csv``.
        labels_path: ``root/labels.jsonl``.
        n_brands: Indexed brands.
        n_references: Reference images.
        n_listings: Listing images.
        skipped: ``"item: reason"`` for each item that could not be produced.
    """

    root: Path
    references_dir: Path
    manifest_path: Path
    labels_path: Path
    n_brands: int
    n_references: int
    n_listings: int
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchmarkSet:
    """A built benchmark dataset.

    Attributes:
        root: Dataset directory.
        references_dir: ``root/references``.
        manifest_path: ``root/references.csv``.
        labels_path: ``root/labels.jsonl``.
        n_brands: Indexed brands.
        n_unindexed: Brands used only in ``neg_unindexed`` queries.
        n_references: Reference images (logos + product photos).
        n_queries: Query images written.
        group_counts: Queries per group.
        skipped: ``"item: reason"`` for each item that could not be produced.
    """

    root: Path
    references_dir: Path
    manifest_path: Path
    labels_path: Path
    n_brands: int
    n_unindexed: int
    n_references: int
    n_queries: int
    group_counts: dict[str, int] = field(hash=False)
    skipped: tuple[str, ...] = ()


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in image_size)
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise ConfigError(f"image_size must be two ints in 64..4096, got {image_size}")
    return (width, height)


def build_sample_set(
    out_dir: str | os.PathLike[str],
    *,
    n_brands: int = 20,
    seed: int = 0,
    listings_per_class: int = 3,
    n_unindexed: int = 5,
    image_size: tuple[int, int] = (640, 480),
    reference_size: int = 256,
) -> SampleSet:
    """Write the quickstart sample set: well-known brands' logos and listing photos.

    Brands are drawn (seeded) from :data:`detector.bench.logos.RECOGNISABLE_SLUGS`, or from
    the whole catalogue when more than those are asked for. Listings cover every group of
    :data:`SAMPLE_GROUPS`: indexed logos pasted on real photos, unindexed brands' logos, and
    photos without a logo. Rebuilding into a folder that holds the same build returns it.

    Args:
        out_dir: Target folder (created; must be new, empty, or hold this very build).
        n_brands: Indexed brands, 1..500.
        seed: Seed; the same arguments give byte-identical files.
        listings_per_class: Listings per group, 1..1000.
        n_unindexed: Brands used only for negative listings, 1..500.
        image_size: Listing (width, height), each 64..4096.
        reference_size: Longest side of the reference logos, 32..2048.

    Returns:
        Paths and counts of the built set.

    Raises:
        ConfigError: A bad argument, or ``out_dir`` holds something else.
        DetectorError: The set could not be written.

    Example:
        >>> sample = build_sample_set("quickstart/sample")  # doctest: +SKIP
        >>> sample.n_brands
        20
    """
    _check_range("n_brands", n_brands, 1, 500)
    _check_range("listings_per_class", listings_per_class, 1, 1000)
    _check_range("n_unindexed", n_unindexed, 1, 500)
    _check_range("reference_size", reference_size, 32, 2048)
    size = _check_size(image_size)
    pool = logos.RECOGNISABLE_SLUGS if n_brands <= len(logos.RECOGNISABLE_SLUGS) else None
    brands = logos.select_brands(n_brands, seed=seed, candidates=pool)
    unindexed = logos.select_brands(n_unindexed, seed=seed + 1, exclude=brands)
    params = BuildParams(
        kind="sample",
        seed=seed,
        brands=tuple(brands),
        unindexed=tuple(unindexed),
        groups=SAMPLE_GROUPS,
        per_class=listings_per_class,
        product_fraction=0.0,
        brands_per_scene=1,
        image_size=size,
        reference_size=reference_size,
        query_dir="listings",
    )
    info, _ = build(Path(out_dir), params, workers=1)
    root = Path(out_dir)
    return SampleSet(
        root=root,
        references_dir=root / "references",
        manifest_path=root / MANIFEST_FILE,
        labels_path=root / LABELS_FILE,
        n_brands=len(brands),
        n_references=int(info["n_references"]),
        n_listings=int(info["n_queries"]),
        skipped=tuple(info["skipped"]),
    )


def build_benchmark_set(
    out_dir: str | os.PathLike[str],
    *,
    n_brands: int = 1000,
    n_unindexed: int = 200,
    queries_per_class: int = 100,
    seed: int = 0,
    product_photo_fraction: float = 0.3,
    brands_per_scene: int = 4,
    image_size: tuple[int, int] = (640, 480),
    reference_size: int = 256,
    groups: Sequence[str] = GROUPS,
    workers: int = 1,
    collection: str = DEFAULT_COLLECTION,
    backgrounds: str = "photos",
    logo_boxes: bool = False,
) -> BenchmarkSet:
    """Write a benchmark dataset: many brands' references and labelled queries per group.

    Args:
        out_dir: Target folder (created; must be new, empty, or hold this very build).
        n_brands: Indexed brands (logo references), 1..3000 (about 3,000 distinct icons exist).
        n_unindexed: Brands only shown in ``neg_unindexed`` queries, 1..1000.
        queries_per_class: Queries per group, 1..100000.
        seed: Seed; the same arguments give byte-identical files (any ``workers``).
        product_photo_fraction: Share of indexed brands that also get a product-photo
            reference (kind ``product``), 0..1.
        brands_per_scene: Brands whose product photos share one background scene, 1..100.
        image_size: Query (width, height) for composited queries, each 64..4096.
        reference_size: Longest side of the reference logos, 32..2048.
        groups: Subset of :data:`GROUPS` to generate.
        workers: Processes; 1 runs in this process.
        collection: Logo collection the brands come from
            (:data:`detector.bench.logo_collections.COLLECTIONS`).
        backgrounds: ``"photos"`` (logos pasted on photos; product photos share a photo
            backdrop) or ``"studio"`` (logos printed on drawn products: product photos are
            studio shots on white, listings show the product placed in a photo or another
            studio shot with perspective; see :mod:`detector.bench.studio`).
        logo_boxes: Product rows carry their logo's box (``logo_box`` attribute); off by
            default, as most brands give none.

    Returns:
        Paths, counts and per-group counts; items that failed are listed in ``skipped``.

    Raises:
        ConfigError: A bad argument, too few usable icons, or ``out_dir`` holds something else.
        DetectorError: The set could not be written.

    Example:
        >>> bench = build_benchmark_set("bench", n_brands=1000, queries_per_class=100)  # doctest: +SKIP
        >>> bench.group_counts["logo_small"]  # doctest: +SKIP
        100
    """
    _check_range("n_brands", n_brands, 1, 3000)
    _check_range("n_unindexed", n_unindexed, 1, 1000)
    _check_range("queries_per_class", queries_per_class, 1, 100_000)
    _check_range("brands_per_scene", brands_per_scene, 1, 100)
    _check_range("workers", workers, 1, 64)
    _check_range("reference_size", reference_size, 32, 2048)
    if not 0.0 <= product_photo_fraction <= 1.0:
        raise ConfigError(f"product_photo_fraction must be in 0..1, got {product_photo_fraction}")
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise ConfigError(f"unknown or no groups {unknown}; choose from {list(GROUPS)}")
    size = _check_size(image_size)
    if backgrounds not in BACKGROUNDS:
        raise ConfigError(f"unknown backgrounds {backgrounds!r}; choose from {list(BACKGROUNDS)}")
    source = get_collection(collection)
    brands = source.select(n_brands, seed=seed)
    unindexed = source.select(n_unindexed, seed=seed + 1, exclude=brands)
    params = BuildParams(
        kind="bench",
        seed=seed,
        brands=tuple(brands),
        unindexed=tuple(unindexed),
        groups=tuple(g for g in GROUPS if g in set(groups)),
        per_class=queries_per_class,
        product_fraction=float(product_photo_fraction),
        brands_per_scene=brands_per_scene,
        image_size=size,
        reference_size=reference_size,
        query_dir="queries",
        collection=collection,
        backgrounds=backgrounds,
        logo_boxes=bool(logo_boxes),
    )
    info, _ = build(Path(out_dir), params, workers)
    root = Path(out_dir)
    return BenchmarkSet(
        root=root,
        references_dir=root / "references",
        manifest_path=root / MANIFEST_FILE,
        labels_path=root / LABELS_FILE,
        n_brands=len(brands),
        n_unindexed=len(unindexed),
        n_references=int(info["n_references"]),
        n_queries=int(info["n_queries"]),
        group_counts=dict(info["group_counts"]),
        skipped=tuple(info["skipped"]),
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int in {low}..{high}, got {value!r}")


# --- manual entry point ---------------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from e
    return (width, height)


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector.bench.dataset OUT --kind sample|bench ...``; prints a JSON summary."""
    parser = argparse.ArgumentParser(
        prog="python -m detector.bench.dataset", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", metavar="OUT")
    parser.add_argument("--kind", choices=("sample", "bench"), default="sample")
    parser.add_argument(
        "--n-brands", type=int, default=None, help="default 20 (sample) / 1000 (bench)"
    )
    parser.add_argument("--n-unindexed", type=int, default=None, help="default 5 / 200")
    parser.add_argument(
        "--per-class", type=int, default=None, help="queries per group, default 3 / 100"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--product-fraction", type=float, default=0.3, help="bench only")
    parser.add_argument("--size", type=_parse_size, default=(640, 480), metavar="WxH")
    parser.add_argument("--workers", type=int, default=1, help="bench only")
    parser.add_argument("--logos", default=DEFAULT_COLLECTION, help="bench only: logo collection")
    parser.add_argument("--backgrounds", default="photos", help="bench only: photos | studio")
    parser.add_argument(
        "--logo-boxes", action="store_true", help="bench only: product rows carry logo boxes"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.kind == "sample":
            result: SampleSet | BenchmarkSet = build_sample_set(
                args.out,
                n_brands=_default(args.n_brands, 20),
                seed=args.seed,
                listings_per_class=_default(args.per_class, 3),
                n_unindexed=_default(args.n_unindexed, 5),
                image_size=args.size,
            )
        else:
            result = build_benchmark_set(
                args.out,
                n_brands=_default(args.n_brands, 1000),
                n_unindexed=_default(args.n_unindexed, 200),
                queries_per_class=_default(args.per_class, 100),
                seed=args.seed,
                product_photo_fraction=args.product_fraction,
                image_size=args.size,
                workers=args.workers,
                collection=args.logos,
                backgrounds=args.backgrounds,
                logo_boxes=args.logo_boxes,
            )
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
