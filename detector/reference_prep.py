"""Reference-side preparation: trim borders, pad to square, and the views indexed per reference.

Brands upload logos as transparent PNGs or on flat backgrounds with generous margins, and
wide wordmarks are common. An embedder that squashes or centre-crops such an image sees
mostly border, or a distorted mark. So a logo reference is trimmed to its content, then
padded (never squashed) to a square, at a few margins, and each view is indexed under the
same record. A product photo is matched by its whole frame, so it gets one view: the frame.

All functions are pure: PIL image in, new PIL image(s) out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector.errors import ConfigError, ImageLoadError
from index.records import KINDS

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ReferencePrepConfig:
    """How reference views are made.

    Attributes:
        trim: Trim transparent or uniform borders of logos before padding.
        tolerance: Per-channel difference (0-255) under which a pixel counts as border;
            also the alpha at or under which a pixel counts as transparent.
        logo_margins: One view per margin; each is the margin added on every side of the
            trimmed logo, as a fraction of its longer side (0.05 = logo fills ~91 % of the view).
        logo_crops: One extra view per value: the trimmed logo with that fraction of its size
            cut from every side (0.1 = the central 80 %), padded to a square. Re-posted copies
            are often cropped or zoomed, and a CNN's pooled features move a lot with that.
        jpeg_qualities: One extra view per quality for every logo view above (margins and
            crops) and for a product frame: that view re-encoded as a JPEG of that quality.
            Listing photos are JPEGs, often heavily compressed, and a CNN's pooled features
            move a lot with the ringing JPEG leaves on a flat logo's sharp edges (measured,
            effnet-lite0: a logo vs its own quality-50 JPEG, cosine 0.73-0.93; vs a
            quality-40 JPEG view, 0.98-0.997).
        logo_silhouette: Add one view: the logo's mark as a black silhouette on white
            (:mod:`detector.silhouettes`), which the scorer's silhouette channel matches
            whatever colours and background the listing shows the mark in.
        max_side: Views larger than this are downscaled (aspect kept) to bound memory and time.
        fill: Background colour for compositing transparency and for padding.
    """

    trim: bool = True
    tolerance: int = 8
    logo_margins: tuple[float, ...] = (0.05, 0.3)
    logo_crops: tuple[float, ...] = ()
    jpeg_qualities: tuple[int, ...] = ()
    logo_silhouette: bool = False
    max_side: int = 1024
    fill: tuple[int, int, int] = WHITE

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 255:
            raise ConfigError(f"tolerance must be in [0, 255], got {self.tolerance}")
        if not self.logo_margins:
            raise ConfigError("logo_margins needs at least one margin, e.g. (0.05,)")
        for m in self.logo_margins:
            if not 0.0 <= m <= 2.0:
                raise ConfigError(f"each logo margin must be in [0, 2], got {m}")
        for c in self.logo_crops:
            if not 0.0 < c < 0.5:
                raise ConfigError(f"each logo crop must be in (0, 0.5), got {c}")
        for q in self.jpeg_qualities:
            if not 1 <= q <= 95:
                raise ConfigError(f"each JPEG quality must be in [1, 95], got {q}")
        if self.max_side < 16:
            raise ConfigError(f"max_side must be >= 16, got {self.max_side}")
        if len(self.fill) != 3 or not all(0 <= c <= 255 for c in self.fill):
            raise ConfigError(f"fill must be an RGB triple in [0, 255], got {self.fill}")


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency (alpha band or a palette/RGB transparency key)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def composite_on_white(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """Flatten any-mode image to RGB, placing transparent areas on ``fill``.

    Example:
        >>> composite_on_white(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    if not has_alpha(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*fill, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def content_box(image: Image.Image, *, tolerance: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the non-border content, or None if all is border.

    A pixel is border when it is transparent (alpha <= ``tolerance``) or, for a uniform
    border, within ``tolerance`` of the border colour in every channel. The border colour
    is the median of the outermost opaque pixels, used only when all four corners are
    within tolerance of it (otherwise there is no uniform border).
    """
    _check_image(image)
    if image.mode == "RGB":  # opaque (listing photos): settle the common no-border case cheaply
        rgb = np.asarray(image)
        edges = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
        corners = rgb[[0, 0, -1, -1], [0, -1, 0, -1]].astype(np.int16)
        if not np.all(np.abs(corners - np.median(edges, axis=0)) <= tolerance):
            return 0, 0, image.width, image.height
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int16)
    alpha = rgba[..., 3]
    background = alpha <= tolerance
    # Border colour: the median of the opaque outermost pixels (robust to JPEG noise);
    # the border counts as uniform only if all four corners are within tolerance of it.
    frame = np.concatenate([rgba[0], rgba[-1], rgba[:, 0], rgba[:, -1]])
    frame = frame[frame[:, 3] > tolerance]
    corners = rgba[[0, 0, -1, -1], [0, -1, 0, -1]]
    opaque_corners = corners[corners[:, 3] > tolerance]
    if len(frame) and len(opaque_corners) == 4:
        colour = np.median(frame, axis=0)
        if np.all(np.abs(opaque_corners - colour) <= tolerance):
            background |= np.all(np.abs(rgba - colour) <= tolerance, axis=-1)
    rows = np.flatnonzero(~background.all(axis=1))
    cols = np.flatnonzero(~background.all(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def trim_borders(image: Image.Image, *, tolerance: int = 8) -> Image.Image:
    """Crop transparent and uniform-colour borders; works on any mode, keeps the mode.

    Call it on the RGBA original, before compositing on white: a transparent border is
    exact there, while after compositing it is only "white within tolerance".

    Args:
        image: Any-mode PIL image.
        tolerance: See :func:`content_box`.

    Returns:
        The cropped image, or an unchanged copy when there is no border or nothing but border
        (a blank reference is the caller's data problem, not something to crop to nothing).

    Example:
        >>> im = Image.new("RGBA", (10, 10), (0, 0, 0, 0)); im.putpixel((3, 4), (9, 9, 9, 255))
        >>> trim_borders(im).size
        (1, 1)
    """
    box = content_box(image, tolerance=tolerance)
    if box is None:
        return image.copy()
    return image.crop(box)


def pad_to_square(
    image: Image.Image, *, fill: tuple[int, int, int] = WHITE, margin: float = 0.0
) -> Image.Image:
    """Centre the image on a square RGB canvas of ``fill``, keeping its aspect ratio.

    Args:
        image: Any-mode image; transparency is composited on ``fill`` first.
        fill: Canvas colour.
        margin: Extra space on every side, as a fraction of the longer side.

    Returns:
        An RGB image of side ``round(max(w, h) * (1 + 2 * margin))``.

    Example:
        >>> pad_to_square(Image.new("RGB", (40, 10))).size
        (40, 40)
    """
    _check_image(image)
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    rgb = composite_on_white(image, fill)
    w, h = rgb.size
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return canvas


def reference_views(
    image: Image.Image, kind: str, config: ReferencePrepConfig | None = None
) -> list[Image.Image]:
    """The RGB views to embed and index under one reference record.

    A logo gives one view per ``config.logo_margins``: trimmed, composited on white, padded
    to a square with that margin (plus zoomed crops, JPEG re-encodings and a silhouette when
    configured). A product photo gives its whole frame on white (plus its JPEG re-encodings).

    Args:
        image: The reference as loaded (any mode; keep RGBA so transparent borders trim exactly).
        kind: ``"logo"`` or ``"product"``.
        config: Options; defaults to ``ReferencePrepConfig()``.

    Returns:
        A non-empty list of RGB images, none with a side above ``config.max_side``.

    Raises:
        ConfigError: Unknown kind.
        ImageLoadError: Empty image.

    Example:
        >>> views = reference_views(Image.new("RGB", (300, 100), "red"), "logo")
        >>> [v.size[0] == v.size[1] for v in views]
        [True, True]
    """
    config = config or ReferencePrepConfig()
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_image(image)
    if kind == "product":
        frame = _limit_side(composite_on_white(image, config.fill), config.max_side)
        return [frame, *(_jpeg(frame, q) for q in config.jpeg_qualities)]
    logo = trim_borders(image, tolerance=config.tolerance) if config.trim else image
    # Downscale before padding so every margin variant shares one resampling of the logo.
    logo = _limit_side(logo, config.max_side)
    views = [pad_to_square(logo, fill=config.fill, margin=m) for m in config.logo_margins]
    w, h = logo.size
    for c in config.logo_crops:
        box = (round(w * c), round(h * c), max(round(w * c) + 1, round(w * (1 - c))),
               max(round(h * c) + 1, round(h * (1 - c))))
        views.append(pad_to_square(logo.crop(box), fill=config.fill))
    views = [_limit_side(v, config.max_side) for v in views]
    views += [_jpeg(v, q) for v in views for q in config.jpeg_qualities]
    if config.logo_silhouette:
        from detector.silhouettes import reference_mask, silhouette_image

        mask = reference_mask(logo, tolerance=config.tolerance)
        if mask is not None:
            views.append(_limit_side(silhouette_image(mask), config.max_side))
    return views


def views_per_reference(kind: str, config: ReferencePrepConfig | None = None) -> int:
    """How many views :func:`reference_views` makes for ``kind``, at most (a logo's silhouette
    counts whenever configured, though a mark with no silhouette gives none)."""
    config = config or ReferencePrepConfig()
    per_view = 1 + len(config.jpeg_qualities)
    if kind == "product":
        return per_view
    return (len(config.logo_margins) + len(config.logo_crops)) * per_view + int(config.logo_silhouette)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The image as a JPEG of ``quality`` would decode: what a listing photo goes through."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _limit_side(image: Image.Image, max_side: int) -> Image.Image:
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _check_image(image: Image.Image) -> None:
    if not isinstance(image, Image.Image):
        raise ImageLoadError("<image>", f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ImageLoadError("<image>", f"empty image of size {image.size}")
