"""How an IVF's coarse training changes the scorer's searches (docs/scale.md, fourth round).

Reads a scale library's stored vectors and the searches its probe recorded
(``probe-*.searches.npz`` from ``scripts/bench_scale.py``), trains ``IVF{lists},Flat`` on an even
sample of them with faiss's k-means and with this project's two-level k-means (with and
without its full iterations), and prints, per nprobe, how often the exact nearest reference is
among the k fetched, top-1 agreement and top-10 overlap with exact search.

    PYTHONPATH=. python scripts/measure_ivf_training.py LIBRARY/index SEARCHES.npz [--lists 4096]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from detector.bench.scale import exact_nearest
from index.kmeans import two_level_centroids
from index.store import ReferenceIndex


def stored_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector and its reference id."""
    with ReferenceIndex.open(path) as index:
        ids = [r.id for r in index.references()]
        parts, owners = [], []
        for start in range(0, len(ids), 20_000):
            chunk = index.get_vectors(ids[start : start + 20_000])
            for rid, views in chunk.items():
                parts.append(views)
                owners.append(np.full(len(views), rid))
    return np.concatenate(parts), np.concatenate(owners)


def distinct(rows: np.ndarray, owners: np.ndarray, k: int) -> list[list[int]]:
    """Each row's first ``k`` distinct references (rows: an IVF's vector positions, best first)."""
    out = []
    for row in rows:
        seen: list[int] = []
        for j in row:
            if j >= 0 and owners[j] not in seen:
                seen.append(int(owners[j]))
            if len(seen) == k:
                break
        out.append(seen)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("library", type=Path, help="the library's index folder")
    parser.add_argument("searches", type=Path, help="probe-*.searches.npz")
    parser.add_argument("--lists", type=int, default=4096)
    parser.add_argument("--nprobe", default="32,128")
    args = parser.parse_args(argv)
    queries = np.load(args.searches)["queries"]
    k = np.load(args.searches)["ids"].shape[1]
    vectors, owners = stored_vectors(args.library)
    with ReferenceIndex.open(args.library) as index:
        exact = exact_nearest(index, queries, 10).tolist()
    sample = vectors[np.unique(np.linspace(0, len(vectors) - 1, 39 * args.lists).astype(np.int64))]
    print(f"{len(vectors):,} vectors, {len(queries)} searches, k = {k}, {len(sample):,} training vectors")
    trainings = {
        "faiss k-means": None,
        "two-level only": lambda x: two_level_centroids(x, args.lists, spherical=True, refine=0),
        "two-level + full iterations": lambda x: two_level_centroids(x, args.lists, spherical=True),
    }
    for name, centroids in trainings.items():
        index = faiss.index_factory(vectors.shape[1], f"IVF{args.lists},Flat", faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        if centroids is not None:
            index.quantizer.add(centroids(sample))
        index.train(sample)
        seconds = time.perf_counter() - started
        index.add(vectors)
        for nprobe in (int(n) for n in args.nprobe.split(",")):
            index.nprobe = nprobe
            found = distinct(index.search(queries, 7 * k)[1], owners, k)
            in_k = np.mean([e[0] in f for e, f in zip(exact, found)])
            top1 = np.mean([bool(f) and e[0] == f[0] for e, f in zip(exact, found)])
            overlap = np.mean([len(set(e) & set(f[:10])) / 10 for e, f in zip(exact, found)])
            print(f"{name}: trained in {seconds:.0f} s; nprobe {nprobe}: exact NN in k {in_k:.3f}, "
                  f"top-1 {top1:.3f}, top-10 overlap {overlap:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
