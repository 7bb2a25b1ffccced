"""The brand's logo located on its product photos at indexing time (tiny preset, issue #22).

Product photos are indexed without a ``logo_box``: indexing finds the brand's logo on them
(:mod:`detector.signals.mark_locator`), again whenever the brand's logos are added or
withdrawn, and the scorer then asks a product match for evidence about that mark (or a
re-post of the whole frame), never the whole-frame cosine alone.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

LOGO_AT = (380, 200)
PRESET = {"preset": "tiny-clip-test", "embedder_options": {"device": "cpu"}}


def _scene() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.coffee()).resize((640, 480))


def _other_scene() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut()).resize((640, 480))


def _logo(size: int) -> Image.Image:
    cairosvg = pytest.importorskip("cairosvg")
    sip = pytest.importorskip("simple_icons_pack")
    icon = sip.get_icon("starbucks")
    svg = icon.svg.replace("<svg ", f'<svg fill="#{icon.hex}" ', 1)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(png)).convert("RGBA")


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def _manifest(path, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "brand", "kind", "product_id", "attributes"])
        writer.writerows(rows)


def _records(index_dir) -> dict:
    """product_id (or source file name) -> stored record."""
    from detector.verify import LocalFeatures
    from index.store import ReferenceIndex

    with ReferenceIndex.open(index_dir) as index:
        refs = list(index.references())
        blobs = index.get_aux([r.id for r in refs])
    return {r.product_id or r.source.rsplit("/", 1)[-1]: LocalFeatures.from_bytes(blobs[r.id]) for r in refs}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """Products indexed first (no logo yet), then the brand's logo added, then withdrawn;
    the stored records after each step."""
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("located")
    photo = _scene().convert("RGBA")
    logo = _logo(150)
    photo.alpha_composite(logo, LOGO_AT)
    x0, y0, x1, y1 = logo.getbbox()
    true_box = (LOGO_AT[0] + x0, LOGO_AT[1] + y0, LOGO_AT[0] + x1, LOGO_AT[1] + y1)
    photo.convert("RGB").save(root / "with-logo.jpg", quality=92)
    _other_scene().save(root / "without-logo.jpg", quality=92)
    photo.convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(root / "given.jpg", quality=92)
    _logo(256).save(root / "logo.png")
    given = [10, 20, 110, 90]
    _manifest(root / "products.csv", [
        ["with-logo.jpg", "starbucks", "product", "P1", ""],
        ["without-logo.jpg", "starbucks", "product", "P2", ""],
        ["given.jpg", "starbucks", "product", "P3", json.dumps({"logo_box": given})],
    ])  # fmt: skip
    _manifest(root / "logos.csv", [["logo.png", "starbucks", "logo", "", ""]])
    index_dir = root / "index"
    stages = {}
    assert run_indexing(root / "products.csv", index_dir, **PRESET).added == 3
    stages["before"] = _records(index_dir)
    assert run_indexing(root / "logos.csv", index_dir, create=False, **PRESET).added == 1
    stages["after"] = _records(index_dir)
    return {"root": root, "index": index_dir, "stages": stages, "true_box": true_box, "given": tuple(given)}


def test_a_product_indexed_before_its_logos_is_located_when_they_arrive(staged):
    before, after = staged["stages"]["before"], staged["stages"]["after"]
    assert before["P1"].logo_box is None and before["P1"].logo_box_origin is None  # no logo yet
    assert after["P1"].logo_box_origin == "located"
    assert _iou(after["P1"].logo_box, staged["true_box"]) >= 0.5  # where the logo was pasted


def test_no_mark_found_is_recorded(staged):
    record = staged["stages"]["after"]["P2"]
    assert record.logo_box is None and record.logo_box_origin == "located"


def test_a_given_logo_box_overrides(staged):
    for stage in ("before", "after"):
        record = staged["stages"][stage]["P3"]
        assert record.logo_box == staged["given"] and record.logo_box_origin == "given"
        assert record.marks is None  # never located: no candidate marks kept


def test_withdrawing_the_logo_relocates_the_products(tmp_path, staged):
    import shutil

    from detector.indexing import remove_references
    from index.store import ReferenceIndex

    index_dir = tmp_path / "index"
    shutil.copytree(staged["index"], index_dir)
    with ReferenceIndex.open(index_dir, writable=True) as index:
        (logo,) = [r.id for r in index.references() if r.kind == "logo"]
        generation = index.generation
        assert remove_references(index, ref_ids=[logo]) == 1
        assert index.generation == generation + 1  # removal and re-location: one commit
    records = _records(index_dir)
    assert records["P1"].logo_box is None and records["P1"].logo_box_origin is None  # no logos left
    assert records["P3"].logo_box == staged["given"]


def _product_match(det, image, name):
    verdict = det.score(image, name=name)
    products = {m.product_id: m for m in verdict.matches if m.kind == "product"}
    return verdict, products


def _flagged_as(verdict, product_id) -> bool:
    """Flagged on that product photo's evidence (the flagged brand's best match). The tiny
    model's vectors mean nothing, so a logo region may be flagged on its cosine: not asked."""
    if not verdict.flagged:
        return False
    best = next(m for m in verdict.matches if m.brand == verdict.brand)
    return best.product_id == product_id and best.score >= verdict.threshold


