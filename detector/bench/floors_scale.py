"""Distinct floors computed from nothing: the exact scan vs the shortlist's approximation.

    python -m detector.bench.floors_scale --sizes 1000 2000 5000 20000 [--approx-only 100000]

For each library size N (perturbed real logos, as :mod:`detector.bench.shape_scale`; brands
as there, ``N / 3`` of them): the seconds :meth:`ShapeLibrary.with_added` takes to add all N
logos to an empty library with every floor scanned exactly and with the approximate floors
(:mod:`detector.shape_floors`), one after the other; and how the approximate floors agree
with the exact ones (share equal, share within 0.01 / 0.05, largest and median difference;
the same for the effective floor ``max(other brand, generic shape)`` that scoring uses).
Sizes in ``--approx-only`` are timed approximately only. Prints one JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from detector.bench.shape_masks import icon_seeds
from detector.bench.shape_scale import synthetic_codes
from detector.shape_library import ShapeLibrary
from detector.shape_scores import generic_shapes
from detector.silhouettes import CANONICAL_SIDE


def _added(masks: list[np.ndarray], brands: list[str], exact_floors_up_to: int) -> tuple[ShapeLibrary, float]:
    started = time.perf_counter()
    library = ShapeLibrary.empty().with_added(list(range(len(masks))), brands, masks,
                                              exact_floors_up_to=exact_floors_up_to)  # fmt: skip
    return library, time.perf_counter() - started


def _agreement(exact: np.ndarray, approx: np.ndarray, prefix: str) -> dict:
    gap = exact - approx  # approximate floors never exceed the exact ones
    return {
        f"{prefix}_share_equal": round(float((gap == 0).mean()), 4),
        f"{prefix}_share_within_0.01": round(float((gap <= 0.01).mean()), 4),
        f"{prefix}_share_within_0.05": round(float((gap <= 0.05).mean()), 4),
        f"{prefix}_max_diff": round(float(np.abs(gap).max()), 4),
        f"{prefix}_median_diff": round(float(np.median(np.abs(gap))), 4),
        f"{prefix}_median_diff_where_unequal": round(float(np.median(gap[gap != 0])), 4) if (gap != 0).any() else 0.0,
        f"{prefix}_approx_above_exact": int((gap < 0).sum()),
    }


def measure(n: int, seeds: list[np.ndarray], *, exact: bool) -> dict:
    codes = synthetic_codes(n, seeds, np.random.default_rng(n))
    masks = [row.reshape(CANONICAL_SIDE, CANONICAL_SIDE) for row in np.unpackbits(codes, axis=1)]
    brands = [f"b{i % max(1, n // 3)}" for i in range(n)]
    out: dict = {"n": n}
    approx, out["approx_s"] = _added(masks, brands, exact_floors_up_to=0)
    out["approx_s"] = round(out["approx_s"], 2)
    if exact:
        full, seconds = _added(masks, brands, exact_floors_up_to=n)
        out["exact_s"] = round(seconds, 2)
        out.update(_agreement(full.other_best, approx.other_best, "floor"))
        out.update(_agreement(np.maximum(full.other_best, full.generic), np.maximum(approx.other_best, approx.generic),
                              "effective_floor"))  # fmt: skip
        out["same_source_share"] = round(float((full.other_source == approx.other_source).mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 20000])
    parser.add_argument("--approx-only", type=int, nargs="*", default=[])
    parser.add_argument("--seeds", type=int, default=400, help="real logos the library is perturbed from")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)  # as shape_scale: one thread, on a shared machine
    seeds = icon_seeds(args.seeds)
    generic_shapes(CANONICAL_SIDE)  # rendered once per process: not part of either computation
    for n in args.sizes:
        print(json.dumps(measure(n, seeds, exact=True)), flush=True)
    for n in args.approx_only:
        print(json.dumps(measure(n, seeds, exact=False)), flush=True)


if __name__ == "__main__":
    main()
