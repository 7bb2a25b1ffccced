"""Real background photos from scikit-image's bundled sample data, varied by crops and jitter.

Only images shipped inside the scikit-image wheel are used (no download, no pooch). Random
crops, flips and colour jitter turn the ~20 photos into many distinct listing backgrounds.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from detector.errors import ConfigError

_log = logging.getLogger(__name__)

# skimage.data loaders whose files ship in the wheel (checked against scikit-image 0.22-0.26).
# Natural photos first; greyscale textures and documents add harder, logo-free clutter.
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "clock",
    "page",
    "text",
    "cell",
)


@dataclass(frozen=True)
class Photo:
    """A named RGB photo.

    Attributes:
        name: The skimage.data loader it came from.
        pixels: uint8 array of shape (H, W, 3).
    """

    name: str
    pixels: np.ndarray


def _load_one(name: str) -> np.ndarray:
    from skimage import data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = data.stereo_motorcycle()
        array = left if name == "motorcycle_left" else right
    else:
        array = getattr(data, name)()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        # e.g. boolean or float images: rescale to 0..255.
        array = (255 * (array.astype(np.float64) / max(float(array.max()), 1e-9))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


@functools.cache
def load_photos() -> tuple[Photo, ...]:
    """Load every bundled photo that is available offline, in :data:`PHOTO_NAMES` order.

    A photo whose loader fails (missing from this scikit-image build, or would need a
    download) is skipped.

    Returns:
        The photos, at least one.

    Raises:
        ConfigError: scikit-image is missing or no photo loads.
    """
    try:
        import skimage.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "sample data needs the 'sample' extra: pip install 'counterfeit-detector[sample]'"
        ) from e
    photos = []
    for name in PHOTO_NAMES:
        try:
            photos.append(Photo(name, _load_one(name)))
        except Exception as e:  # noqa: BLE001 - any loader failure means "not available here"
            _log.info("skipping sample photo %s: %s", name, e)
    if not photos:
        raise ConfigError("no scikit-image sample photo could be loaded offline")
    return tuple(photos)


def random_background(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    photo: Photo | None = None,
) -> Image.Image:
    """A listing background: random crop of a photo, resized, maybe flipped, colour-jittered.

    Args:
        rng: Source of randomness (the caller derives one per item for reproducibility).
        size: Output (width, height).
        photo: Photo to crop; a random bundled one when None.

    Returns:
        RGB image of exactly ``size``.
    """
    if photo is None:
        photos = load_photos()
        photo = photos[int(rng.integers(len(photos)))]
    height, width = photo.pixels.shape[:2]
    out_w, out_h = size
    target_aspect = out_w / out_h
    # Crop 45-100 % of the shorter fitting side at the output aspect ratio.
    fit_w = min(width, height * target_aspect)
    crop_w = fit_w * rng.uniform(0.45, 1.0)
    crop_h = crop_w / target_aspect
    x0 = rng.uniform(0, width - crop_w)
    y0 = rng.uniform(0, height - crop_h)
    image = Image.fromarray(photo.pixels).resize(
        size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return colour_jitter(image, rng, strength=0.25)


def colour_jitter(image: Image.Image, rng: np.random.Generator, *, strength: float) -> Image.Image:
    """Random brightness, contrast, saturation and hue shift, each within ``±strength``.

    Args:
        image: RGB image.
        rng: Source of randomness.
        strength: 0 leaves the image unchanged; 0.25 is a mild camera/filter change.

    Returns:
        New RGB image.
    """
    out = ImageEnhance.Brightness(image).enhance(1 + rng.uniform(-strength, strength))
    out = ImageEnhance.Contrast(out).enhance(1 + rng.uniform(-strength, strength))
    out = ImageEnhance.Color(out).enhance(1 + rng.uniform(-strength, strength))
    shift = round(rng.uniform(-strength, strength) * 64)
    if shift:
        hsv = np.asarray(out.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        out = Image.fromarray(hsv, "HSV").convert("RGB")
    return out


def plain_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A studio-like plain background: a flat colour or a soft vertical gradient.

    Args:
        rng: Source of randomness.
        size: Output (width, height).

    Returns:
        RGB image of exactly ``size``.
    """
    width, height = size
    top = rng.integers(0, 256, size=3).astype(np.float32)
    bottom = top if rng.random() < 0.5 else rng.integers(0, 256, size=3).astype(np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = top * (1 - t) + bottom * t
    return Image.fromarray(np.broadcast_to(column, (height, width, 3)).astype(np.uint8))
