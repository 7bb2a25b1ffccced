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

# Logo collections of the benchmark (`counterfeit bench --logos crypto|flags`): npm tarballs,
# read in place by detector/bench/logo_collections.py (pinned there too). Fetched once; a
# failed fetch only warns (the bench then says which command fetches it; the tests skip).
collections=.venv/share/logo-collections
for pkg in cryptocurrency-icons@0.18.1 flag-icons@7.5.0; do
    tarball="$collections/${pkg%@*}-${pkg##*@}.tgz"
    [ -s "$tarball" ] && continue
    if ! command -v npm >/dev/null 2>&1; then
        echo "warning: npm not found; $tarball not fetched (bench --logos crypto|flags needs it)" >&2
        continue
    fi
    mkdir -p "$collections"
    if npm pack "$pkg" --pack-destination "$collections" --silent >/dev/null 2>"$collections/npm.log"; then
        rm -f "$collections/npm.log"
    else
        tail -n 5 "$collections/npm.log" >&2
        echo "warning: could not fetch $pkg into $collections" >&2
    fi
done
