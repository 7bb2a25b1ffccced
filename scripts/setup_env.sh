#!/usr/bin/env bash
# Create ./.venv (if missing) and install the project with every extra. Idempotent: the install
# is skipped while pyproject.toml is unchanged since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-pyproject
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)  # either changes: reinstall
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the project and its dependencies into .venv (first time: a few minutes)" >&2
    log=.venv/install.log
    # rapidocr-onnxruntime (the text signal's OCR) without its dependencies: it asks for
    # opencv-python, a second cv2 over opencv-python-headless; its other needs are the `text` extra.
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[all]" \
            && .venv/bin/python -m pip install --no-deps "rapidocr-onnxruntime==1.4.4"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "install failed; full log: $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
