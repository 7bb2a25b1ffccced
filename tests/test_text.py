"""The text signal: brand names read in the photo (offline OCR) matched to the brands' names."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from detector.brand_names import BrandNameIndex, brand_names_of, fold, max_distance, osa_distance
from detector.signals import DEFAULT_SIGNALS

pytest.importorskip("rapidocr_onnxruntime", reason="the text extra (rapidocr-onnxruntime) is not installed")

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
TEXT_SIGNALS = list(DEFAULT_SIGNALS) + ["text"]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def photo_with(text: str, size: tuple[int, int] = (360, 240)) -> Image.Image:
    """A grey, noisy 'photo' with one line of dark text on a light tag."""
    image = Image.effect_noise(size, 30).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 80, size[0] - 20, 160), fill=(235, 232, 225))
    draw.text((34, 96), text, fill=(25, 25, 30), font=_font(40))
    return image


def wordmark(text: str) -> Image.Image:
    image = Image.new("RGBA", (300, 90), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((12, 18), text, fill=(10, 10, 10, 255), font=_font(44))
    return image


@pytest.fixture(scope="session")
def text_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model index of three brands: names from the brand id, the manifest's ``names``
    and (for 'acme_corp') the text OCR reads on its wordmark."""
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("text-refs")
    rows = []
    for brand, mark, names in (("gucci", "GUCCI", ""), ("michael_kors", "MK", "Michael Kors|MK"),
                               ("acme_corp", "ZORBLAX", "")):  # fmt: skip
        path = root / f"{brand}.png"
        wordmark(mark).save(path)
        rows.append({"path": path.name, "brand": brand, "kind": "logo", "names": names})
    manifest = root / "refs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index_dir = tmp_path_factory.mktemp("text-index") / "idx"
    report = run_indexing(manifest, index_dir, preset="tiny-clip-test", embedder_options={"device": "cpu"},
                          read_text=True)  # fmt: skip
    assert report.added == 3 and not report.failed
    return index_dir


@pytest.fixture(scope="session")
def text_detector(text_index: Path):
    from detector.scoring import Detector

    with Detector.open(text_index, device="cpu", config={"signals": TEXT_SIGNALS}) as det:
        yield det


# ---------------------------------------------------------------- names and the fuzzy index
def test_folding_and_confusions():
    assert fold("Hermès") == "hermes" and fold("GUCC1") == fold("gucci") and fold("MlCHAEL K0RS") == fold("michael kors")
    assert fold("Co-rnet") == "comet"
    assert osa_distance("guccci", "gucci") == 1 and osa_distance("gucic", "gucci") == 1  # transposition
    assert max_distance(4) == 0 and max_distance(6) == 1 and max_distance(12) == 2


def test_misspellings_match_and_ordinary_words_do_not():
    names = BrandNameIndex({"gucci": ["gucci"], "adidas": ["adidas"], "rolex": ["rolex"], "nike": ["nike"]},
                           ordinary=frozenset({"roles", "bike"}))  # fmt: skip
    assert [m.brand for m in names.match_text("Guccci")] == ["gucci"]
    assert [m.distance for m in names.match_text("ADIBAS")] == [1]
    assert [m.brand for m in names.match_text("G U C C I bag")] == []  # letters apart are not a name
    assert names.match_text("roles") == [] and names.match_text("bike") == []  # ordinary words
    assert names.match_text("NIKA") == []  # a short name must be read exactly
    assert names.match_text("Chanel") == []  # a brand not indexed
    unity = BrandNameIndex({"unity": ["Unity"]}, ordinary=frozenset({"unity"})).match_text("UNITY")
    assert [(m.brand, m.ordinary) for m in unity] == [("unity", True)]  # matched, scored lower


def test_generic_words_never_match_alone():
    names = BrandNameIndex({"sport": ["sport"], "apex_sport": ["apex sport"], "club_sport": ["club sport"],
                            "sport_one": ["sport one"], "original": ["original"]})  # fmt: skip
    assert names.match_text("SPORT") == [] and names.match_text("ORIGINAL") == []
    assert [m.brand for m in names.match_text("APEX SPORT")] == ["apex_sport"]


