#!/usr/bin/env bash
# A dataset and its SIDs -> SFT examples (MiniOneRec's convert_dataset.sh): the tasks and
# templates of the profile's convert section.
# Usage: bash scripts/convert_dataset.sh [--dataset NAME] [--root DIR] [--config PROFILE]
#          [--output_dir DIR] [--overwrite] [key=value ...]
#   --root        the run directory: reads ROOT/data and ROOT/sid (default outputs/NAME)
#   --output_dir  default ROOT/examples
source "$(dirname "$0")/_common.sh"
OUT=""
while (( $# )); do
  case "$1" in
    --output_dir) OUT=$(value "$@"); shift 2 ;;
    *=*) ARGS+=("$1"); shift ;;
    *) common_flag "$@"; shift "$CONSUMED" ;;
  esac
done
ROOT=${ROOT:-outputs/$DATASET}
OUT=${OUT:-$ROOT/examples}
run "$SIDREC" convert --data "$ROOT/data" --sid "$ROOT/sid" --out "$OUT" "${ARGS[@]}"
