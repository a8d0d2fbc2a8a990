#!/usr/bin/env bash
# Stepwise data stage, MiniOneRec-style: Amazon Reviews 2018 raw files -> dataset directory.
# Usage: bash scripts/data.sh [CATEGORY] [RAW_DIR] [OUT] [--download | sidrec data amazon18 flags]
#   (amazon18_data_process.sh does the same with MiniOneRec's flag names)
source "$(dirname "$0")/_common.sh"
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
CATEGORY=${1:-Industrial_and_Scientific}
RAW_DIR=${2:-raw/amazon18}
OUT=${3:-outputs/${CATEGORY}/data}
shift $(( $# < 3 ? $# : 3 ))
run "$SIDREC" data amazon18 --dataset "$CATEGORY" --raw-dir "$RAW_DIR" --out "$OUT" \
  --user-k 5 --item-k 5 --st-year 2016 --st-month 10 --ed-year 2018 --ed-month 11 \
  --split temporal "$@"
run "$SIDREC" data stats --data "$OUT"
