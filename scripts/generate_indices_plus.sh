#!/usr/bin/env bash
# A run's SIDs as MiniOneRec's files (generate_indices_plus.sh): index/<NAME>.index.json (item ->
# its SID tokens), <NAME>.item.json and the train/valid/test CSVs, so MiniOneRec's own tools can
# read them.
# Usage: bash scripts/generate_indices_plus.sh [--dataset NAME] [--root DIR] [--output_dir DIR]
#          [--overwrite]
#   --root        the run directory: reads ROOT/data and ROOT/sid (default outputs/NAME)
#   --output_dir  default ROOT/minionerec
source "$(dirname "$0")/_common.sh"
OUT=""
while (( $# )); do
  case "$1" in
    --output_dir) OUT=$(value "$@"); shift 2 ;;
    --config) unknown "$1" ;;
    *) common_flag "$@"; shift "$CONSUMED" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
OUT=${OUT:-$ROOT/minionerec}
run "$SIDREC" data export-minionerec --data "$ROOT/data" --sid "$ROOT/sid" --out "$OUT" "${ARGS[@]}"
