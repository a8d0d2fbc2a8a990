#!/usr/bin/env bash
# Amazon Reviews 2018, one category -> a dataset directory (MiniOneRec's
# amazon18_data_process.sh): month window, title cleaning, iterated k-core, sliding windows,
# temporal 8:1:1 split; then its statistics.
# Usage: bash scripts/amazon18_data_process.sh [--dataset NAME] [--user_k 5] [--item_k 5]
#          [--st_year 2016] [--st_month 10] [--ed_year 2018] [--ed_month 11]
#          [--input_path raw/amazon18] [--output_path outputs/NAME/data] [--download]
#          [--split temporal|loo] [--overwrite]
#   --input_path holds <NAME>.json.gz and meta_<NAME>.json.gz (--download fetches them)
source "$(dirname "$0")/_common.sh"
RAW=raw/amazon18
OUT=""
while (( $# )); do
  case "$1" in
    --input_path) RAW=$(value "$@"); shift 2 ;;
    --output_path) OUT=$(value "$@"); shift 2 ;;
    --user_k|--item_k|--st_year|--st_month|--ed_year|--ed_month|--split)
      ARGS+=("${1//_/-}" "$(value "$@")"); shift 2 ;;
    --download) ARGS+=("$1"); shift ;;
    --root|--config) unknown "$1" ;;
    *) common_flag "$@"; shift "$CONSUMED" ;;
  esac
done
OUT=${OUT:-outputs/$DATASET/data}
run "$SIDREC" data amazon18 --dataset "$DATASET" --raw-dir "$RAW" --out "$OUT" "${ARGS[@]}"
run "$SIDREC" data stats --data "$OUT"
