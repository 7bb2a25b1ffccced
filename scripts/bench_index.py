"""Benchmark the reference index: add throughput, search QPS, HNSW recall@1 vs Flat, bytes/vector.

Synthetic data (seeded): base vectors are unit vectors drawn around 10,000 random cluster centres
(cosine to their centre ~0.7, to a sibling ~0.5); each query is a noisy copy of one base vector
(cosine ~0.9 to its source), i.e. a near-duplicate lookup like a listing photo of a registered
logo. ``recall@1 vs Flat`` is the share of queries whose top-1 reference equals Flat's (exact)
top-1; ``hit@1`` the share whose top-1 is the query's source vector.

Every add() is a full commit (faiss file rewritten, fsynced and hashed, SQLite committed), so
add throughput includes durability; the time spent writing faiss files is reported separately.

Example:
    python scripts/bench_index.py --sizes 100000 --factories Flat HNSW32 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from index import faiss_ops
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex

N_CENTRES = 10_000


class _TimedIndex(ReferenceIndex):
    """Records how long commits spend writing the faiss file (the rest is faiss add + SQLite)."""

    save_seconds = 0.0

    def _write_faiss(self, index: Any, path: Path) -> None:
        t0 = time.perf_counter()
        super()._write_faiss(index, path)
        _TimedIndex.save_seconds += time.perf_counter() - t0


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def base_chunk(start: int, n: int, dim: int, seed: int) -> np.ndarray:
    """Rows ``start .. start+n`` of the synthetic base set (deterministic per chunk)."""
    centres = _unit(np.random.default_rng(seed).standard_normal((N_CENTRES, dim), dtype=np.float32))
    rng = np.random.default_rng([seed, start])
    assign = rng.integers(0, N_CENTRES, n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return _unit(centres[assign] + noise)


def make_queries(size: int, n_queries: int, dim: int, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of randomly chosen base rows; returns (queries, source row indices)."""
    rng = np.random.default_rng([seed, 999])
    sources = np.sort(rng.choice(size, n_queries, replace=False))
    rows = []
    for start in range(0, size, chunk):
        sel = sources[(sources >= start) & (sources < start + chunk)]
        if len(sel):
            rows.append(base_chunk(start, min(chunk, size - start), dim, seed)[sel - start])
    base = np.concatenate(rows)
    noise = rng.standard_normal(base.shape, dtype=np.float32) * (0.5 / np.sqrt(dim))
    return _unit(base + noise), sources


