#!/usr/bin/env bash
# GPU checks, prepared to run once on a lent device machine (see the device tool's README):
#
#   here:   bash scripts/gpu_check.sh --prepare     # pure-Python wheels the GPU image lacks
#   device: run(command="bash scripts/gpu_check.sh", carry=[".gpu_wheels"], timeout_s=600)
#           (or two calls: `bash scripts/gpu_check.sh engine`, then `... train`)
#
# The GPU image has torch and transformers but not jaxtyping, transformer-lens or plotly; the
# checks import only what the native engine needs, installed from the carried wheels. Results
# land in $OUT (one JSON line per measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    rm -rf .gpu_wheels && mkdir -p .gpu_wheels
    .venv/bin/pip download -q --no-deps -d .gpu_wheels jaxtyping wadler-lindig beartype tqdm platformdirs
    grep -qx '/.gpu_wheels/' .git/info/exclude 2>/dev/null || echo '/.gpu_wheels/' >> .git/info/exclude
    du -sh .gpu_wheels
    exit 0
fi
export OUT=${OUT:-/tmp/gpu_out} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import jaxtyping" 2>/dev/null || pip install -q --no-index --find-links .gpu_wheels jaxtyping beartype tqdm platformdirs
python -c "import pandas" 2>/dev/null || echo "note: pandas missing on the device image" >&2
# Issue "Engine v2": band norms and head scores at 8,192 tokens against a bare sdpa/flash
# forward, on random-weight Gemma 7B and Llama 3.1 8B shapes (bf16): time ratio, peak memory.
# `bash scripts/gpu_check.sh train` runs only the training / data-parallel checks below (a
# second device call when the engine check used the first one's time).
if [ "${1:-all}" != "train" ]; then
timeout 360 python scripts/gpu_engine_check.py --tokens 8192 --repeats 3 2>&1 | tee "$OUT/gpu_engine.log"
fi
# Issue "Scale out" (13): the `gpu` training preset for 20 steps in bf16 with and without
# torch.compile (tokens/s, MFU against the device's dense bf16 peak); 0.75-RoPE against RoPE
# step time, paired; the data-parallel analysis (2 processes on the one GPU, gloo) against one
# process. About 3 minutes on an H200; smoke-tested on CPU with `--smoke`.
if [ "${1:-all}" != "engine" ]; then
timeout 300 python scripts/gpu_train_check.py --steps 20 --warmup 3 2>&1 | tee "$OUT/gpu_train.log" || true
fi
