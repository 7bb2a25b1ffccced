"""A lossy (PQ) index's searches re-score their candidates exactly with the stored vectors:
the scores are the exact ones and the ranking is the exact ranking among what was fetched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.records import Fingerprint, NewReference
from index.search import is_lossy, refine
from index.store import ReferenceIndex

DIM = 32
FP = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess='{"size":32}', dim=DIM)


def _library(n: int, views: int = 2) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, views, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def _exact(queries: np.ndarray, library: np.ndarray, ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    best = np.einsum("qd,nvd->qnv", queries, library).max(axis=2)
    order = np.argsort(-best, axis=1)[:, :k]
    return np.take_along_axis(best, order, axis=1), np.asarray(ids)[order]


def test_a_pq_index_returns_exact_scores_and_mostly_the_exact_ranking(tmp_path: Path) -> None:
    library = _library(600)
    refs = [NewReference(brand=f"b{i % 7}", sha256=f"{i:064x}", source=f"r/{i}.png") for i in range(600)]
    queries = library[:40, 0] + 0.8 * _library(40, 1)[:, 0]  # near, not copies: PQ misorders these
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP, factory="PQ8x4") as index:
        ids = index.add(refs, list(library)).added
        stored = index.get_vectors(ids)
        exact_library = np.stack([stored[i] for i in ids])  # the float16-rounded vectors faiss holds
        want_scores, want_ids = _exact(queries, exact_library, ids, 5)
        refined_scores, refined_ids = index.search_vectors(queries, k=5)
        raw_scores, raw_ids = index.search_vectors(queries, k=5, params={"refine": 1})
        empty_scores, empty_ids = index.search_vectors(np.zeros((0, DIM), np.float32), k=5)
        assert empty_scores.shape == empty_ids.shape == (0, 5)
        with pytest.raises(ValueError, match="refine"):
            index.search_vectors(queries, k=5, params={"refine": 0})
    for row in range(len(queries)):  # every returned score is the reference's exact best view
        for score, rid in zip(refined_scores[row], refined_ids[row]):
            assert score == pytest.approx(float((stored[int(rid)] @ queries[row]).max()), abs=1e-5)
    top1_refined = float(np.mean(refined_ids[:, 0] == want_ids[:, 0]))
    top1_raw = float(np.mean(raw_ids[:, 0] == want_ids[:, 0]))
    assert top1_refined >= 0.95 and top1_refined > top1_raw, (top1_refined, top1_raw)
    assert not np.allclose(raw_scores, refined_scores)  # the raw ones are PQ's approximations


def test_refine_drops_candidates_without_vectors_and_pads_short_rows() -> None:
    queries = np.eye(4, dtype=np.float32)[:2]
    vectors = {7: np.eye(4, dtype=np.float32)[[0, 1]], 9: np.eye(4, dtype=np.float32)[[1]]}
    scores, ids = refine(queries, np.array([[9, 7, 5], [7, -1, -1]]), vectors, k=3)
    assert ids.tolist() == [[7, 9, -1], [7, -1, -1]]  # 5: removed since the search's generation
    assert scores[0, :2].tolist() == [1.0, 0.0] and np.isinf(scores[0, 2])


@pytest.mark.parametrize(("factory", "lossy"), [("Flat", False), ("IVF4096,Flat", False), ("HNSW32", False),
                                               ("IVF4096,SQ8", True), ("OPQ256_1280,IVF8192_HNSW32,PQ256x8", True)])
def test_lossy_factories(factory: str, lossy: bool) -> None:
    assert is_lossy(factory) is lossy


def test_an_opq_factory_trains_on_its_first_add(tmp_path: Path) -> None:
    # faiss saves an untrained OPQ as a plain linear map: the empty index written at create time
    # and read back could not be trained by the first add.
    library = _library(1200, views=1)
    refs = [NewReference(brand="b", sha256=f"{i:064x}", source=f"r/{i}.png") for i in range(1200)]
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=FP, factory="OPQ4_32,IVF8,PQ4x4") as index:
        ids = index.add(refs, list(library)).added
        _, found = index.search_vectors(library[:50, 0], k=1, params={"nprobe": 8, "refine": 50})
    assert np.mean(found[:, 0] == np.asarray(ids[:50])) >= 0.9  # 4-byte codes: copies among 50 fetched
