"""The Ray engine (--engine ray) gives the local engine's index, report and verdicts, and an
interrupted Ray build resumes from its checkpoint. One local Ray (2 CPUs) for the whole file."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from detector.indexing import run_indexing
from index.store import ReferenceIndex

TINY = "tiny-clip-test"
CHUNK = 3  # several chunks on the small set, so resuming and the chunk order are exercised
LEAN = {"profile": "lean"}  # the quick scoring profile: the comparison, not the signals, is tested here


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def refs(sample_set, tmp_path_factory) -> Path:
    """The sample logos, two listings as product photos, a second copy of a logo (skipped as
    already indexed) and a corrupt file (reported as failed): 10 items, 4 chunks."""
    root = tmp_path_factory.mktemp("ray-refs") / "refs"
    shutil.copytree(sample_set.references_dir, root)
    brands = sorted(p.name for p in root.iterdir())
    listings = sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))
    for brand, photo in zip(brands[:2], listings[:2]):
        shutil.copy(photo, root / brand / f"product_{photo.name}")
    shutil.copy(next((root / brands[0]).glob("logo*")), root / brands[0] / "logo_copy.png")
    (root / brands[1] / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def local_index(refs, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("ray-local") / "index"
    report = run_indexing(refs, index_dir, preset=TINY, embedder_options={"device": "cpu"}, chunk_size=CHUNK)
    return index_dir, report


def ray_build(refs: Path, index_dir: Path, **kwargs):
    from detector.engines.ray_indexing import run_ray_indexing

    return run_ray_indexing(refs, index_dir, preset=TINY, embedder_options={"device": "cpu"}, chunk_size=CHUNK,
                            work_dir=index_dir.parent / "work", **kwargs)


def assert_same_index(a_dir: Path, b_dir: Path) -> None:
    with ReferenceIndex.open(a_dir) as a, ReferenceIndex.open(b_dir) as b:
        ra, rb = list(a.references()), list(b.references())
        key = lambda r: (r.id, r.sha256, r.brand, r.kind, r.product_id, r.attributes)  # noqa: E731
        assert [key(r) for r in ra] == [key(r) for r in rb]
        ids = [r.id for r in ra]
        va, vb = a.get_vectors(ids), b.get_vectors(ids)
        for rid in ids:
            np.testing.assert_allclose(va[rid], vb[rid], atol=1e-5)
        assert a.get_aux(ids) == b.get_aux(ids)  # local features and located marks


def test_ray_build_equals_local(ray_cluster, refs, local_index, tmp_path):
    local_dir, local_report = local_index
    report = ray_build(refs, tmp_path / "index")
    assert local_report.added == 8 and local_report.skipped == 1 and len(local_report.failed) == 1
    assert (report.added, report.skipped, report.interrupted) == (local_report.added, local_report.skipped, False)
    assert [(f.item, f.reason) for f in report.failed] == [(f.item, f.reason) for f in local_report.failed]
    assert_same_index(local_dir, tmp_path / "index")
    assert json.loads(report.report_path.read_text())["added"] == 8  # the same report file
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # checkpoint removed


def test_interrupted_ray_build_resumes(ray_cluster, refs, local_index, tmp_path, caplog):
    index_dir = tmp_path / "index"
    committed: list[int] = []

    def stop_after_first(chunk: int) -> None:
        committed.append(chunk)
        raise KeyboardInterrupt  # what Ctrl-C does in the driver, right after a commit

    first = ray_build(refs, index_dir, on_commit=stop_after_first)
    assert first.interrupted and committed == [0] and first.added > 0
    with ReferenceIndex.open(index_dir) as index:
        assert len(index) == first.added  # the committed chunk is in the index

    resumed: list[int] = []
    with caplog.at_level(logging.INFO, logger="detector.engines.ray_indexing"):
        second = ray_build(refs, index_dir, on_commit=resumed.append)
    assert not second.interrupted
    assert 0 not in resumed and resumed == sorted(resumed)  # chunk 0 is not committed again
    plan = next(r for r in caplog.records if r.message.startswith("chunks:"))
    assert "1 committed" in plan.message  # ... nor computed again
    # Nothing lost, nothing twice: the first run's references count as already indexed.
    local_dir, local_report = local_index
    assert first.added + second.added == local_report.added
    assert second.skipped == local_report.skipped + first.added
    assert_same_index(local_dir, index_dir)


def test_ray_score_backlog_same_verdicts_as_local(ray_cluster, sample_set, tiny_index_dir, tmp_path, monkeypatch):
    from detector.engines.ray_scoring import run_ray_scoring
    from detector.listing_manifest import listing_entries, score_entries
    from detector.scoring import Detector

    rows = [json.loads(line) for line in sample_set.labels_path.read_text().splitlines()[:3]]
    manifest = sample_set.labels_path.parent / "backlog.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {"image": "listings/missing.jpg"},
                                                                   {"brand": "no image"}]))
    entries = listing_entries([], manifest)
    with Detector.open(tiny_index_dir, device="cpu", config=LEAN) as det:
        local = score_entries(det, entries)
    work = tmp_path / "work"
    remote = list(run_ray_scoring(entries, tiny_index_dir, scoring=LEAN, detector_options={"device": "cpu"},
                                  work_dir=work, chunk_size=2))
    assert [v.image for v in remote] == [v.image for v in local]
    for a, b in zip(local, remote):
        assert (a.flagged, a.brand, a.error) == (b.flagged, b.brand, b.error)
        assert a.score == pytest.approx(b.score, abs=1e-4) if a.score is not None else b.score is None
    assert sum(v.error is not None for v in remote) == 2
    # A rerun reads the finished chunks back: no Ray work, the Parquet files are the results.
    import detector.engines.ray_scoring as ray_scoring

    def no_ray(address):
        raise AssertionError("a finished backlog must not start Ray work")

    monkeypatch.setattr(ray_scoring, "ray_session", no_ray)
    assert list(run_ray_scoring(entries, tiny_index_dir, scoring=LEAN, detector_options={"device": "cpu"},
                                work_dir=work, chunk_size=2)) == remote
