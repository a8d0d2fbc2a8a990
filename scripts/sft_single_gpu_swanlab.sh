#!/usr/bin/env bash
# SFT on one GPU with a SwanLab dashboard (MiniOneRec's sft_single_gpu_swanlab.sh; local mode by
# default: no account, no network).
# Usage: bash scripts/sft_single_gpu_swanlab.sh [CONFIG] [key=value | sft.sh's flags ...]
#   SWANLAB_MODE   local (default) | cloud (after `swanlab login`) | disabled
source "$(dirname "$0")/_flags.sh"
translate sft "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
run "$SIDREC" sft --config "$CONFIG" "${SIDREC_ARGS[@]}" swanlab.mode="${SWANLAB_MODE:-local}"
echo "dashboard: bash scripts/dashboard.sh"
