"""The on-disk descriptor store votes like the in-memory descriptor index, grows by segments,
ignores removed references and survives an interrupted sync."""

from __future__ import annotations

import hashlib
import json
import logging

import faiss
import numpy as np
import pytest

import detector.descriptor_store as store_module
from detector.descriptor_store import (
    MAX_SEGMENTS,
    STORE_DIR,
    code_for,
    open_store,
    read_manifest,
    store_bytes,
    sync_descriptor_store,
)
from detector.descriptor_vote import StoredDescriptorIndex
from detector.errors import DetectorError
from detector.features import LocalFeatures
from detector.local_search import LocalFeatureIndex
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex

DESCRIPTORS = 120


def _features(rng: np.random.Generator, descriptors: np.ndarray | None = None) -> LocalFeatures:
    if descriptors is None:  # sparse, SIFT-like: most bins small, a few large
        descriptors = (rng.random((DESCRIPTORS, 128)) ** 4 * 255).astype(np.uint8)
    n = len(descriptors)
    return LocalFeatures(keypoints=rng.uniform(0, 200, (n, 2)).astype(np.float32), descriptors=descriptors,
                         image_size=(200, 200), scale=1.0, method="sift", content=(0, 0, 200, 200))


def _add(index: ReferenceIndex, features: list[LocalFeatures], start: int) -> list[int]:
    refs = [NewReference(brand=f"b{start + i}", sha256=hashlib.sha256(f"{start + i}".encode()).hexdigest(),
                         source=f"{start + i}.png", kind="logo") for i in range(len(features))]
    vectors = np.eye(8, dtype=np.float32)[np.arange(len(features)) % 8]
    return index.add(refs, vectors, aux=[f.to_bytes() for f in features]).added


def _query(rng: np.random.Generator, of: LocalFeatures, share: float = 0.5) -> LocalFeatures:
    """A listing's features: a share of a reference's descriptors, slightly changed, plus clutter."""
    keep = of.descriptors[rng.random(len(of)) < share].astype(np.int16)
    noisy = np.clip(keep + rng.integers(-3, 4, keep.shape), 0, 255).astype(np.uint8)
    clutter = (rng.random((200, 128)) ** 4 * 255).astype(np.uint8)
    return _features(rng, np.concatenate([noisy, clutter]))


@pytest.fixture
def library(tmp_path):
    rng = np.random.default_rng(0)
    fp = Fingerprint(preset="t", arch="t", weights="t", preprocess="t", dim=8)
    index = ReferenceIndex.create(tmp_path / "idx", fingerprint=fp)
    features = [_features(rng) for _ in range(60)]
    ids = _add(index, features, 0)
    yield index, dict(zip(ids, features)), rng
    index.close()


def _stored(index: ReferenceIndex, known: dict[int, LocalFeatures], live: list[int] | None = None) -> StoredDescriptorIndex:
    live = list(known) if live is None else live
    opened = StoredDescriptorIndex.open(index.path, live, lambda ids: {i: known[i] for i in ids}, nprobe=64)
    assert opened is not None
    return opened


def test_store_votes_like_the_in_memory_index(library):
    index, known, rng = library
    assert sync_descriptor_store(index, store_from=10).rebuilt
    stored, memory = _stored(index, known), LocalFeatureIndex.from_features(known)
    assert len(stored) == len(memory) == 60 * DESCRIPTORS
    agree = 0
    for rid in list(known)[:20]:
        query = _query(rng, known[rid])
        top_memory, top_stored = memory.vote(query, 3), stored.vote(query, 3)
        assert top_memory[0][0] == rid
        agree += top_stored[0][0] == top_memory[0][0]
    assert agree == 20


def test_the_code_is_the_most_accurate_that_fits_the_memory_budget():
    assert code_for(1_000_000, 2**30) == "SQ8"  # 136 MB
    assert code_for(10_000_000, 2**30) == "PQ64"  # 1.36 GB as SQ8, 720 MB as PQ64
    assert code_for(20_000_000, 2**30) == "PQ32"  # 800 MB
    assert code_for(10**9, 2**30) == "PQ32"  # nothing fits: the smallest
    assert store_bytes(20_000_000, 2**30) == 20_000_000 * 40


def test_a_store_over_the_memory_budget_is_product_quantised_and_votes_like_the_in_memory_index(library):
    index, known, rng = library
    budget = 60 * DESCRIPTORS * 100  # under SQ8 codes' 136 bytes a descriptor, over PQ64's 72
    assert sync_descriptor_store(index, store_from=10, memory_budget=budget).rebuilt
    folder = index.path / STORE_DIR
    trained = faiss.read_index(str(folder / "trained.faiss"))  # kept: the downcast view does not own it
    ivf = faiss.downcast_index(faiss.extract_index_ivf(trained))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.code_size == 64
    segments = sum(p.stat().st_size for p in folder.glob("segment-*.ivl"))
    assert segments < 60 * DESCRIPTORS * (64 + 8) * 1.1  # the codes and ids, not SQ8's 136 bytes
    stored, memory = _stored(index, known), LocalFeatureIndex.from_features(known)
    opened = faiss.downcast_index(faiss.extract_index_ivf(stored._store.index))
    assert opened.use_precomputed_table == -1 and opened.precomputed_table.size() == 0  # no per-list tables
    for rid in list(known)[:20]:
        query = _query(rng, known[rid])
        assert stored.vote(query, 1)[0][0] == memory.vote(query, 1)[0][0] == rid


