"""Regions around the text read in a listing, offered by the text signal to the other signals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from detector.regions import box_iou
from detector.text_regions import line_regions

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
BOLT = [(0.55, 0.0), (0.1, 0.55), (0.45, 0.55), (0.3, 1.0), (0.9, 0.4), (0.55, 0.4), (0.75, 0.0)]
EMBLEM_BOX = (40, 88, 104, 152)  # where the listing's emblem is drawn, left of its word


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def _bolt(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in BOLT], fill=fill)


def emblem_next_to_word(word: str = "WEEKEND") -> Image.Image:
    """A noisy 'photo' with a light tag: a small emblem, then a word set beside it (a lockup)."""
    image = Image.effect_noise((480, 320), 40).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((24, 76, 400, 164), fill=(236, 233, 226))
    _bolt(draw, EMBLEM_BOX, (180, 30, 30))
    draw.text((118, 98), word, fill=(25, 25, 30), font=_font(40))
    return image


# ---------------------------------------------------------------- geometry (no OCR needed)
def test_line_regions_cover_the_line_and_squares_left_of_and_above_it_inside_the_image():
    regions = line_regions([(118, 100, 300, 140), (10, 300, 60, 310)], (480, 320), lines=1, reach=2.5)
    boxes = [r.box for r in regions]
    assert len(boxes) == 3 and all(r.source == "text" for r in regions)  # only the tallest line
    assert boxes[0] == (108, 90, 310, 150)  # the line, padded by a quarter of its height
    assert boxes[1] == (28, 70, 128, 170)  # left square: 2.5 heights, overlapping the line's start
    assert all(0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 320 for x0, y0, x1, y1 in boxes)
    edge = line_regions([(0, 0, 100, 40)], (120, 90))
    assert all(0 <= b.box[0] < b.box[2] <= 120 and 0 <= b.box[1] < b.box[3] <= 90 for b in edge)
    assert len({b.box for b in edge}) == len(edge)  # squares pushed onto each other are kept once
    assert line_regions([(5, 5, 5, 9)], (100, 100)) == [] and line_regions([], (100, 100)) == []


def test_the_text_benchs_lockups_draw_the_logo_with_the_text():
    import numpy as np

    from detector.bench.text_classes import draw_text

    photo = Image.new("RGB", (640, 480), (128, 128, 128))
    emblem = Image.new("RGBA", (100, 100), (255, 0, 0, 255))
    fonts = [FONT] if Path(FONT).exists() else []  # none: Pillow's default font

    def red_pixels(image: Image.Image) -> int:
        rgb = np.asarray(image).astype(int)
        return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())

    for seed in range(4):
        # the logo is at least 24 px a side (a third may be turned: most of it survives)
        assert red_pixels(draw_text(photo, "Handmade", np.random.default_rng(seed), fonts, emblem)) > 400
        assert red_pixels(draw_text(photo, "Handmade", np.random.default_rng(seed), fonts)) == 0


# ---------------------------------------------------------------- with the OCR and a detector
pytest.importorskip("rapidocr_onnxruntime", reason="the text extra (rapidocr-onnxruntime) is not installed")


@pytest.fixture(scope="module")
def emblem_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two brands indexed by emblems without text: 'bolt' (the listing's) and 'ring'."""
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("emblem-refs")
    bolt = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    _bolt(ImageDraw.Draw(bolt), (16, 16, 240, 240), (20, 20, 20, 255))
    bolt.save(root / "bolt.png")
    ring = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    ImageDraw.Draw(ring).ellipse((20, 20, 236, 236), outline=(20, 20, 20, 255), width=40)
    ring.save(root / "ring.png")
    rows = [{"path": f"{brand}.png", "brand": brand, "kind": "logo"} for brand in ("bolt", "ring")]
    (root / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index_dir = tmp_path_factory.mktemp("emblem-index") / "idx"
    report = run_indexing(root / "refs.jsonl", index_dir, preset="tiny-clip-test", embedder_options={"device": "cpu"})
    assert report.added == 2 and not report.failed
    return index_dir


def _scored(index_dir: Path, text_regions: bool):
    """The listing scored with the whole frame as the only proposed region (no windows, no
    colour components), so the emblem can only be found in a region the text offers."""
    from detector.scoring import Detector

    config = {
        "signals": ["embedding", "shape", "text"], "regions": {"enabled": False, "trim_frame": False},
        "silhouettes": {"enabled": True, "embed": True, "component_marks": 0, "min_shape_iou": 0.0},
        "text": {"regions": text_regions},
    }  # fmt: skip
    with Detector.open(index_dir, device="cpu", config=config) as det:
        listing = emblem_next_to_word()
        analysis = det.analyse_images([listing], ["lockup.jpg"])[0]
        return analysis.verdict


def _match(verdict, brand: str):
    return next(m for m in verdict.matches if m.brand == brand)


def test_an_emblem_next_to_a_word_is_found_in_the_region_of_the_ocr_box(emblem_index):
    verdict = _scored(emblem_index, True)
    bolt = _match(verdict, "bolt")
    # The mark segmented in the square left of the word is the emblem, and its shape is the
    # logo's: the match is located on the emblem, and its shape raises it to the top.
    assert box_iou(bolt.box, EMBLEM_BOX) > 0.7 and bolt.shape_iou is not None and bolt.shape_iou > 0.8
    assert verdict.matches[0].brand == "bolt"
    # Without the text's regions the whole frame is all there is: the emblem is not separated.
    without = _match(_scored(emblem_index, False), "bolt")
    assert box_iou(without.box, EMBLEM_BOX) < 0.3 and (without.shape_iou or 0.0) < bolt.shape_iou - 0.2
    assert without.score < bolt.score - 0.2
