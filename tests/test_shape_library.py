"""The shape library (packed masks, incremental distinct floors), its sync with an index and
the shape search's shortlist."""

from __future__ import annotations


import numpy as np
import pytest

from detector.bench.shape_masks import drawn_seeds, listing_marks, synthetic_library
from detector.bench.shape_scale import library_of
from detector.shape_library import LIBRARY_FILE, ShapeLibrary
from detector.shape_scores import distinct_ious, generic_ious
from detector.shape_search import ShapeSearch
from detector.shape_sync import synced_library
from detector.silhouettes import CANONICAL_SIDE, QueryShapes, SilhouetteConfig
from shape_support import FakeIndex


@pytest.fixture(scope="module")
def seeds() -> list[np.ndarray]:
    return drawn_seeds(40, np.random.default_rng(1))


def _masks(rows: np.ndarray) -> list[np.ndarray]:
    return [row.reshape(CANONICAL_SIDE, CANONICAL_SIDE).astype(np.uint8) for row in rows]


def _assert_floors_match_pairwise(library: ShapeLibrary, rows: np.ndarray, brands: list[str]) -> None:
    expected = distinct_ious(rows.astype(np.float32), brands)
    np.testing.assert_array_equal(library.other_best, expected)  # bit for bit: same float32 IoUs
    np.testing.assert_array_equal(library.generic, generic_ious(rows.astype(np.float32)))
    for i, rid in enumerate(library.ids.tolist()):
        assert library.distinct(rid) == float(max(expected[i], library.generic[i]))


def test_incremental_floors_equal_the_pairwise_computation_after_adds_and_removes(seeds):
    rng = np.random.default_rng(2)
    rows = synthetic_library(160, seeds, rng)
    # Families share seeds across brands, and one brand registers several logos.
    brands = [f"b{int(b)}" for b in rng.integers(0, 60, len(rows))]
    ids = np.arange(10, 10 + len(rows))
    library = ShapeLibrary.empty().with_added(ids[:100].tolist(), brands[:100], _masks(rows[:100]))
    for start in range(100, 160, 20):  # three more commits
        stop = start + 20
        library = library.with_added(ids[start:stop].tolist(), brands[start:stop], _masks(rows[start:stop]))
    _assert_floors_match_pairwise(library, rows, brands)

    # Withdraw the logos that set the most floors, and a random few.
    setters, counts = np.unique(library.other_source, return_counts=True)
    gone = set(setters[np.argsort(-counts)[:5]].tolist()) | set(rng.choice(ids, 10, replace=False).tolist())
    gone.discard(-1)
    library = library.without(sorted(gone))
    keep = ~np.isin(ids, list(gone))
    _assert_floors_match_pairwise(library, rows[keep], [b for b, k in zip(brands, keep) if k])
    assert not set(library.other_source.tolist()) & gone


def test_a_brand_alone_has_floor_zero_and_masks_without_a_mark_are_remembered(seeds):
    rows = synthetic_library(3, seeds, np.random.default_rng(3))
    library = ShapeLibrary.empty().with_added([1, 2, 3, 4], ["a", "a", "a", "a"], [*_masks(rows), None])
    assert library.other_best.tolist() == [0.0, 0.0, 0.0] and library.other_source.tolist() == [-1, -1, -1]
    assert library.without_mask == {4} and library.distinct(4) is None
    again = library.with_added([4, 1], ["a", "a"], [None, None])  # ids already held are ignored
    assert len(again) == 3 and again.without_mask == {4}


