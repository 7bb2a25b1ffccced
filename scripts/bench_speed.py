#!/usr/bin/env python
"""Embedding speed: the project's fast path vs the plain open_clip loop (issue #7).

Generates photo-like listing JPEGs (1024x768 and 3000x2000 by default), then times baseline
and project in alternating rounds, and prints a Markdown table; the full result goes to JSON.
All logic lives in :mod:`detector.bench.speed`.

Example:
    python scripts/bench_speed.py --out bench_speed.json
    python scripts/bench_speed.py --quick --presets tiny-clip-test
    python scripts/bench_speed.py --ablations --set precision=fp32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detector.bench.speed import markdown_table, run_speed_benchmark
from index.atomic import atomic_write_bytes


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with value parsed as JSON when it can be (``2``, ``false``, ``"fp32"``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["clip-vit-b-32", "effnet-lite0"])
    ap.add_argument("--n-images", type=int, default=8, help="files per size")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument("--data-dir", help="keep generated JPEGs here (reused between runs)")
    ap.add_argument("--ablations", action="store_true", help="also time each option switched off")
    ap.add_argument(
        "--peak-gflops", type=float, default=390.0, help="bf16 GFLOP/s used for the ceiling column"
    )
    ap.add_argument(
        "--set",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="create_embedder override for the project side, e.g. decode_workers=0",
    )
    ap.add_argument("--quick", action="store_true", help="tiny run (tests, smoke checks)")
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    args = ap.parse_args(argv)

    result = run_speed_benchmark(
        args.presets,
        n_images=args.n_images,
        rounds=args.rounds,
        latency_repeats=args.latency_repeats,
        data_dir=args.data_dir,
        ablations=args.ablations,
        reference_peak_gflops=args.peak_gflops,
        quick=args.quick,
        overrides=dict(args.set),
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Not atomic_write_json: it sorts keys, and the result's order is the run order.
        atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
