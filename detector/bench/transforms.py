"""Listing-like image edits: logo geometry and colour, compositing, copy edits, degradations.

Every function takes an explicit ``numpy.random.Generator`` so that a dataset item is a pure
function of its seed. Boxes are ``(x0, y0, x1, y1)`` in pixels, exclusive on the right and
bottom like PIL's ``getbbox``.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Box = tuple[int, int, int, int]

# Alpha at or above this counts as "logo" when measuring boxes (ignores faint resampling halo).
ALPHA_ON = 32


def alpha_box(logo: Image.Image) -> Box | None:
    """Bounding box of the pixels with alpha >= :data:`ALPHA_ON`, or None when none."""
    mask = logo.getchannel("A").point(lambda a: 255 if a >= ALPHA_ON else 0)
    return mask.getbbox()


def crop_to_alpha(logo: Image.Image) -> Image.Image:
    """Crop an RGBA logo to its painted pixels (unchanged when nothing is painted)."""
    box = alpha_box(logo)
    return logo.crop(box) if box else logo


# --- logo geometry and colour (RGBA in, RGBA out) ---------------------------------------


def mirror(logo: Image.Image) -> Image.Image:
    """Left-right mirror, as counterfeiters and careless re-uploads do."""
    return logo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def rotate(logo: Image.Image, degrees: float) -> Image.Image:
    """Rotate counter-clockwise on an enlarged transparent canvas, cropped to the logo."""
    # Premultiplied alpha keeps transparent (black) pixels from bleeding dark fringes.
    out = logo.convert("RGBa").rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    return crop_to_alpha(out.convert("RGBA"))


def perspective(logo: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Random keystone/perspective warp: each corner moves up to ``strength`` of the size.

    Args:
        logo: RGBA logo.
        rng: Source of randomness.
        strength: 0 for none; 0.2 is a strong but plausible camera tilt.

    Returns:
        RGBA logo cropped to its painted pixels.
    """
    w, h = logo.size
    pad = math.ceil(strength * max(w, h)) + 2
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    dst = src + rng.uniform(-strength, strength, size=(4, 2)) * np.array([w, h]) + pad
    # PIL maps output -> input: solve the homography taking dst corners to src corners.
    coeffs = _homography(dst, src)
    canvas = (w + 2 * pad, h + 2 * pad)
    out = logo.convert("RGBa").transform(
        canvas, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC
    )
    return crop_to_alpha(out.convert("RGBA"))


