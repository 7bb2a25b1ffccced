"""Build the quickstart sample set and the benchmark dataset on disk, seeded and reproducible.

Layout of a built set (``ROOT``)::

    references/<brand-slug>/logo.png        tight logo, transparent background   (kind=logo)
    references/<brand-slug>/product_1.jpg   logo on a shared "scene" photo       (kind=product)
    references.csv                          path,brand,kind,product_id,attributes (paths
                                            relative to it; a product's attributes give its
                                            logo's box: {"logo_box": [x0, y0, x1, y1]})
    listings/*.jpg  (sample) | queries/*.jpg (benchmark)
    labels.jsonl                            one QueryLabel per image, in a fixed order
    dataset.json                            the parameters and counts it was built with

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
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.bench import logos, photos, transforms
from detector.bench.transforms import Box
from detector.errors import ConfigError, DetectorError
from index.atomic import atomic_write_bytes, fsync_dir

GROUPS: tuple[str, ...] = (
    "copy",
    "product_repost",
    "logo_large",
    "logo_small",
    "mirrored",
    "recoloured",
    "neg_unindexed",
    "neg_nologo",
)
NEGATIVE_GROUPS: tuple[str, ...] = ("neg_unindexed", "neg_nologo")
SAMPLE_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g != "product_repost")

# Width-fraction ranges of the compositing recipes (share of the frame width).
WIDTH_RANGES: dict[str, tuple[float, float]] = {
    "logo_large": (0.30, 0.60),
    "logo_small": (0.08, 0.20),
    "mirrored": (0.20, 0.50),
    "recoloured": (0.20, 0.50),
}
JPEG_QUALITY_RANGE = (30, 90)
_REFERENCE_JPEG_QUALITY = 92
_LABELS = "labels.jsonl"
_MANIFEST = "references.csv"
_INFO = "dataset.json"
_FORMAT_VERSION = 2  # 2: product rows carry their logo box

# Stage codes mixed into every item's seed so items of different stages never share streams.
_STAGE_SCENE, _STAGE_PRODUCT, _STAGE_QUERY, _STAGE_PICK = 1, 2, 3, 4


# --- public values ----------------------------------------------------------------------


@dataclass(frozen=True)
class QueryLabel:
    """Ground truth for one listing/query image.

    Attributes:
        image: Image path relative to the labels file.
        brand: Indexed brand shown, or None for negatives.
        kind: ``"logo"`` or ``"product"`` (which reference kind it derives from), None for
            negatives.
        group: Transformation class, one of :data:`GROUPS`.
        box: ``[x0, y0, x1, y1]`` of the logo's painted pixels in image pixels (x1, y1
            exclusive), or None when no logo is visible.
        area_fraction: Box area / image area, or None.
        width_fraction: Box width / image width, or None.
        logo: Slug of the icon actually drawn (equals ``brand`` for positives; an unindexed
            brand for ``neg_unindexed``), or None.
        product_id: Product id of the source reference for ``product_repost``, else None.
    """

    image: str
    brand: str | None
    kind: str | None
    group: str
    box: tuple[int, int, int, int] | None
    area_fraction: float | None = None
    width_fraction: float | None = None
    logo: str | None = None
    product_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["box"] = list(self.box) if self.box is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryLabel:
        box = data.get("box")
        return cls(
            image=str(data["image"]),
            brand=data.get("brand"),
            kind=data.get("kind"),
            group=str(data["group"]),
            box=tuple(int(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
            area_fraction=data.get("area_fraction"),
            width_fraction=data.get("width_fraction"),
            logo=data.get("logo"),
            product_id=data.get("product_id"),
        )


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


def read_labels(path: str | os.PathLike[str]) -> list[QueryLabel]:
    """Read a ``labels.jsonl`` file.

    Args:
        path: The labels file; image paths in it are relative to its folder.

    Returns:
        Labels in file order.

    Raises:
        ConfigError: The file is missing or a line is not a valid label.

    Example:
        >>> labels = read_labels("sample/labels.jsonl")  # doctest: +SKIP
        >>> [l.image for l in labels if l.brand is None][:1]  # doctest: +SKIP
        ['listings/neg_nologo_00000.jpg']
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read labels file {path}: {e}") from e
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            labels.append(QueryLabel.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{number}: not a valid label: {e}") from e
    return labels


# --- build parameters and worker context ------------------------------------------------


@dataclass(frozen=True)
class _Params:
    """Everything that determines the bytes of a dataset (also written to dataset.json)."""

    kind: str
    seed: int
    brands: tuple[str, ...]
    unindexed: tuple[str, ...]
    groups: tuple[str, ...]
    per_class: int
    product_fraction: float
    brands_per_scene: int
    image_size: tuple[int, int]
    reference_size: int
    query_dir: str


@dataclass(frozen=True)
class _Product:
    slug: str
    product_id: str
    path: str  # relative to the dataset root
    box: Box


@dataclass(frozen=True)
class _Context:
    root: Path
    params: _Params
    products: tuple[_Product, ...] = ()


_WORKER_CONTEXT: _Context | None = None


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


# --- references -------------------------------------------------------------------------


def _logo_reference(ctx: _Context, slug: str) -> tuple[str, str, str, str, str]:
    rel = f"references/{slug}/logo.png"
    target = ctx.root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    logos.render_logo(slug, ctx.params.reference_size).save(target, format="PNG")
    return (rel, slug, "logo", "", "")


def _scene(params: _Params, scene: int) -> Image.Image:
    """A product-photo backdrop shared by several brands (the "similar scenes")."""
    return photos.random_background(_rng(params.seed, _STAGE_SCENE, scene), params.image_size)


def _product_reference(ctx: _Context, job: tuple[int, str, int]) -> _Product:
    index, slug, scene = job
    params = ctx.params
    rng = _rng(params.seed, _STAGE_PRODUCT, index)
    background = _scene(params, scene)
    logo = logos.render_logo(slug, _render_size(params, 0.45))
    logo = transforms.rotate(logo, rng.uniform(-8, 8))
    width_px = _fit_or_shrink(logo, background.size, 0.25, 0.45, rng.random())
    image, box = transforms.paste_logo(background, logo, width_px, rng)
    rel = f"references/{slug}/product_1.jpg"
    target = ctx.root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    _save_jpeg(image, target, _REFERENCE_JPEG_QUALITY)
    return _Product(slug, f"{slug}-p1", rel, box)


def _render_size(params: _Params, max_width_fraction: float) -> int:
    # Render at least as large as the biggest paste so compositing only ever downscales.
    return max(params.reference_size, math.ceil(max(params.image_size) * max_width_fraction) + 8)


def _fit_or_shrink(
    logo: Image.Image, frame: tuple[int, int], low: float, high: float, draw: float
) -> int:
    aspect = logo.height / logo.width
    width_px = transforms.fit_width_px(aspect, frame, low, high, draw)
    if width_px is None:
        # Very tall mark: largest width that still fits; below `low`, recorded in the label.
        width_px = max(4, math.floor(0.92 * frame[1] / aspect))
    return width_px


# --- queries ----------------------------------------------------------------------------


def _query(ctx: _Context, job: tuple[str, int]) -> QueryLabel:
    group, index = job
    params = ctx.params
    rng = _rng(params.seed, _STAGE_QUERY, GROUPS.index(group), index)
    rel = f"{params.query_dir}/{group}_{index:05d}.jpg"
    brand: str | None
    kind: str | None
    product_id = None
    if group == "neg_nologo":
        image, box = _no_logo(params, rng)
        brand = kind = logo_slug = None
    elif group == "neg_unindexed":
        logo_slug = params.unindexed[int(rng.integers(len(params.unindexed)))]
        recipe = ("copy", "logo_large", "logo_small", "mirrored", "recoloured")[
            int(rng.integers(5))
        ]
        image, box = _draw(ctx, recipe, logo_slug, rng)
        brand = kind = None
    elif group == "product_repost":
        product = ctx.products[int(rng.integers(len(ctx.products)))]
        source = Image.open(ctx.root / product.path).convert("RGB")
        image, box = _copy_edits(source, product.box, rng)
        brand = logo_slug = product.slug
        kind, product_id = "product", product.product_id
    else:
        logo_slug = params.brands[int(rng.integers(len(params.brands)))]
        image, box = _draw(ctx, group, logo_slug, rng)
        brand, kind = logo_slug, "logo"
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    _save_jpeg(image, ctx.root / rel, quality)
    width, height = image.size
    area = width_fraction = None
    if box is not None:
        area = round((box[2] - box[0]) * (box[3] - box[1]) / (width * height), 6)
        width_fraction = round((box[2] - box[0]) / width, 6)
    return QueryLabel(rel, brand, kind, group, box, area, width_fraction, logo_slug, product_id)


def _draw(
    ctx: _Context, recipe: str, slug: str, rng: np.random.Generator
) -> tuple[Image.Image, Box | None]:
    params = ctx.params
    if recipe == "copy":
        if slug in params.brands:  # copy the very file that was indexed
            reference = Image.open(ctx.root / f"references/{slug}/logo.png").convert("RGBA")
        else:  # unindexed brands have no reference file: render it the same way
            reference = logos.render_logo(slug, params.reference_size)
        paper = (255, 255, 255) if rng.random() < 0.8 else _light_colour(rng)
        flat = transforms.flatten(reference, paper)
        return _copy_edits(flat, transforms.alpha_box(reference), rng)
    return _composite(params, recipe, slug, rng)


def _light_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(200, 256, size=3))  # type: ignore[return-value]


