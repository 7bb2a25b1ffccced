#!/usr/bin/env bash
# The main job end to end: set up .venv, build the sample set (real brand logos), index the
# references, score the listings and print the flagged ones. Extra arguments go to
# `counterfeit quickstart` (e.g. --model clip-vit-b-32 where CLIP weights can be downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/counterfeit quickstart "$@"
