"""Query images of each group: the edits of a re-post and the compositing recipes.

:func:`query` draws one query of a group (see :data:`detector.bench.labels.GROUPS`) from its
own seeded generator and returns its label. With ``studio`` backgrounds the logo is printed on a
drawn product placed with perspective in a photo or another studio shot
(:mod:`detector.bench.studio`) instead of pasted on a photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from detector.bench import photos, studio, transforms
from detector.bench.build_context import STAGE_QUERY, BuildContext, BuildParams, item_rng, save_jpeg
from detector.bench.labels import GROUPS, QueryLabel
from detector.bench.references import fit_or_shrink, render_size
from detector.bench.transforms import Box

# Width-fraction ranges of the compositing recipes (share of the frame width).
WIDTH_RANGES: dict[str, tuple[float, float]] = {
    "logo_large": (0.30, 0.60),
    "logo_small": (0.08, 0.20),
    "mirrored": (0.20, 0.50),
    "recoloured": (0.20, 0.50),
}
JPEG_QUALITY_RANGE = (30, 90)


def query(ctx: BuildContext, job: tuple[str, int]) -> QueryLabel:
    """Write query ``index`` of ``group``; returns its label."""
    group, index = job
    params = ctx.params
    rng = item_rng(params.seed, STAGE_QUERY, GROUPS.index(group), index)
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
        if params.backgrounds == "studio" and rng.random() < 0.5:
            image, box = _shot_in_scene(params, source, product.box, rng)
        else:
            image, box = _copy_edits(source, product.box, rng)
        brand = logo_slug = product.slug
        kind, product_id = "product", product.product_id
    else:
        logo_slug = params.brands[int(rng.integers(len(params.brands)))]
        image, box = _draw(ctx, group, logo_slug, rng)
        brand, kind = logo_slug, "logo"
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    save_jpeg(image, ctx.root / rel, quality)
    width, height = image.size
    area = width_fraction = None
    if box is not None:
        area = round((box[2] - box[0]) * (box[3] - box[1]) / (width * height), 6)
        width_fraction = round((box[2] - box[0]) / width, 6)
    return QueryLabel(rel, brand, kind, group, box, area, width_fraction, logo_slug, product_id)


def _draw(
    ctx: BuildContext, recipe: str, slug: str, rng: np.random.Generator
) -> tuple[Image.Image, Box | None]:
    params = ctx.params
    if recipe == "copy":
        if slug in params.brands:  # copy the very file that was indexed
            reference = Image.open(ctx.root / f"references/{slug}/logo.png").convert("RGBA")
        else:  # unindexed brands have no reference file: render it the same way
            reference = ctx.logos.render(slug, params.reference_size)
        paper = (255, 255, 255) if rng.random() < 0.8 else _light_colour(rng)
        flat = transforms.flatten(reference, paper)
        return _copy_edits(flat, transforms.alpha_box(reference), rng)
    return _composite(ctx, recipe, slug, rng)


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
    ctx: BuildContext, recipe: str, slug: str, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    params = ctx.params
    on_product = params.backgrounds == "studio"
    low, high = WIDTH_RANGES[recipe]
    logo = ctx.logos.render(slug, render_size(params, high))
    plain = recipe in ("mirrored", "recoloured") and rng.random() < 0.3
    # On a product, the tilt is the product's (drawn here, applied when it is placed).
    tilt = _STUDIO_TILT[recipe]
    if recipe == "logo_large":
        if rng.random() < 0.6:
            logo = transforms.hue_shift(logo, rng.uniform(-90, 90))
        tilt = rng.uniform(0.0, 0.15)
        if not on_product:
            logo = transforms.perspective(logo, rng, tilt)
        logo = transforms.rotate(logo, rng.uniform(-30, 30))
        blur_radius = rng.uniform(0.0, 1.5) if rng.random() < 0.5 else 0.0
        noise = rng.uniform(0.0, 8.0) if rng.random() < 0.5 else 0.0
    elif recipe == "logo_small":
        if rng.random() < 0.3:
            logo = transforms.hue_shift(logo, rng.uniform(-45, 45))
        tilt = rng.uniform(0.0, 0.08)
        if not on_product:
            logo = transforms.perspective(logo, rng, tilt)
        logo = transforms.rotate(logo, rng.uniform(-15, 15))
        blur_radius = rng.uniform(0.0, 0.8) if rng.random() < 0.3 else 0.0
        noise = rng.uniform(0.0, 5.0) if rng.random() < 0.3 else 0.0
    elif recipe == "mirrored":
        logo = transforms.rotate(transforms.mirror(logo), rng.uniform(-10, 10))
        blur_radius, noise = 0.0, 0.0
    elif recipe == "recoloured":
        colour = transforms.distinct_colour(rng, ctx.logos.colour(slug))
        # A one-colour mark is repainted; a colour mark keeps its structure in one hue.
        if ctx.logos.monochrome:
            logo = transforms.recolour(logo, colour)
        else:
            logo = transforms.tint(logo, colour)
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
    width_px = fit_or_shrink(logo, frame, low, high, draw)
    if on_product:
        image, box = _printed_in_scene(logo, frame, width_px, tilt, plain, rng)
    else:
        background = (
            photos.plain_background(rng, frame) if plain else photos.random_background(rng, frame)
        )
        image, box = transforms.paste_logo(background, logo, width_px, rng)
    image = transforms.add_noise(transforms.blur(image, blur_radius), rng, noise)
    return image, box


# Perspective of the product a logo is printed on, per recipe (logo_large and logo_small draw
# theirs like the logo's own tilt on photos).
_STUDIO_TILT = {"logo_large": 0.0, "logo_small": 0.0, "mirrored": 0.06, "recoloured": 0.06}


def _scene_background(
    frame: tuple[int, int], studio_shot: bool, rng: np.random.Generator
) -> Image.Image:
    """Where a product is placed: another (logo-free) studio shot, or a photo."""
    if studio_shot:
        return studio.studio_shot(studio.draw_style(rng), None, rng, frame)[0]
    return photos.random_background(rng, frame)


def _printed_in_scene(
    logo: Image.Image,
    frame: tuple[int, int],
    width_px: int,
    tilt: float,
    plain: bool,
    rng: np.random.Generator,
) -> tuple[Image.Image, Box]:
    """``studio``: the logo printed on a drawn product, placed with perspective in a scene."""
    style = studio.draw_style(rng)
    cut = studio.product_cutout(style, logo, rng, logo_width=width_px)
    background = _scene_background(frame, plain or rng.random() < 0.25, rng)
    image, box = studio.place_product(cut, background, rng, strength=tilt, logo_width=width_px)
    if box is None:
        raise ValueError("the printed logo fell off the frame")
    return image, box


def _shot_in_scene(
    params: BuildParams, shot: Image.Image, box: Box, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    """``studio``: a product photo shown within another photo, with perspective (50-90 % wide)."""
    frame = params.image_size
    rgba = shot.convert("RGBA")
    mask = Image.new("L", shot.size, 0)
    mask.paste(255, box)
    cut = studio.Cutout(rgba, mask, box, (255, 255, 255))
    share = rng.uniform(0.5, 0.9) * frame[0] / shot.width
    logo_width = max(2, round((box[2] - box[0]) * share))
    background = _scene_background(frame, rng.random() < 0.25, rng)
    tilt = rng.uniform(0.0, 0.12)
    image, placed = studio.place_product(cut, background, rng, strength=tilt, logo_width=logo_width)
    if placed is None:
        raise ValueError("the product photo's logo fell off the frame")
    return image, placed


def _no_logo(params: BuildParams, rng: np.random.Generator) -> tuple[Image.Image, None]:
    frame = params.image_size if rng.random() < 0.75 else params.image_size[::-1]
    if params.backgrounds == "studio":
        # A logo-free product: a studio shot like the references', or placed in a scene.
        style = studio.draw_style(rng)
        if rng.random() < 0.5:
            image = studio.studio_shot(style, None, rng, frame)[0]  # type: ignore[arg-type]
        else:
            cut = studio.product_cutout(style, None, rng, product_width=frame[0] // 2)
            scene = _scene_background(frame, rng.random() < 0.25, rng)  # type: ignore[arg-type]
            image = studio.place_product(cut, scene, rng, strength=0.1, logo_width=None)[0]
    else:
        image = photos.random_background(rng, frame)  # type: ignore[arg-type]
    if rng.random() < 0.4:
        image = transforms.price_tag(image, rng)
    if rng.random() < 0.3:
        image = transforms.blur(image, rng.uniform(0.0, 1.5))
    if rng.random() < 0.3:
        image = transforms.add_noise(image, rng, rng.uniform(0.0, 8.0))
    return image, None