def _copy_edits(
    image: Image.Image, box: Box | None, rng: np.random.Generator
) -> tuple[Image.Image, Box | None]:
    """Exact or near-exact re-post: maybe crop, border, resize, price tag (JPEG at save)."""
    if rng.random() < 0.2:  # exact copy: only the JPEG re-encode changes it
        return image, box
    if rng.random() < 0.5:
        image, box = transforms.crop_edges(image, box, rng, 0.08)
    if rng.random() < 0.4:
        image, box = transforms.pad(image, box, rng, 0.15)
    if rng.random() < 0.7:
        image, box = transforms.resize(image, box, rng.uniform(0.5, 1.5))
    if rng.random() < 0.4:
        image = transforms.price_tag(image, rng)
    return image, box


def _composite(
    params: _Params, recipe: str, slug: str, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    low, high = WIDTH_RANGES[recipe]
    logo = logos.render_logo(slug, _render_size(params, high))
    info = logos.get_icon(slug)
    plain = recipe in ("mirrored", "recoloured") and rng.random() < 0.3
    if recipe == "logo_large":
        if rng.random() < 0.6:
            logo = transforms.hue_shift(logo, rng.uniform(-90, 90))
        logo = transforms.perspective(logo, rng, rng.uniform(0.0, 0.15))
        logo = transforms.rotate(logo, rng.uniform(-30, 30))
        blur_radius = rng.uniform(0.0, 1.5) if rng.random() < 0.5 else 0.0
        noise = rng.uniform(0.0, 8.0) if rng.random() < 0.5 else 0.0
    elif recipe == "logo_small":
        if rng.random() < 0.3:
            logo = transforms.hue_shift(logo, rng.uniform(-45, 45))
        logo = transforms.perspective(logo, rng, rng.uniform(0.0, 0.08))
        logo = transforms.rotate(logo, rng.uniform(-15, 15))
        blur_radius = rng.uniform(0.0, 0.8) if rng.random() < 0.3 else 0.0
        noise = rng.uniform(0.0, 5.0) if rng.random() < 0.3 else 0.0
    elif recipe == "mirrored":
        logo = transforms.rotate(transforms.mirror(logo), rng.uniform(-10, 10))
        blur_radius, noise = 0.0, 0.0
    elif recipe == "recoloured":
        logo = transforms.recolour(logo, transforms.distinct_colour(rng, info.hex))
        logo = transforms.rotate(logo, rng.uniform(-10, 10))
        blur_radius, noise = 0.0, 0.0
    else:  # pragma: no cover - recipes are fixed in this module
        raise AssertionError(recipe)

    # Landscape frames mostly; portrait when drawn, or when a tall mark cannot fit otherwise.
    landscape = params.image_size
    portrait = (landscape[1], landscape[0])
    frames = [portrait, landscape] if rng.random() < 0.25 else [landscape, portrait]
    draw = rng.random()
    aspect = logo.height / logo.width
    frame = next(
        (f for f in frames if transforms.fit_width_px(aspect, f, low, high, draw)), frames[-1]
    )
    width_px = _fit_or_shrink(logo, frame, low, high, draw)
    background = (
        photos.plain_background(rng, frame) if plain else photos.random_background(rng, frame)
    )
    image, box = transforms.paste_logo(background, logo, width_px, rng)
    image = transforms.add_noise(transforms.blur(image, blur_radius), rng, noise)
    return image, box


def _no_logo(params: _Params, rng: np.random.Generator) -> tuple[Image.Image, None]:
    frame = params.image_size if rng.random() < 0.75 else params.image_size[::-1]
    image = photos.random_background(rng, frame)  # type: ignore[arg-type]
    if rng.random() < 0.4:
        image = transforms.price_tag(image, rng)
    if rng.random() < 0.3:
        image = transforms.blur(image, rng.uniform(0.0, 1.5))
    if rng.random() < 0.3:
        image = transforms.add_noise(image, rng, rng.uniform(0.0, 8.0))
    return image, None


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    # Fixed encoder settings: same pixels + same settings -> same bytes.
    buffer = io.BytesIO()
    image.convert("RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


# --- job runner ----------------------------------------------------------------------------


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx


def _run_job(payload: tuple[str, Any]) -> tuple[str, Any]:
    """Run one job in a worker; failures come back as values so the batch can go on."""
    name, job = payload
    assert _WORKER_CONTEXT is not None
    try:
        return ("ok", _JOBS[name](_WORKER_CONTEXT, job))
    except (DetectorError, OSError, ValueError) as e:
        return ("error", f"{name} {job}: {e}")


_JOBS: dict[str, Callable[[_Context, Any], Any]] = {
    "logo": _logo_reference,
    "product": _product_reference,
    "query": _query,
}


def _run_all(
    ctx: _Context, name: str, jobs: Sequence[Any], workers: int
) -> tuple[list[Any], list[str]]:
    payloads = [(name, job) for job in jobs]
    if workers <= 1 or len(jobs) < 8:
        _init_worker(ctx)
        results = [_run_job(p) for p in payloads]
    else:
        # spawn, not fork: the caller may have torch/BLAS threads that fork would copy badly.
        with multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(ctx,)
        ) as pool:
            results = list(pool.imap(_run_job, payloads, chunksize=8))
    done = [value for status, value in results if status == "ok"]
    errors = [value for status, value in results if status == "error"]
    return done, errors


# --- building -----------------------------------------------------------------------------


def _build(out_dir: Path, params: _Params, workers: int) -> tuple[dict[str, Any], bool]:
    """Build into a temp folder and move it into place; reuse an identical existing build.

    Returns:
        The dataset.json content and whether it was reused.
    """
    out_dir = Path(out_dir)
    params_json = _params_json(params)
    existing = _existing_info(out_dir)
    if existing is not None:
        if existing.get("params") == params_json:
            return existing, True
        raise ConfigError(
            f"{out_dir} already holds a dataset built with other parameters; "
            "choose another output folder or delete it"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not empty; choose an empty or new folder")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as e:
        raise DetectorError(f"cannot create dataset folder {out_dir}: {e}") from e
    try:
        info = _build_into(tmp, params, params_json, workers)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); os.replace needs it gone or empty
        os.replace(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DetectorError(f"cannot write dataset to {out_dir}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info, False


def _build_into(
    root: Path, params: _Params, params_json: dict[str, Any], workers: int
) -> dict[str, Any]:
    ctx = _Context(root, params)
    rows, errors = _run_all(ctx, "logo", list(params.brands), workers)

    products: list[_Product] = []
    n_products = round(params.product_fraction * len(params.brands))
    if n_products:
        order = _rng(params.seed, _STAGE_PICK).permutation(len(params.brands))[:n_products]
        # Consecutive product brands share a backdrop: groups of look-alike scenes.
        jobs = [
            (i, params.brands[int(b)], i // params.brands_per_scene) for i, b in enumerate(order)
        ]
        products, product_errors = _run_all(ctx, "product", jobs, workers)
        errors += product_errors
        # Brands mark where the logo is on their product photo (the scorer checks that area).
        rows += [
            (p.path, p.slug, "product", p.product_id, json.dumps({"logo_box": [int(v) for v in p.box]}))
            for p in products
        ]
    ctx = _Context(root, params, tuple(products))

    query_jobs = [
        (group, i)
        for group in params.groups
        if not (group == "product_repost" and not products)
        for i in range(params.per_class)
    ]
    labels, query_errors = _run_all(ctx, "query", query_jobs, workers)
    errors += query_errors

    _write_manifest(root / _MANIFEST, rows)
    _write_text(root / _LABELS, "".join(json.dumps(l.to_dict()) + "\n" for l in labels))
    info = {
        "format": _FORMAT_VERSION,
        "params": params_json,
        "n_references": len(rows),
        "n_queries": len(labels),
        "group_counts": dict(Counter(label.group for label in labels)),
        "skipped": errors,
    }
    _write_text(root / _INFO, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_manifest(path: Path, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "brand", "kind", "product_id", "attributes"])
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _params_json(params: _Params) -> dict[str, Any]:
    # Round-trip through JSON so tuples compare equal to what a reload gives back.
    return json.loads(json.dumps(asdict(params)))


def _existing_info(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / _INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable; delete {out_dir} and rebuild: {e}") from e
    if not isinstance(info, dict) or info.get("format") != _FORMAT_VERSION:
        raise ConfigError(f"{path} has an unknown format; delete {out_dir} and rebuild")
    return info


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
    params = _Params(
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
    info, _ = _build(Path(out_dir), params, workers=1)
    root = Path(out_dir)
    return SampleSet(
        root=root,
        references_dir=root / "references",
        manifest_path=root / _MANIFEST,
        labels_path=root / _LABELS,
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
    brands = logos.select_brands(n_brands, seed=seed)
    unindexed = logos.select_brands(n_unindexed, seed=seed + 1, exclude=brands)
    params = _Params(
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
    )
    info, _ = _build(Path(out_dir), params, workers)
    root = Path(out_dir)
    return BenchmarkSet(
        root=root,
        references_dir=root / "references",
        manifest_path=root / _MANIFEST,
        labels_path=root / _LABELS,
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