def test_brand_names_from_id_manifest_and_logo_text(text_index):
    from index.store import ReferenceIndex

    with ReferenceIndex.open(text_index) as index:
        names = brand_names_of(index.references())
    assert names["michael_kors"] == ("michael kors", "Michael Kors", "MK")
    assert "ZORBLAX" in {n.upper() for n in names["acme_corp"]}  # read on its wordmark at indexing


def test_index_info_shows_names(text_index, capsys):
    from detector.cli import main

    assert main(["index", "info", "--index", str(text_index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "Michael Kors" in info["names"]["michael_kors"]


# ---------------------------------------------------------------- OCR and the signal
def test_ocr_model_loads_from_the_package_with_the_network_off(monkeypatch):
    from detector.ocr import OcrConfig, TextReader

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    reader = TextReader(OcrConfig(working_size=320))
    lines = reader.read(photo_with("Guccci"))
    assert [line.text for line in lines] == ["Guccci"] and lines[0].confidence > 0.8
    assert reader.read(Image.new("RGB", (200, 120), (128, 128, 128))) == ()


@pytest.mark.parametrize(("text", "distance"), [("GUCCI", 0), ("GUCCCI", 1)])
def test_an_exact_and_a_misspelled_name_on_a_photo_match_the_brand(text_detector, text, distance):
    verdict = text_detector.score(photo_with(text), name="listing.jpg")
    assert verdict.flagged and verdict.brand == "gucci"
    evidence = verdict.matches[0].signals["text"]
    assert evidence["name"] == "gucci" and evidence["distance"] == distance
    assert verdict.threshold_source in ("kind:logo:text", "kind:logo", "default")
    data = verdict.to_dict()  # the verdict JSON carries the text evidence
    assert json.loads(json.dumps(data))["matches"][0]["signals"]["text"]["reason"].startswith(f"read {evidence['read']!r}")


@pytest.mark.parametrize("text", ["WEEKEND", "CHANEL", "ORIGINAL"])
def test_ordinary_words_unindexed_brands_and_generic_words_do_not_match(text_detector, text):
    verdict = text_detector.score(photo_with(text), name="listing.jpg")
    assert all("text" not in m.signals for m in verdict.matches)


def test_text_threshold_key_applies():
    from detector.fusion import BrandScore
    from detector.thresholds import Thresholds

    table = Thresholds.from_dict({"default": 0.9, "kinds": {"logo": 0.95, "logo:text": 1.0}})
    text = BrandScore("gucci", 0.99, "logo", 1, verified=True, basis="text")
    assert text.threshold_key == "logo:text" and table.for_match("gucci", text.threshold_key).value == 1.0
    old = Thresholds.from_dict({"default": 0.9, "kinds": {"logo": 0.95}})  # older tables still work
    assert old.for_match("gucci", text.threshold_key).source == "kind:logo"


def test_tune_gives_text_matches_their_own_threshold():
    """Text-decided matches (0.85-0.9) never happen on logo-free listings, whose image matches
    reach 0.95: ``counterfeit tune`` gives ``logo:text`` its own, lower entry."""
    import numpy as np

    from detector.evaluation.scores import EvalScores, Prediction, Query
    from detector.evaluation.tuning import tune_thresholds

    rng = np.random.default_rng(2)
    queries, preds = [], []
    for i in range(60):
        queries.append(Query(f"t{i}", f"b{i % 6}"))
        preds.append(Prediction(len(queries) - 1, f"b{i % 6}", float(rng.uniform(0.85, 0.9)), "logo:text"))
        queries.append(Query(f"u{i}", f"b{i % 6}"))
        preds.append(Prediction(len(queries) - 1, f"b{i % 6}", float(rng.uniform(0.96, 0.99)), "logo"))
        queries.append(Query(f"n{i}", None))
        preds.append(Prediction(len(queries) - 1, f"b{i % 6}", float(rng.uniform(0.5, 0.95)), "logo"))
    result = tune_thresholds(EvalScores.from_predictions(queries, preds), target_precision=0.95, max_fpr=0.01,
                             min_support=20, per_brand=False, n_boot=0)  # fmt: skip
    assert result.met and result.thresholds.kinds["logo:text"] <= 0.86
    assert result.thresholds.for_match("b0", "logo").value > 0.94
