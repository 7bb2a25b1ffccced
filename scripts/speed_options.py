#!/usr/bin/env python
"""Scoring speed of several option sets on one index, interleaved (machines here are noisy).

Each option set gets its own Detector; every round scores the same listings with each, in
rotating order (:func:`detector.bench.speed_timing.measure_throughput`), and the median
images/s per set is printed, with its median per-round ratio to the first set.

Example:
    python scripts/speed_options.py --index bench/indexes/effnet-lite0-XXXX \\
        --labels bench/datasets/full-seed1-XXXX/labels.jsonl \\
        default='{}' no-rivals='{"verify": {"rival_test": "off", "rival_fits": "off"}}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detector.bench.speed_timing import measure_throughput
from detector.scoring import Detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="index folder")
    parser.add_argument("--labels", required=True, help="labels .jsonl (its images are scored)")
    parser.add_argument("--listings", type=int, default=48, help="listings a round (every k-th of the file)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("options", nargs="+", metavar="NAME=JSON", help="scoring overrides per set")
    args = parser.parse_args(argv)
    folder = Path(args.labels).parent
    images = [str(folder / json.loads(line)["image"]) for line in open(args.labels, encoding="utf-8")]
    images = images[:: max(1, len(images) // args.listings)][: args.listings]
    configs = dict(option.split("=", 1) for option in args.options)
    detectors = {name: Detector.open(args.index, config=json.loads(text)) for name, text in configs.items()}

    def scorer(detector: Detector):
        return lambda paths: [detector.score(str(p)) for p in paths]

    reference = next(iter(detectors))
    result = measure_throughput({name: scorer(d) for name, d in detectors.items()}, images,
                                rounds=args.rounds, reference=reference)  # fmt: skip
    for name in detectors:
        ratio = "" if name == reference else f", {result[f'{name}_ratio']:.3f} x {reference} (median of rounds)"
        print(f"{name}: median {result[f'{name}_ips']:.2f} images/s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
