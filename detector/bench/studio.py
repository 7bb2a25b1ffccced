"""Studio product shots: drawn products with a brand's logo printed on them, on a white sweep.

The ``studio`` backgrounds of a bench set (``--backgrounds studio``). A product is drawn from a
:class:`StudioStyle` (what several brands' product photos share: the product kind, its colours,
the backdrop, the framing) so that different brands' shots look alike as whole images and
differ only by the print. :func:`studio_shot` is a product photo as a brand registers it;
:func:`product_cutout` is the product alone (RGBA, with the printed logo's mask) for placing it
into another photo with perspective (:func:`place_product`).

Everything is drawn with PIL and numpy from an explicit generator (a few ms per image), and
every draw is made whether or not a logo is printed, so a shot without the logo is the same
shot with the logo's pixels left blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detector.bench import transforms
from detector.bench.transforms import Box

RGB = tuple[int, int, int]

PRODUCT_KINDS: tuple[str, ...] = ("tshirt", "tote", "cap", "box", "bottle", "mug", "phone_case")

# Body colours of everyday products (garments, bags, packaging), jittered per style.
_PALETTE: tuple[RGB, ...] = (
    (245, 245, 242),
    (30, 30, 32),
    (28, 40, 78),
    (128, 130, 134),
    (180, 30, 38),
    (34, 90, 52),
    (214, 196, 160),
    (40, 86, 180),
    (232, 150, 170),
    (240, 200, 60),
    (112, 112, 60),
    (110, 28, 40),
    (140, 190, 230),
    (230, 120, 40),
    (100, 60, 140),
    (62, 64, 70),
)

# Width / height of each product's drawing box.
_ASPECT = {
    "tshirt": 1.0,
    "tote": 0.85,
    "cap": 1.3,
    "box": 1.0,
    "bottle": 0.4,
    "mug": 1.25,
    "phone_case": 0.5,
}
# Where a print goes, as fractions of the drawing box (x0, y0, x1, y1).
_PRINT_AREA = {
    "tshirt": (0.30, 0.20, 0.70, 0.58),
    "tote": (0.18, 0.42, 0.82, 0.90),
    "cap": (0.30, 0.14, 0.70, 0.52),
    "box": (0.08, 0.36, 0.67, 0.92),
    "bottle": (0.14, 0.42, 0.86, 0.80),
    "mug": (0.08, 0.22, 0.64, 0.82),
    "phone_case": (0.14, 0.34, 0.86, 0.78),
}
_SUPERSAMPLE = 2
_SUPERSAMPLE_UP_TO = 640  # longest side (px) up to which shapes are drawn at 2x and reduced
_MIN_PRINT_CONTRAST = 0.3  # luminance difference between a print and the body under it


@dataclass(frozen=True)
class StudioStyle:
    """What one product photo shoot looks like (shared by the brands of one scene).

    Attributes:
        kind: One of :data:`PRODUCT_KINDS`.
        body, alt_body: Body colours; ``alt_body`` has the opposite lightness and is used when
            the print would not show on ``body``.
        accent: Colour of small parts (bottle cap, camera, handle rims).
        backdrop_top, backdrop_bottom: The studio sweep, light grey to white.
        height: Product height as a share of the frame height.
        offset: Product centre offset from the frame centre, shares of the frame (x, y).
        shadow: Darkness of the soft shadow under the product, 0..1.
    """

    kind: str
    body: RGB
    alt_body: RGB
    accent: RGB
    backdrop_top: RGB
    backdrop_bottom: RGB
    height: float
    offset: tuple[float, float]
    shadow: float


@dataclass(frozen=True)
class Cutout:
    """A drawn product alone: RGBA image, the printed logo's mask (L) and box, the body colour."""

    image: Image.Image
    logo_mask: Image.Image | None
    box: Box | None
    body: RGB