def test_same_scene_without_the_logo_is_not_flagged_and_a_repost_is(staged):
    from detector.scoring import Detector

    root = staged["root"]
    buffer = io.BytesIO()
    Image.open(root / "with-logo.jpg").resize((480, 360)).save(buffer, format="JPEG", quality=70)
    repost = Image.open(buffer)
    with Detector.open(staged["index"], device="cpu") as det:
        bare, bare_products = _product_match(det, _scene(), "bare")
        posted, posted_products = _product_match(det, repost, "repost")
    assert bare_products["P1"].logo_area == "missing"
    assert bare_products["P1"].score == pytest.approx(bare_products["P1"].cosine - 0.1)
    assert not _flagged_as(bare, "P1") and bare_products["P1"].score < 0.9  # the default threshold
    assert _flagged_as(posted, "P1")
    assert posted_products["P1"].logo_area == "matched"
    assert _iou(posted_products["P1"].box, [v * 0.75 for v in staged["true_box"]]) >= 0.5


def test_a_product_with_no_mark_counts_only_when_reposted(staged):
    """No mark found: a re-post (the whole frame agrees) counts, a crop of the scene does not."""
    from detector.scoring import Detector

    root = staged["root"]
    photo = Image.open(root / "without-logo.jpg")
    with Detector.open(staged["index"], device="cpu") as det:
        posted, posted_products = _product_match(det, photo.resize((560, 420)), "repost")
        crop, crop_products = _product_match(det, photo.crop((0, 0, 400, 480)), "crop")
    assert posted_products["P2"].logo_area == "repost"
    assert posted_products["P2"].score == pytest.approx(posted_products["P2"].cosine + 0.1)
    assert _flagged_as(posted, "P2")
    assert crop_products["P2"].logo_area == "no mark"
    assert crop_products["P2"].score == pytest.approx(crop_products["P2"].cosine - 0.1)
    assert not _flagged_as(crop, "P2") and crop_products["P2"].score < 0.9


def test_records_of_older_indexes_load():
    """A blob without the new fields: a box there was given, no marks."""
    from detector.verify import LocalFeatures

    record = LocalFeatures(
        np.zeros((2, 2), np.float32), np.zeros((2, 128), np.uint8), (64, 48), 1.0, "sift", (0, 0, 64, 48),
        logo_box=(1, 2, 30, 40),
    )
    buffer = io.BytesIO()
    with np.load(io.BytesIO(record.to_bytes())) as npz:
        np.savez(buffer, **{k: npz[k] for k in npz.files if k not in ("logo_box_origin", "marks", "mark_boxes")})
    old = LocalFeatures.from_bytes(buffer.getvalue())
    assert old.logo_box == (1, 2, 30, 40) and old.logo_box_origin == "given" and old.marks is None
    marks = np.zeros((2, 64, 64), np.uint8)
    marks[1, 10:20, 5:9] = 1
    located = LocalFeatures(
        record.keypoints, record.descriptors, (64, 48), 1.0, "sift", (0, 0, 64, 48), logo_box_origin="located",
        marks=marks, mark_boxes=np.array([[0, 0, 5, 5], [1, 1, 9, 9]]),
    )
    back = LocalFeatures.from_bytes(located.to_bytes())
    assert back.logo_box is None and back.logo_box_origin == "located"
    assert np.array_equal(back.marks, marks) and back.mark_boxes.tolist() == [[0, 0, 5, 5], [1, 1, 9, 9]]


def test_relocate_marks_locates_records_written_without_a_location(tmp_path, staged):
    """E.g. an index written before marks were located, or logos added through the raw index API."""
    import shutil
    from dataclasses import replace

    from detector.indexing import relocate_marks
    from index.store import ReferenceIndex

    index_dir = tmp_path / "index"
    shutil.copytree(staged["index"], index_dir)
    with ReferenceIndex.open(index_dir, writable=True) as index:
        ids = {r.product_id: r.id for r in index.references() if r.kind == "product"}
        stale = replace(staged["stages"]["after"]["P1"], logo_box=None, logo_box_origin=None)
        assert index.replace_aux({ids["P1"]: stale.to_bytes()}) == 1
        assert relocate_marks(index) == 1  # P1 only: P2 stays "no mark", P3 given
    records = _records(index_dir)
    assert records["P1"].logo_box == staged["stages"]["after"]["P1"].logo_box
    assert records["P1"].logo_box_origin == "located"


def test_a_flat_logo_is_located_by_the_shape_of_a_stored_mark():
    """No keypoints to fit: the product's stored candidate mark whose shape aligns with the
    logo's silhouette is the located mark, unless its box is far more elongated than the logo."""
    import cv2

    from detector.signals.mark_locator import locate_mark
    from detector.silhouettes import canonical_mask
    from detector.verify import LocalFeatures, VerifyConfig

    triangle = np.zeros((100, 100), np.uint8)
    cv2.fillPoly(triangle, [np.array([[50, 10], [90, 85], [10, 85]], np.int32)], 1)
    square = np.zeros((100, 100), np.uint8)
    square[20:80, 20:80] = 1
    shape = canonical_mask(triangle)
    none = (np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    logo = LocalFeatures(*none, (100, 100), 1.0, "sift", (10, 10, 90, 85), silhouette=shape)

    def product(box):
        marks = np.stack([canonical_mask(square), shape])
        return LocalFeatures(*none, (640, 480), 1.0, "sift", (0, 0, 640, 480),
                             marks=marks, mark_boxes=np.array([[0, 0, 50, 50], box]))

    found = locate_mark(product([300, 200, 380, 275]), [logo], VerifyConfig())
    assert found.box == (300, 200, 380, 275) and found.method == "shape" and found.shape_iou > 0.9
    assert locate_mark(product([300, 200, 600, 220]), [logo], VerifyConfig()).box is None  # a stripe
