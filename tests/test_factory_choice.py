"""Index factories chosen by a memory budget (index/factory_choice.py, --factory auto)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from detector.reference_prep import ReferencePrepConfig, views_per_reference
from index import faiss_ops
from index.factory_choice import (
    FLAT_MAX_VECTORS,
    choose_factory,
    estimate_bytes,
    n_lists,
    parse_memory_size,
)

GIB = 2**30
EFFNET_DIM = 1280


def test_parse_memory_size():
    assert parse_memory_size("8GiB") == 8 * GIB
    assert parse_memory_size("8G") == 8 * GIB
    assert parse_memory_size("500MB") == 500 * 10**6
    assert parse_memory_size("1.5gib") == int(1.5 * GIB)
    assert parse_memory_size("4096") == 4096
    for bad in ("", "8 parsecs", "-1GiB", "0", "GiB"):
        with pytest.raises(ValueError):
            parse_memory_size(bad)


def test_small_library_is_flat_and_exact():
    choice = choose_factory(10_000 * 7, EFFNET_DIM, 4 * GIB)
    assert choice.factory == "Flat"
    assert choice.estimated_bytes == 70_000 * (4 * EFFNET_DIM + 8)
    assert choice.search_params == {} and choice.training_vectors == 0


def test_large_library_under_a_small_budget_is_compressed_ivfpq_that_fits():
    n = 1_000_000 * 7
    assert estimate_bytes("Flat", n, EFFNET_DIM) > 32 * GIB  # the 36 GB of the issue
    for budget in (2 * GIB, 8 * GIB):
        choice = choose_factory(n, EFFNET_DIM, budget)
        assert ",IVF" in choice.factory and "PQ" in choice.factory, choice
        assert choice.estimated_bytes <= budget
        assert choice.search_params["nprobe"] >= 8
        assert choice.training_vectors >= n_lists(n)


def test_tighter_budget_never_chooses_more_bytes():
    n = 10_000_000 * 7
    sizes = [choose_factory(n, EFFNET_DIM, b * GIB).estimated_bytes for b in (32, 8, 2)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_mid_size_library_gets_exact_inverted_lists_when_they_fit_and_sq8_when_tighter():
    n = 100_000 * 7
    assert n > FLAT_MAX_VECTORS
    roomy = choose_factory(n, EFFNET_DIM, 8 * GIB)
    assert roomy.factory == "IVF4096,Flat" and roomy.search_params == {"nprobe": 512}
    assert roomy.training_vectors == 39 * 4096  # staged until then (ReferenceIndex.create)
    tight = choose_factory(n, EFFNET_DIM, 2 * GIB)
    assert tight.factory == "IVF4096,SQ8" and tight.estimated_bytes <= 2 * GIB
    assert not any("HNSW" in choose_factory(n, EFFNET_DIM, b * GIB).factory.split(",")[-1] for b in (1, 2, 4, 8))


def test_no_candidate_fits_raises():
    with pytest.raises(ValueError, match="no factory fits"):
        choose_factory(10_000_000, EFFNET_DIM, 64 * 2**20)
    with pytest.raises(ValueError, match="too few to compress"):
        choose_factory(5_000, EFFNET_DIM, 1024)


@pytest.mark.parametrize("dim", [512, EFFNET_DIM])
def test_every_chosen_factory_builds_with_faiss_and_accepts_its_search_params(dim):
    seen = set()
    for refs in (10_000, 100_000, 1_000_000, 10_000_000):
        for budget in (2, 8, 32):
            try:
                choice = choose_factory(refs * 7, dim, budget * GIB)
            except ValueError:
                continue
            if choice.factory in seen:
                continue
            seen.add(choice.factory)
            faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
            index = faiss_ops.build_index(choice.factory, dim, choice.build_params)
            faiss_ops.SearchSetup(index, choice.search_params)  # raises on an unknown name
    assert any("PQ" in f for f in seen) and "Flat" in seen and any(f.endswith(",SQ8") for f in seen)


@pytest.mark.parametrize(
    ("n", "dim", "budget", "kind"),
    [(20_000, 16, 400_000, "OPQ8_16,IVF512,PQ8x8"), (300_000, 32, 2 * 10**7, "IVF2048,SQ8")],
)
def test_chosen_factories_train_and_find_their_vectors_at_small_scale(n, dim, budget, kind):
    choice = choose_factory(n, dim, budget)
    assert kind in choice.factory and choice.estimated_bytes <= budget
    rng = np.random.default_rng(0)
    n_train = 3_000  # small scale: PQ's 256-centroid k-means is slow on this 2-core machine
    data = rng.standard_normal((n_train, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = faiss_ops.build_index(choice.factory, dim, choice.build_params)
    if isinstance(index, faiss.IndexPreTransform):  # fewer k-means iterations, same code path
        faiss.downcast_VectorTransform(index.chain.at(0)).niter = 2
        faiss.downcast_index(index.index).pq.cp.niter = 5
    faiss_ops.train_if_needed(index, data, choice.factory)
    index.add_with_ids(data, np.arange(n_train, dtype=np.int64))
    setup = faiss_ops.SearchSetup(index, choice.search_params)
    _, ids = index.search(data[:200], 10, params=setup.params)
    found = np.mean([i in row for i, row in enumerate(ids)])
    # A vector finds itself in its top 10 (a broken index: ~10/3,000 of them).
    assert found >= 0.5, (choice.factory, found)


def test_views_per_reference_matches_reference_views():
    from PIL import Image

    from detector.reference_prep import reference_views

    config = ReferencePrepConfig(logo_margins=(0.05, 0.3), logo_crops=(0.1,), jpeg_qualities=(40,))
    logo = Image.new("RGB", (120, 60), "white")
    logo.paste(Image.new("RGB", (60, 30), "red"), (30, 15))
    assert len(reference_views(logo, "logo", config)) == views_per_reference("logo", config) == 6
    assert len(reference_views(logo, "product", config)) == views_per_reference("product", config) == 2


def test_cli_factory_auto_builds_a_working_index(sample_set, tmp_path, capsys):
    from detector.cli import main
    from detector.exit_codes import EXIT_USAGE
    from index.open import open_index
    from tests.conftest import TINY

    refs = str(sample_set.references_dir)
    too_small = tmp_path / "too-small"
    assert main(["index", "build", refs, "--index", str(too_small), "--model", TINY,
                 "--factory", "auto", "--memory-budget", "1KiB"]) == EXIT_USAGE  # fmt: skip
    assert "raise --memory-budget" in capsys.readouterr().err
    assert not too_small.exists()  # nothing created

    index_dir = tmp_path / "auto"
    assert main(["index", "build", refs, "--index", str(index_dir), "--model", TINY,
                 "--factory", "auto", "--memory-budget", "64MiB"]) == 0  # fmt: skip
    with open_index(index_dir) as index:
        assert index.factory == "Flat"  # a tiny library: exact search, recorded as such
        refs_by_id = {r.id: r for r in index.references()}
        vectors = index.get_vectors(list(refs_by_id))
        ref_id, stored = next(iter(vectors.items()))
        matches = index.search(np.asarray(stored[:1], dtype=np.float32), k=1)
        assert matches[0][0].ref_id == ref_id
    # Adding to it later keeps the recorded factory.
    assert main(["index", "add", refs, "--index", str(index_dir), "--factory", "auto"]) == 0
    with open_index(index_dir) as index:
        assert index.factory == "Flat" and len(index) == len(refs_by_id)


def test_nprobe_is_an_eighth_of_the_lists_up_to_its_cap():
    million = choose_factory(1_000_000 * 7, EFFNET_DIM, 4 * GIB)
    assert "IVF8192" in million.factory and million.search_params["nprobe"] == 1024
    assert million.search_params["quantizer_efSearch"] == 2048
    ten_million = choose_factory(10_000_000 * 7, EFFNET_DIM, 32 * GIB)
    assert ten_million.search_params["nprobe"] == 1024 < n_lists(10_000_000 * 7) // 8
