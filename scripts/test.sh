#!/usr/bin/env bash
# Set up .venv and run the test suite (tiny random model, small images; no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