def draw_style(rng: np.random.Generator) -> StudioStyle:
    """A random shoot: product kind, colours, backdrop and framing."""
    kind = PRODUCT_KINDS[int(rng.integers(len(PRODUCT_KINDS)))]
    body = _jitter(_PALETTE[int(rng.integers(len(_PALETTE)))], rng, 12)
    light = _luminance(body) > 0.45
    alt = _jitter((36, 36, 40) if light else (240, 240, 236), rng, 10)
    accent = _jitter(_PALETTE[int(rng.integers(len(_PALETTE)))], rng, 12)
    grey = int(rng.integers(226, 256))
    tint = rng.integers(-6, 7, size=3)
    top = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    bottom = tuple(int(np.clip(c - rng.integers(8, 30), 0, 255)) for c in top)
    return StudioStyle(
        kind=kind,
        body=body,
        alt_body=alt,
        accent=accent,
        backdrop_top=top,  # type: ignore[arg-type]
        backdrop_bottom=bottom,  # type: ignore[arg-type]
        height=float(rng.uniform(0.55, 0.82)),
        offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.04, 0.04))),
        shadow=float(rng.uniform(0.18, 0.38)),
    )


def body_for(style: StudioStyle, logo: Image.Image | None) -> RGB:
    """The body colour a print shows on: ``body``, or ``alt_body`` when the print is too close."""
    if logo is None:
        return style.body
    if abs(_luminance(style.body) - _logo_luminance(logo)) >= _MIN_PRINT_CONTRAST:
        return style.body
    return style.alt_body