def test_save_load_round_trip_and_a_corrupt_file_is_recomputed(seeds, tmp_path):
    rows = synthetic_library(30, seeds, np.random.default_rng(4))
    brands = [f"b{i % 7}" for i in range(30)]
    library = ShapeLibrary.empty().with_added(list(range(30)), brands, _masks(rows))
    library.save(tmp_path / LIBRARY_FILE)
    loaded = ShapeLibrary.load(tmp_path / LIBRARY_FILE)
    for name in ("ids", "brands", "codes", "areas", "other_best", "other_source", "generic"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(library, name))
    # The masks and brands are read from the file as needed (memory maps), not copied onto the heap.
    assert isinstance(loaded.codes, np.memmap) and isinstance(loaded.brands, np.memmap)
    # Its key (what a saved inverted file is checked against) comes from the file, not from
    # reading every mask; it is the key the masks give.
    assert "_key" in loaded.__dict__ and loaded.key == library.key
    grown = loaded.with_added([99], ["b9"], _masks(rows[:1]))  # a writer grows a loaded library
    assert len(grown) == 31 and grown.distinct(99) == 1.0  # logo 0's mask under another brand
    assert "_key" not in grown.__dict__ and grown.key not in (library.key, None)
    assert loaded.without([]).key == library.key  # the same masks, computed again
    # A library written compressed (no map possible) is read whole, to the same arrays.
    with np.load(tmp_path / LIBRARY_FILE) as data:
        np.savez_compressed(tmp_path / "compressed.npz", **{k: data[k] for k in data.files})
    whole = ShapeLibrary.load(tmp_path / "compressed.npz")
    assert not isinstance(whole.codes, np.memmap)
    np.testing.assert_array_equal(whole.codes, library.codes)
    np.testing.assert_array_equal(whole.brands, library.brands)

    index = FakeIndex(tmp_path, [(i, b) for i, b in enumerate(brands)])
    reads: list[int] = []

    def read(ids):
        reads.extend(ids)
        return {i: _masks(rows[i : i + 1])[0] for i in ids}

    assert len(synced_library(index, read)) == 30 and reads == []  # all from the file
    saved = (tmp_path / LIBRARY_FILE).read_bytes()
    for damaged in (b"not a library", saved[: len(saved) // 2]):  # garbage, a truncated zip
        (tmp_path / LIBRARY_FILE).write_bytes(damaged)
        reads.clear()
        synced = synced_library(index, read)
        assert sorted(reads) == list(range(30))
        np.testing.assert_array_equal(synced.other_best, library.other_best)


def test_a_stale_saved_library_catches_up_with_the_index_by_difference(seeds, tmp_path):
    """Logos removed and added behind the saved file's back (raw index API, a crash before the
    save): only the added ones are read, and the floors are as if computed afresh."""
    rows = synthetic_library(50, seeds, np.random.default_rng(5))
    brands = [f"b{i % 9}" for i in range(50)]
    ShapeLibrary.empty().with_added(list(range(40)), brands[:40], _masks(rows[:40])).save(tmp_path / LIBRARY_FILE)
    now = [i for i in range(50) if i % 4 != 1]  # some removed, ids 40-49 added
    reads: list[int] = []

    def read(ids):
        reads.extend(ids)
        return {i: _masks(rows[i : i + 1])[0] for i in ids}

    synced = synced_library(FakeIndex(tmp_path, [(i, brands[i]) for i in now]), read)
    assert reads == [i for i in now if i >= 40]
    assert synced.ids.tolist() == now
    _assert_floors_match_pairwise(synced, rows[now], [brands[i] for i in now])


def test_the_shape_search_shortlist_holds_the_exact_searchs_best_logos(seeds):
    """On generated listings (two views of library logos among clutter marks), the approx's
    shortlist holds each listing's exact best logo, and its top 5 is the exact search's."""
    rng = np.random.default_rng(6)
    rows = synthetic_library(1500, seeds, rng)
    library = library_of(np.packbits(rows > 0, axis=1), brands=1)  # floors unset: not searched
    exact, approx = ShapeSearch(library), ShapeSearch(library, exact_up_to=0)
    assert exact.exact and not approx.exact
    config = SilhouetteConfig(angle_step=10)
    same_top = 0
    for _ in range(10):
        marks, _ = listing_marks(rows, seeds, rng)
        query = QueryShapes(marks, config)
        ids, coarse = exact.coarse(query)
        best = coarse.max(axis=0)
        top = ids[np.argsort(-best, kind="stable")[:5]]
        assert top[0] in approx.library.ids[approx.shortlist(query)]
        short_ids, short = approx.coarse(query)
        assert len(short_ids) <= min(approx.per_variant * len(query.variant_rows()), len(rows) // 3)  # not all
        np.testing.assert_array_equal(short.max(axis=1), coarse.max(axis=1))  # each mark's best
        same_top += (short_ids[np.argsort(-short.max(axis=0), kind="stable")[:5]] == top).all()
    assert same_top >= 9


def test_the_inverted_file_follows_the_library_by_difference(seeds):
    """The next generation's search copies and updates the last one's inverted file: withdrawn
    logos are never proposed, added ones are found, and the last generation's search is intact."""
    rng = np.random.default_rng(7)
    rows = synthetic_library(700, seeds, rng)
    first = ShapeLibrary.empty().with_added(list(range(600)), ["b"] * 600, _masks(rows[:600]))
    old = ShapeSearch(first, exact_up_to=0)
    gone = list(range(0, 600, 3))
    second = first.without(gone).with_added(list(range(600, 700)), ["b"] * 100, _masks(rows[600:]))
    new = ShapeSearch(second, exact_up_to=0, previous=old)
    assert new._lists is not old._lists and new._lists.ntotal == len(second) and old._lists.ntotal == 600
    config = SilhouetteConfig(angle_step=10)
    for probe in (0, 3, 650, 699):  # withdrawn, withdrawn, added, added
        ids, coarse = new.coarse(QueryShapes(_masks(rows[probe : probe + 1]), config))
        assert not set(ids.tolist()) & set(gone)
        assert (probe in ids.tolist()) == (probe >= 600)
        if probe >= 600:
            assert coarse[0, ids.tolist().index(probe)] == 1.0
    old_ids, _ = old.coarse(QueryShapes(_masks(rows[:1]), config))
    assert 0 in old_ids.tolist()