def test_small_library_keeps_no_store(library):
    index, _, _ = library
    report = sync_descriptor_store(index)  # 60 references: under the default threshold
    assert not report.store and not (index.path / STORE_DIR).exists()


def test_added_references_become_segments_and_removed_ones_get_no_votes(library):
    index, known, rng = library
    sync_descriptor_store(index, store_from=10)
    new = [_features(rng) for _ in range(5)]
    new_ids = _add(index, new, 100)
    known.update(zip(new_ids, new))
    # Not synced yet: the scorer votes for them from memory (the catch-up part).
    assert _stored(index, known).vote(_query(rng, known[new_ids[0]]), 1)[0][0] == new_ids[0]
    report = sync_descriptor_store(index, store_from=10)
    assert report.added_references == 5 and not report.rebuilt
    assert len(read_manifest(index.path / STORE_DIR).segments) == 2
    assert _stored(index, known).vote(_query(rng, known[new_ids[1]]), 1)[0][0] == new_ids[1]
    removed = new_ids[2]
    index.remove(ref_ids=[removed])
    live = [rid for rid in known if rid != removed]
    votes = _stored(index, known, live).vote(_query(rng, known[removed], share=0.9), 5)
    assert removed not in [rid for rid, _ in votes]


def test_segments_merge_and_an_interrupted_sync_is_harmless(library):
    index, known, rng = library
    sync_descriptor_store(index, store_from=10)
    for step in range(MAX_SEGMENTS):
        more = [_features(rng)]
        known.update(zip(_add(index, more, 200 + step), more))
        sync_descriptor_store(index, store_from=10)
    folder = index.path / STORE_DIR
    manifest = read_manifest(folder)
    assert len(manifest.segments) <= MAX_SEGMENTS
    # A sync killed after writing its segment, before the manifest: a stray file, a torn temp file.
    (folder / "segment-999999.faiss").write_bytes(b"half a segment")
    (folder / ".manifest.json.0123.tmp").write_text("{")
    assert json.loads((folder / "manifest.json").read_text())["segments"] == list(manifest.segments)
    rid = list(known)[-1]
    assert _stored(index, known).vote(_query(rng, known[rid]), 1)[0][0] == rid
    more = [_features(rng)]
    known.update(zip(_add(index, more, 300), more))
    sync_descriptor_store(index, store_from=10)
    assert not (folder / "segment-999999.faiss").exists()
    assert len(_stored(index, known)) == len(known) * DESCRIPTORS


def test_a_graph_quantizer_trained_in_two_levels_votes_like_the_in_memory_index(library, monkeypatch):
    index, known, rng = library
    monkeypatch.setattr(store_module, "HNSW_QUANTIZER_FROM_LISTS", 64)  # the tiny store's 128 lists
    assert sync_descriptor_store(index, store_from=10).rebuilt
    trained = faiss.read_index(str(index.path / STORE_DIR / "trained.faiss"))
    assert "HNSW" in type(faiss.downcast_index(faiss.extract_index_ivf(trained).quantizer)).__name__
    stored, memory = _stored(index, known), LocalFeatureIndex.from_features(known)
    for rid in list(known)[:10]:
        query = _query(rng, known[rid])
        assert stored.vote(query, 1)[0][0] == memory.vote(query, 1)[0][0] == rid


