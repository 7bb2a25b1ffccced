#!/usr/bin/env python
"""Transfer table: thresholds tuned on one bench set (logo collection), reported on the others.

Thin wrapper over :func:`detector.bench.transfer.main`. Each set's scores come from
``counterfeit bench --no-speed --logos NAME ...`` (its ``--out`` folder or the
``scores-*/<variant>.jsonl`` file) or ``counterfeit eval`` (``scores.jsonl``).

Examples:
    python scripts/transfer.py simple-icons=bench-si crypto=bench-crypto flags=bench-flags \
        --tune-on simple-icons --target-precision 0.95 --max-fpr 0
    python scripts/transfer.py crypto=bench-crypto flags=bench-flags \
        --thresholds configs/thresholds/effnet-lite0.json
"""

from __future__ import annotations

import sys

from detector.bench.transfer import main

if __name__ == "__main__":
    sys.exit(main())
