"""A product photo's logo box: stored at indexing time, checked by the scorer (tiny preset).

A listing cropped from the same scene as a brand's product photo matches the scene; only a
re-post also shows the logo's area. The brand gives that area as the ``logo_box`` attribute.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

pytest.importorskip("cv2")

LOGO_AT = (380, 200)


def _scene() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.coffee()).resize((640, 480))


def _logo() -> Image.Image:
    cairosvg = pytest.importorskip("cairosvg")
    sip = pytest.importorskip("simple_icons_pack")
    icon = sip.get_icon("starbucks")
    svg = icon.svg.replace("<svg ", f'<svg fill="#{icon.hex}" ', 1)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=180, output_height=180)
    return Image.open(io.BytesIO(png)).convert("RGBA")


@pytest.fixture(scope="module")
def product_index(tmp_path_factory):
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("products")
    photo = _scene().convert("RGBA")
    logo = _logo()
    photo.alpha_composite(logo, LOGO_AT)
    x0, y0, x1, y1 = logo.getbbox()
    box = [LOGO_AT[0] + x0, LOGO_AT[1] + y0, LOGO_AT[0] + x1, LOGO_AT[1] + y1]
    photo.convert("RGB").save(root / "official.jpg", quality=92)
    photo.convert("RGB").rotate(180).save(root / "bad-box.jpg", quality=92)
    with open(root / "refs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "brand", "kind", "attributes"])
        writer.writerow(["official.jpg", "starbucks", "product", json.dumps({"logo_box": box})])
        writer.writerow(["bad-box.jpg", "other", "product", json.dumps({"logo_box": [10, 10, 5, 900]})])
    index_dir = root / "index"
    report = run_indexing(root / "refs.csv", index_dir, preset="tiny-clip-test", embedder_options={"device": "cpu"})
    return root, index_dir, report


def test_a_bad_logo_box_fails_its_item_only(product_index):
    _, _, report = product_index
    assert report.added == 1
    assert [f.item for f in report.failed] == [str(product_index[0] / "bad-box.jpg")]
    assert "logo_box" in report.failed[0].reason


def test_repost_matches_the_logo_area_and_the_bare_scene_misses_it(product_index):
    from detector.scoring import Detector
    from detector.verify import VerifyConfig

    root, index_dir, _ = product_index
    weight = VerifyConfig().logo_weight
    repost = Image.open(root / "official.jpg").resize((480, 360))
    with Detector.open(index_dir, device="cpu") as det:
        seen = {}
        for name, image in (("repost", repost), ("bare", _scene())):
            (match,) = [m for m in det.score(image, name=name).matches if m.kind == "product"]
            seen[name] = match
    assert seen["repost"].logo_area == "matched"
    assert seen["repost"].score == pytest.approx(seen["repost"].cosine + weight)
    x0, y0, x1, y1 = seen["repost"].box  # the logo's area, in the re-post's pixels
    assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360 and x0 >= 0.7 * LOGO_AT[0] * 0.75
    assert seen["bare"].logo_area == "missing"
    assert seen["bare"].score == pytest.approx(seen["bare"].cosine - weight)


def test_product_photos_carry_no_appearance_thumbnail(product_index):
    """The appearance check is for logos; a product photo's area is checked by its keypoints."""
    from detector.verify import LocalFeatures
    from index.store import ReferenceIndex

    _, index_dir, _ = product_index
    with ReferenceIndex.open(index_dir) as index:
        blobs = index.get_aux([r.id for r in index.references()])
    assert blobs and all(LocalFeatures.from_bytes(b).appearance is None for b in blobs.values())
