#!/usr/bin/env python
"""Scoring speed of several option sets on one index, interleaved (machines here are noisy).

Each option set gets its own Detector; every round scores the same listings with each, in
rotating order, and the median images/s per set is printed with every round's figure.

Example:
    python scripts/speed_options.py --index bench/indexes/effnet-lite0-XXXX \\
        --labels bench/datasets/full-seed1-XXXX/labels.jsonl \\
        default='{}' no-rivals='{"verify": {"rival_test": "off", "rival_fits": "off"}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

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
    names = list(detectors)
    for detector in detectors.values():  # per-generation structures, model warm-up
        detector.score(images[0])
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            for image in images:
                detectors[name].score(image)
            rates[name].append(len(images) / (time.perf_counter() - start))
    for name in names:
        rounds = ", ".join(f"{x:.2f}" for x in rates[name])
        print(f"{name}: median {statistics.median(rates[name]):.2f} images/s (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