def test_a_big_sync_writes_several_segments_and_full_ones_are_never_merged(library, monkeypatch, caplog):
    index, known, rng = library
    monkeypatch.setattr(store_module, "SEGMENT_BYTES", 1_000 * 136)  # 1,000 SQ8 descriptors
    monkeypatch.setattr(store_module, "DECODE_CHUNK", 10)  # 1,200 descriptors a chunk: a segment each
    monkeypatch.setattr(store_module, "FULL_SEGMENT_BYTES", 1_000 * 136 // 2)
    with caplog.at_level(logging.INFO, logger="detector.descriptor_store"):
        sync_descriptor_store(index, store_from=10)
    said = [r.getMessage() for r in caplog.records]
    assert "descriptor store: counting and sampling, 30 of 60 references" in said  # a long rebuild's progress
    assert "descriptor store: adding, 50 of 60 references" in said
    assert any(m.startswith("descriptor store: training") for m in said)
    manifest = read_manifest(index.path / STORE_DIR)
    assert len(manifest.segments) == 6 and manifest.descriptors == 60 * DESCRIPTORS
    holders = np.zeros(manifest.lists, int)  # each list whole in one segment: one read a search
    for stem in manifest.segments:
        lists = faiss.read_InvertedLists(faiss.FileIOReader(str(index.path / STORE_DIR / f"{stem}.ivl")), 0)
        holders += np.array([lists.list_size(i) > 0 for i in range(manifest.lists)])
    assert holders.max() == 1 and len(set(read_manifest(index.path / STORE_DIR).segments)) == 6
    assert [stem for stem, _, _ in manifest.list_ranges] == list(manifest.segments)
    _assert_chained_search_equals_stacked(index.path / STORE_DIR, manifest, rng)
    for step in range(MAX_SEGMENTS + 1):  # small syncs: merged among themselves, the full ones kept
        more = [_features(rng)]
        known.update(zip(_add(index, more, 400 + step), more))
        sync_descriptor_store(index, store_from=10)
    after = read_manifest(index.path / STORE_DIR)
    assert set(manifest.segments) <= set(after.segments) and len(after.segments) <= 6 + MAX_SEGMENTS
    assert after.list_ranges == manifest.list_ranges
    _assert_chained_search_equals_stacked(index.path / STORE_DIR, after, rng)  # the chain beside small segments
    stored = _stored(index, known)
    assert len(stored) == len(known) * DESCRIPTORS
    for rid in [list(known)[0], list(known)[30], list(known)[-1]]:
        assert stored.vote(_query(rng, known[rid]), 1)[0][0] == rid


def _assert_chained_search_equals_stacked(folder, manifest, rng) -> None:
    """The list-range segments chained (each probed list read from its one file) search as
    they do stacked side by side (each list looked up in every segment)."""
    import dataclasses

    queries = rng.random((50, 128), dtype=np.float32)
    found = []
    for ranges in (manifest.list_ranges, ()):
        opened = open_store(folder, dataclasses.replace(manifest, list_ranges=ranges), nprobe=16)
        found.append(opened.index.search(queries, 5))
        assert any(isinstance(part, faiss.VStackInvertedLists) for part in opened.parts) == bool(ranges)
    np.testing.assert_array_equal(found[0][1], found[1][1])
    np.testing.assert_allclose(found[0][0], found[1][0])


def test_a_store_of_the_older_format_is_rebuilt(library):
    index, _, _ = library
    sync_descriptor_store(index, store_from=10)
    path = index.path / STORE_DIR / "manifest.json"
    old = json.loads(path.read_text())
    path.write_text(json.dumps({**old, "format": 1}))
    assert read_manifest(index.path / STORE_DIR) is None  # the scorer votes from memory meanwhile
    assert sync_descriptor_store(index, store_from=10).rebuilt
    assert read_manifest(index.path / STORE_DIR) is not None


def test_descriptors_and_silhouettes_read_alone_equal_the_whole_blobs():
    rng = np.random.default_rng(5)
    features = _features(rng)
    assert np.array_equal(LocalFeatures.sift_descriptors_from_bytes(features.to_bytes()), features.descriptors)
    orb = LocalFeatures(keypoints=features.keypoints, descriptors=features.descriptors[:, :32], image_size=(200, 200),
                        scale=1.0, method="orb", content=(0, 0, 200, 200))
    assert LocalFeatures.sift_descriptors_from_bytes(orb.to_bytes()) is None
    assert LocalFeatures.silhouette_from_bytes(features.to_bytes()) is None  # none stored
    with_mask = LocalFeatures(keypoints=features.keypoints, descriptors=features.descriptors, image_size=(200, 200),
                              scale=1.0, method="sift", content=(0, 0, 200, 200),
                              silhouette=(rng.random((64, 64)) > 0.5).astype(np.uint8))
    assert np.array_equal(LocalFeatures.silhouette_from_bytes(with_mask.to_bytes()), with_mask.silhouette)
    for read in (LocalFeatures.sift_descriptors_from_bytes, LocalFeatures.silhouette_from_bytes):
        with pytest.raises(DetectorError):
            read(b"not a blob")


def test_an_indexing_run_that_adds_nothing_still_rebuilds_a_deleted_store(library, monkeypatch):
    import shutil

    import detector.indexing as indexing
    from detector.indexing import index_references
    from detector.verify_config import VerifyConfig

    index, _, _ = library
    real = indexing.sync_descriptor_store
    monkeypatch.setattr(indexing, "sync_descriptor_store", lambda idx, **kw: real(idx, store_from=10, **kw))
    sync_descriptor_store(index, store_from=10)
    shutil.rmtree(index.path / STORE_DIR)  # deleted to be re-coded with another budget

    class Embedder:  # never called: there is nothing to embed
        fingerprint = index.fingerprint

    report = index_references([], index, Embedder(), verify_config=VerifyConfig(), memory_budget=60 * DESCRIPTORS * 50)
    assert report.added == 0
    assert read_manifest(index.path / STORE_DIR).descriptors == 60 * DESCRIPTORS
    trained = faiss.read_index(str(index.path / STORE_DIR / "trained.faiss"))
    assert faiss.downcast_index(faiss.extract_index_ivf(trained)).code_size == 32  # PQ32 fits 50 B a descriptor

