"""detector.scoring.Detector on the tiny preset: verdicts, kinds, thresholds, threads, reload."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.errors import ConfigError, DetectorError, ImageLoadError
from detector.scoring import Detector, ScoringConfig
from detector.thresholds import Thresholds

WHOLE_IMAGE = {"regions": {"enabled": False}, "verify": {"enabled": False}}


def listings(sample_set) -> list[Path]:
    return sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))


@pytest.fixture(scope="module")
def detector(tiny_index_dir):
    with Detector.open(tiny_index_dir, device="cpu") as det:
        yield det


def test_verdicts_are_consistent_and_boxes_inside(detector, sample_set):
    paths = listings(sample_set)
    verdicts = detector.score_many(paths)
    assert [v.image for v in verdicts] == [str(p) for p in paths]
    for path, v in zip(paths, verdicts):
        assert v.error is None and v.matches
        width, height = Image.open(path).size
        x0, y0, x1, y1 = v.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert v.score == pytest.approx(v.matches[0].score)
        assert v.brand == v.matches[0].brand
        assert v.flagged == (v.score >= v.threshold)
        for m in v.matches:
            assert m.score >= m.cosine - 1e-6  # verification only adds evidence
            if m.inliers is None:
                assert m.score == pytest.approx(m.cosine)


def test_exact_reference_copy_scores_highest_for_its_brand(detector, sample_set):
    logo = sorted(sample_set.references_dir.glob("*/logo.png"))[0]
    v = detector.score(logo)
    assert v.brand == logo.parent.name
    assert v.matches[0].cosine > 0.9


def test_verification_off_gives_first_stage_scores(tiny_index_dir, sample_set):
    paths = listings(sample_set)[:4]
    with Detector.open(tiny_index_dir, device="cpu", config={"verify": {"enabled": False}}) as det:
        for v in det.score_many(paths):
            assert all(m.inliers is None and m.score == m.cosine for m in v.matches)


def test_whole_image_mode_uses_one_region(tiny_index_dir, sample_set):
    with Detector.open(tiny_index_dir, device="cpu", config=WHOLE_IMAGE) as det:
        calls = []
        original = det.embedder.embed
        det.embedder.embed = lambda images: calls.append(len(images)) or original(images)
        det.score_many(listings(sample_set)[:3])
    assert calls == [3]


def test_thresholds_decide_and_report_their_source(tiny_index_dir, sample_set):
    path = listings(sample_set)[0]
    with Detector.open(tiny_index_dir, device="cpu", thresholds=Thresholds(default=2.0)) as det:
        v = det.score(path)
        assert not v.flagged and v.threshold == 2.0 and v.threshold_source == "default"
        brand = v.brand
    table = Thresholds(default=2.0, brands={brand: {"default": -1.0}})
    with Detector.open(tiny_index_dir, device="cpu", thresholds=table) as det:
        v = det.score(path)
    assert v.flagged and v.brand == brand and v.threshold_source == f"brand:{brand}"


def test_product_references_match_the_whole_frame_only(detector):
    # Region 1 (a window) hits a product reference, region 0 (full frame) does not: no
    # candidate; a logo reference may be matched by any region.
    from detector.regions import Region
    from detector.signals.embedding import best_allowed
    from index.records import Reference

    ref = Reference(id=7, brand="b", kind="product", product_id=None, source="s", sha256="x", added_at="t")
    scores = np.array([[0.2, 0.1], [0.99, 0.1]], dtype=np.float32)
    ids = np.array([[3, 4], [7, 4]])
    best = {7: (0.99, 1)}
    full = Region((0, 0, 100, 100), "full", 1.0)
    for source, expected in (("window", None), ("trimmed", 0.99)):
        regions = [full, Region((10, 10, 90, 90), source, 0.8)]
        cosine, region_idx = best_allowed(ref, 7, regions, scores, ids, best)
        assert cosine == (None if expected is None else pytest.approx(expected))
        if expected is not None:  # the frame without its border counts as the whole frame
            assert region_idx == 1
    logo = Reference(id=7, brand="b", kind="logo", product_id=None, source="s", sha256="x", added_at="t")
    regions = [full, Region((10, 10, 90, 90), "window", 0.8)]
    assert best_allowed(logo, 7, regions, scores, ids, best)[0] == pytest.approx(0.99)


def test_bad_images(detector, sample_set):
    with pytest.raises(ImageLoadError):
        detector.score(b"not an image", name="junk")
    good = listings(sample_set)[0]
    verdicts = detector.score_many([b"", good, io.BytesIO(b"GIF89a")], ["empty", "good", "gif"])
    assert verdicts[0].error and verdicts[2].error and verdicts[1].error is None
    assert verdicts[0].image == "empty" and not verdicts[0].matches


def test_concurrent_callers_get_their_own_results(detector, sample_set):
    paths = listings(sample_set)[:4]
    expected = [v.to_dict() for v in detector.score_many(paths)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: detector.score(p).to_dict(), paths * 2))
    for a, b in zip(got, expected * 2):
        assert a["brand"] == b["brand"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_reload_picks_up_a_new_generation(tiny_index_copy, sample_set):
    from index.store import ReferenceIndex

    with Detector.open(tiny_index_copy, device="cpu", config=WHOLE_IMAGE) as det:
        before = det.index.generation
        assert det.reload_index() is False
        brand = sorted(p.name for p in sample_set.references_dir.iterdir())[0]
        with ReferenceIndex.open(tiny_index_copy, writable=True) as writer:
            assert writer.remove(brand=brand) == 1
        assert det.reload_index() is True and det.index.generation > before
        assert all(m.brand != brand for v in det.score_many(listings(sample_set)) for m in v.matches)


def test_scoring_config_validation():
    with pytest.raises(Exception, match="unknown scoring option"):
        ScoringConfig.from_dict({"nope": 1})
    with pytest.raises(DetectorError):
        ScoringConfig.from_dict({"regions": {"max_regions": 0}})
    cfg = ScoringConfig.from_dict({"regions": {"scales": [0.4]}, "top_k": 3})
    assert cfg.regions.scales == (0.4,) and cfg.top_k == 3


def test_scoring_overrides_merge_section_by_section():
    from detector.scoring import merge_options

    preset = {"regions": {"enabled": False}, "verify": {"top_candidates": 30}, "search_k": 30}
    merged = merge_options(preset, {"verify": {"enabled": False}, "regions": {"enabled": True}})
    assert merged == {"regions": {"enabled": True}, "verify": {"top_candidates": 30, "enabled": False},
                      "search_k": 30}
    assert preset["verify"] == {"top_candidates": 30}  # inputs untouched


def test_profiles_resolve_over_preset_defaults_and_pick_their_thresholds(tmp_path, monkeypatch):
    from detector import thresholds
    from detector.scoring import PROFILES, resolve_scoring
    from detector.thresholds import default_thresholds_path, load_thresholds

    preset_defaults = {"regions": {"enabled": False}, "search_k": 30}
    config, profile = resolve_scoring(preset_defaults, {"profile": "thorough", "top_k": 3})
    assert profile == "thorough" and config.silhouettes.enabled and config.regions.enabled
    assert config.search_k == 30 and config.top_k == 3  # preset default and override both kept
    fast, profile = resolve_scoring(preset_defaults, {"profile": "fast"})
    assert not fast.regions.enabled and not fast.silhouettes.enabled
    assert set(PROFILES) >= {"fast", "thorough"}
    # thorough embeds its marks' silhouettes even where the preset only searches them by shape
    searching = {"silhouettes": {"enabled": True, "embed": False, "search": 5, "shape_score": 0.7,
                                 "distinct_margin": 0.2, "top_candidates": 0, "weight": 0.0}}
    thorough, _ = resolve_scoring(searching, {"profile": "thorough"})
    s = thorough.silhouettes
    assert s.embed and s.search == 0 and s.shape_score == 0 and s.distinct_margin == 0.05 and s.weight > 0
    assert resolve_scoring(searching, {"profile": "fast"})[0].silhouettes.search == 5
    lean, _ = resolve_scoring(searching, {"profile": "lean"})
    assert not lean.silhouettes.enabled and lean.verify == fast.verify  # only the shape search off
    for profile in ("lean", "thorough"):  # shipped with their own tables for effnet-lite0
        path = default_thresholds_path("effnet-lite0", profile)
        assert path.name == f"effnet-lite0-{profile}.json"
        assert profile in load_thresholds(path).version
    with pytest.raises(ConfigError, match="unknown scoring profile"):
        resolve_scoring(preset_defaults, {"profile": "nope"})

    monkeypatch.setattr(thresholds, "THRESHOLDS_DIR", tmp_path)
    (tmp_path / "default.json").write_text("{}")
    assert default_thresholds_path("m", "thorough").name == "default.json"
    (tmp_path / "m.json").write_text("{}")
    assert default_thresholds_path("m", "thorough").name == "m.json"
    (tmp_path / "m-thorough.json").write_text("{}")
    assert default_thresholds_path("m", "thorough").name == "m-thorough.json"
    assert default_thresholds_path("m").name == "m.json"


def test_a_corrupt_features_blob_skips_verification_of_that_reference_only(tiny_index_copy, sample_set, caplog):
    import sqlite3

    from index.store import ReferenceIndex

    logo = min(sample_set.references_dir.glob("*/logo.png"))
    with ReferenceIndex.open(tiny_index_copy) as index:
        (ref,) = [r for r in index.references(logo.parent.name) if r.kind == "logo"]
    with sqlite3.connect(tiny_index_copy / "records.sqlite") as conn:
        conn.execute("UPDATE ref_aux SET data = ? WHERE ref_id = ?", (b"not an npz", ref.id))
    config = {"verify": {"top_candidates": 30, "local_candidates": 5}}
    with Detector.open(tiny_index_copy, device="cpu", config=config) as det, caplog.at_level("WARNING"):
        verdicts = [det.score(logo), det.score(logo)]
    for verdict in verdicts:
        assert verdict.error is None
        by_ref = {m.ref_id: m for m in verdict.matches}
        assert by_ref[ref.id].inliers is None and by_ref[ref.id].score == by_ref[ref.id].cosine
        assert any(m.inliers is not None for m in verdict.matches if m.ref_id != ref.id)
    # Logged once, not for every listing that meets the reference.
    assert caplog.text.count(f"reference {ref.id}: unreadable local features") == 1


def test_a_stealable_task_runs_in_the_caller_when_no_worker_has_started_it():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from detector.signals.geometry import Stealable as _Stealable

    ran_in: list[str] = []

    def task(value: int) -> int:
        ran_in.append(threading.current_thread().name)
        return value * 2

    release = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        pool.submit(release.wait, 10)  # the only worker is busy (10 s at most): the task below stays queued
        queued = _Stealable(pool, task, 21)
        assert queued.result() == 42 and ran_in == [threading.current_thread().name]
        release.set()
        started = _Stealable(pool, task, 5)
        pool.submit(lambda: None).result()  # the worker has run everything queued before it
        assert started.result() == 10 and ran_in[-1].startswith("worker") and len(ran_in) == 2
