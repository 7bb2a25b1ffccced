"""The shape search's inverted file saved with the index: loaded when built for the library
held, updated by difference by the writer, rebuilt (never trusted) when stale or corrupt."""

from __future__ import annotations

import os

import numpy as np
import pytest
from shape_support import FakeIndex

import detector.shape_search as shape_search
from detector.bench.shape_masks import drawn_seeds, synthetic_library
from detector.bench.shape_scale import library_of
from detector.shape_library import LIBRARY_FILE, ShapeLibrary
from detector.shape_lists import LISTS_FILE
from detector.shape_search import ShapeSearch
from detector.shape_sync import save_synced_library, save_synced_search, saved_search, synced_search
from detector.silhouettes import CANONICAL_SIDE, QueryShapes, SilhouetteConfig


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return synthetic_library(500, drawn_seeds(30, np.random.default_rng(11)), np.random.default_rng(12))


def _library(rows: np.ndarray, ids: list[int]) -> ShapeLibrary:
    lib = library_of(np.packbits(rows[ids] > 0, axis=1), brands=7)
    return ShapeLibrary(np.asarray(ids, np.int64), *(getattr(lib, f) for f in
                        ("brands", "codes", "areas", "other_best", "other_source", "generic")))  # fmt: skip


def _masks(rows: np.ndarray) -> list[np.ndarray]:
    return [row.reshape(CANONICAL_SIDE, CANONICAL_SIDE).astype(np.uint8) for row in rows]


def _no_build(*_args, **_kwargs):
    raise AssertionError("the inverted file was built, not loaded or updated")


def _same_results(a: ShapeSearch, b: ShapeSearch, rows: np.ndarray) -> None:
    config = SilhouetteConfig(angle_step=30)
    for probe in (0, 7, 123, 321, 499):
        query = QueryShapes(_masks(rows[probe : probe + 1]), config)
        (ids_a, coarse_a), (ids_b, coarse_b) = a.coarse(query), b.coarse(query)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(coarse_a, coarse_b)


def test_the_saved_inverted_file_is_loaded_not_built_and_searches_identically(rows, tmp_path, monkeypatch):
    library = _library(rows, list(range(400)))
    written = save_synced_search(tmp_path, library, ShapeLibrary.empty(), exact_up_to=0)
    assert written.origin == "built" and (tmp_path / LISTS_FILE).exists()
    monkeypatch.setattr(shape_search, "_inverted_file", _no_build)
    loaded = saved_search(tmp_path, library, exact_up_to=0)
    assert loaded is not None and loaded.origin == "loaded" and loaded.lists.ntotal == 400
    assert loaded.drawn_for == written.drawn_for == 400
    monkeypatch.undo()
    _same_results(loaded, ShapeSearch(library, exact_up_to=0), rows)  # a fresh build: the same lists


def test_the_writer_updates_the_saved_file_by_difference(rows, tmp_path, monkeypatch):
    first = _library(rows, list(range(400)))
    save_synced_search(tmp_path, first, ShapeLibrary.empty(), exact_up_to=0)
    second = _library(rows, [i for i in range(500) if i % 5])  # some withdrawn, 100 added
    monkeypatch.setattr(shape_search, "_inverted_file", _no_build)
    updated = save_synced_search(tmp_path, second, first, exact_up_to=0)
    assert updated.origin == "updated"
    loaded = saved_search(tmp_path, second, exact_up_to=0)
    assert loaded is not None and loaded.origin == "loaded"
    _same_results(loaded, updated, rows)
    inode = os.stat(tmp_path / LISTS_FILE).st_ino
    save_synced_search(tmp_path, second, second, exact_up_to=0)  # nothing changed: not rewritten
    assert os.stat(tmp_path / LISTS_FILE).st_ino == inode
    assert saved_search(tmp_path, first, exact_up_to=0) is None  # built for another library


def test_a_changed_library_or_a_damaged_file_is_never_loaded(rows, tmp_path):
    library = _library(rows, list(range(400)))
    save_synced_search(tmp_path, library, ShapeLibrary.empty(), exact_up_to=0)
    changed_codes = library.codes.copy()
    changed_codes[5, 0] ^= 1  # same ids, one mask differs by a pixel
    changed = ShapeLibrary(library.ids, library.brands, changed_codes, library.areas, library.other_best,
                           library.other_source, library.generic)  # fmt: skip
    assert changed.key != library.key
    assert saved_search(tmp_path, changed, exact_up_to=0) is None
    saved = (tmp_path / LISTS_FILE).read_bytes()
    flipped = bytearray(saved)
    flipped[len(saved) // 2] ^= 0xFF  # a byte of the codes: FAISS would read it without complaint
    for damaged in (bytes(flipped), saved[: len(saved) // 2], saved[:100], b"garbage" * 1000, b""):
        (tmp_path / LISTS_FILE).write_bytes(damaged)
        assert saved_search(tmp_path, library, exact_up_to=0) is None


def test_writer_and_scorer_through_the_index(rows, tmp_path, monkeypatch):
    """The indexing side saves library and inverted file; a scorer starting on the index loads
    both (nothing read, nothing built); a corrupt inverted file is rebuilt, not fatal."""
    brands = [f"b{i % 9}" for i in range(300)]
    read = lambda ids: {i: _masks(rows[i : i + 1])[0] for i in ids}  # noqa: E731
    index = FakeIndex(tmp_path, [(i, brands[i]) for i in range(300)])
    save_synced_library(index, read, exact_up_to=0)
    assert (tmp_path / LIBRARY_FILE).exists() and (tmp_path / LISTS_FILE).exists()
    monkeypatch.setattr(shape_search, "_inverted_file", _no_build)
    scorer = synced_search(index, lambda ids: pytest.fail("read masks"), exact_up_to=0)
    assert scorer.origin == "loaded" and len(scorer.library) == 300
    monkeypatch.undo()
    (tmp_path / LISTS_FILE).write_bytes(b"broken")
    rebuilt = synced_search(index, read, exact_up_to=0)
    assert rebuilt.origin == "built"
    _same_results(scorer, rebuilt, rows)
    save_synced_library(index, read, exact_up_to=1500)  # below the crossover: no inverted file
    assert not (tmp_path / LISTS_FILE).exists()
