"""Search latency of the Milvus Lite backend against the FAISS Flat index, same vectors.

Both indexes get the same seeded synthetic references (unit vectors around random cluster
centres, one view each; queries are noisy copies of stored vectors, cosine ~0.9, as a listing
photo of a registered logo). The searches are interleaved -- each round times every backend,
in alternating order -- so the machine's background load falls on both alike. Reported per
backend: the median and p95 of one ``search_vectors`` call with 1 query and with a batch of
16 (a listing's regions), the time to add all references, and the share of queries whose
top-k ids equal FAISS Flat's.

Example:
    python scripts/bench_vector_stores.py --n 10000 --dim 512 --rounds 200 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from index.open import create_index
from index.records import Fingerprint, NewReference


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(base, queries)``: n base vectors around n // 10 centres; 512 queries near base rows."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(1, n // 10), dim), dtype=np.float32))
    noise = rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    base = _unit(centres[rng.integers(0, len(centres), n)] + noise)
    src = rng.integers(0, n, 512)
    queries = _unit(base[src] + 0.5 * rng.standard_normal((512, dim), dtype=np.float32) / np.sqrt(dim))
    return base, queries


def build(spec: str, base: np.ndarray, fingerprint: Fingerprint, factory: str) -> tuple[Any, float]:
    idx = create_index(spec, fingerprint=fingerprint, factory=factory)
    t0 = time.perf_counter()
    for start in range(0, len(base), 1000):
        chunk = base[start : start + 1000]
        refs = [NewReference(brand=f"brand-{(start + i) % 50}", sha256=f"{start + i:064x}", source=f"ref-{start + i}")
                for i in range(len(chunk))]  # fmt: skip
        idx.add(refs, chunk)
    return idx, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="references (one vector each)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rounds", type=int, default=200, help="timed calls per backend and batch size")
    p.add_argument("--milvus-factory", default="Flat", help="Flat or HNSW<M>")
    p.add_argument("--milvus", metavar="SPEC", help="a new Milvus index to build, e.g. "
                   "'milvus://HOST:PORT/bench_refs?side=DIR' (default: a temporary Milvus Lite file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)

    fingerprint = Fingerprint(preset="bench", arch="bench", weights="random:0", preprocess="{}", dim=args.dim)
    base, queries = synthetic(args.n, args.dim, args.seed)
    root = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    try:
        faiss_idx, faiss_add = build(str(root / "faiss"), base, fingerprint, "Flat")
        milvus_spec = args.milvus or f"milvus-lite:{root / 'refs.db'}"
        lite_idx, lite_add = build(milvus_spec, base, fingerprint, args.milvus_factory)
        milvus_name = f"{'milvus' if args.milvus else 'milvus-lite'} {args.milvus_factory}"
        backends = {"faiss Flat": faiss_idx, milvus_name: lite_idx}
        _, want = faiss_idx.search_vectors(queries, args.k)
        _, got = lite_idx.search_vectors(queries, args.k)
        same_top_k = float(np.mean((want == got).all(axis=1)))
        times: dict[str, dict[int, list[float]]] = {name: {1: [], 16: []} for name in backends}
        for name, idx in backends.items():  # warm-up, untimed
            idx.search_vectors(queries[:16], args.k)
        for r in range(args.rounds):
            order = list(backends.items()) if r % 2 == 0 else list(reversed(backends.items()))
            for name, idx in order:
                for batch in (1, 16):
                    q = queries[(r * 16) % 496 : (r * 16) % 496 + batch]
                    t0 = time.perf_counter()
                    idx.search_vectors(q, args.k)
                    times[name][batch].append(time.perf_counter() - t0)
        for idx in backends.values():
            idx.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def ms(values: list[float], q: float) -> float:
        return round(1000 * float(np.quantile(values, q)), 3)

    result = {
        "n": args.n, "dim": args.dim, "k": args.k, "rounds": args.rounds,
        "add_seconds": {"faiss Flat": round(faiss_add, 2), milvus_name: round(lite_add, 2)},
        "same_top_k_as_faiss_flat": same_top_k,
        "search_ms": {name: {f"batch {b}": {"median": ms(t, 0.5), "p95": ms(t, 0.95)} for b, t in per.items()}
                      for name, per in times.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
