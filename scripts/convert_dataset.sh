#!/usr/bin/env bash
# A dataset and its SIDs -> SFT examples (MiniOneRec's convert_dataset.sh): the tasks and
# templates of the profile's convert section.
# Usage: bash scripts/convert_dataset.sh [--dataset NAME] [--root DIR] [--config PROFILE]
#          [--output_dir DIR] [--overwrite] [key=value ...]
#   --root        the run directory: reads ROOT/data and ROOT/sid (default outputs/NAME)
#   --output_dir  default ROOT/examples
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
    --config) ARGS+=(--config "$(value "$@")"); shift 2 ;;
    --overwrite) ARGS+=(--overwrite); shift ;;
    *=*) ARGS+=("$1"); shift ;;
    *) unknown "$1" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
OUT=${OUT:-$ROOT/examples}
run "$SIDREC" convert --data "$ROOT/data" --sid "$ROOT/sid" --out "$OUT" "${ARGS[@]}"
