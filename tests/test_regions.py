"""Tests for detector.regions: query-side region proposals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector.errors import ConfigError, ImageLoadError
from detector.regions import Region, RegionConfig, box_iou, crop_regions, propose_regions

pytest.importorskip("cv2")


def _check_boxes(regions: list[Region], size: tuple[int, int]) -> None:
    width, height = size
    for r in regions:
        x0, y0, x1, y1 = r.box
        assert all(isinstance(v, int) for v in r.box)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, r


def _logo_photo(slug: str, frac: float, angle: float, at: tuple[int, int]):
    """A real photo (skimage) with a real logo (simple-icons) pasted at a known place."""
    cairosvg = pytest.importorskip("cairosvg")
    sip = pytest.importorskip("simple_icons_pack")
    data = pytest.importorskip("skimage.data")
    icon = sip.get_icon(slug)
    svg = icon.svg.replace("<svg ", f'<svg fill="#{icon.hex}" ', 1)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=256, output_height=256)
    logo = Image.open(io.BytesIO(png)).convert("RGBA")
    photo = Image.fromarray(data.coffee()).resize((640, 480)).convert("RGBA")
    side = round(frac * photo.width)
    logo = logo.resize((side, side), Image.Resampling.LANCZOS)
    logo = logo.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    photo.alpha_composite(logo, at)
    bx0, by0, bx1, by1 = logo.getbbox()
    return photo.convert("RGB"), (at[0] + bx0, at[1] + by0, at[0] + bx1, at[1] + by1)


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (50, 40), (33, 33), (1000, 200)])
@pytest.mark.parametrize("max_regions", [1, 5, 32])
def test_full_frame_first_boxes_inside_and_capped(size, max_regions):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    regions = propose_regions(image, RegionConfig(max_regions=max_regions))
    assert regions[0] == Region((0, 0, *size), "full", max(size) / min(size), 1.0)
    assert 1 <= len(regions) <= max_regions
    _check_boxes(regions, size)
    assert all(r.width >= 32 and r.height >= 32 for r in regions[1:])
    assert {r.source for r in regions[1:]} <= {"window", "proposal"}


def test_disabled_gives_only_the_full_frame():
    image = Image.new("RGB", (640, 480), "gray")
    assert [r.source for r in propose_regions(image, RegionConfig(enabled=False))] == ["full"]


def test_regions_are_deduplicated_and_ranked():
    image, _ = _logo_photo("starbucks", 0.15, 15, (60, 300))
    config = RegionConfig(nms_iou=0.5)
    regions = propose_regions(image, config)
    assert len(regions) == config.max_regions  # a busy photo fills the budget
    rest = regions[1:]
    assert [r.score for r in rest] == sorted((r.score for r in rest), reverse=True)
    for i, a in enumerate(rest):
        for b in rest[i + 1 :]:
            assert box_iou(a.box, b.box) <= 0.5 + 1e-9


def test_proposal_finds_a_plain_mark():
    image = Image.new("RGB", (640, 480), (200, 190, 180))
    ImageDraw.Draw(image).ellipse((400, 100, 470, 170), fill=(20, 40, 160))
    regions = propose_regions(image)
    best = max(regions[1:], key=lambda r: box_iou(r.box, (400, 100, 471, 171)))
    assert best.source == "proposal"
    assert box_iou(best.box, (400, 100, 471, 171)) >= 0.5
    # It contains the whole mark (padding adds context, never cuts the mark).
    assert best.box[0] <= 400 and best.box[1] <= 100 and best.box[2] >= 471 and best.box[3] >= 171


@pytest.mark.parametrize(
    ("slug", "frac", "angle", "at"),
    [("starbucks", 0.15, 15, (60, 300)), ("ferrari", 0.12, -10, (480, 40))],
)
def test_a_region_finds_a_small_tilted_logo_on_a_photo(slug, frac, angle, at):
    image, true_box = _logo_photo(slug, frac, angle, at)
    regions = propose_regions(image)
    ious = [box_iou(r.box, true_box) for r in regions]
    assert max(ious) >= 0.3
    # The whole frame alone is far from the logo: the regions are what localises it.
    assert ious[0] < 0.05


def test_crop_regions_matches_boxes():
    image = Image.new("RGB", (200, 120), "white")
    ImageDraw.Draw(image).rectangle((20, 20, 60, 60), fill="black")
    regions = propose_regions(image, RegionConfig(min_size_px=16))
    crops = crop_regions(image, regions)
    assert [c.size for c in crops] == [(r.width, r.height) for r in regions]
    assert crops[0].tobytes() == image.tobytes()


def test_rgba_and_grey_inputs_work():
    rgba = Image.new("RGBA", (160, 120), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((30, 30, 70, 70), fill=(255, 0, 0, 255))
    grey = Image.new("L", (160, 120), 128)
    for image in (rgba, grey):
        regions = propose_regions(image)
        _check_boxes(regions, image.size)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scales": (0.0,)}, {"overlap": 1.0}, {"max_regions": 0}, {"max_aspect": 0.5},
        {"nms_iou": 0.0},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        RegionConfig(**kwargs)


def test_bad_image_raises():
    with pytest.raises(ImageLoadError):
        propose_regions(np.zeros((10, 10, 3), dtype=np.uint8))  # type: ignore[arg-type]


@pytest.mark.parametrize("cap", [1, 2, 4, 8])
def test_max_regions_caps_proposals_too(cap):
    """max_regions below max_proposals still caps the total (the full frame included)."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((640, 480))
    regions = propose_regions(image, RegionConfig(max_regions=cap, max_proposals=16))
    assert 1 <= len(regions) <= cap and regions[0].source == "full"


def _padded_photo(pad_colour=(40, 200, 90), tag: bool = False) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A noisy 300x200 'photo' pasted on a flat canvas, JPEG-compressed like a re-post."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    canvas = Image.new("RGB", (420, 300), pad_colour)
    canvas.paste(photo, (70, 40))
    if tag:  # a price tag on the canvas, in the corner, as re-posters add
        ImageDraw.Draw(canvas).rectangle((0, 280, 90, 299), fill=(220, 20, 20))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), (70, 40, 370, 240)


@pytest.mark.parametrize("tag", [False, True])
def test_trimmed_frame_drops_a_uniform_border(tag):
    image, truth = _padded_photo(tag=tag)
    for config in (RegionConfig(enabled=False), RegionConfig()):
        regions = propose_regions(image, config)
        assert [r.source for r in regions[:2]] == ["full", "trimmed"]
        _check_boxes(regions, image.size)
        trimmed = regions[1].box
        # The photo plus a small margin: all of it kept, most of the canvas gone.
        assert trimmed[0] <= truth[0] and trimmed[1] <= truth[1]
        assert trimmed[2] >= truth[2] and trimmed[3] >= truth[3]
        # A tag spanning a fifth of the bottom rows keeps them (rows are peeled only while
        # 90 % is canvas); the other sides are still trimmed.
        assert box_iou(trimmed, truth) > (0.6 if tag else 0.75)
        assert trimmed[1] > 20 and trimmed[2] < 400
    assert [r.source for r in propose_regions(image, RegionConfig(trim_frame=False, enabled=False))] == ["full"]


def test_no_trimmed_frame_without_a_border():
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    assert [r.source for r in propose_regions(photo, RegionConfig(enabled=False))] == ["full"]
    blank = Image.new("RGB", (320, 240), "white")  # nothing but border: nothing to trim to
    assert [r.source for r in propose_regions(blank, RegionConfig(enabled=False))] == ["full"]
