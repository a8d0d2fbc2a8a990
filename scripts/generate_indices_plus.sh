#!/usr/bin/env bash
# A run's SIDs as MiniOneRec's files (generate_indices_plus.sh): index/<NAME>.index.json (item ->
# its SID tokens), <NAME>.item.json and the train/valid/test CSVs, so MiniOneRec's own tools can
# read them.
# Usage: bash scripts/generate_indices_plus.sh [--dataset NAME] [--root DIR] [--output_dir DIR]
#          [--overwrite]
#   --root        the run directory: reads ROOT/data and ROOT/sid (default outputs/NAME)
#   --output_dir  default ROOT/minionerec
source "$(dirname "$0")/_common.sh"
DATASET=Industrial_and_Scientific
ROOT=""
OUT=""
ARGS=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dataset) DATASET=$(value "$@"); shift 2 ;;
    --root) ROOT=$(value "$@"); shift 2 ;;
    --output_dir) OUT=$(value "$@"); shift 2 ;;
    --overwrite) ARGS+=(--overwrite); shift ;;
    *) unknown "$1" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
OUT=${OUT:-$ROOT/minionerec}
run "$SIDREC" data export-minionerec --data "$ROOT/data" --sid "$ROOT/sid" --out "$OUT" "${ARGS[@]}"
