#!/usr/bin/env python
"""Run the benchmark suite: quality per transformation class and speed, in one command.

Thin wrapper over :func:`detector.bench.runner.run_benchmark` (the same as ``counterfeit bench``).
Writes ``OUT/bench-<preset>[-random]-<size>.json`` (every figure) and ``.md`` (tables).

Examples:
    python scripts/bench.py --size small --model tiny-clip-test            # CI, < 1 min
    python scripts/bench.py --size full --model effnet-lite0 --variants whole-image,default
    python scripts/bench.py --size full --model clip-vit-b-32 --random-weights   # speed only
    python scripts/bench.py --size full --model clip-vit-b-32 --checkpoint ViT-B-32.bin  # real CLIP
"""

from __future__ import annotations

import sys

from detector.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
