"""Distinct floors of a library computed from nothing: approximate (from each logo's
inverted-file shortlist) above the exact crossover, never above the exact floors."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import detector.shape_floors as shape_floors
from detector.bench.shape_masks import drawn_seeds, synthetic_library
from detector.shape_library import EXACT_FLOORS_UP_TO, ShapeLibrary
from detector.silhouettes import CANONICAL_SIDE

EVERYTHING = 10**9  # exact_floors_up_to that keeps every batch exact


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return synthetic_library(1200, drawn_seeds(40, np.random.default_rng(21)), np.random.default_rng(22))


def _masks(rows: np.ndarray) -> list[np.ndarray]:
    return [row.reshape(CANONICAL_SIDE, CANONICAL_SIDE).astype(np.uint8) for row in rows]


def _brands(n: int) -> list[str]:
    return [f"b{i % 97}" for i in range(n)]  # a dozen logos a brand, of unrelated shapes


def test_with_a_shortlist_of_every_logo_the_approximate_floors_are_the_exact_ones(rows, monkeypatch):
    """Held logos raised by new ones included: floors and the logos that set them, bit for bit."""
    masks, brands, ids = _masks(rows[:400]), _brands(400), list(range(400))
    exact = ShapeLibrary.empty().with_added(ids[:250], brands[:250], masks[:250], exact_floors_up_to=EVERYTHING)
    exact = exact.with_added(ids[250:], brands[250:], masks[250:], exact_floors_up_to=EVERYTHING)
    covering = functools.partial(shape_floors.approximate_floors, per_variant=400, nprobe=400)
    monkeypatch.setattr(shape_floors, "approximate_floors", covering)
    approx = ShapeLibrary.empty().with_added(ids[:250], brands[:250], masks[:250], exact_floors_up_to=0)
    approx = approx.with_added(ids[250:], brands[250:], masks[250:], exact_floors_up_to=0)
    np.testing.assert_array_equal(approx.other_best, exact.other_best)
    np.testing.assert_array_equal(approx.other_source, exact.other_source)
    np.testing.assert_array_equal(approx.generic, exact.generic)
    assert (exact.other_best > 0).all()  # every logo had a floor to find


def test_a_partial_shortlists_floors_are_close_to_the_exact_ones_and_never_above(rows, monkeypatch):
    """The default shortlist (200 nearest, 64 of 139 lists) and a shallow one (10 nearest,
    8 lists: ~1/17 of the logos scanned) on 1,200 logos: never above the exact floors, the
    default equal on all but a few, the shallow one within the bounds measured (0.968 equal,
    0.998 within 0.05, largest gap 0.056) with some slack."""
    masks, brands, ids = _masks(rows), _brands(len(rows)), list(range(len(rows)))
    exact = ShapeLibrary.empty().with_added(ids, brands, masks, exact_floors_up_to=EVERYTHING)
    default = ShapeLibrary.empty().with_added(ids, brands, masks, exact_floors_up_to=0)
    shallow = functools.partial(shape_floors.approximate_floors, per_variant=10, nprobe=8)
    monkeypatch.setattr(shape_floors, "approximate_floors", shallow)
    approx = ShapeLibrary.empty().with_added(ids, brands, masks, exact_floors_up_to=0)
    assert ((exact.other_best - default.other_best) == 0).mean() >= 0.99
    gap = exact.other_best - approx.other_best
    assert (gap >= 0).all() and (exact.other_best >= default.other_best).all()  # max over a subset of pairs
    assert 0.9 <= (gap == 0).mean() < 1.0  # partial: some floors missed
    assert (gap <= 0.05).mean() >= 0.99
    assert gap.max() <= 0.15
    set_ = (gap == 0) & (exact.other_best > 0)
    np.testing.assert_array_equal(approx.other_source[set_], exact.other_source[set_])


def test_batches_up_to_the_crossover_stay_exact(rows, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("approximate floors below the crossover")

    monkeypatch.setattr(shape_floors, "approximate_floors", refuse)
    masks, brands = _masks(rows[:300]), _brands(300)
    library = ShapeLibrary.empty().with_added(list(range(300)), brands, masks, exact_floors_up_to=300)
    assert len(library) == 300
    assert EXACT_FLOORS_UP_TO >= 1000  # a benchmark-sized build keeps exact floors
    with pytest.raises(AssertionError, match="approximate"):
        ShapeLibrary.empty().with_added(list(range(300)), brands, masks, exact_floors_up_to=299)
