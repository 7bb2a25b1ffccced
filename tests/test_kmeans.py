"""Two-level k-means: exact centroid counts, real clusterings, and the big-IVF training path
that uses it (an index trained this way searches like one trained by faiss)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import index.faiss_ops as faiss_ops
import index.kmeans as kmeans
from index.kmeans import allocate, two_level_centroids
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex


def test_allocation_is_exact_proportional_and_never_more_than_a_group_holds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        sizes = rng.integers(0, 50, rng.integers(1, 40))
        k = int(rng.integers(1, max(2, sizes.sum() + 1)))
        if sizes.sum() < k:
            continue
        shares = allocate(sizes, k)
        assert shares.sum() == k and (shares >= 0).all() and (shares <= sizes).all()
        if k >= (sizes > 0).sum():
            assert ((shares > 0) == (sizes > 0)).all()
    assert allocate(np.array([300, 100, 0]), 40).tolist() == [30, 10, 0]


def test_two_level_centroids_are_a_real_clustering_of_the_sample() -> None:
    rng = np.random.default_rng(3)
    blobs = rng.normal(size=(50, 16)).astype(np.float32) * 10
    sample = (blobs[rng.integers(0, 50, 20_000)] + rng.normal(size=(20_000, 16))).astype(np.float32)
    centroids = two_level_centroids(sample, 256)
    assert centroids.shape == (256, 16) and np.isfinite(centroids).all()
    nearest = ((sample[:, None, :] - centroids[None, :, :]) ** 2).sum(-1).min(axis=1)
    assert np.median(nearest) < 16  # 16: the expected squared distance to a point's blob centre
    unit = two_level_centroids(sample / np.linalg.norm(sample, axis=1, keepdims=True), 100, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot make"):
        two_level_centroids(sample[:10], 11)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "OPQ8_32,IVF64,PQ8x4", "OPQ8_32,IVF64_HNSW32,PQ8x4"])
def test_a_big_ivf_trained_in_two_levels_finds_near_duplicates(tmp_path: Path, monkeypatch, factory: str) -> None:
    calls = []
    monkeypatch.setattr(faiss_ops, "TWO_LEVEL_FROM_LISTS", 64)
    monkeypatch.setattr(kmeans, "two_level_centroids", lambda *a, **k: calls.append(a[1]) or two_level_centroids(*a, **k))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fp = Fingerprint(preset="t", arch="t", weights="t", preprocess="t", dim=32)
    refs = [NewReference(brand=f"b{i % 9}", sha256=f"{i:064x}", source=f"{i}.png") for i in range(len(x))]
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=fp, factory=factory, search_params={"nprobe": 8}) as index:
        ids = index.add(refs, list(x[:, None, :])).added
        queries = x[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        _, found = index.search_vectors(queries, k=1)
    assert calls == [64]  # the two-level path trained it
    assert np.mean(found[:, 0] == np.asarray(ids[:200])) >= 0.95
