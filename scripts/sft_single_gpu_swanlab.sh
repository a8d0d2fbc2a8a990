#!/usr/bin/env bash
# SFT on one GPU with a SwanLab dashboard (local by default: no account, no network).
# Usage: bash scripts/sft_single_gpu_swanlab.sh [CONFIG] [key=value ...]
#   SWANLAB_MODE   local (default) | cloud (after `swanlab login`) | disabled
set -euo pipefail
CONFIG=${1:-configs/qwen2.5-0.5b.yaml}
shift $(( $# < 1 ? $# : 1 ))
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} \
  sidrec sft --config "$CONFIG" swanlab.mode="${SWANLAB_MODE:-local}" "$@"
echo "dashboard: bash scripts/dashboard.sh <the run's output dir>/swanlog"
