"""One size of the scale benchmark, run in its own process: open the scorer on a library,
score the listing photos one at a time, and write what it cost (``python -m
detector.bench.scale_probe INDEX LISTINGS OUT``).

Run as a subprocess so that its peak RSS (``ru_maxrss``) is the scorer's alone and a memory
limit (``resource.setrlimit`` by the parent) stops this size, not the whole benchmark.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 10  # the overlap with the exact search is over each query's first TOP_K references


def searches_file(result_file: Path) -> Path:
    """Where the probe leaves the scorer's recorded searches (queries, ids) beside its result."""
    return result_file.with_name(result_file.stem + ".searches.npz")


def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident set now (Linux ``/proc``; 0 elsewhere). ``RssAnon``: heap and
    other private memory; ``RssFile``: mapped files (the descriptor store's lists, evictable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """Peak resident set of this process (``ru_maxrss`` is KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def probe(index_dir: Path, listings: list[dict[str, Any]], config: dict[str, Any] | None,
          partial: Path | None = None) -> dict[str, Any]:
    """Score ``listings`` (``{"path", "brand"}``) on the index at ``index_dir``; figures and
    verdicts. ``partial``: a file the per-generation build times are written to as each ends
    (what a run stopped by its time limit still tells)."""
    from detector.images import load_image
    from detector.scoring import Detector

    out: dict[str, Any] = {"rss_start_bytes": rss_bytes(), "per_generation_seconds": _time_per_generation_builds(partial)}
    t0 = time.perf_counter()
    det = Detector.open(index_dir, config=config)
    out["open_seconds"] = time.perf_counter() - t0
    out["rss_after_open_bytes"] = rss_bytes()
    images = [load_image(item["path"]) for item in listings]
    latencies: list[float] = []
    verdicts = []
    searches = _record_searches(det.index)
    for i, (item, image) in enumerate(zip(listings, images)):
        t = time.perf_counter()
        searches.brand = item["brand"]  # the planted set's searches (brand not None), for recall against exact
        verdict = det.analyse_images([image], [Path(item["path"]).name])[0].verdict
        elapsed = time.perf_counter() - t
        if i == 0:  # builds the per-generation structures (descriptor vote, shapes, floors)
            out["first_listing_seconds"] = elapsed
            out["rss_after_first_bytes"] = rss_bytes()
        else:
            latencies.append(elapsed)
        top = verdict.matches[0] if verdict.matches else None
        verdicts.append({"path": item["path"], "brand": item["brand"], "flagged": verdict.flagged,
                         "verdict_brand": verdict.brand, "top_brand": top.brand if top else None,
                         "error": verdict.error})
    out["latency_p50_seconds"] = percentile(latencies, 50)
    out["latency_p99_seconds"] = percentile(latencies, 99)
    out["listings_per_second"] = len(latencies) / sum(latencies) if latencies else None
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["rss_anon_end_bytes"], out["rss_file_end_bytes"] = rss_bytes("RssAnon"), rss_bytes("RssFile")
    out["searches"] = searches.recorded()
    out["verdicts"] = verdicts
    det.close()
    return out


class _SearchRecorder:
    """Wraps an index's ``search_vectors``: keeps the queries the scorer searched while
    ``brand`` (the listing's planted brand) is set, the reference ids it got back and that
    brand (compared with an exact search by the parent)."""

    def __init__(self, index: Any) -> None:
        self.brand: str | None = None
        self._search = index.search_vectors
        self._queries: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._brands: list[str] = []

    def __call__(self, queries: np.ndarray, k: int = 10, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self._search(queries, k, **kwargs)
        if self.brand is not None:
            self._queries.append(np.array(queries, dtype=np.float32, ndmin=2))
            self._ids.append(ids.copy())
            self._brands += [self.brand] * len(ids)
        return scores, ids

    def recorded(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Queries ``(n, dim)``, the ids returned ``(n, k)`` and each query's planted brand."""
        if not self._queries:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64), []
        k = min(len(i[0]) for i in self._ids)
        return np.concatenate(self._queries), np.concatenate([i[:, :k] for i in self._ids]), self._brands


def _record_searches(index: Any) -> _SearchRecorder:
    recorder = _SearchRecorder(index)
    index.search_vectors = recorder  # the instance's attribute: the scorer's calls go through it
    return recorder


def _time_per_generation_builds(partial: Path | None) -> dict[str, float]:
    """Record how long each per-generation structure takes to build (name -> seconds)."""
    from detector.signals.reference_data import ReferenceData

    timings: dict[str, float] = {}
    original = ReferenceData.per_generation

    def timed(self: ReferenceData, name: str, index: Any, build: Any) -> Any:
        def build_timed() -> Any:
            t = time.perf_counter()
            try:
                return build()
            finally:
                timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 3)
                if partial is not None:
                    partial.write_text(json.dumps({"per_generation_seconds": timings, "rss_bytes": rss_bytes()}))

        return original(self, name, index, build_timed)

    ReferenceData.per_generation = timed  # type: ignore[method-assign]
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("index")
    parser.add_argument("listings", help="JSON list of {path, brand}")
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--config", default=None, help="scoring options as JSON")
    parser.add_argument("--vote", choices=("store", "memory"), default="store",
                        help="memory: ignore the descriptor store, vote from all descriptors in RAM")
    args = parser.parse_args(argv)
    listings = json.loads(Path(args.listings).read_text())
    config = json.loads(args.config) if args.config else None
    if args.vote == "memory":  # the vote as before the store: every descriptor in memory
        from detector.descriptor_vote import StoredDescriptorIndex

        StoredDescriptorIndex.open = classmethod(lambda cls, *a, **k: None)  # type: ignore[method-assign]
    result = probe(Path(args.index), listings, config, Path(args.out + ".partial"))
    queries, ids, brands = result.pop("searches")
    np.savez(searches_file(Path(args.out)), queries=queries, ids=ids, brands=np.asarray(brands, dtype=str))  # too large for JSON
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
