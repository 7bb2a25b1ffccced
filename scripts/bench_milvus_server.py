"""Top-k search latency of a Milvus server against Milvus Lite and FAISS Flat, in one run.

The seeded synthetic references of ``scripts/bench_vector_stores.py`` (one unit vector each),
each with a product id; its queries. Every query is timed on every backend in turn (alternating
order, so background load falls on all alike), one ``search_vectors`` call per query; then all
queries in one call. Reported: p50 / p95 per backend, the time to add the references, and the
share of queries whose top-k ids equal FAISS Flat's. A new server collection is created and
dropped.

``--bounded`` adds a row: the server collection opened again with its searches sent at Bounded
consistency instead of the collection's Strong, which waits for the server's next time tick --
what Strong costs, not what the backend does. ``--allow-old-server`` lets in a server the
backend refuses (older than 2.5), for timing only: these references all have a product id and
the searches use no brand filter, the two things such a server gets wrong.

Example:
    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_milvus_server.py \\
        --server 127.0.0.1:19530 --n 20000 --queries 200 --bounded
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import index.milvus_base
from index.open import create_index, open_index
from index.records import Fingerprint, NewReference
from scripts.bench_vector_stores import synthetic


def build(spec: str, base: np.ndarray, fingerprint: Fingerprint) -> tuple[Any, float]:
    """A new Flat index at ``spec`` holding ``base``, added 1,000 at a time; seconds to add."""
    idx = create_index(spec, fingerprint=fingerprint, factory="Flat")
    t0 = time.perf_counter()
    for start in range(0, len(base), 1000):
        refs = [
            NewReference(
                brand=f"brand-{i % 50}", sha256=f"{i:064x}", source=f"ref-{i}", product_id=f"P{i}"
            )
            for i in range(start, min(start + 1000, len(base)))
        ]
        idx.add(refs, base[start : start + 1000])
    return idx, time.perf_counter() - t0


def open_bounded(spec: str, fingerprint: Fingerprint) -> Any:
    """The index at ``spec`` opened read-only, its searches sent at Bounded consistency."""
    idx = open_index(spec, fingerprint=fingerprint)
    idx._client.search = functools.partial(idx._client.search, consistency_level="Bounded")
    return idx


def time_one_by_one(
    backends: dict[str, Any], queries: np.ndarray, k: int
) -> dict[str, list[float]]:
    """Seconds of one ``search_vectors`` call per query and backend (alternating order)."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    order = list(backends.items())
    for i in range(len(queries)):
        for name, idx in order if i % 2 == 0 else reversed(order):
            t0 = time.perf_counter()
            idx.search_vectors(queries[i : i + 1], k)
            times[name].append(time.perf_counter() - t0)
    return times


def drop_collection(address: str, collection: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=f"http://{address}")
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the Milvus server")
    p.add_argument("--n", type=int, default=20_000, help="references (one vector each)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=200, help="at most 512")
    p.add_argument(
        "--bounded", action="store_true", help="also time the server at Bounded consistency"
    )
    p.add_argument("--allow-old-server", action="store_true", help="time a server older than 2.5")
    args = p.parse_args(argv)
    if args.allow_old_server:
        index.milvus_base.MIN_SERVER_VERSION = (2, 0)

    fingerprint = Fingerprint(
        preset="bench", arch="bench", weights="random:0", preprocess="{}", dim=args.dim
    )
    base, queries = synthetic(args.n, args.dim, seed=0)
    queries = queries[: args.queries]
    root = Path(tempfile.mkdtemp(prefix="bench-server-"))
    collection = f"bench_refs_{uuid.uuid4().hex[:8]}"
    server_spec = f"milvus://{args.server}/{collection}?side={root / 'server-side'}"
    specs = {
        "faiss Flat": str(root / "faiss"),
        "milvus-lite FLAT": f"milvus-lite:{root / 'refs.db'}",
        "milvus server FLAT": server_spec,
    }
    backends: dict[str, Any] = {}
    add_seconds: dict[str, float] = {}
    try:
        for name, spec in specs.items():
            backends[name], add_seconds[name] = build(spec, base, fingerprint)
        if args.bounded:
            backends["milvus server FLAT, Bounded searches"] = open_bounded(
                server_spec, fingerprint
            )
        version = str(backends["milvus server FLAT"]._client.get_server_version())
        _, want = backends["faiss Flat"].search_vectors(queries, args.k)
        same = {}
        for name, idx in backends.items():  # also the warm-up
            same[name] = float(
                np.mean((idx.search_vectors(queries, args.k)[1] == want).all(axis=1))
            )
        times = time_one_by_one(backends, queries, args.k)
        all_at_once = {}
        for name, idx in backends.items():
            t0 = time.perf_counter()
            idx.search_vectors(queries, args.k)
            all_at_once[name] = round(1000 * (time.perf_counter() - t0), 1)
    finally:
        for idx in backends.values():
            idx.close()
        drop_collection(args.server, collection)
        shutil.rmtree(root, ignore_errors=True)

    def ms(values: list[float], q: float) -> float:
        return round(1000 * float(np.quantile(values, q)), 2)

    result = {
        "n": args.n, "dim": args.dim, "k": args.k, "queries": len(queries),
        "server_version": version,
        "add_seconds": {name: round(s, 1) for name, s in add_seconds.items()},
        "same_top_k_as_faiss_flat": same,
        "one_query_ms": {name: {"p50": ms(t, 0.5), "p95": ms(t, 0.95)}
                         for name, t in times.items()},
        "all_queries_in_one_call_ms": all_at_once,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