def product_cutout(
    style: StudioStyle,
    logo: Image.Image | None,
    rng: np.random.Generator,
    *,
    product_width: int | None = None,
    logo_width: int | None = None,
    body: RGB | None = None,
) -> Cutout:
    """Draw the product with the logo printed in its print area (scale, slight rotation).

    Args:
        style: The shoot.
        logo: RGBA logo cropped tight, or None for a blank product.
        rng: Source of randomness; the same draws are made with and without a logo.
        product_width: Width of the product's drawing box in pixels; or
        logo_width: the print's width in pixels before rotation (the product is sized to it).
        body: Body colour (default :func:`body_for`).

    Returns:
        The cutout; ``box`` is where the logo's painted pixels are in it.
    """
    fill = float(rng.uniform(0.55, 0.95))  # share of the print area's width the print takes
    angle = float(rng.uniform(-6.0, 6.0))
    place = rng.random(2)
    px0, py0, px1, py1 = _PRINT_AREA[style.kind]
    aspect = _ASPECT[style.kind]
    if product_width is None:
        if logo_width is None:
            raise ValueError("give product_width or logo_width")
        product_width = max(16, round(logo_width / (fill * (px1 - px0))))
    width = max(16, int(product_width))
    height = max(16, round(width / aspect))
    colour = body if body is not None else body_for(style, logo)

    body_mask, accent_mask, face_shade = _draw_masks(style.kind, width, height)
    shade = _shading(style.kind, width, height) * face_shade
    layer = np.empty((height, width, 3), dtype=np.float32)
    layer[:] = np.asarray(colour, dtype=np.float32)
    accent = np.asarray(accent_mask, dtype=np.float32)[..., None] / 255.0
    layer = layer * (1 - accent) + np.asarray(style.accent, dtype=np.float32) * accent

    mask_img: Image.Image | None = None
    box: Box | None = None
    if logo is not None:
        print_w = (px1 - px0) * width * fill
        area_h = (py1 - py0) * height
        scale = min(print_w / logo.width, 0.95 * area_h / logo.height)
        size = (max(2, round(logo.width * scale)), max(2, round(logo.height * scale)))
        printed = transforms.rotate(logo.resize(size, Image.Resampling.LANCZOS), angle)
        free_x = max(0.0, (px1 - px0) * width - printed.width)
        free_y = max(0.0, area_h - printed.height)
        x = round(px0 * width + place[0] * free_x)
        y = round(py0 * height + place[1] * free_y)
        rgba = np.asarray(printed, dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        h, w = rgba.shape[:2]
        region = layer[y : y + h, x : x + w]
        region[:] = region * (1 - alpha[: region.shape[0], : region.shape[1]]) + (
            rgba[: region.shape[0], : region.shape[1], :3]
            * alpha[: region.shape[0], : region.shape[1]]
        )
        full = Image.new("L", (width, height), 0)
        full.paste(printed.getchannel("A"), (x, y))
        inner = transforms.alpha_box(printed)
        if inner is not None:
            box = _clip((x + inner[0], y + inner[1], x + inner[2], y + inner[3]), (width, height))
        mask_img = full
    pixels = np.clip(layer * shade[..., None], 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").convert("RGBA")
    image.putalpha(body_mask)
    return Cutout(image, mask_img, box, colour)


def studio_shot(
    style: StudioStyle,
    logo: Image.Image | None,
    rng: np.random.Generator,
    frame: tuple[int, int],
    *,
    body: RGB | None = None,
) -> tuple[Image.Image, Box | None]:
    """A product photo on the studio sweep with a soft shadow: (RGB image, logo box or None)."""
    fw, fh = frame
    aspect = _ASPECT[style.kind]
    height = style.height * fh
    width = min(height * aspect, 0.8 * fw)
    cut = product_cutout(style, logo, rng, product_width=round(width), body=body)
    x = round(fw / 2 - cut.image.width / 2 + style.offset[0] * fw)
    y = round(fh / 2 - cut.image.height / 2 + style.offset[1] * fh)
    canvas = backdrop(style, frame)
    canvas = _shadow(canvas, cut.image, (x, y), style.shadow)
    canvas.paste(cut.image, (x, y), cut.image)
    box = None
    if cut.box is not None:
        box = _clip((cut.box[0] + x, cut.box[1] + y, cut.box[2] + x, cut.box[3] + y), frame)
    return canvas.convert("RGB"), box


def backdrop(style: StudioStyle, frame: tuple[int, int]) -> Image.Image:
    """The studio sweep: a vertical gradient from ``backdrop_top`` to ``backdrop_bottom``."""
    fw, fh = frame
    top = np.asarray(style.backdrop_top, dtype=np.float32)
    bottom = np.asarray(style.backdrop_bottom, dtype=np.float32)
    t = np.linspace(0.0, 1.0, fh, dtype=np.float32)[:, None, None] ** 1.5
    column = top * (1 - t) + bottom * t
    return Image.fromarray(np.broadcast_to(column, (fh, fw, 3)).astype(np.uint8), "RGB")


def place_product(
    cut: Cutout,
    background: Image.Image,
    rng: np.random.Generator,
    *,
    strength: float,
    logo_width: int | None,
) -> tuple[Image.Image, Box | None]:
    """Warp a cutout with perspective and paste it into ``background``.

    With a logo, the product is scaled so that the logo's box is ``logo_width`` pixels wide and
    placed so that the logo lies inside the frame (the product may run off it: a close-up);
    without one, the product takes 40-90 % of the frame's height. The warp renders only the
    frame's pixels (one perspective transform from the cutout straight into the frame).

    Returns:
        RGB image and the logo's box in it (None without a logo).
    """
    offsets = rng.uniform(-strength, strength, size=(4, 2))
    draw = rng.random(3)
    fw, fh = background.size
    w, h = cut.image.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    warped = corners + offsets * np.array([w, h])  # P: the cutout's corners after the tilt
    with_logo = cut.logo_mask is not None and cut.box is not None and logo_width is not None
    if with_logo:
        assert cut.box is not None and cut.logo_mask is not None and logo_width is not None
        lx0, ly0, lx1, ly1 = _warped_box(cut.logo_mask, cut.box, corners, warped)
        scale = logo_width / max(1e-6, lx1 - lx0)
        # The logo inside the frame; the product as centred on it as the frame allows.
        lo_x, hi_x = -scale * lx0, fw - scale * lx1
        lo_y, hi_y = -scale * ly0, fh - scale * ly1
        tx = lo_x + draw[0] * max(0.0, hi_x - lo_x)
        ty = lo_y + draw[1] * max(0.0, hi_y - lo_y)
    else:
        span = warped.max(axis=0) - warped.min(axis=0)
        scale = float(0.4 + 0.5 * draw[2]) * fh / span[1]
        low = -scale * warped.min(axis=0)
        room = np.array([fw, fh]) - scale * span
        shift = draw[:2] * room  # room < 0: the product runs off the frame
        tx, ty = low + shift
    final = warped * scale + np.array([tx, ty])
    coeffs = transforms._homography(final, corners)  # frame pixel -> cutout pixel
    layer = (
        cut.image.convert("RGBa")
        .transform((fw, fh), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
        .convert("RGBA")
    )
    canvas = background.convert("RGBA")
    canvas.alpha_composite(layer)
    if not with_logo:
        return canvas.convert("RGB"), None
    assert cut.logo_mask is not None
    mask = cut.logo_mask.transform(
        (fw, fh), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    box = transforms.alpha_box(_as_rgba(mask))
    return canvas.convert("RGB"), box


def _warped_box(
    mask: Image.Image, box: Box, corners: np.ndarray, warped: np.ndarray
) -> tuple[float, float, float, float]:
    """The logo's painted box after the tilt (rendered from the logo's crop only: cheap)."""
    forward = _matrix(corners, warped)
    x0, y0, x1, y1 = box
    pts = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], dtype=np.float64)
    mapped = pts @ forward.T
    mapped = mapped[:, :2] / mapped[:, 2:3]
    ox, oy = np.floor(mapped.min(axis=0)) - 2
    size = (int(np.ceil(mapped[:, 0].max() - ox)) + 3, int(np.ceil(mapped[:, 1].max() - oy)) + 3)
    # canvas pixel (u, v) -> cutout pixel: the inverse tilt of (u + ox, v + oy)
    inverse = np.linalg.inv(forward) @ np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    inverse /= inverse[2, 2]
    coeffs = tuple(float(c) for c in inverse.reshape(-1)[:8])
    rendered = mask.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    inner = transforms.alpha_box(_as_rgba(rendered))
    if inner is None:
        return (mapped[:, 0].min(), mapped[:, 1].min(), mapped[:, 0].max(), mapped[:, 1].max())
    return (inner[0] + ox, inner[1] + oy, inner[2] + ox, inner[3] + oy)


def _matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 homography taking the 4 ``src`` points to ``dst``."""
    c = transforms._homography(src, dst)
    return np.array([[c[0], c[1], c[2]], [c[3], c[4], c[5]], [c[6], c[7], 1.0]])


# ---------------------------------------------------------------- drawing
def _draw_masks(kind: str, width: int, height: int) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """Body mask, accent-parts mask (both L, antialiased) and a per-face brightness map."""
    s = _SUPERSAMPLE if max(width, height) <= _SUPERSAMPLE_UP_TO else 1  # big: edges are fine
    W, H = width * s, height * s
    body = Image.new("L", (W, H), 0)
    accent = Image.new("L", (W, H), 0)
    faces = Image.new("L", (W, H), 128)  # 128 = 1.0 brightness
    db, da, df = ImageDraw.Draw(body), ImageDraw.Draw(accent), ImageDraw.Draw(faces)

    def p(x: float, y: float) -> tuple[float, float]:
        return (x * W, y * H)

    if kind == "tshirt":
        outline = [
            (0.38, 0.02), (0.18, 0.07), (0.0, 0.28), (0.13, 0.40), (0.22, 0.32), (0.22, 1.0),
            (0.78, 1.0), (0.78, 0.32), (0.87, 0.40), (1.0, 0.28), (0.82, 0.07), (0.62, 0.02),
            (0.57, 0.08), (0.5, 0.10), (0.43, 0.08),
        ]  # fmt: skip
        db.polygon([p(*q) for q in outline], fill=255)
        da.polygon(
            [
                p(*q)
                for q in [
                    (0.38, 0.02),
                    (0.43, 0.08),
                    (0.5, 0.10),
                    (0.57, 0.08),
                    (0.62, 0.02),
                    (0.58, 0.02),
                    (0.5, 0.07),
                    (0.42, 0.02),
                ]
            ],
            fill=255,
        )
    elif kind == "tote":
        db.rectangle([p(0.04, 0.32), p(0.96, 1.0)], fill=255)
        for cx in (0.3, 0.7):
            db.arc(
                [p(cx - 0.14, 0.02), p(cx + 0.14, 0.62)],
                180,
                360,
                fill=255,
                width=max(2, int(0.035 * W)),
            )
    elif kind == "cap":
        db.chord([p(0.1, 0.04), p(0.9, 1.3)], 180, 360, fill=255)
        db.ellipse([p(0.0, 0.56), p(1.0, 0.92)], fill=255)
        df.ellipse([p(0.0, 0.56), p(1.0, 0.92)], fill=100)
        db.chord([p(0.1, 0.04), p(0.9, 1.3)], 180, 360, fill=255)
        df.chord([p(0.1, 0.04), p(0.9, 1.3)], 180, 360, fill=128)
        da.ellipse([p(0.47, 0.02), p(0.53, 0.08)], fill=255)
    elif kind == "box":
        db.polygon([p(0, 0.25), p(0.25, 0), p(1, 0), p(1, 0.75), p(0.75, 1), p(0, 1)], fill=255)
        df.polygon([p(0, 0.25), p(0.25, 0), p(1, 0), p(0.75, 0.25)], fill=150)
        df.polygon([p(0.75, 0.25), p(1, 0), p(1, 0.75), p(0.75, 1)], fill=96)
    elif kind == "bottle":
        db.rounded_rectangle([p(0.04, 0.24), p(0.96, 1.0)], radius=int(0.18 * W), fill=255)
        db.polygon([p(0.36, 0.1), p(0.64, 0.1), p(0.9, 0.3), p(0.1, 0.3)], fill=255)
        db.rectangle([p(0.36, 0.0), p(0.64, 0.12)], fill=255)
        da.rectangle([p(0.34, 0.0), p(0.66, 0.09)], fill=255)
    elif kind == "mug":
        ring = max(2, int(0.06 * W))
        db.ellipse([p(0.56, 0.24), p(0.98, 0.76)], outline=255, width=ring)
        db.rounded_rectangle([p(0.0, 0.06), p(0.74, 1.0)], radius=int(0.05 * W), fill=255)
        df.ellipse([p(0.0, 0.02), p(0.74, 0.11)], fill=105)
    elif kind == "phone_case":
        db.rounded_rectangle([p(0, 0), p(1, 1)], radius=int(0.12 * W), fill=255)
        da.rounded_rectangle([p(0.1, 0.04), p(0.46, 0.2)], radius=int(0.06 * W), fill=255)
    else:  # pragma: no cover - kinds are fixed in this module
        raise AssertionError(kind)
    size = (width, height)
    if s == 1:
        face = np.asarray(faces, dtype=np.float32) / 128.0
        return body, Image.fromarray(np.minimum(np.asarray(accent), np.asarray(body))), face
    body = body.resize(size, Image.Resampling.BOX)
    accent = Image.fromarray(
        np.minimum(np.asarray(accent.resize(size, Image.Resampling.BOX)), np.asarray(body))
    )
    face = np.asarray(faces.resize(size, Image.Resampling.BOX), dtype=np.float32) / 128.0
    return body, accent, face


def _shading(kind: str, width: int, height: int) -> np.ndarray:
    """Soft lighting: cylinders (bottle, mug) by a cosine across, the rest a gentle gradient."""
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    if kind in ("bottle", "mug"):
        across = 0.72 + 0.38 * np.cos(np.clip(x + 0.25, -1.5, 1.5) * 1.0)
        return (across * (1.02 - 0.08 * y)).astype(np.float32)
    return (1.04 - 0.10 * y - 0.06 * np.abs(x + 0.2)).astype(np.float32)


def _shadow(
    canvas: Image.Image, product: Image.Image, at: tuple[int, int], strength: float
) -> Image.Image:
    """Darken a blurred ellipse under the product's foot (blurred at quarter size: fast)."""
    fw, fh = canvas.size
    x, y = at
    w, h = product.size
    small = Image.new("L", (max(1, fw // 4), max(1, fh // 4)), 0)
    ImageDraw.Draw(small).ellipse(
        [(x + 0.05 * w) / 4, (y + 0.93 * h) / 4, (x + 0.95 * w) / 4, (y + 1.05 * h) / 4], fill=255
    )
    small = small.filter(ImageFilter.GaussianBlur(max(1.0, 0.02 * fw)))
    shade = np.asarray(small.resize((fw, fh), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32) * (1 - strength * shade[..., None])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- colour helpers
def _jitter(colour: RGB, rng: np.random.Generator, amount: int) -> RGB:
    out = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(out[0]), int(out[1]), int(out[2]))


def _luminance(colour: RGB) -> float:
    r, g, b = (c / 255.0 for c in colour)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _logo_luminance(logo: Image.Image) -> float:
    rgba = np.asarray(logo, dtype=np.float32)
    alpha = rgba[..., 3]
    if alpha.sum() <= 0:
        return 0.5
    lum = (0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]) / 255.0
    return float((lum * alpha).sum() / alpha.sum())


def _as_rgba(mask: Image.Image) -> Image.Image:
    out = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    out.putalpha(mask)
    return out


def _clip(box: Box, frame: tuple[int, int]) -> Box | None:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(frame[0], box[2]), min(frame[1], box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
