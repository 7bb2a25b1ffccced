"""Render real brand logos (simple-icons, CC0) to tight RGBA images.

simple-icons ships one monochrome ``<path>`` per brand in a 24x24 viewBox plus the brand's
hex colour. We render it in that colour (or near-black when the colour would vanish on a
white page), crop to the painted pixels, and pick brands deterministically.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector.errors import ConfigError

# Well-known consumer brands present in simple-icons, visually distinct from each other: the
# quickstart sample set draws from these so a first-time user recognises what matched.
RECOGNISABLE_SLUGS: tuple[str, ...] = (
    "adidas",
    "airbnb",
    "apple",
    "audi",
    "bmw",
    "bosch",
    "burgerking",
    "chevrolet",
    "cocacola",
    "dell",
    "ebay",
    "facebook",
    "ferrari",
    "fila",
    "ford",
    "handm",
    "honda",
    "hp",
    "huawei",
    "ikea",
    "instagram",
    "intel",
    "jeep",
    "kfc",
    "lamborghini",
    "lenovo",
    "mastercard",
    "mcdonalds",
    "mitsubishi",
    "netflix",
    "newbalance",
    "nike",
    "nvidia",
    "paypal",
    "peugeot",
    "playstation",
    "porsche",
    "puma",
    "redbull",
    "reebok",
    "renault",
    "samsung",
    "shell",
    "siemens",
    "snapchat",
    "sony",
    "spotify",
    "starbucks",
    "tesla",
    "thenorthface",
    "tiktok",
    "toyota",
    "uber",
    "underarmour",
    "visa",
    "volkswagen",
    "whatsapp",
    "xiaomi",
    "youtube",
    "zara",
)

# Contrast ratio against white below which the brand colour is replaced by near-black
# (white, cream, pale yellow brands would otherwise render invisible on a white page).
_MIN_CONTRAST_ON_WHITE = 1.6
_FALLBACK_COLOUR = "1A1A1A"
# A render is blank when fewer than this fraction of its canvas pixels are painted.
_MIN_COVERAGE = 0.004
# Two icons whose 32x32 silhouettes overlap this much are treated as the same logo
# (e.g. playstation4 / playstation5), so a "negative" never shows an indexed brand's mark.
_DUPLICATE_IOU = 0.8
_ALPHA_ON = 32


@dataclass(frozen=True)
class IconInfo:
    """One simple-icons brand.

    Attributes:
        slug: Stable identifier, used as the brand name (e.g. ``"nike"``).
        title: Display name (e.g. ``"Nike"``).
        hex: Official colour, six hex digits without ``#``.
    """

    slug: str
    title: str
    hex: str


@functools.cache
def _catalogue() -> dict[str, tuple[IconInfo, str]]:
    try:
        import simple_icons_pack as sip
    except ImportError as e:  # optional dependency group "sample"
        raise ConfigError(
            "sample data needs the 'sample' extra: pip install 'counterfeit-detector[sample]'"
        ) from e
    out: dict[str, tuple[IconInfo, str]] = {}
    for name in dir(sip):
        if not name.startswith("SI_"):
            continue
        icon = getattr(sip, name)
        out[icon.slug] = (IconInfo(icon.slug, icon.title, icon.hex.upper()), icon.svg)
    return dict(sorted(out.items()))


def list_icons() -> list[IconInfo]:
    """All available brands, sorted by slug (a stable order for seeded choices).

    Returns:
        The catalogue, about 3,400 brands.

    Raises:
        ConfigError: simple-icons-pack is not installed.
    """
    return [info for info, _ in _catalogue().values()]


def get_icon(slug: str) -> IconInfo:
    """Look a brand up by slug.

    Raises:
        ConfigError: Unknown slug.
    """
    try:
        return _catalogue()[slug][0]
    except KeyError as e:
        raise ConfigError(f"unknown simple-icons slug {slug!r}") from e


def _relative_luminance(hex_colour: str) -> float:
    channels = np.array([int(hex_colour[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64)
    c = channels / 255.0
    linear = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2])


def display_colour(info: IconInfo) -> str:
    """The colour a logo is drawn in: the brand's own, or near-black when too light.

    Returns:
        Six hex digits without ``#``.
    """
    contrast = 1.05 / (_relative_luminance(info.hex) + 0.05)
    return info.hex if contrast >= _MIN_CONTRAST_ON_WHITE else _FALLBACK_COLOUR


@functools.lru_cache(maxsize=128)
def _render_png(slug: str, canvas: int, colour: str) -> bytes:
    import cairosvg

    _, svg = _catalogue()[slug]
    # simple-icons paths carry no fill: setting it on the root colours the whole mark.
    svg = svg.replace("<svg ", f'<svg fill="#{colour}" ', 1)
    return cairosvg.svg2png(
        bytestring=svg.encode("utf-8"), output_width=canvas, output_height=canvas
    )


def render_logo(slug: str, size: int, *, colour: str | None = None) -> Image.Image:
    """Render a brand's logo, cropped tight, longest side ``size`` pixels.

    Args:
        slug: Brand slug from :func:`list_icons`.
        size: Longest side of the returned image, 8..4096.
        colour: Six hex digits; defaults to :func:`display_colour`.

    Returns:
        RGBA image with a transparent background.

    Raises:
        ConfigError: Unknown slug, bad size, or the icon renders blank.

    Example:
        >>> render_logo("nike", 256).size[0]
        256
    """
    if not 8 <= size <= 4096:
        raise ConfigError(f"logo size must be in 8..4096, got {size}")
    info = get_icon(slug)
    colour = (colour or display_colour(info)).upper()
    # Render at twice the target so the downscale antialiases edges; the icon may fill only
    # part of its 24x24 box (wordmarks are short), so crop before resizing.
    canvas = min(2 * size, 4096)
    with Image.open(io.BytesIO(_render_png(slug, canvas, colour))) as png:
        image = png.convert("RGBA")
    alpha = np.asarray(image.getchannel("A"))
    if (alpha >= _ALPHA_ON).mean() < _MIN_COVERAGE:
        raise ConfigError(f"icon {slug!r} renders blank")
    box = Image.fromarray((alpha >= _ALPHA_ON).astype(np.uint8) * 255).getbbox()
    assert box is not None  # coverage check above guarantees painted pixels
    image = image.crop(box)
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS)


@functools.lru_cache(maxsize=8192)
def _silhouette(slug: str) -> np.ndarray | None:
    """32x32 boolean mask of the cropped logo, or None when it renders blank."""
    try:
        logo = render_logo(slug, 64, colour="000000")
    except ConfigError:
        return None
    # Pad to square first so wide and tall marks with similar strokes do not collide.
    side = max(logo.size)
    square = Image.new("L", (side, side), 0)
    square.paste(logo.getchannel("A"), ((side - logo.width) // 2, (side - logo.height) // 2))
    return np.asarray(square.resize((32, 32), Image.Resampling.BILINEAR)) >= 96


def select_brands(
    count: int,
    *,
    seed: int,
    candidates: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Choose ``count`` brands deterministically, skipping blank and look-alike icons.

    Args:
        count: How many slugs to return, >= 0.
        seed: Seed for the order in which candidates are tried.
        candidates: Slugs to choose from; defaults to the whole catalogue.
        exclude: Slugs already used elsewhere: never returned, and icons that look like
            them are skipped too.

    Returns:
        Slugs in the order chosen (same seed, same list).

    Raises:
        ConfigError: Fewer than ``count`` usable icons among the candidates.
    """
    if count < 0:
        raise ConfigError(f"brand count must be >= 0, got {count}")
    pool = sorted(candidates) if candidates is not None else [i.slug for i in list_icons()]
    excluded = set(exclude)
    taken = _MaskSet()
    for slug in sorted(excluded):
        mask = _silhouette(slug)
        if mask is not None:
            taken.add(mask)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x10605])).permutation(len(pool))
    chosen: list[str] = []
    for idx in order:
        if len(chosen) == count:
            break
        slug = pool[int(idx)]
        if slug in excluded:
            continue
        mask = _silhouette(slug)
        if mask is None or taken.has_lookalike(mask):
            continue
        chosen.append(slug)
        taken.add(mask)
    if len(chosen) < count:
        raise ConfigError(
            f"only {len(chosen)} usable distinct icons among {len(pool)} candidates, "
            f"{count} requested"
        )
    return chosen


class _MaskSet:
    """Silhouettes seen so far, as rows of a matrix so one look-up is a single mat-vec."""

    def __init__(self) -> None:
        self._rows = np.zeros((64, 32 * 32), dtype=np.float32)
        self._n = 0

    def add(self, mask: np.ndarray) -> None:
        if self._n == len(self._rows):
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
        self._rows[self._n] = mask.reshape(-1)
        self._n += 1

    def has_lookalike(self, mask: np.ndarray) -> bool:
        if self._n == 0:
            return False
        rows = self._rows[: self._n]
        flat = mask.reshape(-1).astype(np.float32)
        inter = rows @ flat
        union = rows.sum(axis=1) + flat.sum() - inter
        return bool((inter / np.maximum(union, 1.0) >= _DUPLICATE_IOU).any())
