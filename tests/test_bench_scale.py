"""The scale benchmark end to end at small sizes (tiny preset), and the descriptor store's vote
against the in-memory one on the benchmark's listings.

CI runs 120 and 600 references, not 10,000: a 10,000-reference library takes ~1 minute to
write and its scorer minutes to open on 2 cores (docs/scale.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("simple_icons_pack")
pytest.importorskip("cairosvg")
pytest.importorskip("skimage")

from detector.bench.scale import ScaleConfig, markdown_table, run_scale_benchmark
from detector.descriptor_store import STORE_DIR
from detector.descriptor_vote import StoredDescriptorIndex
from detector.features import LocalFeatures
from detector.images import load_image
from detector.local_search import LocalFeatureIndex
from detector.verify import VerifyConfig, query_features
from index.store import ReferenceIndex

SIZES = (120, 600)
pytestmark = pytest.mark.slow  # two scorer subprocesses, each loading a model


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    cfg = ScaleConfig(sizes=(*SIZES, 10**9), preset="tiny-clip-test", random_weights=True, seed_brands=14,
                      queries_per_class=3, chunk=200, store_from=300, probe_timeout_seconds=300,
                      scoring={"verify": {"local_candidates": 10}})  # as effnet-lite0's preset
    return out, run_scale_benchmark(out, cfg, say=lambda _: None)


def test_every_size_reports_its_figures(result):
    out, data = result
    rows = {r["size"]: r for r in data["sizes"]}
    for size in SIZES:
        row = rows[size]
        assert row["status"] == "ok", row["status"]
        assert row["references"] == size
        assert 0 < row["latency_p50_seconds"] <= row["latency_p99_seconds"]
        assert row["peak_rss_bytes"] > 100 * 2**20 and row["disk_bytes_per_reference"] > 1000
        # Flat is exact: on every search the scorer made on the planted listings (each region)
        assert row["exact_queries"] > 3 * 14 and row["exact_search_k"] >= 10
        assert row["exact_top1_agreement"] == row["exact_top1_in_search_k"] == row["exact_top10_overlap"] == 1.0
        assert row["planted_in_exact"] > 0 and row["planted_recall"] == 1.0
        assert 0 <= row["planted_r_at_1"] <= 1 and row["errors"] == 0
        assert "local_vote" in row["per_generation_seconds"]
    assert rows[SIZES[1]]["ram_bytes_per_reference"] is not None
    # A billion references cannot fit on this disk: reported, not attempted, the others still ran.
    assert rows[10**9]["status"].startswith("does not fit on disk")
    saved = json.loads(next(out.glob("scale-*.json")).read_text())
    assert [r["size"] for r in saved["sizes"]] == [*SIZES, 10**9]
    assert "does not fit on disk" in markdown_table(saved)


def test_store_vote_matches_the_in_memory_vote_on_the_listings(result):
    out, data = result
    library = next(out.glob(f"libraries/*-{SIZES[1]}")) / "index"
    assert (library / STORE_DIR / "manifest.json").is_file()  # 600 references > store_from
    assert not (next(out.glob(f"libraries/*-{SIZES[0]}")) / "index" / STORE_DIR).exists()
    listings = json.loads((out / "listings.json").read_text())
    with ReferenceIndex.open(library) as index:
        ids = [r.id for r in index.references() if r.kind == "logo"]
        known = {rid: LocalFeatures.from_bytes(b) for rid, b in index.get_aux(ids).items()}
    memory = LocalFeatureIndex.from_features(known)
    stored = StoredDescriptorIndex.open(library, ids, lambda missing: {i: known[i] for i in missing})
    planted = [item for item in listings if item["brand"] is not None]
    agree = 0
    for item in planted:
        query = query_features(load_image(item["path"]), VerifyConfig())
        top_memory, top_stored = memory.vote(query, 1), stored.vote(query, 1)
        agree += [v[0] for v in top_memory] == [v[0] for v in top_stored]
    assert agree >= len(planted) - 1, f"{agree} of {len(planted)} listings agree"


def test_a_library_is_sized_and_its_factory_chosen_per_size():
    from detector.bench.scale import ScaleConfig, SeedLayout, _factory_choice

    layout = SeedLayout(record_bytes_per_reference=36_000, descriptors_per_reference=90, views=7, dim=1280)
    sq8 = layout.side_bytes_per_reference(store=True, size=10_000, memory_budget=4 * 2**30)
    assert 36_000 + 90 * 136 < sq8 < 36_000 + 90 * 136 + 2_000
    # 90M descriptors overflow 4 GiB as SQ8: the store's PQ32 codes are what the disk must hold.
    pq32 = layout.side_bytes_per_reference(store=True, size=1_000_000, memory_budget=4 * 2**30)
    assert 36_000 + 90 * 40 < pq32 < 36_000 + 90 * 40 + 2_000
    small = _factory_choice(ScaleConfig(factory="auto"), 10_000, layout)
    large = _factory_choice(ScaleConfig(factory="auto", memory_budget_bytes=2**30), 1_000_000, layout)
    assert small.factory == "Flat" and small.training_vectors == 0
    assert "IVF" in large.factory and large.estimated_bytes <= 2**30 and large.training_vectors > 10_000 * 7
    given = _factory_choice(ScaleConfig(factory="IVF64,Flat"), 1_000, layout)  # unknown to the estimator
    assert given.factory == "IVF64,Flat" and given.estimated_bytes >= 7_000 * 4 * 1280


def test_an_interrupted_library_build_continues_where_it_stopped(result, tmp_path):
    """A 1M-reference library takes hours here: a stopped build must resume, not start again,
    and end as the uninterrupted build does."""
    import numpy as np

    from detector.bench.scale_library import build_library, build_seed

    out, _ = result
    seed = build_seed(out / "seeds", preset="tiny-clip-test", n_brands=14, queries_per_class=3, random_weights=True,
                      say=lambda _: None)
    size, chunk = 260, 100
    straight = build_library(seed, tmp_path / "straight", size, chunk=chunk, store=False, say=lambda _: None)

    class Stop(Exception):
        pass

    def stop_after_first_commit(message: str) -> None:
        if "100/" in message:
            raise Stop

    with pytest.raises(Stop):
        build_library(seed, tmp_path / "resumed", size, chunk=chunk, store=False, say=stop_after_first_commit)
    with ReferenceIndex.open(tmp_path / "resumed" / "index") as index:
        assert len(index) == chunk  # the first commit is kept
    said: list[str] = []
    resumed = build_library(seed, tmp_path / "resumed", size, chunk=chunk, store=False, say=said.append)
    assert said[0].endswith("continuing after 100 synthetic references") and resumed.references == straight.references
    with ReferenceIndex.open(straight.path / "index") as a, ReferenceIndex.open(resumed.path / "index") as b:
        refs_a, refs_b = list(a.references()), list(b.references())
        assert [r.sha256 for r in refs_a] == [r.sha256 for r in refs_b] and len(refs_a) == size
        ids = [r.id for r in refs_a]
        assert [r.id for r in refs_b] == ids
        va, vb = a.get_vectors(ids), b.get_vectors(ids)
        assert all(np.array_equal(va[i], vb[i]) for i in ids)
        assert a.get_aux(ids) == b.get_aux(ids)


def test_exact_nearest_is_a_brute_force_over_each_references_best_view(tmp_path):
    from detector.bench.scale import exact_nearest
    from index.records import Fingerprint, NewReference

    dim, rng = 16, np.random.default_rng(3)
    fp = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess="{}", dim=dim)
    views = [rng.standard_normal((int(rng.integers(1, 5)), dim)).astype(np.float32) for _ in range(45)]
    views = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in views]
    refs = [NewReference(brand=f"b{i}", sha256=f"{i:064x}", source=f"{i}.png") for i in range(45)]
    queries = rng.standard_normal((6, dim)).astype(np.float32)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=fp, factory="Flat") as index:
        ids = index.add(refs, views).added
        found = exact_nearest(index, queries, top=5, chunk=7)  # chunks split the references
        stored = index.get_vectors(ids)
    best = np.stack([(queries @ stored[i].T).max(axis=1) for i in ids], axis=1)
    expected = np.asarray(ids)[np.argsort(-best, axis=1, kind="stable")[:, :5]]
    assert found.tolist() == expected.tolist()


def test_scale_recall_scores_more_planted_listings_against_exact_search(result, tmp_path):
    from detector.bench.scale_recall import main as recall_main

    out, _ = result
    seed_set = next((out / "seeds").glob("seed-*/set"))
    library = next((out / "libraries").glob(f"*-{SIZES[-1]}/index"))
    assert recall_main([str(seed_set), str(library), str(tmp_path), "--per-group", "2", "--listing-seed", "5"]) == 0
    data = json.loads((tmp_path / "recall.json").read_text())
    seed_brands = {json.loads(line)["brand"] for line in (seed_set / "labels.jsonl").read_text().splitlines()} - {None}
    listings = json.loads((tmp_path / "listings.json").read_text())
    assert data["listings"] == len(listings) == 4 and {row["brand"] for row in listings} <= seed_brands
    assert data["searches"] >= 4
    (row,) = data["variants"]
    assert row["exact_top1_agreement"] == 1.0 and row["exact_top10_overlap"] == 1.0  # a Flat library is exact