def _homography(from_pts: np.ndarray, to_pts: np.ndarray) -> tuple[float, ...]:
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(from_pts, to_pts, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    solution = np.linalg.solve(np.array(rows), np.array(rhs))
    return tuple(float(c) for c in solution)


def recolour(logo: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    """Paint every logo pixel in one colour, keeping the shape (alpha) unchanged."""
    out = Image.new("RGBA", logo.size, (*rgb, 0))
    out.putalpha(logo.getchannel("A"))
    return out


def tint(logo: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    """Re-colour a multi-colour logo in shades of one colour, keeping its inner structure.

    Each pixel's luminance picks a shade between ``rgb`` (dark parts) and white (light parts),
    so a white glyph on a coloured disc stays a light glyph on a disc of the new colour (a
    one-colour :func:`recolour` would leave a plain disc).
    """
    rgba = np.asarray(logo.convert("RGBA"), dtype=np.float32)
    lum = (0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]) / 255.0
    lum = lum[..., None]
    colour = np.asarray(rgb, dtype=np.float32)
    out = colour * (1 - lum) + 255.0 * lum
    pixels = np.concatenate([np.clip(np.rint(out), 0, 255), rgba[..., 3:4]], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


def distinct_colour(rng: np.random.Generator, avoid_hex: str) -> tuple[int, int, int]:
    """A saturated random colour whose hue is far (>= 90 degrees) from ``avoid_hex``.

    Near-grey brand colours (black, white) have no meaningful hue: any saturated colour
    is already distinct from them.
    """
    r, g, b = (int(avoid_hex[i : i + 2], 16) / 255 for i in (0, 2, 4))
    avoid_h, _, avoid_s = colorsys.rgb_to_hls(r, g, b)
    if avoid_s < 0.15 or max(r, g, b) - min(r, g, b) < 0.1:
        hue = rng.uniform(0, 1)
    else:
        hue = (avoid_h + rng.uniform(0.25, 0.75)) % 1.0
    light = rng.uniform(0.3, 0.6)
    red, green, blue = colorsys.hls_to_rgb(hue, light, rng.uniform(0.6, 1.0))
    return (round(red * 255), round(green * 255), round(blue * 255))


def hue_shift(logo: Image.Image, degrees: float) -> Image.Image:
    """Rotate the hue of the logo's colours (alpha kept): a filter or print colour change."""
    rgb = logo.convert("RGB").convert("HSV")
    hsv = np.asarray(rgb).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(degrees / 360 * 256)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB").convert("RGBA")
    out.putalpha(logo.getchannel("A"))
    return out


# --- compositing -----------------------------------------------------------------------


def fit_width_px(
    logo_aspect: float, frame: tuple[int, int], low: float, high: float, draw: float
) -> int | None:
    """Logo width in pixels for a target width fraction, or None if it cannot fit the frame.

    Args:
        logo_aspect: Logo height / width.
        frame: (width, height) of the frame.
        low: Smallest allowed width fraction.
        high: Largest allowed width fraction.
        draw: Uniform draw in [0, 1) choosing the fraction within the feasible range.

    Returns:
        The width in pixels, kept 2 px inside the range so that resampling cannot push the
        measured box outside it; None when even ``low`` makes the logo taller than 92 % of
        the frame.
    """
    width, height = frame
    lo_px = math.ceil(low * width) + 2
    hi_px = math.floor(high * width) - 2
    hi_px = min(hi_px, math.floor(0.92 * height / logo_aspect))
    if hi_px < lo_px:
        return None
    return lo_px + int(draw * (hi_px - lo_px + 1))


def paste_logo(
    background: Image.Image, logo: Image.Image, width_px: int, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    """Resize the logo to ``width_px`` wide and alpha-composite it at a random position.

    Args:
        background: RGB frame.
        logo: RGBA logo cropped to its painted pixels.
        width_px: Target logo width; the height follows the aspect ratio.
        rng: Chooses the position (the logo always lies fully inside the frame).

    Returns:
        The RGB composite and the logo's box in frame pixels.
    """
    scale = width_px / logo.width
    size = (width_px, max(1, round(logo.height * scale)))
    resized = logo.resize(size, Image.Resampling.LANCZOS)
    frame_w, frame_h = background.size
    x = int(rng.integers(0, max(frame_w - size[0], 0) + 1))
    y = int(rng.integers(0, max(frame_h - size[1], 0) + 1))
    canvas = background.convert("RGBA")
    canvas.alpha_composite(resized, (x, y))
    inner = alpha_box(resized) or (0, 0, size[0], size[1])
    box = (x + inner[0], y + inner[1], x + inner[2], y + inner[3])
    return canvas.convert("RGB"), box


def flatten(logo: Image.Image, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Put an RGBA logo on an opaque background (JPEG has no transparency)."""
    canvas = Image.new("RGBA", logo.size, (*colour, 255))
    canvas.alpha_composite(logo)
    return canvas.convert("RGB")


# --- whole-image edits (RGB in, RGB out, box tracked) ---------------------------------


def blur(image: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur (out-of-focus phone photo)."""
    return image.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else image


def add_noise(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Additive Gaussian sensor noise with standard deviation ``sigma`` (0..255 scale)."""
    if sigma <= 0:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def crop_edges(
    image: Image.Image, box: Box | None, rng: np.random.Generator, max_fraction: float
) -> tuple[Image.Image, Box | None]:
    """Cut up to ``max_fraction`` of the size from each side (a sloppy screenshot crop)."""
    w, h = image.size
    left, right = (int(rng.uniform(0, max_fraction) * w) for _ in range(2))
    top, bottom = (int(rng.uniform(0, max_fraction) * h) for _ in range(2))
    crop = (left, top, w - right, h - bottom)
    return image.crop(crop), _clip_box(box, crop)


def pad(
    image: Image.Image, box: Box | None, rng: np.random.Generator, max_fraction: float
) -> tuple[Image.Image, Box | None]:
    """Add a border of random width per side in white, black or a random colour."""
    w, h = image.size
    left, right = (int(rng.uniform(0.02, max_fraction) * w) for _ in range(2))
    top, bottom = (int(rng.uniform(0.02, max_fraction) * h) for _ in range(2))
    choice = rng.random()
    if choice < 0.5:
        colour: tuple[int, int, int] = (255, 255, 255)
    elif choice < 0.7:
        colour = (0, 0, 0)
    else:
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))  # type: ignore[assignment]
    out = Image.new("RGB", (w + left + right, h + top + bottom), colour)
    out.paste(image, (left, top))
    moved = None if box is None else (box[0] + left, box[1] + top, box[2] + left, box[3] + top)
    return out, moved


def resize(image: Image.Image, box: Box | None, scale: float) -> tuple[Image.Image, Box | None]:
    """Uniform rescale by ``scale`` (at least 16 px a side), box scaled to match."""
    w, h = image.size
    new = (max(16, round(w * scale)), max(16, round(h * scale)))
    out = image.resize(new, Image.Resampling.BICUBIC)
    if box is None:
        return out, None
    sx, sy = new[0] / w, new[1] / h
    scaled = (
        math.floor(box[0] * sx),
        math.floor(box[1] * sy),
        math.ceil(box[2] * sx),
        math.ceil(box[3] * sy),
    )
    return out, _clip_box(scaled, (0, 0, new[0], new[1]))


_TAG_TEXTS = (
    "$19.99",
    "EUR 24.90",
    "SALE -50%",
    "$9.99",
    "NEW",
    "ORIGINAL",
    "-30% OFF",
    "FREE SHIP",
)


def price_tag(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Overlay a marketplace-style price or promo sticker in a random corner."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(10, int(min(w, h) * rng.uniform(0.06, 0.12)))
    font = ImageFont.load_default(size=size)
    text = _TAG_TEXTS[int(rng.integers(len(_TAG_TEXTS)))]
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    margin = size // 3
    tag_w, tag_h = x1 - x0 + 2 * margin, y1 - y0 + 2 * margin
    corner_x = 0 if rng.random() < 0.5 else max(w - tag_w, 0)
    corner_y = 0 if rng.random() < 0.5 else max(h - tag_h, 0)
    fill = ((220, 20, 30), (255, 200, 0), (255, 255, 255), (20, 20, 20))[int(rng.integers(4))]
    ink = (255, 255, 255) if sum(fill) < 500 or fill[0] > 200 and fill[1] < 100 else (0, 0, 0)
    draw.rectangle((corner_x, corner_y, corner_x + tag_w, corner_y + tag_h), fill=fill)
    draw.text((corner_x + margin - x0, corner_y + margin - y0), text, font=font, fill=ink)
    return out


def _clip_box(box: Box | None, window: Box) -> Box | None:
    """Box expressed in the coordinates of ``window`` (a crop), or None if nothing is left."""
    if box is None:
        return None
    x0 = max(box[0], window[0]) - window[0]
    y0 = max(box[1], window[1]) - window[1]
    x1 = min(box[2], window[2]) - window[0]
    y1 = min(box[3], window[3]) - window[1]
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)
