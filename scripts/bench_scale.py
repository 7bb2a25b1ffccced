#!/usr/bin/env python
"""Scale benchmark: scoring and indexing cost per library size (see detector/bench/scale.py).

Example:
    python scripts/bench_scale.py --sizes 10000,100000,1000000 --out bench-out/scale
"""

from __future__ import annotations

import argparse
import json
import sys

from detector.bench.scale import GIB, ScaleConfig, markdown_table, run_scale_benchmark
from index.factory_choice import parse_memory_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="library sizes, comma-separated")
    parser.add_argument("--out", default="bench-out/scale", help="working folder (seed set, libraries, results)")
    parser.add_argument("--model", default="effnet-lite0", help="model preset")
    parser.add_argument("--random-weights", action="store_true", help="seeded random weights (tests)")
    parser.add_argument("--seed-brands", type=int, default=200, help="real logos rendered and indexed")
    parser.add_argument("--queries-per-class", type=int, default=20, help="listing photos per group")
    parser.add_argument("--factory", default="Flat",
                        help="FAISS factory of the libraries' embedding index, or 'auto' (chosen per size)")
    parser.add_argument("--memory-budget", default="4GiB", help="the embedding index's (--factory auto) and the descriptor store's")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0, help="per scorer subprocess")
    parser.add_argument("--probe-timeout", type=float, default=1800.0, help="seconds per size's scoring")
    parser.add_argument("--scoring", default="{}", help="scoring options as JSON (default profile)")
    parser.add_argument("--clean", action="store_true", help="delete each library once measured")
    parser.add_argument("--no-store", action="store_true", help="keep no descriptor store (the code before it)")
    parser.add_argument("--store-from", type=int, default=None, help="references from which the descriptor store is kept")
    parser.add_argument("--votes", default="store", help="vote variants, comma-separated: store,memory")
    parser.add_argument("--tag", default="", help="names this run's result files (libraries are shared)")
    args = parser.parse_args(argv)
    cfg = ScaleConfig(
        sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip()),
        preset=args.model, random_weights=args.random_weights, seed_brands=args.seed_brands,
        queries_per_class=args.queries_per_class, factory=args.factory,
        memory_budget_bytes=parse_memory_size(args.memory_budget),
        memory_limit_bytes=int(args.memory_limit_gib * GIB), probe_timeout_seconds=args.probe_timeout,
        scoring=json.loads(args.scoring), clean=args.clean, store=not args.no_store, tag=args.tag,
        store_from=args.store_from, vote_variants=tuple(v for v in args.votes.split(",") if v),
    )
    print(markdown_table(run_scale_benchmark(args.out, cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
