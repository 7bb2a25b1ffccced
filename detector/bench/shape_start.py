"""Scorer start with and without the saved shape inverted file, on a synthetic library.

    python -m detector.bench.shape_start --size 100000 --rounds 3

Builds a synthetic library of ``size`` logos (:mod:`detector.bench.shape_scale`), saves it in
a temporary index directory as the indexing run does (library file, then the inverted file:
the writer's one-off build), and then, ``rounds`` times, interleaved: a scorer start (the
saved library read, the search structure loaded or built, one listing's shape search) with
the inverted file saved, and the same with it moved aside. Also the writer's next generation
(one logo added: the saved file loaded, updated by difference and written again) and the
bytes on disk. The files are in the page cache (just written): a cold disk adds their read.
Prints one JSON line. Timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from detector.bench.shape_masks import icon_seeds, listing_marks
from detector.bench.shape_scale import _Rows, library_of, synthetic_codes
from detector.shape_library import LIBRARY_FILE, ShapeLibrary
from detector.shape_lists import LISTS_FILE
from detector.shape_sync import save_synced_search, synced_search
from detector.silhouettes import CANONICAL_SIDE, QueryShapes, SilhouetteConfig


class _Index:
    """What the scorer's sync reads of an index: its directory and logo references."""

    def __init__(self, path: Path, library: ShapeLibrary) -> None:
        self.path = path
        pairs = zip(library.ids, library.brands)
        self._refs = [SimpleNamespace(id=int(i), brand=str(b), kind="logo") for i, b in pairs]

    def references(self):
        return iter(self._refs)


def _no_masks(ids):
    raise AssertionError(f"the saved library lacks {len(ids)} logos")


def scorer_start(index: _Index, query: QueryShapes) -> tuple[float, float, str]:
    """Seconds to the search structure, seconds to the first listing's shortlist, and its origin."""
    started = time.perf_counter()
    search = synced_search(index, _no_masks)
    ready = time.perf_counter() - started
    search.coarse(query)
    return ready, time.perf_counter() - started, search.origin


def measure(size: int, rounds: int, seeds: list[np.ndarray], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    library = library_of(synthetic_codes(size, seeds, rng), brands=max(1, size // 3))
    out: dict = {"n": size}
    with tempfile.TemporaryDirectory(prefix="shape-start-") as tmp:
        directory = Path(tmp)
        library.save(directory / LIBRARY_FILE)
        started = time.perf_counter()
        save_synced_search(directory, library, ShapeLibrary.empty())  # the writer's first build
        out["writer_build_and_save_s"] = round(time.perf_counter() - started, 2)
        out["library_file_mib"] = round(os.path.getsize(directory / LIBRARY_FILE) / 2**20, 1)
        out["lists_file_mib"] = round(os.path.getsize(directory / LISTS_FILE) / 2**20, 1)
        index = _Index(directory, library)
        marks, _ = listing_marks(_Rows(library), seeds, rng)
        query = QueryShapes(marks, SilhouetteConfig(angle_step=10))
        aside = directory / "aside.faiss"
        scorer_start(index, query)  # untimed: the query's and FAISS's one-off set-up in this process
        times: dict[str, list] = {"with": [], "without": []}
        for _ in range(rounds):
            for variant in ("with", "without"):
                if variant == "without":
                    os.replace(directory / LISTS_FILE, aside)
                ready, first, origin = scorer_start(index, query)
                if variant == "without":
                    os.replace(aside, directory / LISTS_FILE)
                times[variant].append((ready, first, origin))
        for variant, runs in times.items():
            out[f"{variant}_file_origin"] = sorted({r[2] for r in runs})
            out[f"{variant}_file_search_ready_s"] = [round(r[0], 2) for r in runs]
            out[f"{variant}_file_first_shortlist_s"] = [round(r[1], 2) for r in runs]
        mask = _Rows(library)[0].reshape(CANONICAL_SIDE, CANONICAL_SIDE)[::-1].copy()
        grown = library.with_added([size], ["newbrand"], [mask])
        started = time.perf_counter()
        save_synced_search(directory, grown, library)  # next generation: loaded, one logo added, saved
        out["writer_next_generation_s"] = round(time.perf_counter() - started, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=400, help="real logos the library is perturbed from")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)  # as shape_scale: one thread, on a shared machine
    print(json.dumps(measure(args.size, args.rounds, icon_seeds(args.seeds), seed=args.size)), flush=True)


if __name__ == "__main__":
    main()
