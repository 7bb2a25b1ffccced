"""Scale measurement of the shape search and the distinct floors on synthetic libraries.

    python -m detector.bench.shape_scale --sizes 1000 10000 100000 [--before-up-to 100000]

For each library size N (perturbed real logos, :mod:`detector.bench.shape_masks`): the time
of one listing's coarse shape search, exact (the int8 product over all logos, as before) and
through :class:`~detector.shape_search.ShapeSearch`'s inverted file, interleaved listing by listing;
whether its answer matches the exact one (best IoU of each mark, top ``search``
logos); the bytes each holds; the time to add one logo's floors incrementally (and to
withdraw a logo that set 20 floors) vs the full pairwise computation; and the time to bring
the inverted file to the next generation (one logo added) vs building it. Prints one JSON
line per size. Timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from detector.bench.shape_masks import icon_seeds, listing_marks, synthetic_library
from detector.shape_library import ShapeLibrary
from detector.shape_scores import distinct_ious, generic_shapes
from detector.shape_search import ShapeSearch
from detector.silhouettes import CANONICAL_SIDE, QueryShapes, SilhouetteConfig

_EXACT_CHUNK = 100_000  # rows per exact product: bounds its (variants, chunk) temporaries


def library_of(codes: np.ndarray, brands: int) -> ShapeLibrary:
    """A library of these packed masks, floors left at 0 (the search needs none; computing
    them pairwise at 1M logos would take days)."""
    n = len(codes)
    labels = np.array([f"b{i % brands}" for i in range(n)])
    areas = np.bitwise_count(codes).sum(axis=1, dtype=np.int64)
    return ShapeLibrary(np.arange(n, dtype=np.int64), labels, codes, areas,
                        np.zeros(n, np.float32), np.full(n, -1, np.int64), np.zeros(n, np.float32))  # fmt: skip


def synthetic_codes(n: int, seeds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(n, 512) packed masks: n / 4 perturbed logos, each also turned by 90, 180 and 270
    degrees (another logo in the canonical frame; generating is the slow part)."""
    base = synthetic_library((n + 3) // 4, seeds, rng).reshape(-1, CANONICAL_SIDE, CANONICAL_SIDE)
    turned = [np.packbits(np.rot90(base, k, axes=(1, 2)).reshape(len(base), -1) > 0, axis=1) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(turned)[:n])


class _Rows:
    """Unpacked rows of a library on demand (all of them at 1M would take 4 GiB)."""

    def __init__(self, library: ShapeLibrary) -> None:
        self.library = library

    def __len__(self) -> int:
        return len(self.library)

    def __getitem__(self, pos: int) -> np.ndarray:
        return self.library.rows(np.array([pos]))[0]


def exact_coarse(query: QueryShapes, library: ShapeLibrary) -> np.ndarray:
    """The exact search over every logo (as before this change), unpacked and multiplied in
    chunks of rows so that 1M logos fit in memory (before, all rows were held as int8)."""
    chunks = range(0, len(library), _EXACT_CHUNK)
    return np.concatenate([query.coarse(library.rows(slice(s, s + _EXACT_CHUNK))) for s in chunks], axis=1)


def measure(n: int, seeds: list[np.ndarray], *, listings: int, before: bool, search: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    library = library_of(synthetic_codes(n, seeds, rng), brands=max(1, n // 3))
    out: dict = {"n": n, "generate_s": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    ivf = ShapeSearch(library, exact_up_to=0)  # the inverted file, whatever N
    out["ivf_build_s"] = round(time.perf_counter() - started, 2)
    out["library_mib"] = round(library.nbytes / 2**20, 1)
    out["search_mib"] = round(ivf.nbytes / 2**20, 1)
    out["before_rows_mib"] = round(n * CANONICAL_SIDE**2 / 2**20, 1)  # the int8 rows the exact search held
    config = SilhouetteConfig(angle_step=10)  # the default profile's (effnet-lite0 preset)
    t_exact, t_ivf, shortlist, gaps, best_same, top_same, flips = [], [], [], [], 0, 0, 0
    for _ in range(listings):
        marks, _ = listing_marks(_Rows(library), seeds, rng)
        query = QueryShapes(marks, config)
        started = time.perf_counter()
        ids, coarse = ivf.coarse(query)
        t_ivf.append(time.perf_counter() - started)
        shortlist.append(len(ids))
        if before:
            started = time.perf_counter()
            exact = exact_coarse(query, library)
            t_exact.append(time.perf_counter() - started)
            best_same += bool(np.array_equal(coarse.max(axis=1), exact.max(axis=1)))
            gaps.extend((exact.max(axis=1) - coarse.max(axis=1)).tolist())
            flips += int(((exact.max(axis=1) >= 0.5) != (coarse.max(axis=1) >= 0.5)).sum())
            want = np.argsort(-exact.max(axis=0), kind="stable")[:search]
            got = ids[np.argsort(-coarse.max(axis=0), kind="stable")[:search]]
            top_same += bool(np.array_equal(got, want))
    out["ivf_ms_per_listing_median"] = round(1000 * float(np.median(t_ivf)), 1)
    out["shortlist_median"] = int(np.median(shortlist))
    if before:
        out["exact_ms_per_listing_median"] = round(1000 * float(np.median(t_exact)), 1)
        out["listings_marks_best_iou_all_same"] = f"{best_same}/{listings}"
        out["marks_best_iou_largest_shortfall"] = round(max(gaps), 3)
        out["marks_best_iou_0.5_decisions_differ"] = f"{flips}/{len(gaps)}"
        out[f"top{search}_same"] = f"{top_same}/{listings}"
    floors, grown = _floors(library, rng, pairwise=n <= 20_000)
    out.update(floors)
    started = time.perf_counter()
    ShapeSearch(grown, exact_up_to=0, previous=ivf)  # the next generation: one logo more
    out["ivf_update_one_logo_s"] = round(time.perf_counter() - started, 2)
    return out


def _floors(library: ShapeLibrary, rng: np.random.Generator, *, pairwise: bool) -> tuple[dict, ShapeLibrary]:
    """Seconds to add one logo incrementally and to withdraw one that set 20 floors (rescans);
    the full pairwise computation when small enough."""
    out: dict = {}
    n = len(library)
    generic_shapes(CANONICAL_SIDE)  # rendered once per process (cached by this argument): not part of an add
    times = []
    for _ in range(3):
        new = _Rows(library)[int(rng.integers(n))].reshape(CANONICAL_SIDE, CANONICAL_SIDE)[::-1].copy()
        started = time.perf_counter()
        grown = library.with_added([n], ["newbrand"], [new])
        times.append(time.perf_counter() - started)
    out["add_one_logo_s_median_of_3"] = round(float(np.median(times)), 3)
    sources = np.full(n + 1, -1, np.int64)  # the synthetic floors are unset: none was set by the new logo
    sources[:20] = n  # pretend the new logo set 20 floors: each is rescanned on withdrawal
    started = time.perf_counter()
    grown.__class__(grown.ids, grown.brands, grown.codes, grown.areas, grown.other_best.copy(), sources,
                    grown.generic).without([n])  # fmt: skip
    out["withdraw_one_setting_20_floors_s"] = round(time.perf_counter() - started, 3)
    if pairwise:
        started = time.perf_counter()
        distinct_ious(library.rows().astype(np.float32), library.brands.tolist())
        out["pairwise_all_floors_s"] = round(time.perf_counter() - started, 2)
    return out, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--before-up-to", type=int, default=100_000, help="largest N also searched exactly")
    parser.add_argument("--listings", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=400, help="real logos the library is perturbed from")
    parser.add_argument("--search", type=int, default=5, help="logos the search returns (silhouettes.search)")
    args = parser.parse_args()
    import faiss

    import torch

    # One thread each for both searches: on a shared 2-core machine more threads measured noisier and slower.
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    seeds = icon_seeds(args.seeds)
    for n in args.sizes:
        print(json.dumps(measure(n, seeds, listings=args.listings, before=n <= args.before_up_to,
                                 search=args.search, seed=n)), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
