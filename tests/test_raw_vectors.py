"""How the index database keeps raw vectors: float16 in new indexes (half the bytes, and the faiss
index holds the same rounded vectors, so a rebuild reproduces it), float32 on request and in
indexes made before the choice existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index.catalog import DB_NAME
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex

DIM = 48
FP = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess='{"size":32}', dim=DIM)


def _views(refs: int, views: int = 3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((refs, views, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def _refs(n: int) -> list[NewReference]:
    return [NewReference(brand=f"b{i % 4}", sha256=f"{i:064x}", source=f"r/{i}.png") for i in range(n)]


def _blob_sizes(path: Path) -> set[int]:
    with sqlite3.connect(path / DB_NAME) as db:
        return {int(n) for (n,) in db.execute("SELECT length(data) FROM ref_vectors")}


def test_new_indexes_store_float16_and_rebuild_to_the_same_scores(tmp_path: Path) -> None:
    views = _views(40)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP) as index:
        added = index.add(_refs(40), list(views)).added
        queries = views[:, 0]
        before_scores, before_ids = index.search_vectors(queries, k=5)
        stored = index.get_vectors(added)
        index.rebuild()  # from the database's float16 rows
        after_scores, after_ids = index.search_vectors(queries, k=5)
    assert _blob_sizes(tmp_path / "ix") == {3 * DIM * 2}
    for rid, original in zip(added, views):
        kept = stored[rid]
        assert kept.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, rtol=1e-6)  # unit again after rounding
        np.testing.assert_allclose(kept, original, atol=1e-3)
    np.testing.assert_array_equal(before_ids[:, 0], added)  # an exact copy still finds itself...
    np.testing.assert_allclose(before_scores[:, 0], 1.0, atol=1e-6)  # ...at cosine 1, not 0.9999
    np.testing.assert_array_equal(after_ids, before_ids)
    np.testing.assert_array_equal(after_scores, before_scores)  # faiss held the rounded vectors


def test_float32_on_request_keeps_vectors_exactly(tmp_path: Path) -> None:
    views = _views(10)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP, raw_vectors="float32") as index:
        added = index.add(_refs(10), list(views)).added
        stored = index.get_vectors(added)
    assert _blob_sizes(tmp_path / "ix") == {3 * DIM * 4}
    for rid, original in zip(added, views):
        np.testing.assert_array_equal(stored[rid], original)
    with pytest.raises(ValueError, match="raw_vectors"):
        ReferenceIndex.create(tmp_path / "other", fingerprint=FP, raw_vectors="int8")


def test_an_index_from_before_the_choice_reads_float32(tmp_path: Path) -> None:
    """Format 1 had no ``raw_vectors`` key and float32 rows: it must read and grow as before."""
    views = _views(6)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP, raw_vectors="float32") as index:
        index.add(_refs(3), list(views[:3]))
    with sqlite3.connect(tmp_path / "ix" / DB_NAME) as db:
        db.execute("DELETE FROM meta WHERE key = 'raw_vectors'")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    with ReferenceIndex.open(tmp_path / "ix", writable=True) as index:
        index.add(_refs(6)[3:], list(views[3:]))
        stored = index.get_vectors([r.id for r in index.references()])
        index.rebuild()
        _, ids = index.search_vectors(views[:, 0], k=1)
    assert _blob_sizes(tmp_path / "ix") == {3 * DIM * 4}
    np.testing.assert_array_equal(np.stack([stored[rid] for rid in sorted(stored)]), views)
    np.testing.assert_array_equal(ids[:, 0], sorted(stored))


def test_a_staged_factory_is_exact_until_it_trains_on_enough_vectors(tmp_path: Path) -> None:
    """``train_after_vectors``: an IVF is not trained on a first add too small for it; the
    index stays exact Flat, commits every add, and converts once the library can train it."""
    views = _views(120, views=2, seed=5)
    refs = _refs(120)
    path = tmp_path / "ix"
    with ReferenceIndex.create(path, fingerprint=FP, factory="IVF16,Flat", search_params={"nprobe": 16},
                               train_after_vectors=160) as index:
        first = index.add(refs[:30], list(views[:30])).added  # 60 vectors: IVF16 could not train well on them
        assert (index.factory, index.staged_factory) == ("Flat", "IVF16,Flat")
        _, ids = index.search_vectors(views[:30, 1], k=1)
        np.testing.assert_array_equal(ids[:, 0], first)
    assert ReferenceIndex.open_or_create(path, fingerprint=FP, factory="IVF16,Flat").close() is None  # its target
    reader = ReferenceIndex.open(path)  # a scorer polling the index while it converts
    with ReferenceIndex.open(path, writable=True) as index:  # the staging survives reopening
        assert index.staged_factory == "IVF16,Flat"
        index.add(refs[30:70], list(views[30:70]))  # 140 vectors: still Flat
        assert index.factory == "Flat"
        index.add(refs[70:], list(views[70:]))  # 240 >= 160: trained and converted in this add
        assert (index.factory, index.staged_factory) == ("IVF16,Flat", None)
        assert index.info().vectors == 240
        scores, ids = index.search_vectors(views[:, 0], k=1)  # nprobe 16 of 16 lists: exact
    np.testing.assert_array_equal(ids[:, 0], np.arange(1, 121))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)
    with reader:
        assert reader.factory == "Flat" and reader.reload()
        assert (reader.factory, reader.staged_factory) == ("IVF16,Flat", None)
        queries = _views(50, views=1, seed=9)[:, 0]  # not stored: nprobe 1 of 16 would miss many
        stored = reader.get_vectors(range(1, 121))
        exact = np.array([max(stored, key=lambda rid: float((stored[rid] @ q).max())) for q in queries])
        _, ids = reader.search_vectors(queries, k=1)  # with the staged nprobe 16, not faiss's 1
        np.testing.assert_array_equal(ids[:, 0], exact)


def test_a_factory_without_training_is_never_staged(tmp_path: Path) -> None:
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP, factory="HNSW16", train_after_vectors=10**6) as index:
        assert (index.factory, index.staged_factory) == ("HNSW16", None)


def test_a_training_sample_holds_exactly_its_limit(tmp_path: Path) -> None:
    """350 stored vectors and a limit of 262: all 262, spread evenly, not the 175 of a stride of 2
    (a staged IVF trains on this sample)."""
    from index.rebuild import training_sample

    views = _views(175, views=2, seed=3)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP) as index:
        index.add(_refs(175), list(views))
        sample = training_sample(index._catalog, DIM, 262)
        everything = training_sample(index._catalog, DIM, 10_000)
    assert sample.shape == (262, DIM) and everything.shape == (350, DIM)
    rows = {tuple(np.round(v, 5)) for v in everything}
    assert all(tuple(np.round(v, 5)) in rows for v in sample)
    np.testing.assert_array_equal(sample[0], everything[0])
    np.testing.assert_array_equal(sample[-1], everything[-1])  # the whole library, end to end