def bench_one(
    workdir: Path, factory: str, size: int, args: argparse.Namespace, queries: np.ndarray
) -> dict[str, Any]:
    fp = Fingerprint(preset="bench", arch="synthetic", weights=f"seed:{args.seed}", preprocess="{}", dim=args.dim)
    path = workdir / f"{factory.replace(',', '_')}-{size}"
    shutil.rmtree(path, ignore_errors=True)
    build = {"efConstruction": args.ef_construction} if factory.startswith("HNSW") else None
    _TimedIndex.save_seconds = 0.0
    add_seconds = 0.0
    with _TimedIndex.create(path, fingerprint=fp, factory=factory, build_params=build) as idx:
        for start in range(0, size, args.add_batch):
            n = min(args.add_batch, size - start)
            vecs = np.concatenate([base_chunk(s, min(args.gen_chunk, start + n - s), args.dim, args.seed)
                                   for s in range(start, start + n, args.gen_chunk)])  # fmt: skip
            refs = [NewReference(brand=f"brand{(start + i) % 100}", sha256=f"{start + i:064x}", source=str(start + i))
                    for i in range(n)]  # fmt: skip
            t0 = time.perf_counter()
            idx.add(refs, vecs)
            add_seconds += time.perf_counter() - t0
            print(f"  {factory} {size}: added {start + n} ({add_seconds:.1f}s)", file=sys.stderr, flush=True)
        info = idx.info()
    faiss_file = path / f"vectors.{info.generation:08d}.faiss"
    t0 = time.perf_counter()
    reader = ReferenceIndex.open(path)  # sha256-verified, memory-mapped where possible
    open_seconds = time.perf_counter() - t0
    results: dict[str, Any] = {
        "factory": factory, "size": size, "dim": args.dim, "threads": args.threads,
        "add_batch": args.add_batch, "add_seconds": round(add_seconds, 2),
        "add_per_second": round(size / add_seconds, 1),
        "faiss_save_seconds": round(_TimedIndex.save_seconds, 2),
        "faiss_file_bytes": faiss_file.stat().st_size,
        "faiss_bytes_per_vector": round(faiss_file.stat().st_size / size, 1),
        "sqlite_bytes": (path / "records.sqlite").stat().st_size,
        "reader_open_seconds": round(open_seconds, 2),
        "ef_construction": args.ef_construction if build else None,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "search": [],
    }  # fmt: skip
    param_sets: list[dict[str, Any]] = [{}]
    if build:
        param_sets = [{"efSearch": ef} for ef in args.ef_search]
    elif factory.startswith("IVF"):
        param_sets = [{"nprobe": n} for n in args.nprobe]
    with reader:
        reader.search_vectors(queries, k=args.k, params=param_sets[0])  # warm-up: page in the mmap
        for params in param_sets:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                _, ids = reader.search_vectors(queries, k=args.k, params=params)
                times.append(time.perf_counter() - t0)
            # One query at a time on one faiss thread: how a service handling requests in
            # parallel runs (OpenMP over a single query only adds wake-up latency).
            faiss_ops.set_threads(1)
            single = []
            for q in queries[: args.single]:
                t0 = time.perf_counter()
                reader.search_vectors(q[None, :], k=args.k, params=params)
                single.append(time.perf_counter() - t0)
            faiss_ops.set_threads(args.threads)
            results["search"].append({
                "params": params, "batch_qps": round(len(queries) / statistics.median(times), 1),
                "single_query_ms": round(1000 * statistics.median(single), 3), "top1": ids[:, 0].tolist(),
            })  # fmt: skip
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--factories", nargs="+", default=["Flat", "HNSW32"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--add-batch", type=int, default=100_000, help="references per add() call (one commit each)")
    ap.add_argument("--gen-chunk", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--single", type=int, default=50, help="queries timed one by one (latency)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--out", type=Path, default=None, help="write all results as JSON here")
    args = ap.parse_args(argv)
    if args.add_batch % args.gen_chunk and args.gen_chunk % args.add_batch:
        ap.error("--add-batch and --gen-chunk must divide one another")
    args.gen_chunk = min(args.gen_chunk, args.add_batch)
    faiss_ops.set_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_index_"))
    workdir.mkdir(parents=True, exist_ok=True)
    all_results = []
    for size in args.sizes:
        queries, sources = make_queries(size, args.queries, args.dim, args.seed, args.gen_chunk)
        truth = sources + 1  # ref ids are assigned 1.. in add order
        flat_top1 = None
        for factory in args.factories:
            r = bench_one(workdir, factory, size, args, queries)
            for s in r["search"]:
                top1 = np.array(s.pop("top1"))
                s["hit_at_1"] = round(float((top1 == truth).mean()), 4)
                if factory == "Flat":
                    flat_top1 = top1
                if flat_top1 is not None:
                    s["recall_at_1_vs_flat"] = round(float((top1 == flat_top1).mean()), 4)
            all_results.append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                args.out.write_text(json.dumps(all_results, indent=2) + "\n")
    print("\n| factory | size | add/s | faiss save s | bytes/vec (faiss) | params | QPS (batch) | ms/query (1 query, 1 thread) | recall@1 vs Flat | hit@1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in all_results:
        for s in r["search"]:
            print(f"| {r['factory']} | {r['size']:,} | {r['add_per_second']:,.0f} | {r['faiss_save_seconds']} | "
                  f"{r['faiss_bytes_per_vector']} | {s['params'] or '-'} | {s['batch_qps']:,.0f} | "
                  f"{s['single_query_ms']} | {s.get('recall_at_1_vs_flat', '-')} | {s['hit_at_1']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
