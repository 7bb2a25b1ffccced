"""Tests for detector.reference_prep: trimming, padding and reference views."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector.errors import ConfigError, ImageLoadError
from detector.reference_prep import (
    ReferencePrepConfig,
    composite_on_white,
    content_box,
    pad_to_square,
    reference_views,
    trim_borders,
)


def _transparent_logo() -> Image.Image:
    """100x80 transparent canvas; content spans x 13..40, y 7..50 (one faint pixel included)."""
    image = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((13, 20, 30, 50), fill=(200, 10, 10, 255))
    image.putpixel((40, 7), (0, 0, 255, 40))  # antialiasing-like faint pixel: still content
    return image


def test_trim_removes_transparent_border_exactly():
    image = _transparent_logo()
    trimmed = trim_borders(image)
    assert trimmed.mode == "RGBA"
    assert trimmed.size == (41 - 13, 51 - 7)
    assert trimmed.tobytes() == image.crop((13, 7, 41, 51)).tobytes()


def test_trim_removes_uniform_border_within_tolerance():
    rng = np.random.default_rng(1)
    pixels = np.full((60, 90, 3), (240, 235, 230), dtype=np.int16)
    pixels += rng.integers(-5, 6, pixels.shape, dtype=np.int16)  # JPEG-like noise
    pixels[10:30, 22:71] = (10, 20, 30)
    image = Image.fromarray(pixels.astype(np.uint8))
    assert trim_borders(image, tolerance=8).size == (71 - 22, 30 - 10)
    # A tolerance below the noise keeps (almost) everything: noise is then content.
    assert trim_borders(image, tolerance=0).size[0] > 80


def test_trim_keeps_images_without_border_or_without_content():
    rng = np.random.default_rng(2)
    busy = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    assert trim_borders(busy).size == (30, 20)
    blank = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    assert trim_borders(blank).size == (30, 20)
    assert content_box(blank) is None


def test_trim_keeps_mode_for_grey_and_palette():
    grey = Image.new("L", (50, 40), 255)
    grey.paste(0, (5, 6, 15, 16))
    assert trim_borders(grey).mode == "L" and trim_borders(grey).size == (10, 10)
    palette = grey.convert("P")
    assert trim_borders(palette).size == (10, 10)


def test_composite_on_white():
    rgb = composite_on_white(_transparent_logo())
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((20, 30)) == (200, 10, 10)


@pytest.mark.parametrize("size", [(300, 100), (100, 300), (64, 64), (1, 9)])
def test_pad_to_square_keeps_aspect_and_pixels(size):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    padded = pad_to_square(image)
    side = max(size)
    assert padded.size == (side, side)
    x, y = (side - size[0]) // 2, (side - size[1]) // 2
    assert padded.crop((x, y, x + size[0], y + size[1])).tobytes() == image.tobytes()
    if size[0] != size[1]:
        assert padded.getpixel((0, 0)) == (255, 255, 255)


def test_pad_to_square_margin_and_fill():
    padded = pad_to_square(Image.new("RGB", (200, 50), "black"), fill=(1, 2, 3), margin=0.25)
    assert padded.size == (300, 300)
    assert padded.getpixel((10, 150)) == (1, 2, 3)  # left margin
    assert padded.getpixel((150, 150)) == (0, 0, 0)
    with pytest.raises(ConfigError):
        pad_to_square(Image.new("RGB", (2, 2)), margin=-0.1)


def test_logo_views_are_trimmed_padded_squares_per_margin():
    logo = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle((50, 100, 349, 159), fill=(0, 0, 0, 255))  # 300x60 wordmark
    config = ReferencePrepConfig(logo_margins=(0.0, 0.25))
    views = reference_views(logo, "logo", config)
    assert [v.size for v in views] == [(300, 300), (450, 450)]
    assert all(v.mode == "RGB" for v in views)
    for view in views:
        box = content_box(view)
        assert box is not None
        width, height = box[2] - box[0], box[3] - box[1]
        assert (width, height) == (300, 60)  # not squashed, not cropped


def test_product_view_is_the_whole_frame():
    product = Image.new("RGB", (320, 200), "white")
    ImageDraw.Draw(product).rectangle((100, 50, 150, 90), fill="blue")
    views = reference_views(product, "product")
    assert len(views) == 1
    assert views[0].tobytes() == product.tobytes()


def test_views_respect_max_side():
    big = Image.new("RGB", (3000, 1000), "red")
    config = ReferencePrepConfig(max_side=512)
    for kind in ("logo", "product"):
        assert all(max(v.size) <= 512 for v in reference_views(big, kind, config))
    assert reference_views(big, "product", config)[0].size == (512, 171)


def test_reference_views_rejects_unknown_kind_and_bad_input():
    with pytest.raises(ConfigError, match="logo"):
        reference_views(Image.new("RGB", (8, 8)), "banner")
    with pytest.raises(ImageLoadError):
        reference_views("not an image", "logo")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"tolerance": 300}, {"logo_margins": ()}, {"logo_margins": (-1.0,)}, {"max_side": 4}]
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        ReferencePrepConfig(**kwargs)


def test_logo_crops_add_zoomed_views():
    logo = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    logo.paste((200, 0, 0, 255), (20, 10, 180, 90))  # 160x80 mark inside transparent borders
    config = ReferencePrepConfig(logo_margins=(0.05,), logo_crops=(0.1,))
    views = reference_views(logo, "logo", config)
    assert len(views) == 2 and all(v.size[0] == v.size[1] for v in views)
    # The trimmed mark is 160x80; cutting 10 % per side leaves 128x64, padded to 128x128.
    assert views[1].size == (128, 128)
    with pytest.raises(ConfigError):
        ReferencePrepConfig(logo_crops=(0.6,))


def test_jpeg_views_follow_every_base_view_and_the_product_frame():
    logo = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    logo.paste((200, 0, 0, 255), (20, 10, 180, 90))
    config = ReferencePrepConfig(logo_margins=(0.05, 0.3), jpeg_qualities=(40, 75))
    plain = reference_views(logo, "logo", ReferencePrepConfig(logo_margins=(0.05, 0.3)))
    views = reference_views(logo, "logo", config)
    assert len(views) == 2 + 2 * 2
    # Each JPEG view is its base view re-encoded: same size, close but not equal pixels.
    for base, jpeg in zip([plain[0], plain[0], plain[1], plain[1]], views[2:]):
        assert jpeg.size == base.size and jpeg.mode == "RGB"
        diff = np.abs(np.asarray(jpeg, dtype=np.int16) - np.asarray(base, dtype=np.int16))
        assert 0 < diff.mean() < 10
    photo = Image.new("RGB", (120, 90), (30, 90, 160))
    assert len(reference_views(photo, "product", config)) == 3
    with pytest.raises(ConfigError):
        ReferencePrepConfig(jpeg_qualities=(0,))
