"""The reference set: one logo per indexed brand, and product photos that share backdrops.

Product photos of consecutive brands are drawn on one shared scene (groups of look-alike
photos): a photo backdrop with the logo pasted on it, or (``studio`` backgrounds) the same
drawn product on a white sweep with the logo printed on it. Each records where its logo is.
"""

from __future__ import annotations

import math

from PIL import Image

from detector.bench import photos, studio, transforms
from detector.bench.build_context import (
    STAGE_PRODUCT,
    STAGE_SCENE,
    BuildContext,
    BuildParams,
    Product,
    item_rng,
    save_jpeg,
)

_REFERENCE_JPEG_QUALITY = 92


def logo_reference(ctx: BuildContext, slug: str) -> tuple[str, str, str, str, str]:
    """Write a brand's logo reference; returns its ``references.csv`` row."""
    rel = f"references/{slug}/logo.png"
    target = ctx.root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    ctx.logos.render(slug, ctx.params.reference_size).save(target, format="PNG")
    return (rel, slug, "logo", "", "")


def _scene(params: BuildParams, scene: int) -> Image.Image:
    """A product-photo backdrop shared by several brands (the "similar scenes")."""
    return photos.random_background(item_rng(params.seed, STAGE_SCENE, scene), params.image_size)


def product_reference(ctx: BuildContext, job: tuple[int, str, int]) -> Product:
    """Write product photo ``index`` of a brand on backdrop ``scene``; returns where its logo is."""
    index, slug, scene = job
    params = ctx.params
    rng = item_rng(params.seed, STAGE_PRODUCT, index)
    logo = ctx.logos.render(slug, render_size(params, 0.45))
    if params.backgrounds == "studio":
        # The scene is the shoot: the same product, colours and framing for its brands.
        style = studio.draw_style(item_rng(params.seed, STAGE_SCENE, scene))
        image, found = studio.studio_shot(style, logo, rng, params.image_size)
        if found is None:
            raise ValueError(f"the logo of {slug} fell off its studio shot")
        box = found
    else:
        background = _scene(params, scene)
        logo = transforms.rotate(logo, rng.uniform(-8, 8))
        width_px = fit_or_shrink(logo, background.size, 0.25, 0.45, rng.random())
        image, box = transforms.paste_logo(background, logo, width_px, rng)
    rel = f"references/{slug}/product_1.jpg"
    target = ctx.root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    save_jpeg(image, target, _REFERENCE_JPEG_QUALITY)
    return Product(slug, f"{slug}-p1", rel, box)


def render_size(params: BuildParams, max_width_fraction: float) -> int:
    # Render at least as large as the biggest paste so compositing only ever downscales.
    return max(params.reference_size, math.ceil(max(params.image_size) * max_width_fraction) + 8)


def fit_or_shrink(
    logo: Image.Image, frame: tuple[int, int], low: float, high: float, draw: float
) -> int:
    aspect = logo.height / logo.width
    width_px = transforms.fit_width_px(aspect, frame, low, high, draw)
    if width_px is None:
        # Very tall mark: largest width that still fits; below `low`, recorded in the label.
        width_px = max(4, math.floor(0.92 * frame[1] / aspect))
    return width_px
